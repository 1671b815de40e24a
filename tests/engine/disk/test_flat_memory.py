"""A disk backup's memory does not grow with the disk (issue 18): the peak RSS of a 16 GiB backup stays
within 15 % of a 2 GiB one's. Generated disks (every block unique, almost all zeros: engine/disk/
generated.py) go through the real path -- hash, dedup, compress, encrypt, pack, index, manifest -- each
in its own process, so the peak is that backup's alone."""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = """
import json, resource, sys
from opencbr.engine import Repository
from opencbr.engine.disk.generated import GeneratedDisk
from opencbr.storage import open_store
repo = Repository.create(open_store(sys.argv[1]), "v/", bytes(32))
res = repo.backup_disk(GeneratedDisk(int(sys.argv[2]) << 30), backup_id="b1", meta={})
print(json.dumps({"rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "new": res.new_chunks}))
"""


def _backup_peak_rss(tmp_path, gib: int) -> dict:
    store = tmp_path / f"store{gib}"
    out = subprocess.run([sys.executable, "-c", _CHILD, store.as_uri(), str(gib)], check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": ":".join(sys.path)}).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_peak_rss_of_a_16_gib_backup_is_within_15_percent_of_a_2_gib_one(tmp_path):
    small, large = _backup_peak_rss(tmp_path, 2), _backup_peak_rss(tmp_path, 16)
    assert small["new"] == 2 << 14 and large["new"] == 16 << 14  # every 64 KiB block is a new chunk
    assert large["rss_kib"] <= small["rss_kib"] * 1.15, (small, large)
