"""An agent's disk incremental reads its parent's refs a window at a time: its memory does not grow with
the parent's index (32 bytes a block), and the backup restores bit-exact through the agent."""

from __future__ import annotations

import os
import random

from opencbr.engine import Repository
from opencbr.engine.remote import service as remote_service
from opencbr.providers.agent import AgentProvider
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store

BS = 4096
DISK = 8 << 30  # 2,097,152 blocks of 4 KiB: the parent's refs are 64 MiB (a 2 TiB disk's 512 MiB at 64 KiB)
REFS = DISK // BS * 32
WINDOW = 1 << 20  # what the service answers per refs window here (the agent asks for 8 MiB)


def _write_extents(path, rnd: random.Random, count: int) -> None:
    """``count`` runs of 4 random blocks at random block offsets, the rest a hole."""
    with open(path, "r+b") as f:
        for _ in range(count):
            f.seek(rnd.randrange(DISK // BS - 4) * BS)
            f.write(rnd.randbytes(4 * BS))


def _extents(fd: int, size: int) -> list[tuple[int, int]]:
    out, at = [], 0
    while at < size:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:  # only a hole is left
            break
        at = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, at))
    return out


def _same_content(a, b) -> bool:
    """The two sparse files read the same (compared where either has data; elsewhere both are holes)."""
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        size = os.fstat(fa).st_size
        if os.fstat(fb).st_size != size:
            return False
        for start, end in sorted(_extents(fa, size) + _extents(fb, size)):
            for at in range(start, end, 1 << 20):
                n = min(end - at, 1 << 20)
                if os.pread(fa, n, at) != os.pread(fb, n, at):
                    return False
        return True
    finally:
        os.close(fa)
        os.close(fb)


def test_an_agents_disk_incremental_holds_less_than_its_parents_refs(agent, tmp_path, monkeypatch):
    disk = agent.root / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(DISK)
    rnd = random.Random(7)
    _write_extents(disk, rnd, 64)
    repo = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32, encrypted=True,
                             block_size=BS)
    p = AgentProvider()
    p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(disk), "f", None, {})])
    _write_extents(disk, rnd, 8)
    monkeypatch.setattr(remote_service, "REFS_WINDOW", WINDOW)
    agent.reset_peak_rss()
    before = agent.rss()
    r = p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(disk), "i", "f", {})])
    grown = agent.peak_rss() - before
    print(f"agent RSS growth {grown / 1e6:.1f} MB")
    # before, the agent joined the parent's refs and copied them twice (three times their size)
    assert grown < REFS, f"the agent's RSS grew by {grown / 1e6:.1f} MB for a parent of {REFS / 1e6:.1f} MB refs"
    changed = r["disks"][0]["changed_blocks"]
    assert 0 < changed <= 8 * 4
    (agent.root / "new").mkdir()
    copy = agent.root / "new" / "copy.img"
    p.restore(repo, agent.connect, project_id="p1", backup_id="i", kind="disk", target=str(copy), create=True)
    assert _same_content(copy, disk)
