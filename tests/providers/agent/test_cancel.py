"""Cancelling a bandwidth-limited agent task takes effect within about a second, whatever the limit: the
worker's task fails as cancelled at once, and the agent, which paces its sends in short slices, notices
the closed connection and frees its task slot for the next task (issue 14: cancel of a limited task)."""

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

LIMIT = 64 << 10  # bytes per second: the 8 MiB disk would take two minutes


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    work = tmp_path_factory.mktemp("cancel")
    root = work / "host"
    root.mkdir()
    (root / "big.img").write_bytes(os.urandom(8 << 20))
    (root / "small.img").write_bytes(os.urandom(64 << 10))
    a = AgentProcess(Authority.new(), work / "agent", [root], max_tasks=1)  # one slot: a stuck task blocks it
    a.root = root
    yield a
    a.stop()


def _repo(path):
    return Repository.create(open_store(path.as_uri()), "v/", b"k" * 32, encrypted=True)


def test_a_limited_task_stops_within_a_second_of_its_cancel(agent, tmp_path):
    cancel, out = threading.Event(), {}

    def run() -> None:
        try:
            out["result"] = AgentProvider().backup_disks(
                _repo(tmp_path / "big"), agent.connect, project_id="p1", cancel=cancel, bandwidth=LIMIT,
                disks=[HostDisk(str(agent.root / "big.img"), "big", None, {})])
        except AgentTaskFailed as e:
            out["error"], out["at"] = e, time.monotonic()

    task = threading.Thread(target=run)
    task.start()
    threading.Event().wait(1.5)  # past the limit's one-second burst: both ends are pacing
    assert task.is_alive(), out
    cancelled = time.monotonic()
    cancel.set()
    task.join(10)
    assert out.get("error") is not None and out["error"].code == "cancelled", out
    assert out["at"] - cancelled < 1.0

    # the agent let go of the task too: its only slot serves the next one without a long wait
    deadline, answered = cancelled + 2.0, None
    while answered is None and time.monotonic() < deadline:
        try:
            answered = AgentProvider(busy_wait=0).backup_disks(
                _repo(tmp_path / f"small-{time.monotonic_ns()}"), agent.connect, project_id="p1",
                disks=[HostDisk(str(agent.root / "small.img"), "small", None, {})])
        except AgentTaskFailed as e:
            assert e.code == "busy", e
            threading.Event().wait(0.1)
    assert answered is not None, "the agent still runs the cancelled task"
    assert answered["disks"][0]["added_bytes"] > 0
