#!/usr/bin/env python3
"""A catalog of millions: list, filter, sort and count through the real API over a generated project.

    python bench/catalog.py [--catalog sqlite|postgresql] [--vaults 200] [--resources 20000]
                            [--backups 2000000] [--requests 60] [--workdir DIR] [--keep]

What it does:
  1. a fresh catalog (SQLite file, or a new PostgreSQL database on 127.0.0.1:5432 dropped afterwards) and
     one project; ``--vaults`` disk vaults with ``--resources`` disks spread over them, and ``--backups``
     top-level backup rows (the same number per disk, one a day back from today, ~1 % in error), written
     with bulk inserts straight into the catalog's tables (no data is backed up: the rows are what is
     measured); a backup policy (max_backups) applied to every vault;
  2. starts ``opencbr serve`` (no workers) on that catalog and sends ``--requests`` signed requests of each
     kind one after another (after two warm-up requests): backup lists (default order, filtered by vault,
     resource, status, time window, sorted by name, a deep offset, the next page by marker), vault lists,
     the storage usage, the summary; prints p50 / p99 / max per kind, as the client saw them and as the
     API timed itself (its ``Server-Timing`` header);
  3. times the scheduler's ticks (the first learns each binding's next execution time, the next ones read
     only the due bindings), a whole round of the retention sweep in its bounded passes, and retention
     applied to a sample of resources, in this process.
It is a benchmark, not a test: the numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import Catalog, Service, server_time_ms  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402

from opencbr.catalog.models import Backup, Checkpoint, Resource, Vault, VaultResource  # noqa: E402

BATCH = 20_000


def ordered_id(major: int, minor: int, rng: random.Random) -> str:
    """A UUID-shaped id that sorts in insertion order (as a time-ordered UUID does): the tables' B-trees
    grow at their end instead of at random places, which makes generating millions of rows fast."""
    return str(uuid.UUID(int=(major << 96) | (minor << 64) | rng.getrandbits(64)))


def now_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


# ------------------------------------------------------------------------------------ generation
def generate(url: str, project_id: str, workdir: Path, n_vaults: int, n_resources: int, n_backups: int) -> dict:
    """Rows straight into the tables, in big batches (the API would take hours to make 2 M backups)."""
    eng = create_engine(url)
    if eng.dialect.name == "sqlite":
        from sqlalchemy import event

        @event.listens_for(eng, "connect")
        def _big_cache(dbapi_conn, _record):
            dbapi_conn.execute("PRAGMA cache_size = -1000000")
            dbapi_conn.execute("PRAGMA synchronous = OFF")
    rng = random.Random(18)
    now = now_naive()
    per_resource = max(1, n_backups // n_resources)
    disks = workdir / "disks"
    disks.mkdir(exist_ok=True)
    vault_ids = [str(uuid.uuid4()) for _ in range(n_vaults)]
    res_ids = [str(uuid.uuid4()) for _ in range(n_resources)]
    vault_of = {rid: vault_ids[i % n_vaults] for i, rid in enumerate(res_ids)}
    with eng.begin() as c:
        c.execute(insert(Vault), [dict(
            id=vid, project_id=project_id, user_id="", name=f"vault-{i:04d}", description="", region="local",
            object_type="disk", protect_type="backup", size_gb=100_000, spec_code="vault.backup.volume.normal",
            status="available", used_bytes=0, bind_rules={}, tags=[], created_at=now - timedelta(days=400, minutes=i),
            updated_at=now) for i, vid in enumerate(vault_ids)])
        rows = []
        for i, rid in enumerate(res_ids):
            path = disks / f"d{i}.img"
            path.touch()
            rows.append(dict(id=rid, project_id=project_id, type="OS::Cinder::Volume", provider="local",
                             name=f"disk-{i:05d}", path=str(path), size_bytes=(10 + i % 90) << 30, region="local",
                             status="available", identity={}, tags=[], created_at=now - timedelta(days=400),
                             updated_at=now))
        c.execute(insert(Resource), rows)
        c.execute(insert(VaultResource), [dict(vault_id=vault_of[rid], resource_id=rid, project_id=project_id,
                                               extra_info={}, auto_protect=True, created_at=now) for rid in res_ids])
    made, used = 0, {vid: 0 for vid in vault_ids}
    for day in range(per_resource):
        at = now - timedelta(days=per_resource - day)
        cps = {vid: str(uuid.uuid4()) for vid in vault_ids}
        with eng.begin() as c:
            c.execute(insert(Checkpoint), [dict(
                id=cp, project_id=project_id, vault_id=vid, status="available", name=f"autobk_{day:04d}",
                description="", auto_trigger=True, policy_id="", skipped=[], created_at=at, updated_at=at)
                for vid, cp in cps.items()])
            rows = []
            for i, rid in enumerate(res_ids):
                vid = vault_of[rid]
                added = rng.randrange(1 << 20, 1 << 30)
                used[vid] += added
                created = at + timedelta(seconds=i % 3600)
                rows.append(dict(
                    id=ordered_id(day + 1, i, rng), project_id=project_id, vault_id=vid, checkpoint_id=cps[vid],
                    parent_id=None, name=f"autobk_{day:04d}_{i:05d}", description="", resource_id=rid,
                    resource_name=f"disk-{i:05d}", resource_type="OS::Cinder::Volume",
                    resource_size_bytes=(10 + i % 90) << 30, resource_az="", image_type="backup",
                    status="error" if rng.random() < 0.01 else "available", auto_trigger=True, policy_id="",
                    retention_rule="", incremental=day > 0, full_requested=False, encrypted=True,
                    used_by_image=False, logical_bytes=(10 + i % 90) << 30, added_bytes=added, details={},
                    error_code="", error_message="", task_id="", created_at=created, updated_at=created,
                    protected_at=created, source_backup_id="", source_region=""))
                if len(rows) == BATCH:
                    c.execute(insert(Backup), rows)
                    made += len(rows)
                    rows = []
            if rows:
                c.execute(insert(Backup), rows)
                made += len(rows)
        print(f"\r  backups: {made:,}", end="", flush=True)
    print()
    with eng.begin() as c:
        for vid, n in used.items():
            c.execute(text("UPDATE vaults SET used_bytes = :n WHERE id = :id"), {"n": n, "id": vid})
        if eng.dialect.name == "sqlite":
            c.execute(text("ANALYZE"))
    if eng.dialect.name == "postgresql":
        # What autovacuum keeps up with on a live server, where backups come a few at a time (the test
        # server here runs without it): the triggers' 2 M updates of backup_usage in minutes left a table
        # of 240 MB for 33,000 rows, which every count read through (460 ms cold), and without the
        # visibility map every index-only scan reads the table too.
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM FULL backup_usage"))
            c.execute(text("VACUUM ANALYZE"))
    eng.dispose()
    return {"vault_ids": vault_ids, "resource_ids": res_ids, "per_resource": per_resource, "now": now.isoformat()}


# ------------------------------------------------------------------------------------ measuring
def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def measure(svc: Service, name: str, route: str, params_of, n: int, rows: list) -> None:
    """``n`` signed GETs (after two warm-ups), one at a time; ``params_of(i)`` gives each one's query."""
    c = svc.client()
    wall, own = [], []
    for i in range(n + 2):
        params = params_of(i)
        t0 = time.perf_counter()
        r = c.send("GET", route, params=params)
        dt = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            raise RuntimeError(f"{name}: HTTP {r.status_code} {r.text[:300]}")
        r.json()
        if i >= 2:
            wall.append(dt)
            ms = server_time_ms(r)
            if ms is not None:
                own.append(ms)
    rows.append((name, percentile(wall, 0.5), percentile(wall, 0.99), max(wall), percentile(own, 0.5),
                 percentile(own, 0.99)))
    print(f"  {name:<40} p50 {rows[-1][1]:7.1f}  p99 {rows[-1][2]:7.1f}  max {rows[-1][3]:7.1f} ms", flush=True)


def run_queries(svc: Service, gen: dict, n: int) -> list:
    rng = random.Random(7)
    vids, rids, now = gen["vault_ids"], gen["resource_ids"], datetime.fromisoformat(gen["now"])
    c = svc.client()
    first = c.get("/backups", limit=20)["backups"]
    marker = first[-1]["id"]

    def window(i: int) -> dict:
        end = now - timedelta(days=rng.randrange(1, gen["per_resource"]))
        return {"limit": 20, "start_time": (end - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%S"),
                "end_time": end.strftime("%Y-%m-%dT%H:%M:%S")}

    rows: list = []
    kinds = [
        ("backups, newest first (limit 20)", "/backups", lambda i: {"limit": 20}),
        ("backups, count only (limit 1)", "/backups", lambda i: {"limit": 1}),
        ("backups of a vault", "/backups", lambda i: {"limit": 20, "vault_id": rng.choice(vids)}),
        ("backups of a resource", "/backups", lambda i: {"limit": 20, "resource_id": rng.choice(rids)}),
        ("backups in error", "/backups", lambda i: {"limit": 20, "status": "error"}),
        ("backups available, by name", "/backups", lambda i: {"limit": 20, "status": "available", "sort": "name:asc"}),
        ("backups in a 6 h window", "/backups", window),
        ("backups, offset 100 000", "/backups", lambda i: {"limit": 20, "offset": 100_000 + i}),
        ("backups, next page by marker", "/backups", lambda i: {"limit": 20, "marker": marker}),
        ("vaults (limit 20)", "/vaults", lambda i: {"limit": 20}),
        ("vaults by name (limit 20)", "/vaults", lambda i: {"limit": 20, "sort": "name:asc",
                                                            "offset": rng.randrange(0, 180)}),
        ("vaults of a resource", "/vaults", lambda i: {"resource_ids": rng.choice(rids)}),
        ("storage usage (limit 20)", "/storage_usage", lambda i: {"limit": 20, "offset": rng.randrange(0, 19_000)}),
        ("storage usage of a resource", "/storage_usage", lambda i: {"resource_id": rng.choice(rids)}),
        ("summary", "/vaults/summary", lambda i: {}),
    ]
    for name, route, params_of in kinds:
        measure(svc, name, route, params_of, n, rows)
    return rows


def time_passes(svc: Service, gen: dict, sample_size: int = 200, budget: float = 120.0) -> list:
    """The scheduler's ticks, a whole round of the retention sweep in its bounded passes, and retention
    applied to a sample of resources (the write path a pass takes for a pair with something to delete),
    in this process."""
    from opencbr.config import load_settings
    from opencbr.scheduler.loop import Scheduler
    from opencbr.services.context import open_context

    ctx = open_context(load_settings(env=svc.env))
    out = []
    try:
        sched = Scheduler(ctx, "bench")
        for i in range(3):
            t0 = time.perf_counter()
            sched.tick()
            what = "learns each binding's next time" if i == 0 else "nothing due"
            out.append((f"scheduler tick #{i + 1} ({len(gen['vault_ids'])} bindings; {what})",
                        time.perf_counter() - t0))
        out += _sweep_passes(ctx, budget)
        out += _apply_to_sample(ctx, gen, sample_size)
    finally:
        ctx.close()
    for name, sec in out:
        print(f"  {name:<40} {sec * 1000:9.0f} ms", flush=True)
    return out


def _sweep_passes(ctx, budget: float) -> list:
    """Sweep passes (at most SWEEP_PAIRS pairs or SWEEP_PASS_SECONDS each) from the scheduler's cursor
    until the round is done or ``budget`` seconds are spent;
    then the same pairs again (nothing left to delete: the pure cost of checking them). The generated
    failed backups older than a month are what the first passes delete (guide 5.2)."""
    from opencbr.services import retention
    from opencbr.services.utc import naive

    n = retention.SWEEP_PAIRS
    took, pairs, pruned, t_end = [], 0, 0, time.perf_counter() + budget
    start = retention.sweep_cursor(ctx)
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        p = retention.sweep_pass(ctx, limit=n)
        took.append(time.perf_counter() - t0)
        pairs, pruned = pairs + p.pairs, pruned + len(p.pruned)
        if p.round_done:
            break
    checked, after, now = [], start, naive(ctx.now())
    for _ in took:
        t0 = time.perf_counter()
        after = retention.sweep_pass_after(ctx, after, n, now, seconds=float("inf")).last
        checked.append(time.perf_counter() - t0)
    return [(f"sweep pass, deleting (mean of {len(took)}; {pruned} of {pairs} pairs pruned)",
             sum(took) / len(took)), ("sweep pass, deleting, slowest", max(took)),
            (f"sweep pass, nothing to delete (mean of {len(checked)}, the same pairs)", sum(checked) / len(checked)),
            ("sweep pass, nothing to delete, slowest", max(checked))]


def _apply_to_sample(ctx, gen: dict, sample_size: int) -> list:
    """``apply_retention`` (locks and loads a pair's backups as entities) on a sample of pairs."""
    from sqlalchemy import select

    from opencbr.catalog.models import BackupUsage
    from opencbr.services import retention

    with ctx.tx() as s:
        pairs = list(s.execute(select(BackupUsage.vault_id, BackupUsage.resource_id).distinct()))
    sample = random.Random(3).sample(pairs, min(sample_size, len(pairs)))
    t0 = time.perf_counter()
    for vault_id, resource_id in sample:
        with ctx.tx() as s:
            retention.apply_retention(s, ctx, vault_id, resource_id, source="sweep")
    per = (time.perf_counter() - t0) / len(sample)
    return [(f"apply_retention on one resource ({gen['per_resource']} backups; mean of {len(sample)})", per)]


class ReusedCatalog(Catalog):
    def __init__(self, kind: str, workdir: Path, gen: dict):
        self.kind, self.url, self.db = kind, gen["url"], gen["db"]


class ReusedService(Service):
    """The API over a kept catalog, with the credentials the generating run bootstrapped."""

    def __init__(self, workdir: Path, gen: dict):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.workdir, self.url = workdir, f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "OPENCBR_DATA_DIR": str(workdir / "data"), "OPENCBR_CATALOG_URL": gen["url"],
                    "OPENCBR_LISTEN": f"127.0.0.1:{self.port}", "OPENCBR_WORKERS": "0",
                    "OPENCBR_CLIENT_CONFIG": str(workdir / "client.toml"),
                    "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                   os.environ.get("PYTHONPATH", "")])}
        self.worker_procs, self.worker_nice, self.procs = 0, 0, []
        self.ak, self.sk, self.project_id = gen["ak"], gen["sk"], gen["project_id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--vaults", type=int, default=200)
    ap.add_argument("--resources", type=int, default=20_000)
    ap.add_argument("--backups", type=int, default=2_000_000)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--skip-passes", action="store_true", help="do not time the scheduler and retention passes")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (and the PostgreSQL database)")
    ap.add_argument("--reuse", action="store_true",
                    help="measure the catalog a --keep run generated in --workdir (e.g. before and after a change)")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="opencbr-bench-catalog-"))
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / "generated.json"
    if args.reuse:  # the catalog of an earlier --keep run, brought to this code's schema by the API's start
        gen = json.loads(saved.read_text())
        catalog, svc = ReusedCatalog(args.catalog, workdir, gen), ReusedService(workdir, gen)
    else:
        catalog = Catalog(args.catalog, workdir)
        svc = Service(workdir, catalog, worker_procs=0)
    try:
        if not args.reuse:
            t0 = time.time()
            gen = generate(catalog.url, svc.project_id, workdir, args.vaults, args.resources, args.backups)
            gen.update(project_id=svc.project_id, ak=svc.ak, sk=svc.sk, url=catalog.url,
                       db=getattr(catalog, "db", ""))
            saved.write_text(json.dumps(gen))
            print(f"generated {args.vaults} vaults, {args.resources} resources, {args.backups:,} backups in "
                  f"{time.time() - t0:.0f} s ({args.catalog})", flush=True)
        # The API without its scheduler: its passes run over the whole catalog and are timed on their own
        # below; the migrations run here first (on a reused catalog: this code's, over 2 M rows).
        svc.env["OPENCBR_SCHEDULER"] = "false"
        t0 = time.time()
        from opencbr.catalog.db import upgrade

        upgrade(catalog.url)
        print(f"catalog migrations: {time.time() - t0:.0f} s", flush=True)
        c = svc.start().client()
        if not c.get("/policies")["policies"]:
            policy = c.post("/policies", {"policy": {
                "name": "bench", "operation_type": "backup", "enabled": True,
                "operation_definition": {"max_backups": gen["per_resource"] + 10},
                "trigger": {"properties": {"pattern": ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=03;BYMINUTE=00"]}}}})["policy"]
            for vid in gen["vault_ids"]:
                c.post(f"/vaults/{vid}/associatepolicy", {"policy_id": policy["id"]})
        rows = run_queries(svc, gen, args.requests) if args.requests else []
        passes = [] if args.skip_passes else time_passes(svc, gen)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
        print(f"{args.catalog}: {args.vaults} vaults, {args.resources} resources, {args.backups:,} backups, "
              f"{args.requests} requests each, one at a time\n")
        print("| request | p50 ms | p99 ms | max ms | API's own p50 | API's own p99 |")
        print("|---|--:|--:|--:|--:|--:|")
        for name, p50, p99, mx, o50, o99 in rows:
            print(f"| {name} | {p50:.1f} | {p99:.1f} | {mx:.1f} | {o50:.1f} | {o99:.1f} |")
        if passes:
            print("\n| pass | ms |\n|---|--:|")
            for name, sec in passes:
                print(f"| {name} | {sec * 1000:.0f} |")
    finally:
        svc.stop()
        if not args.keep:
            catalog.drop()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
