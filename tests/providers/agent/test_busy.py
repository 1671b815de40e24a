"""An agent that runs its ``max_tasks`` already answers ``busy`` before doing anything; the provider asks
again after a pause (for ``busy_wait`` seconds at most), so a second task waits for the first instead of
failing."""

from __future__ import annotations

import os
import threading
import time

import pytest

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider, AgentTaskFailed
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.providers.agent.agents import AgentProcess, Authority


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    work = tmp_path_factory.mktemp("busy")
    root = work / "host"
    root.mkdir()
    for name in ("one.img", "two.img"):
        (root / name).write_bytes(os.urandom(4 << 20))
    # one task at a time, 2 MB/s: a backup of 4 MiB of random data takes about 2 s
    a = AgentProcess(Authority.new(), work / "agent", [root], max_tasks=1, bandwidth_limit=2_000_000)
    a.root = root
    yield a
    a.stop()


def _repo(path):
    return Repository.create(open_store(path.as_uri()), "v/", b"k" * 32, encrypted=True)


def _two_at_once(agent, provider, tmp_path) -> dict:
    out: dict = {}

    def run(name: str) -> None:
        try:
            out[name] = provider.backup_disks(_repo(tmp_path / name), agent.connect, project_id="p1",
                                              disks=[HostDisk(str(agent.root / f"{name}.img"), name, None, {})])
        except AgentTaskFailed as e:
            out[name] = e

    first = threading.Thread(target=run, args=("one",))
    first.start()
    # the second starts while the first holds the agent's only slot (it runs ~2 s)
    threading.Event().wait(0.7)
    run("two")
    first.join()
    return out


def test_a_busy_agent_is_asked_again(agent, tmp_path):
    out = _two_at_once(agent, AgentProvider(), tmp_path)
    assert all(isinstance(out[n], dict) and out[n]["disks"][0]["added_bytes"] > 0 for n in ("one", "two")), out


def test_without_waiting_the_second_task_is_refused_busy(agent, tmp_path):
    out = _two_at_once(agent, AgentProvider(busy_wait=0), tmp_path)
    assert isinstance(out["one"], dict), out
    assert isinstance(out["two"], AgentTaskFailed) and out["two"].code == "busy", out


def _hold_every_connection(agent) -> list:
    """Connections holding all of the agent's connection slots (16 at this ``max_tasks``), each waiting
    for its first request: the next connection is answered ``busy`` before the agent reads anything, an
    offer to seal included."""
    tried = [agent.connect(seal=False) for _ in range(24)]
    time.sleep(0.5)  # (an agent with no slot left answers busy at once)
    busy = [ch for ch in tried if ch.readable()]
    assert busy and busy[0].recv()[0]["error"] == "busy"
    for ch in busy:
        ch.close()
    return [ch for ch in tried if ch not in busy]


def test_an_agent_at_its_connection_limit_is_asked_again_over_a_sealed_connection(agent, tmp_path):
    held = _hold_every_connection(agent)
    assert len(held) >= 16
    with pytest.raises(AgentTaskFailed) as busy:  # not asked again: the reason, as the agent gave it
        AgentProvider(busy_wait=0).backup_disks(_repo(tmp_path / "a"), agent.connect, project_id="p1",
                                                disks=[HostDisk(str(agent.root / "one.img"), "a", None, {})])
    assert busy.value.code == "busy", busy.value
    threading.Timer(1.0, lambda: [ch.close() for ch in held]).start()
    seen = []

    def connect():  # (the channel each try got)
        ch = agent.connect()
        seen.append(type(ch.sock).__name__)
        return ch

    out = AgentProvider().backup_disks(_repo(tmp_path / "b"), connect, project_id="p1",
                                       disks=[HostDisk(str(agent.root / "one.img"), "b", None, {})])
    assert out["disks"][0]["added_bytes"] > 0
    assert set(seen) == {"SealedStream"}, seen  # busy was no reason to connect without sealing


def test_an_agent_restarting_is_asked_again_until_it_is_back(tmp_path):
    """A connection refused before any work (the agent restarting: an upgrade, systemd bringing it back)
    is asked again for ``unreachable_wait`` seconds: a scheduled backup in that moment waits, instead of
    turning into an error before the heartbeat has even called the agent offline."""
    auth, root = Authority.new(), tmp_path / "host"
    root.mkdir()
    (root / "d.img").write_bytes(os.urandom(1 << 20))
    first = AgentProcess(auth, tmp_path / "a1", [root])
    first.stop()  # (its address now refuses connections)
    disks = [HostDisk(str(root / "d.img"), "r1", None, {})]
    with pytest.raises(AgentTaskFailed) as e:
        AgentProvider(unreachable_wait=0).backup_disks(_repo(tmp_path / "v0"), first.connect, project_id="p1",
                                                       disks=disks)
    assert e.value.code == "agent_unreachable"
    out: dict = {}

    def run() -> None:
        try:
            out["r"] = AgentProvider().backup_disks(_repo(tmp_path / "v1"), first.connect, project_id="p1",
                                                    disks=disks)
        except AgentTaskFailed as exc:
            out["r"] = exc

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.5)  # refused meanwhile, and asked again
    again = AgentProcess(auth, tmp_path / "a2", [root], listen=first.endpoint)
    try:
        t.join(60)
        assert isinstance(out["r"], dict) and out["r"]["disks"][0]["added_bytes"] > 0, out
    finally:
        again.stop()
