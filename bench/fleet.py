#!/usr/bin/env python3
"""A fleet: thousands of resources whose policies fire at the same minute, drained by worker processes.

    python bench/fleet.py [--catalog sqlite|postgresql] [--resources 2000] [--vaults 200]
                          [--worker-procs 2] [--threads 2] [--per-vault 4] [--workdir DIR] [--keep]

What it does:
  1. starts ``opencbr serve`` (API and scheduler, no workers) and ``--worker-procs`` ``opencbr worker``
     processes of ``--threads`` threads each, over a fresh catalog (SQLite, or a new PostgreSQL database);
  2. registers ``--resources`` small disks (64 KiB) through the API, in ``--vaults`` vaults, and applies one
     backup policy to every vault whose only execution time is two minutes ahead: at that minute the
     scheduler fires every vault's execution and queues one backup task per disk (on PostgreSQL,
     ``VACUUM ANALYZE`` first: what autovacuum would have done since the set-up);
  3. while the queue drains: one client lists vaults and backups (limit 20) one request after another and
     records the latency; the catalog is sampled every 0.2 s for the tasks running per vault and per worker;
  4. prints: executions fired (each once?), tasks queued and how long the firing took (from the minute,
     and the scheduler's own figure for its tick), succeeded and failed, the drain time, the most
     tasks seen running per vault and per worker, the longest wait of a task from queued to started and
     how the first starts spread over the vaults, and the API's latency before, during and after the drain
     (after: the catalog as it is at the end, the workers idle; it separates the cost of the grown catalog
     from the drain's competition for the cores).
It is a benchmark, not a test (tests/worker/test_fleet.py checks the same rules at small scale).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import Catalog, Service  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from opencbr.catalog.models import PolicyExecution, Task  # noqa: E402


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def make_fleet(svc: Service, n_resources: int, n_vaults: int) -> list[str]:
    """Disks through the API, ``n_resources / n_vaults`` per vault; returns the vault ids."""
    c = svc.client()
    disks = svc.workdir / "disks"
    disks.mkdir(exist_ok=True)
    per_vault = max(1, n_resources // n_vaults)
    vault_ids = []
    for v in range(n_vaults):
        ids = []
        for j in range(per_vault):
            path = disks / f"d{v}-{j}.img"
            with open(path, "wb") as f:
                f.write(os.urandom(4096) * 16)
            ids.append(c.post("/inventory/disks", {"name": f"d{v}-{j}", "path": str(path)})["disk"]["id"])
        vault = c.post("/vaults", {"vault": {"name": f"fleet-{v:04d}", "billing": {
            "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": i, "type": "OS::Cinder::Volume"} for i in ids]}})["vault"]
        vault_ids.append(vault["id"])
        print(f"\r  vaults: {v + 1}/{n_vaults}", end="", flush=True)
    print()
    return vault_ids


class ApiProbe:
    """One client listing vaults and backups, one request after another, while the queue drains."""

    def __init__(self, svc: Service):
        self.c = svc.client()
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        i = 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                self.c.get("/vaults" if i % 2 else "/backups", limit=20)
                self.latencies.append((time.perf_counter() - t0) * 1000)
            except Exception:  # noqa: BLE001 - counted
                self.errors += 1
            i += 1
            time.sleep(0.02)

    def run_for(self, seconds: float) -> ApiProbe:
        self.thread.start()
        time.sleep(seconds)
        self.stop.set()
        self.thread.join(30)
        return self

    def row(self, name: str) -> str:
        return (f"| {name} | {len(self.latencies)} | {percentile(self.latencies, 0.5):.0f} | "
                f"{percentile(self.latencies, 0.99):.0f} | {max(self.latencies, default=0):.0f} | {self.errors} |")


def drain(url: str, probe: ApiProbe, n_tasks: int, timeout: float) -> dict:
    """Sample the running tasks until ``n_tasks`` backup tasks have finished."""
    eng = create_engine(url)
    peak_vault, peak_worker, peak_total = Counter(), Counter(), 0
    t0 = time.time()
    first_seen = all_queued = None
    finished = 0
    try:
        while time.time() - t0 < timeout:
            with eng.connect() as c:
                rows = c.execute(select(Task.vault_id, Task.lease_owner).where(
                    Task.operation_type == "backup", Task.status == "running")).all()
                finished = c.execute(select(func.count()).select_from(Task).where(
                    Task.operation_type == "backup", Task.status.in_(("success", "failed")))).scalar()
                queued = c.execute(select(func.count()).select_from(Task).where(Task.operation_type == "backup")).scalar()
            if queued and first_seen is None:
                first_seen = time.time()
                probe.thread.start()
            if queued >= n_tasks and all_queued is None:
                all_queued = time.time()
            for key, n in Counter(v for v, _ in rows).items():
                peak_vault[key] = max(peak_vault[key], n)
            for key, n in Counter(w for _, w in rows).items():
                peak_worker[key] = max(peak_worker[key], n)
            peak_total = max(peak_total, len(rows))
            if queued >= n_tasks and finished >= n_tasks:
                break
            time.sleep(0.2)
    finally:
        probe.stop.set()
        if probe.thread.is_alive():
            probe.thread.join(30)
    with eng.connect() as c:
        tasks = c.execute(select(Task.vault_id, Task.status, Task.created_at, Task.started_at)
                          .where(Task.operation_type == "backup").order_by(Task.started_at)).all()
        fired = c.execute(select(PolicyExecution.vault_id, PolicyExecution.execution_id)
                          .where(PolicyExecution.decision == "fire")).all()
    eng.dispose()
    waits = [(t.started_at - t.created_at).total_seconds() for t in tasks if t.started_at]
    first_vaults = [t.vault_id for t in tasks if t.started_at][: len({t.vault_id for t in tasks})]
    return {"drain_s": time.time() - (first_seen or t0), "first_queued": first_seen, "all_queued": all_queued,
            "finished": finished, "tasks": len(tasks),
            "status": Counter(t.status for t in tasks), "fired": len(fired), "fired_unique": len(set(fired)),
            "peak_vault": max(peak_vault.values(), default=0), "peak_worker": max(peak_worker.values(), default=0),
            "peak_total": peak_total, "wait_max": max(waits, default=0), "wait_p50": percentile(waits, 0.5),
            "first_vaults_distinct": len(set(first_vaults)), "vaults": len({t.vault_id for t in tasks})}


def firing_tick(api_log: Path) -> str:
    """The scheduler's own timing of the tick that fired the fleet (its log line), e.g. "200 fired in 6.93 s"."""
    ticks = re.findall(r"tick: \d+ executions decided \((\d+) fired, \d+ tasks\) in ([\d.]+) s", api_log.read_text())
    fired, seconds = max(ticks, key=lambda m: int(m[0]), default=("0", "nan"))
    return f"{fired} fired in {float(seconds):.2f} s"


def analyze(catalog: Catalog) -> None:
    """What autovacuum keeps up with on a live PostgreSQL server (the test server here may run without it):
    the tables' statistics and visibility maps as of the fleet's set-up, before the policy fires."""
    if catalog.kind != "postgresql":
        return
    eng = create_engine(catalog.url)
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        print(f"autovacuum on the server: {c.execute(text('SHOW autovacuum')).scalar()}; VACUUM ANALYZE after set-up")
        c.execute(text("VACUUM ANALYZE"))
    eng.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--resources", type=int, default=2000)
    ap.add_argument("--vaults", type=int, default=200)
    ap.add_argument("--worker-procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-vault", type=int, default=4, help="max_tasks_per_vault")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="opencbr-bench-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(args.catalog, workdir)
    os.environ["OPENCBR_MAX_TASKS_PER_VAULT"] = str(args.per_vault)
    svc = Service(workdir, catalog, worker_procs=0)
    try:
        svc.start()
        t0 = time.time()
        vault_ids = make_fleet(svc, args.resources, args.vaults)
        print(f"{args.resources} disks in {len(vault_ids)} vaults registered in {time.time() - t0:.0f} s", flush=True)
        analyze(catalog)
        before = ApiProbe(svc).run_for(10)
        c = svc.client()
        at = datetime.now(UTC) + timedelta(minutes=2)
        policy = c.post("/policies", {"policy": {
            "name": "fleet", "operation_type": "backup", "enabled": True, "operation_definition": {"max_backups": 5},
            "trigger": {"properties": {"pattern": [f"FREQ=DAILY;BYHOUR={at.hour};BYMINUTE={at.minute}"]}}}})["policy"]
        for vid in vault_ids:
            c.post(f"/vaults/{vid}/associatepolicy", {"policy_id": policy["id"]})
        for i in range(args.worker_procs):
            svc._spawn("worker", "--count", str(args.threads), log=f"worker{i}.log")
        print(f"policy fires at {at:%H:%M} UTC; {args.worker_procs} worker processes x {args.threads} threads, "
              f"max_tasks_per_vault {args.per_vault}", flush=True)
        during = ApiProbe(svc)
        r = drain(catalog.url, during, len(vault_ids) * max(1, args.resources // args.vaults), args.timeout)
        minute = at.replace(second=0, microsecond=0).timestamp()
        after = ApiProbe(svc).run_for(10)  # the same catalog, workers idle: what the drain itself costs
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
        print(f"{args.catalog}: {args.resources} disks in {len(vault_ids)} vaults, one policy firing at one minute\n")
        print("| figure | value |\n|---|--:|")
        for name, value in [
            ("executions fired (unique)", f"{r['fired']} ({r['fired_unique']})"),
            ("backup tasks queued", r["tasks"]),
            ("firing s: the minute to the first task queued / to the last (polled every 0.2 s)",
             f"{r['first_queued'] - minute:.1f} / {r['all_queued'] - minute:.1f}"),
            ("the scheduler's tick that fired them (its log)", firing_tick(workdir / "api.log")),
            ("finished: success / failed", f"{r['status'].get('success', 0)} / {r['status'].get('failed', 0)}"),
            ("drain time s (first task queued to last finished)", f"{r['drain_s']:.0f}"),
            ("backups per second", f"{r['tasks'] / max(r['drain_s'], 1e-9):.1f}"),
            (f"most running on one vault (cap {args.per_vault})", r["peak_vault"]),
            ("most running on one worker thread", r["peak_worker"]),
            (f"most running in all ({args.worker_procs * args.threads} worker threads)", r["peak_total"]),
            ("wait from queued to started: p50 / max s", f"{r['wait_p50']:.0f} / {r['wait_max']:.0f}"),
            (f"vaults among the first {r['vaults']} tasks started", r["first_vaults_distinct"]),
        ]:
            print(f"| {name} | {value} |")
        print("\n| API, one client (list vaults / backups, limit 20) | requests | p50 ms | p99 ms | max ms | errors |")
        print("|---|--:|--:|--:|--:|--:|")
        print(before.row("before the policy fires"))
        print(during.row("while the queue drains"))
        print(after.row("after it drained (workers idle)"))
    finally:
        svc.stop()
        catalog.drop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
