"""What both fault campaigns share: the service under test (a real ``opencbr serve`` process, and in
"worker" mode a separate ``cbr worker`` process beside an API with no workers), API helpers, content
fingerprints of disks and trees, and an independent look at the object store (pack trailers and
manifests read with the engine's codecs, not through the service's own accounting).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from sqlalchemy import text

from opencbr.engine import Repository
from opencbr.engine.chunks.manifests import MANIFESTS_DIR
from opencbr.engine.chunks.packs import read_trailer, trailer_length
from opencbr.engine.chunks.store import DATA_DIR
from opencbr.engine.errors import Missing
from opencbr.services.context import open_context
from opencbr.storage import open_store
from tests.support.clients import api
from tests.support.databases import create_pg_database, drop_pg_database, pg_unavailable_reason, sqlite_url
from tests.support.disks import MiB, make_image, sha256
from tests.support.server import ServerProcess

BILLING = {"object_type": "disk", "size": 100, "consistent_level": "crash_consistent", "protect_type": "backup"}
FS_BILLING = {**BILLING, "object_type": "turbo"}
FINISHED = ("success", "failed", "skipped", "timeout")
BUSY_BACKUP = ("protecting", "restoring", "deleting")
DISK_TYPE, FS_TYPE = "OS::Cinder::Volume", "OS::Sfs::Turbo"


def catalog_url(catalog: str, directory: str) -> str:
    if catalog == "sqlite":
        return sqlite_url(directory)
    if catalog != "postgresql":
        raise ValueError("catalog must be sqlite or postgresql")
    reason = pg_unavailable_reason()
    if reason:
        raise RuntimeError(f"PostgreSQL is unreachable: {reason}")
    return create_pg_database()


class Service:
    """The service under test. ``mode`` "server": one ``serve`` process with two worker threads (the
    victim of a kill is the whole service). ``mode`` "worker": ``serve`` with no workers plus one
    ``cbr worker`` process (the victim is the worker; the API keeps running)."""

    def __init__(self, workdir: str, catalog: str, *, lease_seconds: int = 5):
        self.workdir = workdir
        data = os.path.join(workdir, "srv")
        os.makedirs(data, exist_ok=True)
        self.catalog_url = catalog_url(catalog, data)
        self.srv = ServerProcess(data, self.catalog_url, workers=2,
                                 extra_env={"OPENCBR_TASK_LEASE_SECONDS": str(lease_seconds),
                                            "OPENCBR_SCHEDULER": "false"})
        self.worker: subprocess.Popen | None = None
        self.mode = ""
        self.client = api(self.srv)
        self._ctx = None

    # -- processes --------------------------------------------------------------------------------
    def start(self, mode: str) -> None:
        self.mode = mode
        self.srv.env["OPENCBR_WORKERS"] = "2" if mode == "server" else "0"
        self.srv.start(timeout=60)
        if mode == "worker":
            self.start_worker()

    def start_worker(self) -> None:
        data = self.srv.data_dir
        with open(os.path.join(data, "master.key")) as f:
            key = f.read().strip()
        env = {**self.srv.env, "OPENCBR_OBJECT_STORE": f"file://{data}/objects", "OPENCBR_MASTER_KEY": key,
               "OPENCBR_DATA_DIR": os.path.join(self.workdir, "worker-home")}
        log = open(os.path.join(self.workdir, "worker.log"), "ab")
        self.worker = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "worker", "--count", "2"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def switch(self, mode: str) -> None:
        """Quiescent moment: stop in order (SIGTERM) and start in the other mode."""
        if mode != self.mode:
            self.stop()
            self.start(mode)

    def kill_victim(self) -> str:
        """SIGKILL the process that runs tasks: the service in "server" mode, the worker otherwise."""
        if self.mode == "server":
            self.srv.kill()
            return "server"
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(10)
        return "worker"

    def recover(self) -> None:
        if self.mode == "server":
            self.srv.start(timeout=60)
        else:
            self.start_worker()

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(10)
        self.worker = None
        self.srv.stop()

    def close(self) -> None:
        self.stop()
        if self._ctx is not None:
            self._ctx.close()
        if self.catalog_url.startswith("postgresql"):
            drop_pg_database(self.catalog_url)

    # -- the catalog, read (and for the corruption campaign, written) directly ---------------------
    @property
    def ctx(self):
        if self._ctx is None:
            self._ctx = open_context(self.srv.settings, migrate=False)
        return self._ctx

    def sql(self, statement: str, **params) -> list:
        with self.ctx.engine.begin() as c:
            res = c.execute(text(statement), params)
            return list(res) if res.returns_rows else []

    def busy_tasks(self) -> list:
        return self.sql("SELECT id, operation_type, status FROM tasks WHERE status IN ('waiting', 'running')")

    def wait_quiet(self, timeout: float) -> list:
        """Wait until no task is waiting or running; returns those still busy at the timeout."""
        deadline = time.time() + timeout
        while True:
            busy = self.busy_tasks()
            if not busy or time.time() > deadline:
                return busy
            time.sleep(0.2)

    # -- the object store, independently --------------------------------------------------------
    def repository(self, vault_id: str) -> Repository:
        st = self.srv.settings
        return Repository.open(open_store(st.effective_object_store), f"vaults/{vault_id}/", st.master_key())

    # -- API helpers ---------------------------------------------------------------------------------
    def task(self, task_id: str) -> dict:
        return self.client.get(f"/operation-logs/{task_id}")["operation_log"]

    def wait_task(self, task_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            log = self.task(task_id)
            if log["status"] in FINISHED:
                return log
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} did not finish in {timeout} s")

    def backup(self, vault_id: str, resource_id: str) -> dict:
        cp = self.client.post("/checkpoints", {"checkpoint": {"vault_id": vault_id,
                                                              "parameters": {"resources": [resource_id]}}})
        return self.client.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]

    def backups(self, vault_id: str) -> list[dict]:
        return self.client.get("/backups", vault_id=vault_id, limit=1000)["backups"]


# ------------------------------------------------------------------------------------ campaigns
@dataclass
class Held:
    """What an available backup must restore to (recorded when it was taken)."""

    kind: str  # disk | fs
    fingerprint: str
    resource_id: str
    vault_id: str


class Campaign:
    """A seeded campaign against one service: its random source, work directory and backups."""

    def __init__(self, workdir: str, catalog: str, seed: int, sizes: tuple[int, int], **service_options):
        self.workdir, self.catalog, self.seed = workdir, catalog, seed
        self.rng = random.Random(seed)
        self.sizes = sizes
        self.svc = Service(workdir, catalog, **service_options)
        self.held: dict[str, Held] = {}
        self.counter = 0

    def path(self, name: str) -> str:
        """A new path in the work directory."""
        self.counter += 1
        return os.path.join(self.workdir, f"{name}-{self.counter}")

    def size(self) -> int:
        """A random size in ``sizes``, in whole 64 KiB."""
        lo, hi = self.sizes
        return self.rng.randrange(lo // (64 * 1024), hi // (64 * 1024) + 1) * 64 * 1024


def main(doc: str, make, count_name: str, default_count: int, summary, describe, argv=None) -> int:
    """The command line of a campaign: ``--COUNT_NAME N --seed S --catalog sqlite|postgresql``;
    ``make(workdir, catalog, seed, small)`` builds it, ``describe(result)`` names a failed one."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument(f"--{count_name}", type=int, default=default_count)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--catalog", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--small", action="store_true", help="small disks and trees (the test suite's short run)")
    ap.add_argument("--workdir", help="where disks, the data directory and logs go (default: a new temp dir)")
    ap.add_argument("--out", help="append each result as a JSON line here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service it started, then exit
    count = getattr(args, count_name)
    workdir = args.workdir or tempfile.mkdtemp(prefix=f"opencbr-{count_name}-", dir="/tmp")
    out = open(args.out, "a") if args.out else None
    results = make(workdir, args.catalog, args.seed, args.small).run(count, out)
    print(summary(results))
    failed = [r for r in results if r.violations]
    for r in failed:
        print(f"{describe(r)}, seed {args.seed}: {r.violations}")
    print(f"work directory: {workdir}")
    return 1 if failed or len(results) < count else 0


def record(out, result, line: str, echo) -> None:
    """Say how one trial or fault went, and append it to ``out`` as JSON."""
    echo(line)
    if out:
        out.write(json.dumps(asdict(result)) + "\n")
        out.flush()


# ------------------------------------------------------------------------------------ content
def random_image(path: str, rng: random.Random, size: int) -> str:
    """A disk image of ``size`` bytes: zero, text and random 64 KiB regions (tests.support.disks)."""
    return make_image(path, size, seed=rng.randrange(1 << 30))


def scribble(path: str, rng: random.Random, regions: int = 4) -> None:
    """Rewrite a few 64 KiB regions of a disk image with fresh random bytes."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for _ in range(regions):
            f.seek(rng.randrange(max(1, size // (64 * 1024))) * 64 * 1024)
            f.write(rng.randbytes(min(64 * 1024, size)))


def random_tree(root: str, rng: random.Random, total: int) -> None:
    """Replace the tree's content: files of random sizes (about ``total`` bytes) in a few directories."""
    if os.path.isdir(root):
        for name in os.listdir(root):
            p = os.path.join(root, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
    os.makedirs(root, exist_ok=True)
    left = total
    i = 0
    while left > 0:
        d = os.path.join(root, rng.choice(["", "a", "a/b", "c"]))
        os.makedirs(d, exist_ok=True)
        n = min(left, rng.choice([0, 100, 5000, 200_000, 1 * MiB, 3 * MiB]))
        with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
            f.write(rng.randbytes(n // 2) + bytes(n - n // 2))
        left -= max(n, 1000)
        i += 1
    os.symlink("a", os.path.join(root, "link"))


def mutate_tree(root: str, rng: random.Random) -> None:
    """Change a tree a little: rewrite, add and remove some files."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    for p in rng.sample(files, min(3, len(files))):
        if rng.random() < 0.3:
            os.unlink(p)
        else:
            with open(p, "ab") as f:
                f.write(rng.randbytes(rng.randrange(1, 300_000)))
    with open(os.path.join(root, f"new{rng.randrange(1 << 30)}.bin"), "wb") as f:
        f.write(rng.randbytes(rng.randrange(1, 500_000)))


def tree_digest(root: str) -> str:
    """SHA-256 over the tree's paths, types, file contents and link targets (what a restore must give
    back bit-exact)."""
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                h.update(b"L" + rel.encode() + b"\0" + os.readlink(p).encode() + b"\0")
            elif os.path.isdir(p):
                h.update(b"D" + rel.encode() + b"\0")
            else:
                h.update(b"F" + rel.encode() + b"\0" + sha256(p).encode())
    return h.hexdigest()


def fingerprint(kind: str, path: str) -> str:
    return sha256(path) if kind == "disk" else tree_digest(path)


# ------------------------------------------------------------------------------------ the store
@dataclass
class StoreView:
    """One vault's objects as the store holds them: per pack the records its trailer lists, each
    manifest's referenced digests, and everything else."""

    packs: dict[str, dict[bytes, int]] = field(default_factory=dict)  # pack key -> digest -> record length
    manifests: dict[str, set[bytes]] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # key -> why it could not be read
    other: list[str] = field(default_factory=list)

    def record_sizes(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for records in self.packs.values():
            out.update(records)
        return out


def read_store(service: Service, vault_id: str) -> StoreView:
    view = StoreView()
    try:
        repo = service.repository(vault_id)
    except Missing:  # nothing was ever stored in the vault
        return view
    store, prefix, sealer = repo.store, repo.prefix, repo.chunks.sealer
    for key, size in store.list(prefix):
        rel = key[len(prefix):]
        try:
            if rel.startswith(DATA_DIR):
                tail = store.get(key, max(0, size - 12), size)
                n = trailer_length(tail)
                entries = read_trailer(sealer, store.get(key, size - n, size), size, key)
                view.packs[key] = {e.digest: e.length for e in entries}
            elif rel.startswith(MANIFESTS_DIR):
                view.manifests[rel[len(MANIFESTS_DIR):]] = repo.chunks.read_manifest(rel[len(MANIFESTS_DIR):]).ref_set()
            else:
                view.other.append(rel)
        except Exception as e:  # noqa: BLE001 - a damaged object is what the caller reports
            view.damaged[rel] = f"{type(e).__name__}: {e}"
    return view


def expected_usage(view: StoreView, manifest_names: list[str]) -> tuple[int, set[bytes]]:
    """Stored bytes of the distinct chunks the named manifests reference, and the digests no pack holds."""
    sizes = view.record_sizes()
    refs: set[bytes] = set()
    for name in manifest_names:
        refs |= view.manifests.get(name, set())
    return sum(sizes.get(d, 0) for d in refs), {d for d in refs if d not in sizes}
