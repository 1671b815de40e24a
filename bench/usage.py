#!/usr/bin/env python3
"""How long a vault's usage reading takes (``Repository.usage``: every ref of every backup, each chunk
counted once; it runs at the end of every backup, deletion and GC), on synthetic disk backups.

    python bench/usage.py [--backups 10] [--disk 100G] [--changed 5] [--extent 1] [--workdir DIR]

``--backups`` manifests of a disk of ``--disk`` (one ref per 64 KiB block, random digests), each with
``--changed`` % of its blocks changed since the one before, at random places in extents of ``--extent``
blocks (1: every changed block on its own, the worst case; files change in runs); the refs are not in the
vault's index (every look-up is made, the sum is 0), as in docs/scale.md. Prints the reading's wall
time, CPU seconds and peak RSS, measured in a process of its own after the manifests are written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
BLOCK = 64 << 10


def _size(text: str) -> int:
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    return int(float(text[:-1]) * (1 << units[text[-1].upper()])) if text[-1].upper() in units else int(text)


def make(work: Path, backups: int, disk: int, changed: float, extent: int) -> None:
    from opencbr.engine import Repository
    from opencbr.engine.chunks.session import WriteSession
    from opencbr.storage import open_store

    shutil.rmtree(work, ignore_errors=True)
    repo = Repository.create(open_store((work / "store").as_uri()), "v/", None, encrypted=False)
    rnd = random.Random(1)
    refs = bytearray(rnd.randbytes(32 * (disk // BLOCK)))
    for b in range(backups):
        if b:
            extents = disk // BLOCK // extent
            for e in rnd.sample(range(extents), int(extents * changed / 100)):
                refs[32 * extent * e:32 * extent * (e + 1)] = rnd.randbytes(32 * extent)
        WriteSession(repo.chunks).commit(f"b{b}", {"type": "generated"}, bytes(refs))


def read(work: Path) -> dict:
    from opencbr.engine import Repository
    from opencbr.storage import open_store

    repo = Repository.open(open_store((work / "store").as_uri()), "v/", None)
    t, c = time.monotonic(), time.process_time()
    used = repo.usage()
    return {"wall": time.monotonic() - t, "cpu": time.process_time() - c, "used": used,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backups", type=int, default=10)
    ap.add_argument("--disk", default="100G")
    ap.add_argument("--changed", type=float, default=5.0)
    ap.add_argument("--extent", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/opencbr-usage-bench")
    ap.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)  # (the measured process)
    a = ap.parse_args()
    work = Path(a.workdir)
    if a.read_only:
        print(json.dumps(read(work)))
        return
    make(work, a.backups, _size(a.disk), a.changed, max(1, a.extent))
    out = subprocess.run([sys.executable, __file__, "--read-only", "--workdir", str(work)], check=True,
                         capture_output=True, text=True, env={**os.environ}).stdout
    r = json.loads(out.splitlines()[-1])
    refs = a.backups * (_size(a.disk) // BLOCK)
    print(f"{a.backups} backups of a {a.disk} disk ({refs:,} refs, {a.changed:g} % changed between them in extents "
          f"of {a.extent} blocks): "
          f"usage reading {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, peak RSS {r['rss_mb']:.0f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
