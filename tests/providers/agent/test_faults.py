"""Faults on the data path, with real agent processes: an agent killed (or silent) mid-backup fails the
task within a bounded time with nothing published, and the next backup works (several agents at once:
tests/services/test_agent_backup_sdk.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider, AgentTaskFailed
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.providers.agent.agents import AgentProcess, Authority


@pytest.fixture(scope="module")
def auth():
    return Authority.new()


@pytest.fixture
def repo(tmp_path):
    return Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32, encrypted=True)


def _agent(auth, tmp_path, name="a1"):
    root = tmp_path / f"host-{name}"
    root.mkdir(exist_ok=True)
    a = AgentProcess(auth, tmp_path / f"agent-{name}", [root], agent_id=name)
    a.root = root
    return a


def _random_disk(path, mib):
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def _backup_in_thread(p, repo, agent, disk, name, parent=None):
    out: dict = {}

    def run():
        try:
            out["result"] = p.backup_disks(repo, agent.connect, project_id="p1",
                                           disks=[HostDisk(str(disk), name, parent, {})])
        except AgentTaskFailed as e:
            out["error"] = e
        out["t"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _wait_for_packs(repo, n=2, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if len(list(repo.store.list(repo.prefix + "data/"))) >= n:
            return
        time.sleep(0.02)
    raise AssertionError("the backup never started storing")


def test_agent_killed_mid_backup_fails_fast_and_the_next_backup_sends_only_what_is_missing(auth, tmp_path, repo):
    agent = _agent(auth, tmp_path)
    disk = agent.root / "disk.img"
    _random_disk(disk, 16)
    p = AgentProvider(timeout=30)
    first = p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(disk), "b1", None, {})])
    with open(disk, "ab") as f:  # 48 MiB more that the vault lacks
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    t, out = _backup_in_thread(p, repo, agent, disk, "b2", "b1")
    _wait_for_packs(repo, n=3)
    killed = time.monotonic()
    agent.kill()
    t.join(30)
    assert "error" in out, out
    assert out["t"] - killed < 5, "the task must fail at once when the agent dies"
    assert "connection to the agent was lost" in out["error"].message, out["error"].message
    assert repo.list_manifests() == ["b1"]  # nothing partial is published
    assert len(list(repo.store.list(repo.prefix + "locks/"))) == 0  # the session was aborted
    # What the killed attempt stored may stay in the vault (indexed just before the kill, when its
    # transfer was done) or go (aborted with its session): the next backup sends exactly what is
    # missing, and every block of the disk is held once.
    held = len(repo.chunks.reader_index(refresh=True))
    agent = _agent(auth, tmp_path)
    try:
        r = p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(disk), "b2", "b1", {})])
        d = r["disks"][0]
        after = len(repo.chunks.reader_index(refresh=True))
        assert d["new_chunks"] == after - held <= (48 << 20) // repo.block_size  # only what was missing crossed
        assert after == d["data_blocks"] == first["disks"][0]["new_chunks"] + (48 << 20) // repo.block_size
        assert repo.verify("b2").ok
    finally:
        agent.stop()


def test_a_silent_agent_fails_the_task_within_the_timeout(auth, tmp_path, repo):
    agent = _agent(auth, tmp_path)
    disk = agent.root / "disk.img"
    _random_disk(disk, 64)
    p = AgentProvider(timeout=2)
    t, out = _backup_in_thread(p, repo, agent, disk, "s1")
    _wait_for_packs(repo, n=1)
    os.kill(agent.proc.pid, signal.SIGSTOP)  # the link stays up, nothing more comes
    stopped = time.monotonic()
    try:
        t.join(30)
        assert "error" in out and "in time" in out["error"].message, out
        assert out["t"] - stopped < 8
        assert repo.list_manifests() == []
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
        agent.stop()
