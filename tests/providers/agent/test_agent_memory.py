"""The agent's peak RSS during a tree backup of a generated tree, and a disk backup of a generated disk,
stays under a bound (issue 14: an agent stays under 150 MB; docs/agents.md, "Memory", says where its
memory goes)."""

from __future__ import annotations

import subprocess
import sys
import time

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.providers.agent.agents import REPO

#: What the agent may peak at for this tree: 150 MB is the issue's limit for the 30k-file bench tree.
#: Measured on the 2-core bench VM at 107-124 MB now and 123-129 MB before its memory was cut: the two
#: overlap (the peak depends on how full the queues happen to be), so this bound catches regressions
#: such as the 207 MB of a tree after a disk backup (docs/agents.md, "Throughput"); the disk's test
#: below is the one that tells the code before from now.
PEAK_RSS = 130 << 20


def test_an_agents_tree_backup_peaks_under_the_bound(agent, tmp_path):
    tree = agent.root / "tree"
    subprocess.run([sys.executable, str(REPO / "bench" / "make_dataset.py"), "tree", str(tree), "--files", "3000",
                    "--total", "400M", "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    repo = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32, encrypted=True)
    agent.reset_peak_rss()
    r = AgentProvider().backup_tree(repo, agent.connect, project_id="p1", path=str(tree), backup_id="f",
                                    parent=None, meta={})
    peak = agent.peak_rss()
    print(f"agent peak RSS {peak / 1e6:.1f} MB for {r['total_bytes'] / 1e6:.0f} MB")
    assert r["total_bytes"] > 300e6
    assert peak < PEAK_RSS, f"the agent peaked at {peak / 1e6:.1f} MB (bound {PEAK_RSS / 1e6:.1f} MB)"


#: The same for a disk backup of the 1 GiB generated disk: measured at 113-121 MB now, 135-136 MB before.
DISK_PEAK_RSS = 122 << 20


def test_an_agents_disk_backup_peaks_under_the_bound(agent, tmp_path):
    disk = agent.root / "disk.img"
    subprocess.run([sys.executable, str(REPO / "bench" / "make_dataset.py"), "disk", str(disk), "--size", "1G",
                    "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    repo = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32, encrypted=True)
    agent.reset_peak_rss()
    r = AgentProvider().backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(disk), "f", None, {})])
    peak = agent.peak_rss()
    print(f"agent peak RSS {peak / 1e6:.1f} MB for a disk of {r['disks'][0]['bytes_read'] / 1e6:.0f} MB read")
    assert peak < DISK_PEAK_RSS, f"the agent peaked at {peak / 1e6:.1f} MB (bound {DISK_PEAK_RSS / 1e6:.1f} MB)"


def test_an_agent_comes_back_to_the_same_memory_after_each_backup(agent, tmp_path):
    """An agent serves task after task for months: what a backup leaves in reference cycles is freed once
    it has answered (agent/serve.py, system/heap.py's ``collect_task_garbage``). Without that, its resting
    RSS grew by ~3 MB a bench-tree backup until Python's own full collection, and its peak past 150 MB.
    On this small tree the growth without it is ~0.3 MB a backup, which this bound lets through: that the
    agent collects is shown exactly by tests/agent/test_dispatch.py (the objects a task leaves in
    cycles); this one holds the real process's resting memory flat, task after task."""
    tree = agent.root / "garbage-tree"
    subprocess.run([sys.executable, str(REPO / "bench" / "make_dataset.py"), "tree", str(tree), "--files", "3000",
                    "--total", "60M", "--seed", "2"], check=True, stdout=subprocess.DEVNULL)
    resting = []
    for i in range(5):
        repo = Repository.create(open_store((tmp_path / f"store-{i}").as_uri()), "v/", b"m" * 32, encrypted=True)
        AgentProvider().backup_tree(repo, agent.connect, project_id="p1", path=str(tree), backup_id="f", parent=None,
                                    meta={})
        resting.append(_at_rest(agent))
    print("agent RSS after each backup (MB):", [round(r / 1e6, 1) for r in resting])
    # A task's garbage kept grows the resting RSS backup after backup (~3 MB each: 9 MB or more by the
    # fourth); one backup's allocator left-overs show once (a single step of 11 MB at the fifth, once, in
    # a full suite's run): the lower of the last two says which.
    assert min(resting[-2:]) - resting[0] < 2e6, [round(r / 1e6, 1) for r in resting]


def _at_rest(agent, timeout: float = 10.0) -> int:
    """The agent's RSS once it stops falling: it answered, then collects (slower on a busy machine)."""
    last, deadline = agent.rss(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = agent.rss()
        if abs(now - last) < 200_000:
            return now
        last = now
    return last
