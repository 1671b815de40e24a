#!/usr/bin/env python3
"""Disk benchmark: OpenCBR vs restic vs borg on the same data, in the same run, timed the same way.

    python bench/disk.py [--size 2G] [--workdir /tmp/opencbr-bench] [--only opencbr] [--keep]
    python bench/disk.py blocksize [--size 2G]     # the block-size study behind DEFAULT_BLOCK_SIZE
    python bench/disk.py memcheck [--copies 4]     # peak RSS at 1x and 4x the disk size

What it does (every tool on the same data, timed the same way):
  1. ``make_dataset.py disk`` builds a VM-like disk image (seed 1);
  2. full backup with every tool; 3. ``make_dataset.py mutate --percent 5 --seed 2`` (in place);
  4. incremental backup with every tool; 5. restore the incremental with every tool and compare.
Before each timed operation: ``sync`` and drop the page cache (root). Each operation runs under
``/usr/bin/time -v`` (wall time, max RSS). "restore+fsync" adds the time of a ``sync`` right after the
restore (OpenCBR fsyncs the target itself, restic and borg do not). Repository growth is ``du -sb``.

Like with like: OpenCBR encrypted vs restic (always encrypted) and borg ``repokey-blake2``; OpenCBR
unencrypted vs borg ``-e none``. borg and restic are installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_DIR = Path(os.environ.get("OPENCBR_BENCH_DATASET_DIR", REPO_ROOT / "bench"))
PY = sys.executable
KEY_HEX = "42" * 32


@dataclass
class Op:
    wall: float
    rss_mb: float


@dataclass
class Tool:
    name: str
    like: str  # "enc" or "none"
    repo: Path
    ops: dict[str, Op] = field(default_factory=dict)
    size_full: int = 0
    size_incr: int = 0
    sync_after_restore: float = 0.0
    verified: str = "-"


def sh(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, shell=isinstance(cmd, str), **kw)


def settle(img: Path, seconds: float = 10.0) -> None:
    """After writing GBs (dataset, mutation) let the device finish its writeback, then read the image
    once (untimed): on this VM the first cold read of a freshly written image ran ~3x slower whichever
    tool came first (measured by swapping the order), so without this the first tool pays for it."""
    os.sync()
    time.sleep(seconds)
    drop_caches()
    with open(img, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> Op:
    drop_caches()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, *cmd], cwd=cwd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = Path(tf.name).read_text()
    if p.returncode != 0:
        raise SystemExit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    wall = _parse_wall(re.search(r"Elapsed \(wall clock\) time.*: (\S+)", out).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out).group(1)) / 1024
    return Op(wall, rss)


def _parse_wall(s: str) -> float:
    t = 0.0
    for part in s.split(":"):
        t = t * 60 + float(part)
    return t


def du(p: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(p)], check=True, capture_output=True, text=True).stdout.split()[0])


def ensure_peers() -> None:
    missing = [pkg for pkg, exe in (("restic", "restic"), ("borgbackup", "borg")) if not shutil.which(exe)]
    if missing:
        print(f"installing {missing} with apt-get", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh(["apt-get", "update", "-qq"], env=env)
        sh(["apt-get", "install", "-y", "-qq", *missing], env=env)


def peer_env(work: Path) -> dict:
    return dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(work / "cache/restic"),
                BORG_PASSPHRASE="bench", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_CACHE_DIR=str(work / "cache/borg"),
                BORG_BASE_DIR=str(work / "cache/borgbase"))


def opencbr_cmd(t: Tool, *args: str) -> list[str]:
    return [PY, "-m", "opencbr.engine", "--store", t.repo.as_uri(), "--prefix", "vault",
            "--key-hex", KEY_HEX, *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="run", choices=["run", "blocksize", "memcheck", "_memchild"])
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--reverse", action="store_true", help="time the tools in reverse order")
    ap.add_argument("--op", default="")
    ap.add_argument("--repo", default="")
    ap.add_argument("--image", default="")
    ap.add_argument("--size", default="2G")
    ap.add_argument("--workdir", default="/tmp/opencbr-bench")
    ap.add_argument("--only", choices=["opencbr", "all"], default="all")
    ap.add_argument("--keep", action="store_true", help="keep repositories and data afterwards")
    ap.add_argument("--repeat", type=int, default=1, help="run everything N times, report medians")
    ap.add_argument("--pause-page-reporting", action="store_true",
                    help="pause the VM's free page reporting for the run (root; put back after it): with it on, "
                    "each cold read costs 0.3 or 2.5 s of kernel CPU at random (bench/page_reporting.py)")
    a = ap.parse_args()
    work = Path(a.workdir)
    data = work / "data"
    if a.what == "blocksize":
        return blocksize_study(work, a.size)
    if a.what == "_memchild":
        return memchild(a)
    if a.what == "memcheck":
        return memcheck(work, a.size, a.copies)
    import page_reporting  # (bench/, beside this script)

    runs = []
    with page_reporting.watched(a.pause_page_reporting) as reporting:
        for r in range(a.repeat):
            if a.repeat > 1:
                print(f"==== run {r + 1} of {a.repeat}", flush=True)
            tools, size = run_once(a, work, data)
            runs.append(tools)
    print_table(median_tools(runs), size, a.size + (f", median of {a.repeat} runs" if a.repeat > 1 else ""))
    print(reporting.summary())
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


def median_tools(runs: list[list[Tool]]) -> list[Tool]:
    """Per tool and metric, the median over the runs (this VM shares its 2 cores with other jobs)."""
    import statistics

    out = []
    for i, first in enumerate(runs[0]):
        same = [run[i] for run in runs]
        t = Tool(first.name, first.like, first.repo)
        for op in first.ops:
            t.ops[op] = Op(statistics.median(x.ops[op].wall for x in same), max(x.ops[op].rss_mb for x in same))
        t.size_full = int(statistics.median(x.size_full for x in same))
        t.size_incr = int(statistics.median(x.size_incr for x in same))
        t.sync_after_restore = statistics.median(x.sync_after_restore for x in same)
        t.verified = "OK" if all(x.verified == "OK" for x in same) else "DIFFERS"
        out.append(t)
    return out


def run_once(a, work: Path, data: Path) -> tuple[list[Tool], int]:
    if work.exists():
        shutil.rmtree(work)
    data.mkdir(parents=True)
    (work / "repos").mkdir()
    env_src = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    penv = peer_env(work)

    tools = [Tool("opencbr-enc", "enc", work / "repos/opencbr-enc"),
             Tool("opencbr-none", "none", work / "repos/opencbr-none")]
    if a.only == "all":
        ensure_peers()
        tools += [Tool("restic", "enc", work / "repos/restic"),
                  Tool("borg-blake2", "enc", work / "repos/borg-blake2"),
                  Tool("borg-none", "none", work / "repos/borg-none")]
        print("restic:", subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip())
        print("borg:", subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.strip())
    if a.reverse:
        tools.reverse()
    img = data / "disk.img"
    sh([PY, str(DATASET_DIR / "make_dataset.py"), "disk", str(img), "--size", a.size, "--seed", "1"])
    size = img.stat().st_size
    settle(img)

    for t in tools:  # init (untimed)
        if t.name == "opencbr-enc":
            sh(opencbr_cmd(t, "init"), env=env_src, stdout=subprocess.DEVNULL)
        elif t.name == "opencbr-none":
            sh(opencbr_cmd(t, "init", "--no-encrypt"), env=env_src, stdout=subprocess.DEVNULL)
        elif t.name == "restic":
            sh(["restic", "-q", "-r", str(t.repo), "init"], env=penv, stdout=subprocess.DEVNULL)
        elif t.name == "borg-blake2":
            sh(["borg", "init", "-e", "repokey-blake2", str(t.repo)], env=penv)
        elif t.name == "borg-none":
            sh(["borg", "init", "-e", "none", str(t.repo)], env=penv)

    def backup(t: Tool, op: str) -> None:
        if t.name.startswith("opencbr"):
            args = ["disk", "backup", str(img), "--id", op] + (["--parent", "full"] if op == "incr" else [])
            t.ops[op] = timed(opencbr_cmd(t, *args), env=env_src)
        elif t.name == "restic":
            t.ops[op] = timed(["restic", "-q", "-r", str(t.repo), "backup", "--host", "bench", "disk.img"],
                              cwd=data, env=penv)
        else:
            t.ops[op] = timed(["borg", "create", "--compression", "zstd,3", f"{t.repo}::{op}", "disk.img"],
                              cwd=data, env=penv)
        setattr(t, "size_full" if op == "full" else "size_incr", du(t.repo))
        o = t.ops[op]
        print(f"  {t.name:13s} {op:7s} {o.wall:6.2f} s  {size / 1e6 / o.wall:7.1f} MB/s  rss {o.rss_mb:6.1f} MB  "
              f"repo {du(t.repo) / 1e6:8.1f} MB", flush=True)

    print(f"== full backups of {img} ({size} bytes)", flush=True)
    for t in tools:
        backup(t, "full")
    sh([PY, str(DATASET_DIR / "make_dataset.py"), "mutate", str(img), "--percent", "5", "--seed", "2"])
    settle(img)
    print("== incremental backups after the mutation", flush=True)
    for t in tools:
        backup(t, "incr")
    print("== restores of the incremental", flush=True)
    for t in tools:
        dst = work / "restore" / t.name
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        if t.name.startswith("opencbr"):
            out = dst / "disk.img"
            t.ops["restore"] = timed(opencbr_cmd(t, "disk", "restore", "incr", str(out)), env=env_src)
        elif t.name == "restic":
            t.ops["restore"] = timed(["restic", "-q", "-r", str(t.repo), "restore", "latest", "--target", str(dst)],
                                     env=penv)
            out = next(dst.rglob("disk.img"))
        else:
            t.ops["restore"] = timed(["borg", "extract", f"{t.repo}::incr"], cwd=dst, env=penv)
            out = next(dst.rglob("disk.img"))
        t0 = time.monotonic()
        os.sync()  # what the tool left unwritten
        t.sync_after_restore = time.monotonic() - t0
        t.verified = "OK" if subprocess.run(["cmp", "-s", str(out), str(img)]).returncode == 0 else "DIFFERS"
        o = t.ops["restore"]
        print(f"  {t.name:13s} restore {o.wall:6.2f} s (+sync {t.sync_after_restore:.2f} s)  rss {o.rss_mb:6.1f} MB  "
              f"verify {t.verified}", flush=True)
        shutil.rmtree(dst)
    if not a.keep:
        shutil.rmtree(work / "repos", ignore_errors=True)
    return tools, size




def print_table(tools: list[Tool], size: int, label: str) -> None:
    by = {t.name: t for t in tools}

    def ratio(mine: float, peer: Tool | None, key) -> str:
        if peer is None:
            return "-"
        theirs = key(peer)
        if not mine or not theirs:
            return "-"
        return f"{theirs / mine:.2f}x"

    metrics = [
        ("full backup (s)", lambda t: t.ops["full"].wall),
        ("incremental (s)", lambda t: t.ops["incr"].wall),
        ("restore (s)", lambda t: t.ops["restore"].wall),
        ("restore+fsync (s)", lambda t: t.ops["restore"].wall + t.sync_after_restore),
        ("repo after full (MB)", lambda t: t.size_full / 1e6),
        ("repo growth (MB)", lambda t: (t.size_incr - t.size_full) / 1e6),
        ("peak RSS (MB)", lambda t: max(o.rss_mb for o in t.ops.values())),
    ]
    print()
    print(f"Disk benchmark, {label} image ({size} bytes); ratios = peer / OpenCBR (higher is better for OpenCBR)")
    header = ["metric"] + [t.name for t in tools]
    rows = [[m] + [f"{f(t):.2f}" if "MB" not in m else f"{f(t):.1f}" for t in tools] for m, f in metrics]
    rows.append(["full MB/s"] + [f"{size / 1e6 / t.ops['full'].wall:.0f}" for t in tools])
    rows.append(["restore verified"] + [t.verified for t in tools])
    _print_rows(header, rows)
    peers = [("restic", by.get("restic")), ("borg-blake2", by.get("borg-blake2")), ("borg-none", by.get("borg-none"))]
    ratio_rows = []
    for mine_name in ("opencbr-enc", "opencbr-none"):
        mine = by.get(mine_name)
        if mine is None:
            continue
        for pname, peer in peers:
            if peer is None or (mine.like == "enc" and pname == "borg-none") or \
                    (mine.like == "none" and pname == "borg-blake2"):
                continue
            ratio_rows.append([f"{mine_name} vs {pname}"] + [ratio(f(mine), peer, f) for _, f in metrics])
    if ratio_rows:
        print()
        _print_rows(["comparison"] + [m for m, _ in metrics], ratio_rows)


def _print_rows(header: list[str], rows: list[list[str]]) -> None:
    w = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(header)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |")


def blocksize_study(work: Path, size: str) -> None:
    """For each block size: chunks and stored bytes of the full backup, and what the mutation adds
    (new distinct chunks, zstd-1 compressed, +40 bytes record/index overhead each)."""
    import blake3
    import zstandard

    data = work / "blocksize"
    data.mkdir(parents=True, exist_ok=True)
    base, mut = data / "base.img", data / "mut.img"
    sh([PY, str(DATASET_DIR / "make_dataset.py"), "disk", str(base), "--size", size, "--seed", "1"])
    shutil.copyfile(base, mut)
    sh([PY, str(DATASET_DIR / "make_dataset.py"), "mutate", str(mut), "--percent", "5", "--seed", "2"])
    z = zstandard.ZstdCompressor(level=1)

    def blocks(path: Path, bs: int):
        with open(path, "rb", buffering=0) as f:
            while True:
                seg = f.read(8 << 20)
                if not seg:
                    return
                for i in range(0, len(seg), bs):
                    yield seg[i:i + bs]

    print("| block | chunks (full) | stored full MB | new chunks (incr) | growth MB | index per backup MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for bs in (16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20, 4 << 20):
        zero = bytes(bs)
        seen: set[bytes] = set()
        stored = 0
        for b in blocks(base, bs):
            if b == zero:
                continue
            d = blake3.blake3(b).digest()
            if d not in seen:
                seen.add(d)
                stored += min(len(z.compress(b)), bs) + 40
        nfull = len(seen)
        grow = nnew = 0
        for b in blocks(mut, bs):
            if b == zero:
                continue
            d = blake3.blake3(b).digest()
            if d not in seen:
                seen.add(d)
                nnew += 1
                grow += min(len(z.compress(b)), bs) + 40
        print(f"| {bs >> 10} KiB | {nfull} | {stored / 1e6:.1f} | {nnew} | {grow / 1e6:.1f} | "
              f"{base.stat().st_size / bs * 32 / 1e6:.2f} |", flush=True)
    shutil.rmtree(data)


class RepeatedImage:
    """A DiskSource that presents ``copies`` back-to-back copies of an image, each block of copy k>0
    altered in its first 8 bytes (so no block deduplicates against another copy, and compressibility
    and zero blocks stay those of the benchmark image). It lets the memory check run a 4x larger disk
    without 4x the free space for the source image."""

    def __init__(self, path: str, copies: int, block: int = 64 << 10):
        self.fd = os.open(path, os.O_RDONLY)
        self.base = os.fstat(self.fd).st_size
        self.size = self.base * copies
        self.block = block

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            k, off = divmod(offset, self.base)
            n = min(length, self.base - off)
            buf = bytearray(os.pread(self.fd, n, off))
            if k:
                for b in range(-(-off // self.block) * self.block - off, len(buf), self.block):
                    if any(buf[b:b + 8]):
                        buf[b:b + 8] = (int.from_bytes(buf[b:b + 8], "little") ^ k).to_bytes(8, "little")
            out += buf
            offset += n
            length -= n
        return bytes(out)

    def data_extents(self):
        yield 0, self.size

    def close(self) -> None:
        os.close(self.fd)


def memchild(a) -> None:
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from opencbr.engine import Repository
    from opencbr.storage import open_store

    store = open_store(Path(a.repo).as_uri())
    if a.op == "init":
        Repository.create(store, "vault", None, encrypted=False)
        return
    repo = Repository.open(store, "vault", None)
    if a.op == "backup":
        src = RepeatedImage(a.image, a.copies)
        r = repo.backup_disk(src, backup_id=f"x{a.copies}", meta={})
        print(f"backup {src.size} bytes, {r.new_chunks} chunks, {r.duration:.1f} s", file=sys.stderr)
    elif a.op == "verify":
        rep = repo.verify(f"x{a.copies}")
        assert rep.ok, rep
        print(f"verify {rep.chunks_checked} chunks, {rep.duration:.1f} s", file=sys.stderr)


def memcheck(work: Path, size: str, copies: int) -> None:
    """Peak RSS of backup and verify of the benchmark image, once as it is and once as a disk
    ``copies`` times larger (RepeatedImage), unencrypted repository (what grows with the disk is the
    same either way: chunks, index, fixed index)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    img = work / "disk.img"
    sh([PY, str(DATASET_DIR / "make_dataset.py"), "disk", str(img), "--size", size, "--seed", "1"])
    rows = []
    for c in (1, copies):
        repo = work / f"repo{c}"
        base = [PY, __file__, "_memchild", "--repo", str(repo), "--image", str(img), "--copies", str(c)]
        sh(base + ["--op", "init"])
        for op in ("backup", "verify"):
            o = timed(base + ["--op", op])
            rows.append([f"{c}x ({c * img.stat().st_size / 2**30:.0f} GiB)", op, f"{o.wall:.1f}", f"{o.rss_mb:.0f}"])
            print(rows[-1], flush=True)
        shutil.rmtree(repo)
    _print_rows(["disk", "op", "wall s", "peak RSS MB"], rows)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
