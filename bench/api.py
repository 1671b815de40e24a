#!/usr/bin/env python3
"""API under load: 20 concurrent official-SDK clients listing vaults and backups, alone and while full
backups of a 1 GiB disk run in separate worker processes.

    python bench/api.py [--catalog sqlite|postgresql] [--clients 20] [--seconds 20] [--disk-size 1G]
                        [--vaults 20] [--backups-per-vault 5] [--worker-procs 2] [--worker-nice 10] [--workdir DIR] [--keep]

What it does:
  1. starts ``opencbr serve`` with ``OPENCBR_WORKERS=0`` (the API does no data-plane work) on its own data
     directory and catalog (SQLite by default; ``--catalog postgresql`` creates a database on
     127.0.0.1:5432 and drops it afterwards), and ``--worker-procs`` separate ``opencbr worker`` processes;
  2. fills the catalog: ``--vaults`` vaults, each with a small disk backed up ``--backups-per-vault`` times;
  3. phase "alone": ``--clients`` threads of this process, each with its own ``huaweicloudsdkcbr`` client,
     alternate ``list_vault`` and ``list_backups`` (limit 20) for ``--seconds``;
  4. phase "backups": the same while every worker process runs full backups of its own ``--disk-size``
     random disk, one after another;
  5. prints requests/s, p50, p95, p99, max and errors of both phases.
It is a benchmark, not a test: the numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import httpx  # noqa: E402
from huaweicloudsdkcbr.v1 import CbrClient, ListBackupsRequest, ListVaultRequest  # noqa: E402
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # noqa: E402
from huaweicloudsdkcore.http.http_config import HttpConfig  # noqa: E402
from huaweicloudsdkcore.http.http_handler import HttpHandler  # noqa: E402

from opencbr.cli.client import ApiClient, ClientConfig  # noqa: E402
from opencbr.config import Settings, load_settings  # noqa: E402
from opencbr.services import iam  # noqa: E402
from opencbr.services.context import open_context  # noqa: E402

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# ------------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


class Catalog:
    """A fresh catalog: a SQLite file in the work directory, or a new PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path):
        self.kind = kind
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / 'catalog.db'}"
        else:
            from sqlalchemy import create_engine, text

            self.db = f"opencbr_bench_{os.getpid()}"
            eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with eng.connect() as c:
                c.execute(text(f'CREATE DATABASE "{self.db}"'))
            eng.dispose()
            self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db

    def drop(self) -> None:
        if self.kind == "postgresql":
            from sqlalchemy import create_engine, text

            eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with eng.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))
            eng.dispose()


class Service:
    """The API process (no worker threads) and separate worker processes over one catalog."""

    def __init__(self, workdir: Path, catalog: Catalog, worker_procs: int, worker_nice: int = 0):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "OPENCBR_DATA_DIR": str(workdir / "data"), "OPENCBR_CATALOG_URL": catalog.url,
                    "OPENCBR_LISTEN": f"127.0.0.1:{self.port}", "OPENCBR_WORKERS": "0",
                    "OPENCBR_CLIENT_CONFIG": str(workdir / "client.toml"),
                    "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        self.worker_procs = worker_procs
        self.worker_nice = worker_nice
        self.procs: list[subprocess.Popen] = []
        settings = load_settings(env=self.env)
        ctx = open_context(settings)
        info = iam.bootstrap(ctx)
        ctx.close()
        self.ak, self.sk, self.project_id = info.access_key, info.secret_key, info.project_id

    def _spawn(self, *args: str, log: str, nice: int = 0) -> subprocess.Popen:
        out = open(self.workdir / log, "ab")
        prefix = ["nice", "-n", str(nice)] if nice else []
        p = subprocess.Popen([*prefix, sys.executable, "-m", "opencbr.cli.main", *args], env=self.env, stdout=out,
                             stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start(self) -> Service:
        api = self._spawn("serve", "--no-write-config", log="api.log")
        for i in range(self.worker_procs):
            self._spawn("worker", "--count", "1", log=f"worker{i}.log", nice=self.worker_nice)
        deadline = time.time() + 60
        while time.time() < deadline:
            if api.poll() is not None:
                raise RuntimeError(f"the API exited with {api.returncode}; see {self.workdir / 'api.log'}")
            try:
                if httpx.get(self.url + "/health", timeout=1, trust_env=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API did not start in 60 s")

    def api_pid(self) -> int:
        return self.procs[0].pid

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def client(self) -> ApiClient:
        return ApiClient(ClientConfig(self.url, self.project_id, self.ak, self.sk), timeout=120)

    def sdk(self, handler: HttpHandler | None = None) -> CbrClient:
        cfg = HttpConfig.get_default_config()
        cfg.timeout = (10, 60)
        builder = (CbrClient.new_builder().with_http_config(cfg)
                   .with_credentials(BasicCredentials(self.ak, self.sk, self.project_id)).with_endpoint(self.url))
        if handler is not None:
            builder = builder.with_http_handler(handler)
        return builder.build()


# ------------------------------------------------------------------------------------ catalog content
def wait_tasks(c: ApiClient, task_ids: list[str], timeout: float = 1800) -> list[dict]:
    deadline, done = time.time() + timeout, {}
    while len(done) < len(task_ids):
        if time.time() > deadline:
            raise RuntimeError(f"{len(task_ids) - len(done)} tasks did not finish")
        for tid in task_ids:
            if tid not in done:
                log = c.get(f"/operation-logs/{tid}")["operation_log"]
                if log["status"] in ("success", "failed", "skipped", "timeout"):
                    done[tid] = log
        time.sleep(0.2)
    return [done[t] for t in task_ids]


def make_image(path: Path, size: int, *, random: bool) -> None:
    with open(path, "wb") as f:
        block = 1 << 20
        for i in range(0, size, block):
            n = min(block, size - i)
            f.write(os.urandom(n) if random else (b"%08d" % i) * (n // 8) + b"\0" * (n % 8))


def protect_disk(c: ApiClient, name: str, path: Path, capacity_gb: int) -> tuple[str, str]:
    """A disk in the inventory and a vault protecting it; returns (vault id, disk id)."""
    disk = c.post("/inventory/disks", {"name": name, "path": str(path)})["disk"]
    vault = c.post("/vaults", {"vault": {"name": f"v-{name}", "billing": {
        "object_type": "disk", "size": capacity_gb, "consistent_level": "crash_consistent",
        "protect_type": "backup"}, "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    return vault["id"], disk["id"]


def backup(c: ApiClient, vault_id: str, disk_id: str, *, full: bool) -> str:
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": vault_id, "parameters": {
        "resources": [disk_id], "incremental": not full}}})["checkpoint"]
    backup_id = cp["vault"]["resources"][0]["backup_id"]
    return c.get(f"/backups/{backup_id}")["backup"]["task_id"]


def fill_catalog(svc: Service, vaults: int, backups_per_vault: int) -> int:
    """Small disks in their own vaults, each backed up a few times: what the clients list."""
    c = svc.client()
    small = svc.workdir / "small"
    small.mkdir(exist_ok=True)
    pairs = []
    for i in range(vaults):
        img = small / f"d{i}.img"
        make_image(img, 1 << 20, random=False)
        pairs.append(protect_disk(c, f"small{i}", img, 10))
    tasks = []
    for round_ in range(backups_per_vault):
        tasks += [backup(c, v, d, full=round_ == 0) for v, d in pairs]
        for log in wait_tasks(c, tasks[-len(pairs):]):
            if log["status"] != "success":
                raise RuntimeError(f"a setup backup failed: {log['error_info']}")
    return len(tasks)


# ------------------------------------------------------------------------------------ load
@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # the API's own time per request (Server-Timing)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    backups_done: int = 0
    api_cpu: float = 0.0  # CPU seconds the API process used during the phase
    client_cpu: float = 0.0  # ... and this process (the 20 SDK clients)

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    def server_pct(self, q: float) -> float:
        xs = sorted(self.server_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def client_ceiling(self) -> float:
        """Requests/s one client process can issue at most: its threads share one interpreter lock, so its
        CPU time per request bounds its rate whatever the server does."""
        n = len(self.latencies)
        return n / self.client_cpu if self.client_cpu else float("nan")

    def row(self) -> str:
        n = len(self.latencies)
        rate = n / self.seconds if self.seconds else 0

        def per(cpu: float) -> str:
            return f"{cpu / n * 1000:5.1f}" if n else "    -"

        return (f"| {self.name:<22} | {rate:6.0f} | {self.pct(0.50):6.0f} | {self.pct(0.95):6.0f} | "
                f"{self.pct(0.99):6.0f} | {max(self.latencies, default=0) * 1000:6.0f} | {self.errors:6d} | "
                f"{self.server_pct(0.50):6.1f} | {self.server_pct(0.99):6.1f} | "
                f"{per(self.api_cpu)} | {per(self.client_cpu)} |")


def server_time_ms(response) -> float | None:
    """The API's own time for a request, from its ``Server-Timing: app;dur=<ms>`` header."""
    value = response.headers.get("Server-Timing", "")
    _, _, dur = value.partition("dur=")
    try:
        return float(dur.split(",")[0])
    except ValueError:
        return None


def client_loop(svc: Service, stop: threading.Event, phase: Phase, lock: threading.Lock) -> None:
    server: list[float] = []

    def note_server_time(**kwargs) -> None:
        ms = server_time_ms(kwargs["response"])
        if ms is not None:
            server.append(ms)

    c = svc.sdk(HttpHandler().add_response_handler(note_server_time))
    calls = (lambda: c.list_vault(ListVaultRequest(limit=20)), lambda: c.list_backups(ListBackupsRequest(limit=20)))
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            calls[i % 2]()
            ok, err = True, ""
        except Exception as e:  # noqa: BLE001 - every failure counts as an error of the phase
            ok, err = False, f"{type(e).__name__}: {e}"[:200]
        dt = time.perf_counter() - t0
        with lock:
            if ok:
                phase.latencies.append(dt)
            else:
                phase.errors += 1
                if len(phase.error_samples) < 5:
                    phase.error_samples.append(err)
        i += 1
    with lock:
        phase.server_ms.extend(server)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_phase(svc: Service, phase: Phase, clients: int, seconds: float) -> None:
    stop, lock = threading.Event(), threading.Lock()
    threads = [threading.Thread(target=client_loop, args=(svc, stop, phase, lock), daemon=True)
               for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)


def _client_process(svc: Service, clients: int, seconds: float, out) -> None:
    """One of several client processes (``--client-procs``): its threads, then what they measured."""
    part = Phase("part")
    t0 = time.process_time()
    _threads_phase(svc, part, clients, seconds)
    out.send((part.latencies, part.server_ms, part.errors, part.error_samples, time.process_time() - t0))
    out.close()


def run_phase(svc: Service, phase: Phase, clients: int, seconds: float, procs: int = 1) -> Phase:
    """``clients`` SDK clients for ``seconds``: threads of this process, or spread over ``procs`` processes
    (then the clients' interpreter lock no longer caps the rate; they still share the machine's CPUs)."""
    t0, api0, me0 = time.perf_counter(), cpu_seconds(svc.api_pid()), cpu_seconds(os.getpid())
    if procs <= 1:
        _threads_phase(svc, phase, clients, seconds)
        phase.client_cpu = cpu_seconds(os.getpid()) - me0
    else:
        ctx = multiprocessing.get_context("fork")
        pipes, children = [], []
        for i in range(procs):
            mine = clients // procs + (1 if i < clients % procs else 0)
            recv, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_client_process, args=(svc, mine, seconds, send), daemon=True)
            child.start()
            pipes.append(recv)
            children.append(child)
        for recv, child in zip(pipes, children, strict=True):
            lat, server, errors, samples, cpu = recv.recv()
            phase.latencies += lat
            phase.server_ms += server
            phase.errors += errors
            phase.error_samples += samples[: 5 - len(phase.error_samples)]
            phase.client_cpu += cpu
            child.join(60)
    phase.seconds = time.perf_counter() - t0
    phase.api_cpu = cpu_seconds(svc.api_pid()) - api0
    return phase


class BackupLoad:
    """Full backups of big random disks, one after another per disk, until stopped."""

    def __init__(self, svc: Service, disks: list[tuple[str, str]]):
        self.svc, self.disks = svc, disks
        self.stop = threading.Event()
        self.done = 0
        self.failed: list[str] = []
        self.threads = [threading.Thread(target=self._loop, args=(v, d), daemon=True) for v, d in disks]

    def _loop(self, vault_id: str, disk_id: str) -> None:
        c = self.svc.client()
        while not self.stop.is_set():
            log = wait_tasks(c, [backup(c, vault_id, disk_id, full=True)])[0]
            if log["status"] == "success":
                self.done += 1
            else:
                self.failed.append(str(log["error_info"]))

    def __enter__(self) -> BackupLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(1800)


def wait_running(svc: Service, count: int, timeout: float = 120) -> None:
    """Until ``count`` backup tasks are running in the worker processes (the load has started)."""
    c, deadline = svc.client(), time.time() + timeout
    while time.time() < deadline:
        if c.get("/operation-logs", status="running", limit=100)["count"] >= count:
            return
        time.sleep(0.2)
    raise RuntimeError("the big backups did not start")


@contextlib.contextmanager
def profiled(svc: Service, out_dir: str | None, name: str, seconds: float):
    """``py-spy record`` of the API process (all threads, idle frames left out) while the phase runs."""
    if not out_dir:
        yield
        return
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"api-{name}")
    spy = subprocess.Popen(["py-spy", "record", "-p", str(svc.api_pid()), "-d", str(int(seconds)), "-r", "50",
                            "-f", "raw", "-o", base + ".txt"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        spy.wait(60)


def server_parts() -> str:
    """Which HTTP parser and event loop uvicorn picks in the API process (the same environment as this one):
    the C ones (httptools, uvloop) when installed, h11 and asyncio otherwise."""
    from importlib.util import find_spec

    return (f"{'httptools' if find_spec('httptools') else 'h11'} and "
            f"{'uvloop' if find_spec('uvloop') else 'the asyncio loop'}")


# ------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--client-procs", type=int, default=1,
                    help="spread the clients over this many processes (default 1: threads of this process, "
                         "as the target is stated; more shows what the API serves when one client "
                         "process's interpreter lock is not the limit)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--disk-size", default="1G")
    ap.add_argument("--vaults", type=int, default=20)
    ap.add_argument("--backups-per-vault", type=int, default=5)
    ap.add_argument("--worker-procs", type=int, default=2)
    default_nice = Settings().worker_nice
    ap.add_argument("--worker-nice", type=int, default=default_nice,
                    help=f"start the worker processes with this nice value (default {default_nice}, what "
                         "`opencbr serve` gives its own worker processes; 0: the API's priority)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--skip-backups-phase", action="store_true")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="record each phase of the API process with py-spy (must be installed) into DIR")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="opencbr-bench-api-"))
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(args.catalog, workdir)
    svc = Service(workdir, catalog, args.worker_procs, args.worker_nice)
    try:
        svc.start()
        print(f"API pid {svc.api_pid()} at {svc.url}, catalog {args.catalog}, work directory {workdir}", flush=True)
        t0 = time.time()
        n = fill_catalog(svc, args.vaults, args.backups_per_vault)
        print(f"catalog: {args.vaults} vaults, {n} backups ({time.time() - t0:.0f} s)", flush=True)
        phases = []
        with profiled(svc, args.profile, "alone", args.seconds):
            phases.append(run_phase(svc, Phase("alone"), args.clients, args.seconds, args.client_procs))
        print(phases[-1].row(), flush=True)
        if not args.skip_backups_phase:
            c, big = svc.client(), []
            for i in range(args.worker_procs):
                img = workdir / f"big{i}.img"
                make_image(img, parse_size(args.disk_size), random=True)
                big.append(protect_disk(c, f"big{i}", img, max(10, parse_size(args.disk_size) * 3 >> 30)))
            with BackupLoad(svc, big) as load:
                wait_running(svc, len(big))
                with profiled(svc, args.profile, "backups", args.seconds):
                    phase = run_phase(svc, Phase("while full backups run"), args.clients, args.seconds,
                                      args.client_procs)
                phase.backups_done = load.done
            phases.append(phase)
            if load.failed:
                print(f"backups failed: {load.failed[:3]}")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; the API served with "
              f"{server_parts()}")
        spread = "threads of one process" if args.client_procs <= 1 else f"over {args.client_procs} processes"
        print(f"\n{args.clients} official-SDK clients ({spread}), list_vault / list_backups "
              f"(limit 20) alternately, {args.seconds:.0f} s per phase, {args.catalog} catalog, "
              f"{args.worker_procs} worker processes (nice {args.worker_nice})\n")
        print("| phase                  |  req/s | p50 ms | p95 ms | p99 ms | max ms | errors | API p50 ms | "
              "API p99 ms | API CPU ms/req | client CPU ms/req |")
        print("|------------------------|-------:|-------:|-------:|-------:|-------:|-------:|------:|------:|"
              "------:|------:|")
        for ph in phases:
            print(ph.row())
            for e in ph.error_samples:
                print(f"    error sample: {e}")
        print("\nlatencies (p50 ... max) are the clients' (sending, queueing in the client, the API, reading and "
              "parsing the answer); API p50/p99 are the API's own time per request (its Server-Timing header).")
        if args.client_procs <= 1:
            for ph in phases:
                print(f"{ph.name}: one client process at {ph.client_cpu / max(1, len(ph.latencies)) * 1000:.1f} ms "
                      f"of CPU per request can issue at most {ph.client_ceiling():.0f} requests/s (its threads "
                      "share one interpreter lock)")
        if len(phases) > 1:
            print(f"\nfull backups of {args.disk_size} finished during the load phase: {phases[1].backups_done}")
    finally:
        svc.stop()
        catalog.drop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
