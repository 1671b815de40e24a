#!/usr/bin/env python3
"""Scale-out benchmark: backup throughput with 1 and with 2 worker machines (issue 18, item 5).

    sudo python bench/scaleout.py [--disks 8] [--size 128M] [--threads 1] [--workdir /tmp]

The installation of ``tests/scaleout/fleet.py``: the API, the worker machines, a PostgreSQL catalog and
the S3 server (moto) each in a network namespace, over a bridge. For each fleet size (1, then 2 worker
machines) a fresh fleet backs up ``--disks`` disks of ``--size`` random bytes each (nothing to compress
or deduplicate) with one checkpoint, and the time from the checkpoint to the last backup's end gives the
throughput. Printed: a table per fleet size, the ratio, and which machine ran how many backups.
Not a timed test (root, minutes): run it by hand, paste the table into docs/operations.md.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "src")]
# the machines this starts run this checkout's code too
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])

from opencbr.cli.client import ApiClient, ClientConfig  # noqa: E402
from tests.scaleout.fleet import Fleet, unavailable_reason  # noqa: E402
from tests.support.clients import wait_task  # noqa: E402
from tests.support.disks import MiB, big_random_image  # noqa: E402

BILLING = {"object_type": "disk", "size": 1000, "consistent_level": "crash_consistent", "protect_type": "backup"}
CLAIMED = re.compile(r"task (\S+) \(backup, attempt \d+\) claimed by (w\d+):")


def size_arg(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def run(workers: int, images: list[str], threads: int) -> dict:
    with Fleet(workers=workers, threads_per_worker=threads, lease_seconds=30) as fleet:
        fleet.show_logs = False
        c = ApiClient(ClientConfig(fleet.url, fleet.admin.project_id, fleet.admin.ak, fleet.admin.sk))
        disks = [c.post("/inventory/disks", {"name": f"bench-{i}", "path": p})["disk"] for i, p in enumerate(images)]
        v = c.post("/vaults", {"vault": {"name": "bench", "billing": BILLING, "resources": [
            {"id": d["id"], "type": "OS::Cinder::Volume"} for d in disks]}})["vault"]
        start = time.monotonic()
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})["checkpoint"]
        backups = c.get("/backups", checkpoint_id=cp["id"])["backups"]
        for b in backups:
            log = wait_task(c, b["task_id"], timeout=3600)
            assert log["status"] == "success", log
        seconds = time.monotonic() - start
        ran_on: dict[str, int] = {}
        for name in fleet.worker_names():
            for _task, machine in CLAIMED.findall(fleet.machines[name].log()):
                ran_on[machine] = ran_on.get(machine, 0) + 1
    total = sum(os.path.getsize(p) for p in images)
    return {"workers": workers, "seconds": seconds, "mb_s": total / MiB / seconds, "ran_on": ran_on}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--disks", type=int, default=8)
    ap.add_argument("--size", default="128M", help="bytes per disk (K, M, G suffixes)")
    ap.add_argument("--threads", type=int, default=1, help="worker threads per worker machine")
    ap.add_argument("--workdir", default=tempfile.gettempdir(), help="where the disk images are written")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot build the fleet: {reason}")
    with tempfile.TemporaryDirectory(prefix="opencbr-scaleout-", dir=args.workdir) as d:
        size = size_arg(args.size)
        images = [big_random_image(Path(d) / f"disk{i}.img", size) for i in range(args.disks)]
        results = []
        for n in (1, 2):
            load_before = os.getloadavg()[0]
            results.append({**run(n, images, args.threads), "load": (load_before, os.getloadavg()[0])})
    print(f"\n{args.disks} disks x {args.size} random, {args.threads} worker thread(s) per machine, "
          f"{os.cpu_count()} cores on the host\n")
    print("| worker machines | time (s) | throughput (MiB/s) | backups per machine | host load before/after |")
    print("|---|---|---|---|---|")
    for r in results:
        spread = ", ".join(f"{m}: {n}" for m, n in sorted(r["ran_on"].items()))
        print(f"| {r['workers']} | {r['seconds']:.1f} | {r['mb_s']:.1f} | {spread} | "
              f"{r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    print(f"\nratio 2 machines / 1 machine: {results[1]['mb_s'] / results[0]['mb_s']:.2f}")


if __name__ == "__main__":
    main()
