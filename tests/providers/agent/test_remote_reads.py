"""Restores through a real agent process read a disk's refs a window at a time (the vault's protocol 2):
bit-exact across many refs segments and windows that straddle them, the agent never sent the refs
whole."""

from __future__ import annotations

import hashlib
import random

import pytest

from opencbr.engine import Repository
from opencbr.engine.remote import service as remote_service
from opencbr.providers.agent import AgentProvider
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store

BS = 4096
SEGMENT = 32 * 32  # refs bytes per segment: 32 blocks
WINDOW = 7 * 32  # refs bytes per answer (the agent asks for 8 MiB: it gets these and asks on)


@pytest.fixture(params=["plain", "encrypted"])
def repo(request, tmp_path):
    enc = request.param == "encrypted"
    r = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32 if enc else None,
                          encrypted=enc, block_size=BS)
    r.chunks.refs_segment_size = SEGMENT
    return r


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_a_disk_restore_through_an_agent_reads_refs_in_windows_bit_exact(agent, repo, tmp_path, monkeypatch):
    disk = agent.root / "disk.img"
    rnd = random.Random(4)
    with open(disk, "wb") as f:  # 2,049 blocks, a third of them zero: 65 segments
        for _ in range(2049):
            f.write(bytes(BS) if rnd.random() < 0.3 else rnd.randbytes(BS))
    p = AgentProvider()
    p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(disk), "b1", None, {})])
    assert len(list(repo.chunks.store.list("v/refs/b1/"))) == 65
    want = _sha(disk)
    windows: list[int] = []
    refs = remote_service._Reads.refs

    def counted(self, header):
        answer, parts = refs(self, header)
        windows.append(len(parts[0]))
        return answer, parts

    monkeypatch.setattr(remote_service, "REFS_WINDOW", WINDOW)
    monkeypatch.setattr(remote_service._Reads, "refs", counted)
    (agent.root / "new").mkdir()
    new = agent.root / "new" / "copy.img"
    r = p.restore(repo, agent.connect, project_id="p1", backup_id="b1", kind="disk", target=str(new), create=True)
    assert _sha(new) == want and r["blocks_total"] == 2049
    assert len(windows) == -(-2049 * 32 // WINDOW) and max(windows) == WINDOW
    with open(disk, "r+b") as f:  # damage the original: the restore repairs it in place
        f.seek(1000 * BS)
        f.write(rnd.randbytes(20 * BS))
    r = p.restore(repo, agent.connect, project_id="p1", backup_id="b1", kind="disk", target=str(disk))
    assert _sha(disk) == want and 0 < r["blocks_written"] <= 21

