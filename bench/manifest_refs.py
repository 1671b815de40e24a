#!/usr/bin/env python3
"""A disk backup's manifest refs alone at 64 GiB - 1 TiB: peak RSS of what the backup, the incremental
and the readers do with them, without the hours of hashing a terabyte (bench/scale.py disk does both).

    python bench/manifest_refs.py [--sizes 64G,256G,1T] [--workdir DIR]

Per size, each in its own process (peak RSS of that process alone, ``wait4``):

- commit: a full backup's refs (32 bytes per 64 KiB block, random digests) spooled as the backup spools
  them, then committed (``WriteSession.commit``: the manifest, and its segments where the code has them);
- incremental: another spooled index with 1 % of the digests changed, the parent's refs read to count
  the changed blocks (as ``disk/backup.py`` does), then committed;
- index read: the incremental's index read as restore, verify, export and copy read it.

It runs unchanged on code without segments (then the manifest is one object), for the before figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
KEY = bytes(range(32))
BLOCK = 64 << 10
PIECE = 1 << 20  # refs generated a MiB (32,768 blocks) at a time


def _spooled(blocks: int, changed: bool):
    from opencbr.engine.disk.fixed_index import SpooledDigests

    spool = SpooledDigests(blocks)
    for n, at in enumerate(range(0, blocks * 32, PIECE)):
        piece = bytearray(random.Random(n).randbytes(min(PIECE, blocks * 32 - at)))
        if changed:
            for i in range(0, len(piece), 32 * 100):  # 1 % of the blocks
                piece[i] ^= 1
        spool.write(at // 32, piece)
    return spool


def _child(repo_dir: str, op: str, blocks: int) -> dict:
    from opencbr.engine import Repository
    from opencbr.engine.chunks.session import WriteSession
    from opencbr.engine.disk.fixed_index import FixedIndex
    from opencbr.storage import open_store

    store = open_store(Path(repo_dir).as_uri())
    header = {"type": "disk", "disk_size": blocks * BLOCK, "block_size": BLOCK}
    if op == "init":
        Repository.create(store, "v/", KEY)
        return {}
    cs = Repository.open(store, "v/", KEY).chunks
    if op == "commit":
        spool = _spooled(blocks, changed=False)
        return {"stored": WriteSession(cs).commit("full", header, spool)}
    if op == "incremental":
        spool = _spooled(blocks, changed=True)
        _header, pieces = cs.manifest_refs_streamed("full")
        changed = spool.changed_from(pieces)
        return {"changed": changed, "stored": WriteSession(cs).commit("incr", header, spool)}
    if op == "index read":
        read = getattr(FixedIndex, "read", None)
        index = read(cs, "incr") if read else FixedIndex.from_manifest(cs.read_manifest("incr"))
        return {"blocks": index.block_count, "last": index.digest(index.block_count - 1).hex()[:8]}
    raise SystemExit(f"unknown op {op}")


def _run(repo: Path, op: str, blocks: int) -> dict:
    cmd = [sys.executable, __file__, "--child", op, "--repo", str(repo), "--blocks", str(blocks)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{op} failed")
    return {"wall": time.monotonic() - t0, "rss_mb": usage.ru_maxrss / 1024, **json.loads(out.decode().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64G,256G,1T")
    ap.add_argument("--workdir", default="/tmp/opencbr-manifest-refs")
    ap.add_argument("--child")
    ap.add_argument("--repo")
    ap.add_argument("--blocks", type=int)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.repo, args.child, args.blocks)))
        return
    units = {"G": 1 << 30, "T": 1 << 40}
    print("| logical size | op | wall s | peak RSS MB | RSS vs previous size | stored MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    prev: dict[str, float] = {}
    for label in args.sizes.split(","):
        blocks = int(float(label[:-1]) * units[label[-1]]) // BLOCK
        repo = Path(args.workdir) / f"refs-{label}"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        _run(repo, "init", blocks)
        for op in ("commit", "incremental", "index read"):
            r = _run(repo, op, blocks)
            growth = "-" if op not in prev else f"{(r['rss_mb'] / prev[op] - 1) * 100:+.1f} %"
            stored = f"{r['stored'] / 1e6:.0f}" if "stored" in r else ""
            print(f"| {label} | {op} | {r['wall']:.1f} | {r['rss_mb']:.0f} | {growth} | {stored} |", flush=True)
            prev[op] = r["rss_mb"]
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    main()
