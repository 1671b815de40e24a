#!/usr/bin/env python3
"""A restore through an agent reads a disk backup's refs at 64 GiB - 1 TiB: peak RSS and time of both
ends of the remote chunk service, without the hours of hashing a terabyte.

    python bench/remote_reads.py [--sizes 64G,256G,1T] [--workdir DIR] [--src DIR]

Per size, a vault holding one chunk and a disk manifest of one ref per 64 KiB block (that chunk, then
random digests: 32 bytes per block, in 8 MiB segments where the code has them); then, in a process of
its own (peak RSS of that process alone, ``wait4``), the agent's end (``RemoteChunks`` over a channel
pair, in a thread) reads the disk's index as a restore does (``FixedIndex.read``) and one chunk, while
the service's end (``serve_restore``) answers: the manifest's refs, then the read, checked against the
chunks the task may read. ``--src`` runs another checkout's code (the before figures): it runs
unchanged on code that sends the manifest whole and keeps the allowed chunks in a Python set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = bytes(range(32))
BLOCK = 64 << 10
PIECE = 1 << 20  # refs generated a MiB (32,768 blocks) at a time


def _init(store, blocks: int) -> dict:
    from opencbr.engine import Repository
    from opencbr.engine.chunks.session import WriteSession
    from opencbr.engine.disk.fixed_index import SpooledDigests

    cs = Repository.create(store, "v/", KEY).chunks
    session = WriteSession(cs)
    real = session.put_chunk(b"the one chunk read " * 1000).digest
    spool = SpooledDigests(blocks)
    for n, at in enumerate(range(0, blocks * 32, PIECE)):
        spool.write(at // 32, random.Random(n).randbytes(min(PIECE, blocks * 32 - at)))
    spool.write(0, real)
    header = {"type": "disk", "disk_size": blocks * BLOCK, "block_size": BLOCK}
    return {"stored": session.commit("disk", header, spool)}


def _restore_reads(store) -> dict:
    from opencbr.agentlink.channel import channel_pair
    from opencbr.engine import Repository
    from opencbr.engine.disk.fixed_index import FixedIndex
    from opencbr.engine.remote import ReadScope, serve_restore
    from opencbr.engine.remote.client import RemoteChunks

    repo = Repository.open(store, "v/", KEY)
    svc, agent = channel_pair(timeout=600)
    out: dict = {}

    def run() -> None:
        kw = {"max_chunk": repo.chunks.codec.max_chunk, "timeout": 600}
        try:
            chunks = RemoteChunks(agent, repo.chunks.keys, protocol=2, **kw)
        except TypeError:  # (code before protocol 2)
            chunks = RemoteChunks(agent, repo.chunks.keys, **kw)
        t0 = time.monotonic()
        index = FixedIndex.read(chunks, "disk")
        out["index_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        chunks.get_chunk(index.digest(0))
        out["first_read_s"] = time.monotonic() - t0
        out["blocks"] = index.block_count
        index.close()
        chunks.close()
        agent.send({"ok": True, "result": {}})

    t = threading.Thread(target=run, daemon=True)
    t.start()
    final = serve_restore(repo, svc, ReadScope(("disk",)), timeout=600)
    t.join()
    if not final.get("ok") or "blocks" not in out:
        raise SystemExit(f"the restore's reads failed: {final}")
    return {**out, "wire_mb": (svc.sent_bytes + svc.received_bytes) / 1e6}


def _child(repo_dir: str, op: str, blocks: int) -> dict:
    from opencbr.storage import open_store

    store = open_store(Path(repo_dir).as_uri())
    return _init(store, blocks) if op == "init" else _restore_reads(store)


def _run(repo: Path, op: str, blocks: int, src: str) -> dict:
    cmd = [sys.executable, __file__, "--child", op, "--repo", str(repo), "--blocks", str(blocks)]
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{op} failed")
    return {"wall": time.monotonic() - t0, "rss_mb": usage.ru_maxrss / 1024, **json.loads(out.decode().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64G,256G,1T")
    ap.add_argument("--workdir", default="/tmp/opencbr-remote-reads")
    ap.add_argument("--src", default=str(REPO_ROOT / "src"), help="the code to measure (a checkout's src)")
    ap.add_argument("--child")
    ap.add_argument("--repo")
    ap.add_argument("--blocks", type=int)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.repo, args.child, args.blocks)))
        return
    units = {"G": 1 << 30, "T": 1 << 40}
    print("| logical size | refs | wall s | index read s | first read s | wire MB | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label in args.sizes.split(","):
        blocks = int(float(label[:-1]) * units[label[-1]]) // BLOCK
        repo = Path(args.workdir) / f"reads-{label}"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        _run(repo, "init", blocks, str(REPO_ROOT / "src"))
        r = _run(repo, "restore reads", blocks, args.src)
        print(f"| {label} | {blocks:,} | {r['wall']:.1f} | {r['index_s']:.1f} | {r['first_read_s']:.1f} | "
              f"{r['wire_mb']:.0f} | {r['rss_mb']:.0f} |", flush=True)
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    main()
