"""A local resource belongs to a host (group); only that group's workers read or write it (issue 11,
item 16). Two "machines" here: the service with its worker (host group api-host) and a `cbr worker` of
group host-b, sharing the catalog and the object store."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from opencbr.catalog.models import Task
from opencbr.services.context import open_context
from tests.support.clients import api, cli
from tests.support.databases import make_catalog_url, release_catalog_url
from tests.support.disks import MiB, make_image, sha256
from tests.support.server import ServerProcess

BILLING = {"object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"}


def until(fn, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def done(c, task_id, timeout=120):
    return until(lambda: (lambda log: log if log["status"] in ("success", "failed") else None)(
        c.get(f"/operation-logs/{task_id}")["operation_log"]), timeout, f"task {task_id}")


def owner_pid(srv, task_id) -> int:
    ctx = open_context(srv.settings, migrate=False)
    try:
        with ctx.tx() as s:
            return int(s.get(Task, task_id).lease_owner.split(":")[1])
    finally:
        ctx.close()


def test_tasks_run_only_on_a_worker_of_the_resources_host(tmp_path):
    url = make_catalog_url("postgresql", str(tmp_path))
    srv = ServerProcess(str(tmp_path / "api"), url, workers=1,
                        extra_env={"OPENCBR_HOST_GROUP": "api-host", "OPENCBR_TASK_LEASE_SECONDS": "4"}).start()
    env = {**srv.env, "OPENCBR_HOST_GROUP": "host-b", "OPENCBR_DATA_DIR": str(tmp_path / "b-home"),
           "OPENCBR_OBJECT_STORE": f"file://{srv.data_dir}/objects",
           "OPENCBR_MASTER_KEY": open(f"{srv.data_dir}/master.key").read().strip()}
    worker_b = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "worker", "--count", "1"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        c = api(srv)
        img_b = make_image(tmp_path / "b.img", 4 * MiB, seed=11)
        img_a = make_image(tmp_path / "a.img", 4 * MiB, seed=12)
        # registered on the API machine for host-b: probed there, by host-b's worker
        d_b = c.post("/inventory/disks", {"name": "on-b", "path": img_b, "host": "host-b"})["disk"]
        assert d_b["status"] == "creating" and d_b["host"] == "host-b"
        d_b = until(lambda: (lambda d: d if d["status"] == "available" else None)(
            c.get(f"/inventory/disks/{d_b['id']}")["resource"]), what="the probe on host-b")
        assert d_b["size_bytes"] == 4 * MiB
        probe = c.get("/operation-logs", operation_type="probe")["operation_logs"][0]
        assert owner_pid(srv, probe["id"]) == worker_b.pid
        # a path host-b does not have: the resource says why it cannot be used
        bad = c.post("/inventory/disks", {"name": "gone", "path": str(tmp_path / "nope.img"), "host": "host-b"})["disk"]
        bad = until(lambda: (lambda d: d if d["status"] == "error" else None)(
            c.get(f"/inventory/disks/{bad['id']}")["resource"]), what="the failed probe")
        assert "nope.img" in bad["status_reason"]
        # the CLI can do the same (--host)
        out = cli(srv, "disk", "register", "--name", "cli-b", "--path", str(tmp_path / "b2.img"), "--host", "host-b",
                  "--json")
        assert out.code == 0 and '"host": "host-b"' in out.out, out.err
        d_a = c.post("/inventory/disks", {"name": "on-api", "path": img_a})["disk"]
        assert d_a["host"] == "api-host" and d_a["status"] == "available"

        v = c.post("/vaults", {"vault": {"name": "hosts", "billing": BILLING, "resources": [
            {"id": d_b["id"], "type": "OS::Cinder::Volume"}, {"id": d_a["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
        made = {b["resource_id"]: b for b in c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"]}
        for b in made.values():
            assert done(c, b["task_id"])["status"] == "success"
        assert owner_pid(srv, made[d_b["id"]]["task_id"]) == worker_b.pid
        assert owner_pid(srv, made[d_a["id"]]["task_id"]) in srv.worker_pids()
        # a restore onto host-b's disk runs there too
        want = sha256(img_b)
        with open(img_b, "r+b") as f:
            f.write(os.urandom(MiB))
        tid = c.post(f"/backups/{made[d_b['id']]['id']}/restore", {"restore": {"volume_id": d_b["id"]}})[
            "operation_log_id"]
        assert done(c, tid)["status"] == "success" and sha256(img_b) == want
        assert owner_pid(srv, tid) == worker_b.pid

        # a host no worker serves: its task waits, and says what for
        c.post("/inventory/disks", {"name": "on-c", "path": img_a + ".c", "host": "host-c"})
        probe_c = c.get("/operation-logs", operation_type="probe")["operation_logs"][0]
        log = until(lambda: (lambda g: g if "waiting for a worker on host host-c" in
                             (g.get("error_info") or {}).get("message", "") else None)(
            c.get(f"/operation-logs/{probe_c['id']}")["operation_log"]), timeout=40, what="the waiting message")
        assert log["status"] == "waiting"
    finally:
        worker_b.terminate()
        worker_b.wait(30)
        srv.stop()
        release_catalog_url(url)
