#!/usr/bin/env python3
"""File-tree benchmark: OpenCBR vs restic vs borg on the same data, in the same run (issue 5).

Data: ``bench/make_dataset.py tree`` (deterministic; 30,000 files, 1.5 GiB ~
1.6 GB), then ``mutate-tree``. Every timed operation runs as its own process under
``/usr/bin/time -v`` after ``sync`` + dropping the page cache (as ``peers.sh`` does), and reports wall
seconds, CPU seconds, peak RSS, the peak total PSS of all its processes (sampled every 20 ms) and
the repository size (``du -sb``) afterwards. For an OpenCBR restore in several processes "peak RSS"
is the sum of every process's peak (``time`` alone reports the biggest one).

Operations per tool: first backup, unchanged re-backup, changed re-backup (after ``mutate-tree``),
full restore of the changed backup (checked with ``diff -r --no-dereference``).

Variants: ``opencbr`` (encrypted, AES-256-GCM) and ``opencbr-plain`` (unencrypted) through
``python -m opencbr.engine tree ...``; ``restic`` (always encrypted); ``borg-blake2`` (repokey-blake2) and
``borg-none`` (unencrypted), both ``--compression zstd,3`` like peers.sh. Ratios: encrypted OpenCBR
against restic and borg-blake2; unencrypted OpenCBR against borg-none.

    python bench/tree.py                       # 30k files, everything, table at the end
    python bench/tree.py --files 3000 --total 150M --variants "opencbr restic"
    python bench/tree.py --scale 30000,300000 --variants opencbr   # flat-memory check (RSS vs files)

restic and borg are apt-get installed when missing (root). Results: ``$B/results.tsv``, plus the table
printed as markdown.

Restores are timed twice: ``restore`` as peers.sh times it (the peers return with the data still in
the page cache, OpenCBR runs with ``--no-sync`` to match) and ``restore+sync`` until the data is on
disk (OpenCBR's default ``syncfs``; the peers followed by ``sync``).

Measured figures, and what the time goes to, are in bench/README.md (2-core VM, restic 0.14.0, borg
1.2.4; single runs vary by +-20%, so compare tools within one run).
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
DATASET_DIR = Path(os.environ.get("OPENCBR_BENCH_DATASET_DIR", REPO_ROOT / "bench"))
PY = os.environ.get("PY", sys.executable)
KEY_HEX = "11" * 32
OPS = ["first", "unchanged", "changed", "restore", "restore+sync"]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(variants: list[str]) -> None:
    need = []
    if any(v.startswith("restic") for v in variants) and not shutil.which("restic"):
        need.append("restic")
    if any(v.startswith("borg") for v in variants) and not shutil.which("borg"):
        need.append("borgbackup")
    if not os.path.exists("/usr/bin/time"):
        need.append("time")
    if need:
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def drop_caches(enabled: bool) -> None:
    os.sync()
    if enabled:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            pass


def du(path: Path) -> int:
    if not path.exists():
        return 0
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def _pss_kb(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def run_sampled(cmd: list[str], *, cwd: Path, env: dict, stdout) -> tuple[int, int]:
    """Run ``cmd``; return (exit status, peak total PSS in KiB of it and all its descendants, sampled
    every 20 ms). PSS counts a page shared by n processes as 1/n in each, so a forked restore's
    parts are not charged twice for what they share with their parent (the sum of their RSS is)."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stdout)
    peak = 0
    while p.poll() is None:
        peak = max(peak, _pss_kb(_descendants(p.pid)))  # (not the `time` process itself)
        time.sleep(0.02)
    return p.returncode, peak


def timed(cmd: list[str], *, cwd: Path, env: dict, drop: bool, log: Path) -> dict:
    tf = log.with_suffix(".time")
    drop_caches(drop)
    with open(log, "w") as lf:
        rc, pss_kb = run_sampled(["/usr/bin/time", "-v", "-o", str(tf), *cmd], cwd=cwd, env=env, stdout=lf)
    if rc != 0:
        print(f"FAILED ({rc}): {' '.join(cmd)}\n" + log.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(1)
    out = {"pss_mb": pss_kb / 1024}
    for line in tf.read_text().splitlines():
        k, _, v = line.strip().partition(": ")
        if k.startswith("Elapsed (wall clock)"):
            s = 0.0
            for part in v.split(":"):
                s = s * 60 + float(part)
            out["wall"] = s
        elif k == "User time (seconds)":
            out["user"] = float(v)
        elif k == "System time (seconds)":
            out["sys"] = float(v)
        elif k == "Maximum resident set size (kbytes)":
            out["rss_mb"] = int(v) / 1024
    # An OpenCBR restore in several processes: ``time`` reports the biggest one; count them all (the sum
    # of every process's peak, which counts the pages the forked parts share with the parent twice).
    text = log.read_text()
    try:
        res = json.loads(text[text.rfind("\n{") + 1:] if "\n{" in text else text)
    except ValueError:
        res = None
    if isinstance(res, dict) and res.get("parts_peak_rss"):
        out["rss_mb"] = (res["peak_rss_self"] + sum(res["parts_peak_rss"])) / (1 << 20)
    return out


class Tool:
    def __init__(self, variant: str, work: Path, data_parent: Path):
        # "opencbr@AVG,MIN,MAX" (KiB) / "opencbr-plain@..." / "opencbr%LEVEL": chunking or zstd experiments
        self.v = variant
        base, _, self.chunks = variant.partition("@")
        base, _, self.level = base.partition("%")
        self.kind = base
        self.repo = work / "repos" / variant
        self.data_parent = data_parent
        self.env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(work / "cache" / "restic"),
                        BORG_PASSPHRASE="bench", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_CACHE_DIR=str(work / "cache" / f"borg-{variant}"),
                        BORG_BASE_DIR=str(work / "cache" / f"borgbase-{variant}"), OPENCBR_MASTER_KEY=KEY_HEX,
                        PYTHONPATH=str(REPO_ROOT / "src"))
        self.prev: str | None = None

    def ocbr(self, *args: str) -> list[str]:
        return [PY, "-m", "opencbr.engine", "--store", self.repo.as_uri(), "--prefix", "v", *args]

    def init(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)
        for k in ("RESTIC_CACHE_DIR", "BORG_CACHE_DIR", "BORG_BASE_DIR"):  # fresh caches, as on a new machine
            if k != "RESTIC_CACHE_DIR" or self.v == "restic":
                shutil.rmtree(self.env[k], ignore_errors=True)
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        if self.v == "restic":
            sh(["restic", "-q", "-r", str(self.repo), "init"], env=self.env, stdout=subprocess.DEVNULL)
        elif self.v == "borg-none":
            sh(["borg", "init", "-e", "none", str(self.repo)], env=self.env)
        elif self.v == "borg-blake2":
            sh(["borg", "init", "-e", "repokey-blake2", str(self.repo)], env=self.env)
        elif self.kind == "opencbr":
            sh(self.ocbr("init"), env=self.env, stdout=subprocess.DEVNULL)
        elif self.kind == "opencbr-plain":
            sh(self.ocbr("init", "--no-encrypt"), env=self.env, stdout=subprocess.DEVNULL)
        else:
            raise SystemExit(f"unknown variant {self.v}")

    def backup_cmd(self, name: str) -> list[str]:
        if self.v == "restic":
            return ["restic", "-q", "-r", str(self.repo), "backup", "--host", "bench", "tree"]
        if self.v.startswith("borg"):
            return ["borg", "create", "--compression", "zstd,3", f"{self.repo}::{name}", "tree"]
        cmd = self.ocbr("tree", "backup", str(self.data_parent / "tree"), "--id", name)
        if self.chunks:
            cmd += ["--chunks", self.chunks]
        if self.level:
            cmd += ["--zstd-level", self.level]
        if self.prev:
            cmd += ["--parent", self.prev]
        return cmd

    def restore_cmd(self, name: str, dst: Path, durable: bool = False) -> tuple[list[str], Path, Path]:
        """(command, cwd, where the restored 'tree' directory ends up). Not ``durable``: as peers.sh
        times it -- restic and borg return with the restored data still in the page cache, and
        OpenCBR runs with ``--no-sync`` to match. ``durable``: until the data is on disk -- OpenCBR's
        default (its own ``syncfs``), the peers followed by ``sync``."""
        if self.v == "restic":
            cmd = ["restic", "-q", "-r", str(self.repo), "restore", "latest", "--target", str(dst)]
        elif self.v.startswith("borg"):
            cmd = ["borg", "extract", f"{self.repo}::{name}"]
        else:
            cmd = self.ocbr("tree", "restore", name, str(dst / "tree"), *([] if durable else ["--no-sync"]))
            return cmd, dst, dst / "tree"
        if durable:
            cmd = ["sh", "-c", '"$@" && sync', "sh", *cmd]
        return cmd, dst, dst / "tree"


def recorder(tool: Tool, results: list[dict]):
    """rec(op, r): note one timed operation of ``tool`` (with the repository's size now) and print it."""
    def rec(op: str, r: dict) -> None:
        r.update(tool=tool.v, op=op, repo_bytes=du(tool.repo))
        results.append(r)
        print(f"  {tool.v:14s} {op:10s} wall {r['wall']:7.2f}s  cpu {r['user'] + r['sys']:7.2f}s  "
              f"rss {r['rss_mb']:7.1f} MB  pss {r['pss_mb']:7.1f} MB  repo {r['repo_bytes'] / 1e6:9.1f} MB",
              flush=True)
    return rec


def run_tool(tool: Tool, work: Path, data: Path, drop: bool, results: list[dict], ops: list[str]) -> None:
    rec = recorder(tool, results)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    if "first" in ops:
        tool.init()
        rec("first", timed(tool.backup_cmd("first"), cwd=data, env=tool.env, drop=drop, log=logs / f"{tool.v}-first.log"))
        tool.prev = "first"
    if "unchanged" in ops:
        rec("unchanged", timed(tool.backup_cmd("unchanged"), cwd=data, env=tool.env, drop=drop,
                               log=logs / f"{tool.v}-unchanged.log"))
        tool.prev = "unchanged"


def run_after_mutation(tool: Tool, work: Path, data: Path, drop: bool, results: list[dict], ops: list[str]) -> None:
    rec = recorder(tool, results)
    logs = work / "logs"
    if "changed" in ops:
        rec("changed", timed(tool.backup_cmd("incr"), cwd=data, env=tool.env, drop=drop, log=logs / f"{tool.v}-changed.log"))
        tool.prev = "incr"
    for op in ("restore", "restore+sync"):
        if op not in ops:
            continue
        dst = work / "restore" / f"{tool.v}-{op}"
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        cmd, cwd, got = tool.restore_cmd("incr", dst, durable=op == "restore+sync")
        rec(op, timed(cmd, cwd=cwd, env=tool.env, drop=drop, log=logs / f"{tool.v}-{op}.log"))
        diff = subprocess.run(["diff", "-rq", "--no-dereference", str(data / "tree"), str(got)],
                              capture_output=True, text=True)
        print(f"  {tool.v:14s} verify     {'OK (diff -r)' if diff.returncode == 0 else 'DIFFERENCES'}")
        if diff.returncode != 0:
            print(diff.stdout[:2000])
        # Kept until the end of the run (see TRASH).


def table(results: list[dict], input_bytes: int) -> str:
    by = {(r["tool"], r["op"]): r for r in results}
    order = ["opencbr", "opencbr-plain", "restic", "borg-blake2", "borg-none"]
    tools = sorted({r["tool"] for r in results}, key=lambda t: (order.index(t) if t in order else 1.5, t))
    lines = ["| tool | op | wall s | MB/s | cpu s | peak RSS MB | peak PSS MB | repo MB | vs restic | vs borg |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in tools:
        peer_borg = "borg-none" if t.startswith("opencbr-plain") else "borg-blake2"
        for op in OPS:
            r = by.get((t, op))
            if r is None:
                continue
            ratios = []
            for peer in ("restic", peer_borg):
                pr = by.get((peer, op))
                ratios.append(f"{pr['wall'] / r['wall']:.2f}x faster" if pr and t.startswith("opencbr") else "")
            mbps = input_bytes / 1e6 / r["wall"] if op in ("first", "restore", "restore+sync") else 0
            lines.append(f"| {t} | {op} | {r['wall']:.2f} | {mbps:.0f} | {r['user'] + r['sys']:.2f} | "
                         f"{r['rss_mb']:.0f} | {r['pss_mb']:.0f} | {r['repo_bytes'] / 1e6:.1f} | {ratios[0]} | "
                         f"{ratios[1]} |")
    # stored bytes after the changed backup (the repository holding first+unchanged+changed)
    lines.append("")
    lines.append("| tool | repo MB after 3 backups | vs restic | vs borg |")
    lines.append("| --- | ---: | ---: | ---: |")
    for t in tools:
        r = by.get((t, "changed"))
        if r is None:
            continue
        peer_borg = "borg-none" if t.startswith("opencbr-plain") else "borg-blake2"
        cells = []
        for peer in ("restic", peer_borg):
            pr = by.get((peer, "changed"))
            cells.append(f"{r['repo_bytes'] / pr['repo_bytes']:.3f}" if pr and t.startswith("opencbr") else "")
        lines.append(f"| {t} | {r['repo_bytes'] / 1e6:.1f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def gen_tree(data: Path, files: int, total: str, seed: int, trash: Path) -> None:
    if (data / "tree").exists():
        (data / "tree").rename(trash / f"tree-{time.time_ns()}")
    data.mkdir(parents=True, exist_ok=True)
    sh([PY, str(DATASET_DIR / "make_dataset.py"), "tree", str(data / "tree"), "--files", str(files),
        "--total", total, "--seed", str(seed)])


def scale_check(work: Path, counts: list[int], total_per_file: int, drop: bool, variants: list[str]) -> None:
    """Peak RSS of first and unchanged backups (and restore) as the file count grows."""
    rows = []
    for n in counts:
        data = work / f"data-{n}"
        if not (data / "tree").exists():
            gen_tree(data, n, str(n * total_per_file), 1, work)  # (nothing to move aside: no tree yet)
        for v in variants:
            tool = Tool(v, work / f"scale-{n}", data)
            res: list[dict] = []
            run_tool(tool, work, data, drop, res, ["first", "unchanged"])
            dst = work / "restore" / f"scale-{v}"
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            cmd, cwd, _got = tool.restore_cmd("unchanged", dst)
            r = timed(cmd, cwd=cwd, env=tool.env, drop=drop, log=work / "logs" / f"scale-{v}-{n}-restore.log")
            r.update(tool=v, op="restore", repo_bytes=du(tool.repo))
            res.append(r)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.rmtree(tool.repo, ignore_errors=True)
            for r in res:
                rows.append((n, v, r["op"], r["wall"], r["rss_mb"], r["pss_mb"]))
    print("\n| files | tool | op | wall s | peak RSS MB | peak PSS MB |\n| ---: | --- | --- | ---: | ---: | ---: |")
    for n, v, op, w, rss, pss in rows:
        print(f"| {n} | {v} | {op} | {w:.2f} | {rss:.0f} | {pss:.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.environ.get("B", "/tmp/bench-tree"))
    ap.add_argument("--files", type=int, default=int(os.environ.get("TREE_FILES", 30000)))
    ap.add_argument("--total", default=os.environ.get("TREE_TOTAL", "1.5G"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variants", default="opencbr opencbr-plain restic borg-blake2 borg-none")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--no-drop", action="store_true", help="do not drop the page cache before each op")
    ap.add_argument("--pause-page-reporting", action="store_true",
                    help="pause the VM's free page reporting for the run (root; put back after it): with it on, "
                    "each cold read costs 0.3 or 2.5 s of kernel CPU at random (bench/page_reporting.py)")
    ap.add_argument("--reuse", action="store_true", help="reuse an unmutated data dir from an earlier --keep run")
    ap.add_argument("--scale", help="comma-separated file counts for the RSS-vs-files check (e.g. 30000,300000)")
    ap.add_argument("--scale-bytes-per-file", type=int, default=50_000)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    variants = a.variants.split()
    ensure_tools(variants)
    drop = not a.no_drop
    if a.scale:
        scale_check(work, [int(x) for x in a.scale.split(",")], a.scale_bytes_per_file, drop, variants)
        return 0
    data = work / "data"
    # TRASH: nothing is deleted during a run, only moved here and deleted at its end. On ext4 without a
    # journal (this VM's root), creating files within 1-6 minutes of deleting many is several times
    # slower (the inode allocator skips "recently deleted" inodes one by one: ext4 recently_deleted()),
    # which would slow whichever restore came next.
    trash = work / "trash"
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    if (work / "restore").exists():
        (work / "restore").rename(trash / "restore")
    if not a.reuse or not (data / "tree").exists():
        gen_tree(data, a.files, a.total, a.seed, trash)
    sh(["find", str(data / "tree"), "-printf", ""])  # (relatime: see the walk after mutate-tree)
    input_bytes = du(data / "tree")
    ops = a.ops.split(",")
    print(f"== tree: {a.files} files, {input_bytes} bytes; variants: {' '.join(variants)}")
    for t in ("restic", "borg"):
        if shutil.which(t):
            print(f"   {subprocess.run([t, '--version' if t == 'borg' else 'version'], capture_output=True, text=True).stdout.strip()}")
    import page_reporting  # (bench/, beside this script)

    results: list[dict] = []
    with page_reporting.watched(a.pause_page_reporting) as reporting:
        tools = [Tool(v, work, data) for v in variants]
        for tool in tools:
            run_tool(tool, work, data, drop, results, ops)
        if "changed" in ops or "restore" in ops or "restore+sync" in ops:
            sh([PY, str(DATASET_DIR / "make_dataset.py"), "mutate-tree", str(data / "tree"), "--percent", "2", "--seed", "2"])
            # One untimed walk: the first listing of a directory whose mtime the mutation changed updates
            # its atime (relatime), which would be charged to whichever tool's changed backup ran first.
            sh(["find", str(data / "tree"), "-printf", ""])
            input_bytes = du(data / "tree")
            for tool in tools:
                run_after_mutation(tool, work, data, drop, results, ops)
    if (work / "restore").exists():
        (work / "restore").rename(trash / "restore-done")
    shutil.rmtree(trash, ignore_errors=True)
    with open(work / "results.tsv", "a") as f:
        for r in results:
            f.write("\t".join(str(r.get(k, "")) for k in ("tool", "op", "wall", "user", "sys", "rss_mb", "pss_mb", "repo_bytes"))
                    + f"\t{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table(results, input_bytes))
    print(reporting.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
