#!/usr/bin/env python3
"""Cross-region replication benchmark: two OpenCBR installations on this machine, and ``restic copy``
of the same data between two restic repositories in the same run.

    python bench/replicate.py [--size 2G] [--workdir /tmp/opencbr-bench-repl] [--no-restic]
    python bench/replicate.py --tree [--files 30000] [--size 1.5G]     # an SFS Turbo (file system) backup

What it does:
  1. ``make_dataset.py disk`` builds the bench disk (seed 1); region-a backs it up;
  2. region-a replicates the backup to region-b (first replication: timed from the task's start to its
     end; bytes on the link from the replication record);
  3. ``make_dataset.py mutate --percent 5 --seed 2``; region-a backs up again (incremental) and
     replicates it: bytes on the link vs the bytes the source backup added;
  4. restic: backup of the same image into repository 1, then ``restic copy`` into repository 2, timed;
  5. peak RSS (VmHWM) of region-a's worker processes (which run the source side);
  6. CPU seconds (user + system) of both installations' worker processes during each replication
     (the source's reading and sealing, the destination's checking and storing).
With ``--tree`` the same steps run on a file tree (``make_dataset.py tree``, then ``mutate-tree --percent
2``) registered as a file system, in SFS Turbo vaults.
Not a timed test: run it by hand, paste the table into docs/replication.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "src")]
# the servers this starts run this checkout's code too
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])

from tests.support.clients import api, cli, wait_task  # noqa: E402
from tests.support.databases import sqlite_url  # noqa: E402
from tests.support.server import ServerProcess, free_port  # noqa: E402

PY = sys.executable


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def backup(server, vault_id: str) -> dict:
    c = api(server)
    out = c.post("/checkpoints", {"checkpoint": {"vault_id": vault_id}})
    bid = c.get("/backups", checkpoint_id=out["checkpoint"]["id"])["backups"][0]["id"]
    while (b := c.get(f"/backups/{bid}")["backup"])["status"] == "protecting":
        time.sleep(0.2)
    assert b["status"] == "available", b
    return b


def replicate(a, b, backup_id: str, dest_vault: str) -> dict:
    c = api(a)
    rep = c.post(f"/backups/{backup_id}/replicate", {"replicate": {
        "destination_project_id": b.admin.project_id, "destination_region": "region-b",
        "destination_vault_id": dest_vault}})["replication"]
    while True:
        recs = c.get(f"/backups/{backup_id}")["backup"]["replication_records"]
        rec = [r for r in recs if r["id"] == rep["replication_record_id"]][0]
        if rec["status"] != "replicating":
            break
        time.sleep(0.2)
    assert rec["status"] == "available", rec
    task = wait_task(c, rec["task_id"], timeout=3600)
    rec["seconds"] = _seconds(task)
    return rec


def _seconds(task: dict) -> float:
    from datetime import datetime

    start, end = (datetime.fromisoformat(task[k].replace("Z", "+00:00")) for k in ("started_at", "ended_at"))
    return max((end - start).total_seconds(), 0.001)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (and their finished children) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def timed_replication(a, b, backup_id: str, dest_vault: str) -> dict:
    pids = a.worker_pids() + b.worker_pids()
    before = cpu_seconds(pids)
    rec = replicate(a, b, backup_id, dest_vault)
    rec["cpu"] = cpu_seconds(pids) - before
    return rec


def peak_rss_mb(pids: list[int]) -> float:
    best = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best / 1024


def restic_copy(work: Path, image: Path) -> tuple[float, float] | None:
    if not shutil.which("restic"):
        return None
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(work / "cache/restic"))
    r1, r2 = work / "restic1", work / "restic2"
    for r in (r1, r2):
        shutil.rmtree(r, ignore_errors=True)
        sh(["restic", "init", "-q", "--repo", str(r)], env=env)
    sh(["restic", "backup", "-q", "--repo", str(r1), str(image)], env=env)
    t0, c0 = time.monotonic(), os.times()
    sh(["restic", "copy", "-q", "--from-repo", str(r1), "--repo", str(r2)],
       env={**env, "RESTIC_FROM_PASSWORD": "bench"})
    c1 = os.times()
    return time.monotonic() - t0, (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G")
    ap.add_argument("--workdir", default="/tmp/opencbr-bench-repl")
    ap.add_argument("--no-restic", action="store_true")
    ap.add_argument("--tree", action="store_true", help="a file tree (SFS Turbo) instead of a disk")
    ap.add_argument("--files", default="30000", help="files of the tree (--tree)")
    a_ = ap.parse_args()
    work = Path(a_.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / ("tree" if a_.tree else "disk.img")
    if a_.tree:
        sh([PY, str(REPO_ROOT / "bench/make_dataset.py"), "tree", str(data), "--files", a_.files, "--total",
            a_.size, "--seed", "1"])
        logical = sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and not f.is_symlink())
    else:
        sh([PY, str(REPO_ROOT / "bench/make_dataset.py"), "disk", str(data), "--size", a_.size, "--seed", "1"])
        logical = data.stat().st_size
    kind = ("turbo", "OS::Sfs::Turbo", "file-systems", "file_system") if a_.tree else \
        ("disk", "OS::Cinder::Volume", "disks", "disk")
    receiver = f"127.0.0.1:{free_port()}"
    (work / "a").mkdir()
    (work / "b").mkdir()
    a = ServerProcess(str(work / "a"), sqlite_url(str(work / "a")), extra_env={
        "OPENCBR_REGION": "region-a", "OPENCBR_RESOURCE_ROOTS": str(work)}).start(60)
    b = ServerProcess(str(work / "b"), sqlite_url(str(work / "b")), extra_env={
        "OPENCBR_REGION": "region-b", "OPENCBR_REPLICATION_LISTEN": receiver}).start(60)
    try:
        token = cli(b, "admin", "region", "credential", "region-a", "--json").json()["token"]
        assert cli(a, "admin", "region", "add", "region-b", "--endpoint", receiver, "--credential", token).code == 0
        res = api(a).post(f"/inventory/{kind[2]}", {"name": "bench", "path": str(data)})[kind[3]]
        size_gb = max(10, 4 * logical // 1024**3)
        src = api(a).post("/vaults", {"vault": {"name": "src", "billing": {
            "object_type": kind[0], "protect_type": "backup", "size": size_gb, "consistent_level": "crash_consistent"},
            "resources": [{"id": res["id"], "type": kind[1]}]}})["vault"]
        dst = api(b).post("/vaults", {"vault": {"name": "dst", "billing": {
            "object_type": kind[0], "protect_type": "replication", "size": size_gb,
            "consistent_level": "crash_consistent"}}})["vault"]
        b1 = backup(a, src["id"])
        rss_backup = peak_rss_mb(a.worker_pids())  # (the source backup's own peak, in the same processes)
        r1 = timed_replication(a, b, b1["id"], dst["id"])
        if a_.tree:
            sh([PY, str(REPO_ROOT / "bench/make_dataset.py"), "mutate-tree", str(data), "--percent", "2", "--seed", "2"])
        else:
            sh([PY, str(REPO_ROOT / "bench/make_dataset.py"), "mutate", str(data), "--percent", "5", "--seed", "2"])
        b2 = backup(a, src["id"])
        r2 = timed_replication(a, b, b2["id"], dst["id"])
        rss = peak_rss_mb(a.worker_pids())
    finally:
        a.stop()
        b.stop()
    restic = None if a_.no_restic else restic_copy(work, data)
    mb = logical / 1e6
    bound = 1.2 * b2["added_bytes"] + 0.005 * logical
    print(f"\nlogical size {logical / 1024**2:.0f} MiB\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| first replication | {r1['seconds']:.1f} s, {mb / r1['seconds']:.0f} MB/s, {r1['wire_bytes'] / 1e6:.1f} MB "
          f"on the link, {r1['cpu']:.1f} CPU s |")
    print(f"| restic copy of the same data | "
          f"{'not run' if restic is None else f'{restic[0]:.1f} s, {mb / restic[0]:.0f} MB/s, {restic[1]:.1f} CPU s'} |")
    if restic is not None:
        print(f"| first replication vs restic copy | {restic[0] / r1['seconds']:.2f}x |")
    print(f"| second source backup added | {b2['added_bytes'] / 1e6:.1f} MB |")
    print(f"| second replication | {r2['seconds']:.1f} s, {r2['cpu']:.1f} CPU s, {r2['wire_bytes'] / 1e6:.1f} MB on the link "
          f"(bound 1.2 x added + 0.5 % = {bound / 1e6:.1f} MB: {'met' if r2['wire_bytes'] <= bound else 'NOT met'}) |")
    print(f"| peak RSS of a source worker process | {rss:.0f} MB (after the first backup, before any "
          f"replication: {rss_backup:.0f} MB) |")
    print(f"| load average (1, 5, 15 min) at the end | {' '.join(f'{x:.1f}' for x in os.getloadavg())} |")


if __name__ == "__main__":
    main()
