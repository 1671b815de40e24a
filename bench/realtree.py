#!/usr/bin/env python3
"""File-system backups on a tree shaped like a real one: OpenCBR vs restic vs the machine's floors (issue 20).

Data: ``bench/realtree_data.py make`` (deterministic; ~62,000 entries, ~0.9 GB, median file ~3 KB, a long
tail of files of tens of MB, symlink chains, hard links, text mixed with binaries), then ``upgrade`` (a
package upgrade: appends to 3 % of the files, 2,000 new, 1,000 removed).

Every timed operation runs as its own process under ``/usr/bin/time -v`` after ``sync`` + dropping the
page cache. In one run, on the same tree:

- floors of this machine: **read** one sequential read of every file (``tar c . | cat >/dev/null``),
  **stat walk** a cold walk that stats every entry (``find . -printf '%s %T@'``, after the upgrade),
  **cp -a+sync** a copy of the upgraded tree made durable (what a restore competes with);
- **restic** (``restic backup``, ``restic restore`` followed by ``sync``);
- **opencbr** the engine alone (``python -m opencbr.engine tree ...``, encrypted; restore with its own
  ``syncfs``);
- **opencbr-cli** end to end as a user waits: ``cbr backup create VAULT --wait`` against ``opencbr serve``
  (SQLite catalog, its default worker processes, an encrypted turbo vault protecting the tree), and the
  restore as ``cbr fs create-from-backup BACKUP --path DIR --wait``.

Ops: first backup, unchanged re-backup, changed re-backup (after the upgrade), restore of the changed
backup (checked with ``diff -r --no-dereference``). Ratios: restic / OpenCBR (higher is better) and
OpenCBR / floor.

    python bench/realtree.py                          # everything, table at the end
    python bench/realtree.py --scale 0.1 --variants "opencbr restic"   # a quick look
    python bench/realtree.py --copy-from /usr/share --copy-from /usr/include   # a copy of a real tree
    python bench/realtree.py fixed [--runs 10]        # fixed cost of `cbr backup create --wait` (small tree)
    python bench/realtree.py fixed --alternate ../old/src   # ... and another checkout's cbr in turn
    python bench/realtree.py --restore-volume 8G      # restores (and cp -a) onto a file system of their own
    python bench/realtree.py --settle 10              # 10 s (page cache synced) before each timed step

``--settle SECONDS``: wait that long before each timed step, after a ``sync``. On a VM the host may still be
writing what a step wrote when the guest's ``sync`` returned: a step timed right after a restore (~0.7 GB
written, then read back by its check) ran slower than after a backup -- the changed re-backup through
``cbr``, which follows the engine's restore, by ~0.1 s of ~0.7 s (bench/README.md, realtree, an eighth VM).

``--restore-volume SIZE`` (root): the restores and the ``cp -a`` floor write to a fresh ext4 of that size
(an image file, loop-mounted, with a journal, its inode tables written by ``mkfs``) instead of the work
directory's file system. On an ext4 without a journal, as this machine's root, every inode freed in the
last ~5.5 minutes is skipped when allocating, block by block: a restore soon after a tree was deleted
(the run before, back to back) paid seconds of system time for it, the more the closer it ran to the
deletion (bench/README.md, realtree, "a second VM").

Measured figures and where the time goes: bench/README.md ("bench/realtree.py").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO_ROOT / "src")]

import page_reporting  # noqa: E402  (bench/page_reporting.py)
import tree as treebench  # noqa: E402  (bench/tree.py: timing, peers)

PY = sys.executable
CBR_SCRIPT = "import sys; from opencbr.cli.main import app; sys.argv[0] = 'cbr'; sys.exit(app())"
OPS = ["first", "unchanged", "changed", "restore"]


def make_tree(data: Path, scale: float, trash: Path, copy_from: list[str] | None = None) -> None:
    """The generated tree, or with ``copy_from`` a copy of real directories (each as a top-level directory
    of the tree, named by its path): a real tree of another shape, mutated by the same ``upgrade``."""
    if (data / "tree").exists():
        (data / "tree").rename(trash / f"tree-{time.time_ns()}")
    data.mkdir(parents=True, exist_ok=True)
    if copy_from:
        (data / "tree").mkdir()
        for src in copy_from:
            name = os.path.abspath(src).strip("/").replace("/", "_") or "root"
            # (-x: one file system, like the backups; --no-preserve=... not: owners, modes and links kept)
            treebench.sh(["cp", "-ax", os.path.abspath(src), str(data / "tree" / name)])
    else:
        treebench.sh([PY, str(BENCH / "realtree_data.py"), "make", str(data / "tree"), "--scale", str(scale)])
    treebench.sh(["find", str(data / "tree"), "-printf", ""])  # (relatime: a first walk updates atimes)


#: Seconds to wait before each timed step (``--settle``), after the writes of the step before are synced
SETTLE = 0.0


def settle() -> None:
    """Wait ``SETTLE`` seconds with the page cache synced. On a VM the host may still be writing what the
    guest's ``sync`` returned for: a step right after a restore (~0.7 GB written) ran slower than the same
    step after a backup (the changed re-backup through ``cbr``, which the benchmark times right after the
    engine's restore and its check: the service's own backup 0.80-0.89 s there, 0.65-0.67 s when nothing
    was restored before it; bench/README.md, realtree, an eighth VM)."""
    if SETTLE > 0:
        os.sync()
        time.sleep(SETTLE)


def floor(name: str, script: str, *, cwd: Path, work: Path) -> dict:
    settle()
    r = treebench.timed(["sh", "-c", script], cwd=cwd, env=dict(os.environ), drop=True, log=work / "logs" / f"floor-{name}.log")
    r.update(tool="floor", op=name, repo_bytes=0)
    print(f"  floor {name:14s} wall {r['wall']:7.2f}s", flush=True)
    return r


# ------------------------------------------------------------------------------ the service, as a user runs it
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``opencbr serve`` (API + its default worker processes) on a fresh SQLite catalog in ``workdir``, and
    the ``cbr`` command line pointed at it."""

    def __init__(self, workdir: Path):
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        self.workdir = workdir
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "OPENCBR_DATA_DIR": str(workdir / "data"),
                    "OPENCBR_CATALOG_URL": f"sqlite:///{workdir / 'catalog.db'}", "OPENCBR_LISTEN": f"127.0.0.1:{port}",
                    "OPENCBR_CLIENT_CONFIG": str(workdir / "client.toml"), "OPENCBR_MASTER_KEY": treebench.KEY_HEX,
                    "PYTHONPATH": str(REPO_ROOT / "src"), "NO_COLOR": "1"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        log = open(self.workdir / "serve.log", "ab")
        self.proc = subprocess.Popen([PY, "-m", "opencbr.cli.main", "serve"], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"opencbr serve exited; see {self.workdir / 'serve.log'}")
            if (self.workdir / "client.toml").exists() and self.cbr_ok("vault", "list"):
                return self
            time.sleep(0.3)
        raise SystemExit("opencbr serve did not start in 90 s")

    def cbr_cmd(self, *args: str) -> list[str]:
        """``cbr ARGS`` as the installed ``cbr`` script runs it (not ``python -m``: ``runpy`` is ~9 ms more of
        a cold start), with this checkout's (or ``--alternate``'s) code on ``PYTHONPATH``."""
        return [PY, "-c", CBR_SCRIPT, *args]

    def cbr_ok(self, *args: str) -> bool:
        return subprocess.run(self.cbr_cmd(*args), env=self.env, capture_output=True).returncode == 0

    def cbr_json(self, *args: str):
        p = subprocess.run(self.cbr_cmd(*args, "--json"), env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"cbr {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
        return json.loads(p.stdout)

    def protect(self, path: Path, name: str) -> str:
        """A file system registered at ``path`` and an encrypted turbo vault protecting it; the vault's name."""
        self.cbr_json("fs", "register", "--name", name, "--path", str(path))
        self.cbr_json("vault", "create", "--name", f"v-{name}", "--type", "turbo", "--size", "100", "--resource", name)
        return f"v-{name}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class CliTool:
    """OpenCBR end to end: the timed command is the ``cbr`` process a user waits on."""

    v = "opencbr-cli"

    def __init__(self, work: Path, data: Path):
        self.svc = Service(work / "service")
        self.data = data
        self.repo = self.svc.workdir / "data"
        self.env = self.svc.env
        self.vault = ""

    def init(self) -> None:
        self.svc.start()
        self.vault = self.svc.protect(self.data / "tree", "realtree")

    def backup_cmd(self, name: str) -> list[str]:
        return self.svc.cbr_cmd("backup", "create", self.vault, "--name", name, "--wait")

    def restore_cmd(self, name: str, dst: Path) -> tuple[list[str], Path]:
        return self.svc.cbr_cmd("fs", "create-from-backup", name, "--name", f"restored-{dst.name}",
                                "--path", str(dst / "tree"), "--wait"), dst / "tree"

    def service_cpu(self) -> float:
        """CPU seconds (user + system, with reaped helpers) of ``opencbr serve`` and all its processes so far."""
        tck = os.sysconf("SC_CLK_TCK")
        total, todo = 0, [self.svc.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                total += sum(int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15])
                for task in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                continue  # (gone meanwhile)
        return total / tck


def timed_op(t, cmd: list[str], **kw) -> dict:
    """treebench.timed; for the service, also the CPU its processes used meanwhile (``service_cpu``)."""
    settle()
    before = t.service_cpu() if isinstance(t, CliTool) else 0.0
    r = treebench.timed(cmd, **kw)
    r["service_cpu"] = t.service_cpu() - before if isinstance(t, CliTool) else 0.0
    return r


# ------------------------------------------------------------------------------------------ the run
class RestoreVolume:
    """``--restore-volume``: ``work/restore`` as a fresh ext4 of its own for the run (see the module's
    docstring); removed at the end."""

    def __init__(self, work: Path, size: str):
        self.image = work / "restore-volume.img"
        self.mnt = work / "restore"
        self.size = size

    def __enter__(self) -> RestoreVolume:
        if os.path.ismount(self.mnt):  # (left by an interrupted run)
            subprocess.run(["umount", str(self.mnt)], check=True)
        self.image.unlink(missing_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        if any(self.mnt.iterdir()):
            raise SystemExit(f"{self.mnt} is not empty: move it away first")
        try:
            subprocess.run(["truncate", "-s", self.size, str(self.image)], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                            str(self.image)], check=True)
            subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mnt)], check=True)
        except BaseException:
            self.image.unlink(missing_ok=True)
            raise
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", str(self.mnt)], check=False)
        self.image.unlink(missing_ok=True)


def run(a) -> int:
    if a.restore_volume:
        with RestoreVolume(Path(a.work), a.restore_volume):
            return _run(a, fresh_restore=True)
    return _run(a, fresh_restore=False)


def _run(a, fresh_restore: bool) -> int:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    variants = a.variants.split()
    treebench.ensure_tools([v for v in variants if v == "restic"])
    trash = work / "trash"
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    data = work / "data"
    make_tree(data, a.scale, trash, a.copy_from)
    tree_dir = data / "tree"
    input_bytes = treebench.du(tree_dir)
    print(f"== realtree: {input_bytes} bytes, scale {a.scale}; variants: {' '.join(variants)}; {os.getloadavg()}")
    results: list[dict] = []
    tools = []
    for v in variants:
        tools.append(CliTool(work, data) if v == "opencbr-cli" else treebench.Tool(v, work, data))
    results.append(floor("read", "tar c . | cat >/dev/null", cwd=tree_dir, work=work))
    try:
        for t in tools:
            rec = treebench.recorder(t, results)
            t.init()
            for op, name in (("first", "first"), ("unchanged", "unchanged")):
                if op in a.ops:
                    rec(op, timed_op(t, t.backup_cmd(name), cwd=data, env=t.env, drop=True,
                                            log=work / "logs" / f"{t.v}-{op}.log"))
                    t.prev = name
        treebench.sh([PY, str(BENCH / "realtree_data.py"), "upgrade", str(tree_dir)])
        treebench.sh(["find", str(tree_dir), "-printf", ""])
        results.append(floor("stat walk", "find . -printf '%s %T@\\n' >/dev/null", cwd=tree_dir, work=work))
        dst = work / "restore" / "cp"
        set_aside(dst, trash)
        dst.parent.mkdir(parents=True, exist_ok=True)
        results.append(floor("cp -a+sync", f"cp -a '{tree_dir}' '{dst}' && sync", cwd=work, work=work))
        for t in tools:
            rec = treebench.recorder(t, results)
            if "changed" in a.ops:
                rec("changed", timed_op(t, t.backup_cmd("incr"), cwd=data, env=t.env, drop=True,
                                               log=work / "logs" / f"{t.v}-changed.log"))
                t.prev = "incr"
            if "restore" in a.ops:
                restore_one(t, work, tree_dir, rec, trash)
    finally:
        for t in tools:
            if isinstance(t, CliTool):
                t.svc.stop()
    if (work / "restore").exists() and not fresh_restore:  # (a volume's mount point is unmounted by its owner)
        (work / "restore").rename(trash / "restore-done")
    shutil.rmtree(trash, ignore_errors=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nload average at the end: {os.getloadavg()}\n")
    print(table(results))
    return 0


def set_aside(path: Path, trash: Path) -> None:
    """Move a previous run's tree out of the way, to be deleted at the end of this run. Deleting it here
    would slow the timed command that follows: this machine's ext4 has no journal, and then every inode
    it allocates is first checked against the inode table for a deletion in the last seconds, skipping
    over recently freed ones (``recently_deleted`` in the kernel's profile): a restore right after an
    ``rm -rf`` of a restored tree took 6.1 s (3.5 s system time) against 3.9 s (1.3 s) without."""
    if path.exists():
        path.rename(trash / f"{path.name}-{time.time_ns()}")


def restore_one(t, work: Path, tree_dir: Path, rec, trash: Path) -> None:
    dst = work / "restore" / t.v
    set_aside(dst, trash)  # (nothing there on a fresh --restore-volume)
    dst.mkdir(parents=True)
    if isinstance(t, CliTool):
        cmd, got = t.restore_cmd("incr", dst)
        cwd = dst
    else:
        cmd, cwd, got = t.restore_cmd("incr", dst, durable=True)
    rec("restore", timed_op(t, cmd, cwd=cwd, env=t.env, drop=True, log=work / "logs" / f"{t.v}-restore.log"))
    diff = subprocess.run(["diff", "-rq", "--no-dereference", str(tree_dir), str(got)], capture_output=True, text=True)
    print(f"  {t.v:14s} verify     {'OK (diff -r)' if diff.returncode == 0 else 'DIFFERENCES'}")
    if diff.returncode != 0:
        print(diff.stdout[:2000])


FLOOR_OF = {"first": "read", "changed": "stat walk", "restore": "cp -a+sync"}


def table(results: list[dict]) -> str:
    by = {(r["tool"], r["op"]): r for r in results}
    floors = {r["op"]: r["wall"] for r in results if r["tool"] == "floor"}
    lines = [" | ".join(f"{k} {v:.2f} s" for k, v in floors.items()), "",
             "| tool | op | wall s | cpu s | service cpu s | peak RSS MB | repo MB | restic / this | this / floor |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r["tool"] == "floor":
            continue
        peer = by.get(("restic", r["op"]))
        ratio = f"{peer['wall'] / r['wall']:.2f}x" if peer and r["tool"] != "restic" else ""
        fl = floors.get(FLOOR_OF.get(r["op"], ""))
        vs_floor = f"{r['wall'] / fl:.2f}" if fl else ""
        lines.append(f"| {r['tool']} | {r['op']} | {r['wall']:.2f} | {r['user'] + r['sys']:.2f} | "
                     f"{r.get('service_cpu', 0):.2f} | {r['rss_mb']:.0f} | "
                     f"{r['repo_bytes'] / 1e6:.1f} | {ratio} | {vs_floor} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ fixed costs
def fixed(a) -> int:
    """The fixed cost of ``cbr backup create --wait``: unchanged re-backups of a small tree, and where
    their time goes (CLI start, queue -> start, the task, end -> the CLI noticing)."""
    work = Path(a.work) / "fixed"
    shutil.rmtree(work, ignore_errors=True)
    (work / "tree").mkdir(parents=True)
    for i in range(a.files):
        (work / "tree" / f"f{i}.txt").write_text(f"file {i}\n" * 20)
    svc = Service(work / "service").start()
    try:
        vault = svc.protect(work / "tree", "small")
        svc.cbr_json("backup", "create", vault, "--name", "first", "--wait")
        # --alternate: the same backups with the cbr of another source tree, in turn, against this service
        codes = {"this": svc.env["PYTHONPATH"], **({"alternate": a.alternate} if a.alternate else {})}
        rows: dict[str, list] = {code: [] for code in codes}
        for i in range(a.runs):
            for code, src in (codes.items() if i % 2 == 0 else reversed(codes.items())):
                treebench.drop_caches(a.drop_caches)  # (as the run's timed steps: the CLI starts cold too)
                t0 = time.time()
                p = subprocess.run(svc.cbr_cmd("backup", "create", vault, "--name", f"b{i}-{code}", "--wait", "--json"),
                                   env={**svc.env, "PYTHONPATH": src}, capture_output=True, text=True, check=True)
                wall = time.time() - t0
                task_id = json.loads(p.stdout)["backups"][0]["task_id"]
                rows[code].append((wall, *task_phases(svc, task_id, t0, t0 + wall)))
        t0 = time.time()
        subprocess.run(svc.cbr_cmd("--help"), env=svc.env, capture_output=True, check=True)
        start = time.time() - t0
    finally:
        svc.stop()
    print(f"\n`cbr backup create --wait`, unchanged tree of {a.files} files, {a.runs} runs, medians "
          f"{'(page cache dropped before each) ' if a.drop_caches else ''}"
          f"(load {os.getloadavg()[0]:.1f}); `cbr --help` alone: {start:.2f} s")
    print("| cbr | wall s | submit -> queued s | queued -> started s | task s | ended -> CLI exit s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for code, src in codes.items():
        med = [statistics.median(c) for c in zip(*rows[code], strict=True)]
        print(f"| {src} | " + " | ".join(f"{x:.3f}" for x in med) + " |")
    return 0


def task_phases(svc: Service, task_id: str, t0: float, t1: float) -> tuple[float, float, float, float]:
    """(submit -> queued, queued -> started, the task, ended -> the CLI's exit), from the catalog's
    microsecond timestamps (the API shows seconds)."""
    import sqlite3
    from datetime import datetime, timezone

    with sqlite3.connect(svc.workdir / "catalog.db") as db:
        row = db.execute("SELECT created_at, started_at, ended_at FROM tasks WHERE id = ?", (task_id,)).fetchone()
    created, started, ended = (datetime.fromisoformat(x).replace(tzinfo=timezone.utc).timestamp() for x in row)
    return created - t0, started - created, ended - started, t1 - ended


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="run", choices=["run", "fixed"])
    ap.add_argument("--work", default=os.environ.get("B", "/tmp/bench-realtree"))
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--variants", default="opencbr opencbr-cli restic")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--copy-from", metavar="DIR", action="append",
                    help="instead of the generated tree, a copy of this real directory (repeatable; e.g. "
                    "--copy-from /usr/share --copy-from /usr/include); the upgrade mutates the copy")
    ap.add_argument("--restore-volume", metavar="SIZE", help="run: restore (and cp -a) onto a fresh ext4 of this "
                    "size, loop-mounted at WORK/restore (root; e.g. 8G)")
    ap.add_argument("--runs", type=int, default=10, help="fixed: how many backups")
    ap.add_argument("--files", type=int, default=100, help="fixed: files in the small tree")
    ap.add_argument("--drop-caches", action="store_true", help="fixed: drop the page cache before each backup "
                    "(root), as before the run's timed steps: the CLI and the service start from a cold cache")
    ap.add_argument("--alternate", metavar="SRC", help="fixed: also run the cbr of this source tree (another "
                    "checkout's src/), in turn with this one's, against the same service")
    ap.add_argument("--settle", type=float, default=0.0, metavar="SECONDS", help="wait this long (page cache "
                    "synced) before each timed step: on a VM the host may still be writing the step before's data")
    ap.add_argument("--pause-page-reporting", action="store_true",
                    help="pause the VM's free page reporting for the run (root; put back after it): with it on, "
                    "each cold read costs 0.3 or 2.5 s of kernel CPU at random (bench/page_reporting.py)")
    a = ap.parse_args()
    a.ops = a.ops.split(",")
    global SETTLE
    SETTLE = a.settle
    with page_reporting.watched(a.pause_page_reporting) as reporting:
        code = fixed(a) if a.what == "fixed" else run(a)
    print(reporting.summary())
    return code


if __name__ == "__main__":
    sys.exit(main())
