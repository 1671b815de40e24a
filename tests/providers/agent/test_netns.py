"""An agent in its own network namespace (a veth pair the test creates and removes; traffic stays on
this machine): the service reaches it only over that link, backs up a disk and a directory read there
and restores them there."""

from __future__ import annotations

import os
import random
import secrets
import subprocess

import pytest

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.providers.agent.agents import AgentProcess, Authority
from tests.providers.agent.test_provider import make_disk, sha


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespace():
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"ocbr-{tag}", f"vh{tag}", f"vn{tag}"
    octet = random.randint(1, 250)
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    try:
        _ip("netns", "add", ns)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"network namespaces are not permitted here ({getattr(e, 'stderr', b'') or e!r})")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_agent_in_its_own_network_namespace(namespace, tmp_path):
    ns, ns_ip = namespace
    root = tmp_path / "host"
    root.mkdir()
    agent = AgentProcess(Authority.new(), tmp_path / "agent", [root], listen=f"{ns_ip}:0", netns=ns)
    try:
        assert agent.endpoint.startswith(ns_ip)
        repo = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"n" * 32, encrypted=True)
        make_disk(root / "disk.img", 8 << 20, seed=7)
        (root / "www").mkdir()
        for i in range(20):
            (root / "www" / f"page{i}.html").write_bytes(os.urandom(1000 * i + 10))
        p = AgentProvider()
        p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(root / "disk.img"), "d1", None, {})])
        p.backup_tree(repo, agent.connect, project_id="p1", path=str(root / "www"), backup_id="t1", parent=None,
                      meta={})
        p.restore(repo, agent.connect, project_id="p1", backup_id="d1", kind="disk", target=str(root / "d.img"),
                  create=True)
        p.restore(repo, agent.connect, project_id="p1", backup_id="t1", kind="tree", target=str(root / "www2"))
        assert sha(root / "d.img") == sha(root / "disk.img")
        for f in (root / "www").iterdir():
            assert (root / "www2" / f.name).read_bytes() == f.read_bytes()
    finally:
        agent.stop()
