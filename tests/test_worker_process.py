"""`cbr worker` runs tasks for a service it shares the catalog and the object store with (another
machine, in production): the API process here has no workers of its own."""

from __future__ import annotations

import subprocess
import sys

from tests.support.clients import api, task_ok
from tests.support.databases import make_catalog_url, release_catalog_url
from tests.support.disks import MiB, make_image, sha256
from tests.support.server import ServerProcess


def test_separate_worker_process_runs_the_tasks(tmp_path):
    url = make_catalog_url("postgresql", str(tmp_path))
    srv = ServerProcess(str(tmp_path / "api"), url, workers=0).start()
    worker = None
    try:
        c = api(srv)
        img = make_image(tmp_path / "w.img", 4 * MiB, seed=3)
        disk = c.post("/inventory/disks", {"name": "w", "path": img})["disk"]
        v = c.post("/vaults", {"vault": {"name": "w", "billing": {"object_type": "disk", "size": 10,
                                                                  "consistent_level": "crash_consistent",
                                                                  "protect_type": "backup"},
                                         "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
        b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
        assert c.get(f"/operation-logs/{b['task_id']}")["operation_log"]["status"] == "waiting"
        env = {**srv.env, "OPENCBR_OBJECT_STORE": f"file://{srv.data_dir}/objects",
               "OPENCBR_MASTER_KEY": open(f"{srv.data_dir}/master.key").read().strip()}
        env["OPENCBR_DATA_DIR"] = str(tmp_path / "worker-home")  # the worker machine has its own (empty) one
        worker = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "worker", "--count", "1"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        task_ok(c, b["task_id"], timeout=60)
        h = sha256(img)
        with open(img, "r+b") as f:
            f.write(b"\xee" * MiB)
        task_ok(c, c.post(f"/backups/{b['id']}/restore", {"restore": {"volume_id": disk["id"]}})["operation_log_id"])
        assert sha256(img) == h
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        srv.stop()
        release_catalog_url(url)
