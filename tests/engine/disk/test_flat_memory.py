"""A disk backup's memory does not grow with the disk (issue 18). Generated disks (every block unique, almost
all zeros: engine/disk/generated.py) go through the real path -- hash, dedup, compress, encrypt, pack,
index, manifest -- each in its own process, its peak measured as that process's ``VmHWM``.

Until 2026-12-04 this test read ``ru_maxrss``, which also holds the RSS of the process that started the
child (it survives the exec): it measured the test runner (~100 MB) and could not fail. Measured
honestly, a 2 GiB backup peaked at 76-88 MB and a 16 GiB one at 88-105 MB (+12-33 %): Python's small-object
arenas and the threads' malloc arenas filled up over the first ~8 s (about six packs' entries in flight as
objects, ~7 MB, reached only after ~3 GiB of small records; 4 MiB segments allocated and freed per read,
which raised glibc's mmap and trim thresholds), and a 2 GiB backup ends (~2 s) before that. The pack
writer now keeps its entries packed and a local backup reads into a fixed set of segment buffers
(docs/scale.md, "Flat memory from the first seconds"), so the 16 GiB backup's peak stays within the
issue's 15 % of the 2 GiB one's, and under 128 MiB."""

from __future__ import annotations

import json
import subprocess
import sys

from opencbr.engine import Repository
from opencbr.engine.disk.generated import GeneratedDisk
from opencbr.storage import open_store

_CHILD = """
import json, sys
from opencbr.engine import Repository
from opencbr.engine.disk.generated import GeneratedDisk
from opencbr.storage import open_store
repo = Repository.create(open_store(sys.argv[1]), "v/", bytes(32))
res = repo.backup_disk(GeneratedDisk(int(sys.argv[2]) << 30), backup_id="b1", meta={})
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"rss_kib": hwm, "new": res.new_chunks}))
"""


def _backup_peak_rss(tmp_path, gib: int) -> dict:
    store = tmp_path / f"store{gib}"
    out = subprocess.run([sys.executable, "-c", _CHILD, store.as_uri(), str(gib)], check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": ":".join(sys.path)}).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_peak_rss_of_a_16_gib_backup_stays_near_a_2_gib_ones(tmp_path):
    small, large = _backup_peak_rss(tmp_path, 2), _backup_peak_rss(tmp_path, 16)
    assert small["new"] == 2 << 14 and large["new"] == 16 << 14  # every 64 KiB block is a new chunk
    assert large["rss_kib"] <= small["rss_kib"] * 1.15, (small, large)
    assert large["rss_kib"] < 128 << 10, large


class _WatchedDisk(GeneratedDisk):
    """A generated disk that records the buffers it is asked to read into (and any plain read)."""

    def __init__(self, size: int):
        super().__init__(size)
        self.buffers: set[int] = set()
        self.plain_reads = 0

    def read(self, offset: int, length: int) -> bytes:
        self.plain_reads += 1
        return super().read(offset, length)

    def read_into(self, offset: int, buf) -> int:
        self.buffers.add(id(buf.obj))
        return super().read_into(offset, buf)


def test_a_local_disk_backup_reads_into_a_fixed_set_of_segment_buffers(tmp_path):
    repo = Repository.create(open_store((tmp_path / "s").as_uri()), "v/", bytes(32))
    repo.workers = 2
    disk = _WatchedDisk(256 << 20)  # 64 segments of 4 MiB
    res = repo.backup_disk(disk, backup_id="b1", meta={})
    assert res.new_chunks == 4096 and disk.plain_reads == 0
    assert 1 <= len(disk.buffers) <= 2 * 3 + 1  # the queue (2 per worker), one per worker, the reader's
    assert repo.verify("b1").ok
