"""Two workers with the same host name in different PID namespaces (containers with host networking,
cloned machines): neither judges the other by a pid (issue 11, item 17). Worker A runs in its own PID
namespace with a pid that does not exist outside it; worker B starts beside it and runs a GC of the
vault while A's backup is running. Before: B failed A's healthy task at its start, and B's GC took A's
repository lock (same host name, pid gone here) for stale and deleted the packs A was writing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from opencbr.catalog.models import Task
from opencbr.services.context import open_context
from tests.support.clients import api, restore_and_check, wait_running, wait_task
from tests.support.disks import MiB, big_random_image, make_image, sha256
from tests.support.server import ServerProcess

BILLING = {"object_type": "disk", "size": 100, "consistent_level": "crash_consistent", "protect_type": "backup"}
INNER_PID = 99991


def lease_owner(srv, task_id) -> str:
    ctx = open_context(srv.settings, migrate=False)
    try:
        with ctx.tx() as s:
            return s.get(Task, task_id).lease_owner
    finally:
        ctx.close()


def until_available(c, disk_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if c.get(f"/inventory/disks/{disk_id}")["resource"]["status"] == "available":
            return
        time.sleep(0.2)
    raise AssertionError("the disk was not probed")


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_workers_in_other_pid_namespaces_do_not_kill_each_others_work(tmp_path):
    if pid_exists(INNER_PID):
        pytest.skip(f"pid {INNER_PID} exists here; the test needs it free")
    srv = ServerProcess(str(tmp_path / "srv"), f"sqlite:///{tmp_path}/srv/catalog.db", workers=0,
                        extra_env={"OPENCBR_TASK_LEASE_SECONDS": "5"}).start()
    env = {**srv.env, "OPENCBR_OBJECT_STORE": f"file://{srv.data_dir}/objects",
           "OPENCBR_MASTER_KEY": open(f"{srv.data_dir}/master.key").read().strip()}
    worker = [sys.executable, "-m", "opencbr.cli.main", "worker", "--count", "1"]
    inner = f"echo {INNER_PID - 1} > /proc/sys/kernel/ns_last_pid; " + " ".join(worker)
    a = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", inner],
                         env={**env, "OPENCBR_DATA_DIR": str(tmp_path / "a-home"), "OPENCBR_HOST_GROUP": "ns-a"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    # worker B: same host name, this PID namespace, where A's pid does not exist; it serves the API's host
    b_env = {**env, "OPENCBR_DATA_DIR": str(tmp_path / "b-home")}
    b = subprocess.Popen(worker, env=b_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    c_proc = None
    try:
        c = api(srv)
        small = make_image(tmp_path / "small.img", 4 * MiB, seed=5)
        big = big_random_image(tmp_path / "big.img", 1536 * MiB)
        d_small = c.post("/inventory/disks", {"name": "small", "path": small})["disk"]
        d_big = c.post("/inventory/disks", {"name": "big", "path": big, "host": "ns-a"})["disk"]  # A's
        until_available(c, d_big["id"])
        v = c.post("/vaults", {"vault": {"name": "ns", "billing": BILLING, "resources": [
            {"id": d_small["id"], "type": "OS::Cinder::Volume"},
            {"id": d_big["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"], "parameters": {"resources": [d_small["id"]]}}})
        first = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
        assert wait_task(c, first["task_id"], timeout=120)["status"] == "success"
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"], "parameters": {"resources": [d_big["id"]]}}})
        running = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
        wait_running(c, running["task_id"])
        owner = lease_owner(srv, running["task_id"])
        assert owner.split(":")[1] == str(INNER_PID) and not pid_exists(INNER_PID), owner
        # another worker starting up here must not take A's task for orphaned ...
        c_proc = subprocess.Popen(worker, env={**b_env, "OPENCBR_DATA_DIR": str(tmp_path / "c-home")},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        # ... and a GC of the same vault (after deleting the first backup), run by B while A backs up
        deleted = c.delete(f"/backups/{first['id']}")["operation_log_id"]
        assert wait_task(c, deleted, timeout=120)["status"] == "success"
        gc = c.get("/operation-logs", operation_type="gc", vault_id=v["id"])["operation_logs"][0]
        assert wait_task(c, gc["id"], timeout=120)["status"] == "success"
        assert c.get(f"/operation-logs/{running['task_id']}")["operation_log"]["status"] == "running", \
            "the GC finished before A's backup; the test did not test anything"
        log = wait_task(c, running["task_id"], timeout=300)
        assert log["status"] == "success", log
        assert log["extra_info"].get("attempts") is None, log["extra_info"].get("attempts")  # never lost
        assert lease_owner(srv, running["task_id"]) == owner
        assert c.get(f"/backups/{running['id']}")["backup"]["status"] == "available"
        restore_and_check(c, running["id"], d_big["id"], big, sha256(big))
    finally:
        for p in (a, b, c_proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL if p is a else signal.SIGTERM)
                p.wait(30)
        srv.stop()
        (tmp_path / "big.img").unlink(missing_ok=True)  # (1.5 GiB: gone now, not when pytest prunes its runs)
