"""A disk backup's memory does not grow with the disk (issue 18). Generated disks (every block unique, almost
all zeros: engine/disk/generated.py) go through the real path -- hash, dedup, compress, encrypt, pack,
index, manifest -- each in its own process, its peak measured as that process's ``VmHWM``.

Until 2026-12-04 this test read ``ru_maxrss``, which also holds the RSS of the process that started the
child (it survives the exec): it measured the test runner (~100 MB) and could not fail. Measured
honestly, a 2 GiB backup peaks at 79-88 MB and a 16 GiB one at 88-105 MB (+12-33 %): the threads'
malloc arenas fill up over the first ~8 s of a backup and then stay (64 GiB: 96-118 MB), and a 2 GiB
backup ends (~2 s) before that. So the issue's bound, 15 %, is not met at these two sizes; this test is
a guard against memory that grows with the disk (45 %, and 128 MiB at 16 GiB), and the growth past
16 GiB is measured by ``bench/scale.py disk``."""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert large["rss_kib"] <= small["rss_kib"] * 1.45, (small, large)
    assert large["rss_kib"] < 128 << 10, large
