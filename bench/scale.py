#!/usr/bin/env python3
"""Scale benchmark (issue 18): does the data plane's memory stay flat as the data grows?

    python bench/scale.py disk  [--sizes 64G,256G,1T] [--workdir DIR] [--unencrypted]
    python bench/scale.py vault [--chunks 1M,4M,20M] [--workdir DIR]
    python bench/scale.py tree  [--files 100k,1M] [--workdir DIR] [--keep-tree]

Every operation runs in its own process (``_child``) through the real engine path, and is reported with
its wall time, throughput and peak RSS (``wait4``'s ru_maxrss of that process alone); each table ends
with the growth per size step. Sources are generated so that terabytes fit this machine's disk:

- disk: :class:`opencbr.engine.disk.generated.GeneratedDisk`, every 64 KiB block unique and almost all
  zeros (each compresses to a few dozen bytes); a full backup, then an incremental of generation 1 with
  1 % of the blocks changed (spread evenly); each process keeps the vault's chunk index in
  ``<workdir>/scratch-<size>`` as a worker does; then "first sync": a process with an empty scratch
  directory building its index from every index object of the vault (a fresh worker's one-off cost);
- vault: backups of 100,000 tiny unique chunks each (``fill``: 12-byte chunks through the real
  ``WriteSession``, a manifest listing them) until it holds N distinct chunks; then open (the index
  sync and 10,000 look-ups), a small disk backup's commit, verify of that backup, GC after deleting
  backups holding ~30 % of the chunks, and the engine part of a catalog rebuild (every manifest's header,
  the vault's usage). Each process uses ``<workdir>/scratch`` as its scratch directory, where the
  vault's chunk index is kept between processes (chunks/diskindex.py), as on a worker;
- tree: N small files of unique content in 1,000-file directories; first backup, unchanged re-backup,
  restore.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
KEY = bytes(range(32))
_UNITS = {"k": 10**3, "M": 10**6, "G": 2**30, "T": 2**40}
DISK_OPS = ("full", "incr", "sync")  # disk: the full backup, the 1 % incremental, a fresh worker's first sync


def parse_size(text: str) -> int:
    text = text.strip()
    if text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


# -- the measured operations (run in a child process) -------------------------------------------------
def _open(args):
    from opencbr.engine import Repository
    from opencbr.storage import open_store

    store = open_store(Path(args.repo).as_uri())
    if args.op == "init":
        repo = Repository.create(store, "v/", None if args.unencrypted else KEY, encrypted=not args.unencrypted)
    else:
        repo = Repository.open(store, "v/", None if args.unencrypted else KEY)
    if args.spill_dir:
        os.makedirs(args.spill_dir, exist_ok=True)
        repo.chunks.spill_dir = args.spill_dir
    return repo


def _fill(repo, name: str, seed: int, count: int) -> int:
    """A backup of ``count`` tiny unique chunks through the real write path (packs, index objects at
    32,768 records, a manifest listing their digests): the fast way to a vault of millions of chunks."""
    from opencbr.engine.chunks.session import WriteSession

    cs = repo.chunks
    session = WriteSession(cs)
    refs = bytearray()
    try:
        for i in range(count):
            refs += session.put_chunk(b"%d.%d" % (seed, i)).digest
        session.commit(name, {"type": "generated", "chunks": count}, bytes(refs))
    except BaseException:
        session.abort()
        raise
    return count


def _child(args) -> dict:
    from opencbr.engine.disk.generated import GeneratedDisk

    repo = _open(args)
    if args.op == "init":
        return {}
    if args.op == "disk":
        disk = GeneratedDisk(args.size, seed=args.seed, generation=args.generation)
        res = repo.backup_disk(disk, backup_id=args.backup_id, meta={}, parent_backup_id=args.parent)
        return {"new_chunks": res.new_chunks, "changed": res.changed_blocks}
    if args.op == "fill":
        return {"chunks": _fill(repo, args.backup_id, args.seed, args.size)}
    if args.op == "open":
        idx = repo.chunks.reader_index()
        hits = sum(idx.has(repo.chunks.codec.digest(b"%d.%d" % (1, i))) for i in range(10_000))
        return {"records": len(idx), "hits": hits}
    if args.op == "rebuild":
        headers = [repo.read_manifest(name) for name in repo.list_manifests()]
        return {"backups": len(headers), "used_mb": repo.usage() >> 20}
    if args.op == "verify":
        rep = repo.verify(args.backup_id)
        return {"damaged": len(getattr(rep, "damaged", []) or [])}
    if args.op == "delete":
        for name in args.backup_id.split(","):
            repo.delete_backup(name)
        return {}
    if args.op == "gc":
        return {"freed_mb": repo.gc().bytes_freed >> 20}
    if args.op == "tree":
        res = repo.backup_tree(args.root, backup_id=args.backup_id, meta={}, parent_backup_id=args.parent)
        return {"files": getattr(res, "files", None)}
    if args.op == "restore":
        repo.restore(args.backup_id, args.root)
        return {}
    raise SystemExit(f"unknown op {args.op}")


def run_op(repo: Path, op: str, *, unencrypted: bool = False, **kw) -> dict:
    """One operation in a fresh process: its wall time, peak RSS (MB) and what it returned."""
    cmd = [sys.executable, __file__, "_child", "--repo", str(repo), "--op", op]
    if unencrypted:
        cmd.append("--unencrypted")
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"{op} failed ({proc.returncode})")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "load": os.getloadavg()[0],
            **json.loads(out.decode().strip().splitlines()[-1])}


# -- the benchmarks ---------------------------------------------------------------------------------------
def _table(title: str, head: list[str], rows: list[list]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


def _growth(prev: dict | None, cur: dict, key: str) -> str:
    return "-" if prev is None else f"{(cur[key] / prev[key] - 1) * 100:+.1f} %"


def bench_disk(work: Path, sizes: list[str], unencrypted: bool, ops: tuple[str, ...] = DISK_OPS) -> None:
    rows, prev = [], {}
    for label in sizes:
        size = parse_size(label)
        repo, scratch = work / f"disk-{label}", work / f"scratch-{label}"
        for p in (repo, scratch):
            shutil.rmtree(p, ignore_errors=True)
        # Like a worker, every process keeps the vault's chunk index in the scratch directory (without
        # one, each process would first rebuild it from every index object of the vault: a cost of the
        # vault's size, paid once per worker, measured apart below as "first sync").
        run_op(repo, "init", unencrypted=unencrypted, spill_dir=scratch)
        for kind, kw in (("full", {"generation": 0}), ("incr 1 %", {"generation": 1, "parent": "full"})):
            if kind.split()[0] not in ops:
                continue
            r = run_op(repo, "disk", unencrypted=unencrypted, size=size, backup_id=kind.split()[0],
                       spill_dir=scratch, **kw)
            r["mibs"] = size / r["wall"] / 2**20
            # MiB per CPU second: what the wall figure would be alone on the machine, given the CPUs
            # (on a shared machine the wall time measures the others too).
            r["mib_per_cpu_s"] = size / r["cpu"] / 2**20
            rows.append([label, kind, f"{r['wall']:.1f}", f"{r['mibs']:.0f}", f"{r['cpu']:.0f}",
                         f"{r['mib_per_cpu_s']:.0f}", f"{r['load']:.1f}", f"{r['rss_mb']:.0f}",
                         _growth(prev.get(kind), r, "rss_mb"), _growth(prev.get(kind), r, "mibs"),
                         _growth(prev.get(kind), r, "mib_per_cpu_s"), r["new_chunks"]])
            prev[kind] = r
            print(rows[-1], flush=True)
        # A fresh worker's first look at this vault: its chunk index built from every index object.
        fresh = work / f"scratch-{label}-fresh"
        if "sync" in ops:
            shutil.rmtree(fresh, ignore_errors=True)
            r = run_op(repo, "open", unencrypted=unencrypted, spill_dir=fresh)
            rows.append([label, "first sync", f"{r['wall']:.1f}", "", f"{r['cpu']:.0f}", "", f"{r['load']:.1f}",
                         f"{r['rss_mb']:.0f}", _growth(prev.get("first sync"), r, "rss_mb"), "", "", ""])
            prev["first sync"] = r
            print(rows[-1], flush=True)
        for p in (repo, scratch, fresh):
            shutil.rmtree(p, ignore_errors=True)
    _table("Disk backups of generated disks (64 KiB blocks, every block unique)",
           ["logical size", "backup", "wall s", "MiB/s", "cpu s", "MiB per cpu s", "load avg at end",
            "peak RSS MB", "RSS vs previous size", "MiB/s vs previous size", "MiB per cpu s vs previous",
            "new chunks"], rows)


def bench_vault(work: Path, counts: list[str], unencrypted: bool) -> None:
    rows, prev = [], None
    per_backup = 100_000  # chunks per generated backup (the largest manifest, read whole, stays the same)
    for label in counts:
        n = parse_size(label)
        repo, scratch = work / f"vault-{label}", work / f"scratch-{label}"
        for p in (repo, scratch):
            shutil.rmtree(p, ignore_errors=True)
        kw = {"unencrypted": unencrypted, "spill_dir": scratch}
        run_op(repo, "init", **kw)
        names = []
        t0 = time.monotonic()
        for seed in range(1, -(-n // per_backup) + 1):
            names.append(f"g{seed}")
            run_op(repo, "fill", size=min(per_backup, n - (seed - 1) * per_backup), seed=seed, backup_id=names[-1], **kw)
        print(f"{label}: filled in {time.monotonic() - t0:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        cur = {"open": run_op(repo, "open", **kw),
               "commit": run_op(repo, "disk", size=64 << 20, seed=10**6, backup_id="small", **kw),
               "verify": run_op(repo, "verify", backup_id="small", **kw)}
        garbage = names[:max(1, round(len(names) * 0.3))] if len(names) > 1 else []
        if garbage:
            run_op(repo, "delete", backup_id=",".join(garbage), **kw)
        cur["gc"] = run_op(repo, "gc", **kw)
        cur["rebuild"] = run_op(repo, "rebuild", **kw)
        for op, r in cur.items():
            rows.append([label, op, f"{r['wall']:.1f}", f"{r['rss_mb']:.0f}",
                         "-" if prev is None else _growth(prev[op], r, "rss_mb"),
                         "-" if prev is None else _growth(prev[op], r, "wall"), f"{r['load']:.1f}"])
            print(rows[-1], flush=True)
        prev = cur
        for p in (repo, scratch):
            shutil.rmtree(p, ignore_errors=True)
    _table("Vault operations by distinct chunks", ["chunks", "op", "wall s", "peak RSS MB", "RSS vs previous",
                                                   "time vs previous", "load avg"], rows)


def _make_tree(root: Path, files: int) -> None:
    for i in range(files):
        d = root / f"d{i // 1000:05d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"f{i:07d}").write_bytes(b"file %d\n" % i)


def bench_tree(work: Path, counts: list[str], unencrypted: bool, keep_tree: bool = False) -> None:
    rows, prev = [], {}
    for label in counts:
        n = parse_size(label)
        src, repo, dst = work / f"tree-{label}", work / f"tree-repo-{label}", work / f"tree-out-{label}"
        for p in (repo, dst) if keep_tree and src.exists() else (src, repo, dst):
            shutil.rmtree(p, ignore_errors=True)
        if not src.exists():
            _make_tree(src, n)
        run_op(repo, "init", unencrypted=unencrypted)
        ops = (("first backup", "tree", {"root": src, "backup_id": "t1"}),
               ("unchanged re-backup", "tree", {"root": src, "backup_id": "t2", "parent": "t1"}),
               ("restore", "restore", {"root": dst, "backup_id": "t2"}))
        for name, op, kw in ops:
            r = run_op(repo, op, unencrypted=unencrypted, **kw)
            rows.append([label, name, f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['rss_mb']:.0f}",
                         _growth(prev.get(name), r, "rss_mb")])
            prev[name] = r
            print(rows[-1], flush=True)
        for p in (repo, dst) if keep_tree else (src, repo, dst):
            shutil.rmtree(p, ignore_errors=True)
    _table("File trees by number of files", ["files", "op", "wall s", "cpu s", "peak RSS MB", "RSS vs previous"],
           rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["disk", "vault", "tree", "_child"])
    ap.add_argument("--sizes", default="64G,256G,1T")
    ap.add_argument("--chunks", default="1M,4M,20M")
    ap.add_argument("--files", default="100k,1M")
    ap.add_argument("--workdir", default="/tmp/opencbr-scale")
    ap.add_argument("--unencrypted", action="store_true")
    ap.add_argument("--ops", default=",".join(DISK_OPS), help="disk: which of full,incr,sync to run "
                    "(incr needs full)")
    ap.add_argument("--keep-tree", action="store_true", help="tree: keep (and reuse) the generated source trees")
    # (_child only)
    ap.add_argument("--repo")
    ap.add_argument("--op")
    ap.add_argument("--size", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--generation", type=int, default=0)
    ap.add_argument("--backup-id")
    ap.add_argument("--parent")
    ap.add_argument("--root")
    ap.add_argument("--spill-dir")
    args = ap.parse_args()
    if args.what == "_child":
        print(json.dumps(_child(args)))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    {"disk": lambda: bench_disk(work, args.sizes.split(","), args.unencrypted, tuple(args.ops.split(","))),
     "vault": lambda: bench_vault(work, args.chunks.split(","), args.unencrypted),
     "tree": lambda: bench_tree(work, args.files.split(","), args.unencrypted, args.keep_tree)}[args.what]()


if __name__ == "__main__":
    main()
