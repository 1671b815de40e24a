"""The data plane in worker processes beside the API (issue 11): SIGTERM hands running tasks back and the
next start finishes them; a worker process killed mid-backup is replaced, and its backup is retried on
another worker and comes out exact. Real servers, real kills, both catalogs."""

from __future__ import annotations

import os
import shutil
import signal
import time
from contextlib import contextmanager

import pytest

from opencbr.catalog.models import Backup, Task
from opencbr.engine.chunks.store import DATA_DIR
from opencbr.services.context import open_context
from tests.support.clients import api, restore_and_check, wait_running, wait_task
from tests.support.databases import make_catalog_url, release_catalog_url
from tests.support.disks import MiB, big_random_image, sha256
from tests.support.server import ServerProcess, store_bytes

BILLING = {"object_type": "disk", "size": 100, "consistent_level": "crash_consistent", "protect_type": "backup"}


def catalog_rows(server, task_id, backup_id):
    ctx = open_context(server.settings, migrate=False)
    try:
        with ctx.tx() as s:
            task, backup = s.get(Task, task_id), s.get(Backup, backup_id)
            s.expunge_all()
            return task, backup
    finally:
        ctx.close()


def start_backup(c, tmp_path, size=1024 * MiB):
    img = big_random_image(tmp_path / "big.img", size)
    disk = c.post("/inventory/disks", {"name": "big", "path": img})["disk"]
    v = c.post("/vaults", {"vault": {"name": "wp", "billing": BILLING,
                                     "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    return img, disk, v, b


@contextmanager
def running_backup(tmp_path, backend, *, workers, lease, size=1024 * MiB):
    """A service with ``workers`` worker processes, and a backup of ``size`` running in one of them."""
    url = make_catalog_url(backend, str(tmp_path))
    srv = ServerProcess(str(tmp_path / "srv"), url, workers=workers,
                        extra_env={"OPENCBR_TASK_LEASE_SECONDS": str(lease)})
    srv.start()
    try:
        c = api(srv)
        img, disk, v, b = start_backup(c, tmp_path, size)
        wait_running(c, b["task_id"])
        yield srv, c, img, disk, v, b
    finally:
        srv.stop()
        release_catalog_url(url)
        # gigabytes of random image and store: gone now, not when pytest prunes its old runs
        shutil.rmtree(tmp_path / "srv" / "objects", ignore_errors=True)
        (tmp_path / "big.img").unlink(missing_ok=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigterm_hands_back_the_running_backup_and_the_next_start_finishes_it(tmp_path, backend):
    # 3 GiB: a 1 GiB backup (~1 s on a fast machine) once reached its commit, which no stop interrupts,
    # before the signal did, and rightly finished
    with running_backup(tmp_path, backend, workers=1, lease=6, size=3072 * MiB) as (srv, c, img, disk, v, b):
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, "an orderly stop ends the service cleanly"
        task, row = catalog_rows(srv, b["task_id"], b["id"])
        # handed back, not crashed: waiting again, lease cleared, no attempt used, and it says so
        assert (task.status, task.lease_owner, task.lease_expires_at, task.attempts) == ("waiting", "", None, 0)
        assert "handed back" in task.error_message and "orderly shutdown" in task.error_message
        assert row.status == "protecting"  # the same backup is made by the next run, not marked error
        # the interrupted run withdrew what it had written since its last index object; the packs it had
        # indexed before (a session indexes every 32,768 records: 2 GiB of this disk, which a fast
        # machine wrote before the signal landed) stay for GC, listed, as a crashed session's do
        assert unindexed_pack_bytes(srv, v["id"]) == 0
        assert store_bytes(srv, v["id"]) < 4 * MiB or indexed_packs(srv, v["id"])
        assert "handed back to the queue" in srv.log()
        # the next run backs up the disk as it is then: the 3 GiB of random data were for the signal to land
        # before the commit; that the handed-back backup is finished, and exact, the same disk with all but
        # its first 256 MiB emptied (a hole, read as zeros) shows as well, for a fraction of the CPU the
        # 3 GiB took again (backup, restore and their hashes)
        os.truncate(img, 256 * MiB)
        os.truncate(img, 3072 * MiB)
        srv.start()
        log = wait_task(c, b["task_id"])
        assert log["status"] == "success", log
        assert c.get(f"/backups/{b['id']}")["backup"]["status"] == "available"
        restore_and_check(c, b["id"], disk["id"], img, sha256(img))


def _vault_repo(srv, vault_id: str):
    from pathlib import Path

    from opencbr.engine import Repository
    from opencbr.storage import open_store

    key = bytes.fromhex(Path(srv.data_dir, "master.key").read_text().strip())
    return Repository.open(open_store(Path(srv.data_dir, "objects").as_uri()), f"vaults/{vault_id}/", key)


def indexed_packs(srv, vault_id: str) -> set[str]:
    """The packs the vault's index objects list."""
    return set(_vault_repo(srv, vault_id).chunks.load_index(recover=False).pack_ids)


def unindexed_pack_bytes(srv, vault_id: str) -> int:
    """Bytes of the vault's packs that no index object lists (what an aborted session must not leave)."""
    cs = _vault_repo(srv, vault_id).chunks
    listed = set(cs.load_index(recover=False).pack_ids)
    return sum(size for key, size in cs.store.list(cs.k(DATA_DIR)) if key.rsplit("/", 1)[-1] not in listed)


def worker_children(srv) -> set[int]:
    return set(srv.worker_pids())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_worker_process_is_replaced_and_its_backup_retried_elsewhere(tmp_path, backend):
    with running_backup(tmp_path, backend, workers=2, lease=4) as (srv, c, img, disk, v, b):
        task, _ = catalog_rows(srv, b["task_id"], b["id"])
        victim = int(task.lease_owner.split(":")[1])
        assert victim in worker_children(srv), "the backup runs in a worker process, not in the API's"
        os.kill(victim, signal.SIGKILL)
        t0 = time.time()
        log = wait_task(c, b["task_id"], timeout=240)
        assert log["status"] == "success", log
        task, row = catalog_rows(srv, b["task_id"], b["id"])
        assert task.attempts == 2
        history = task.extra_info["attempts"]
        assert history[0]["outcome"] == "lost" and str(victim) in history[0]["reason"]
        assert "retrying (attempt 2 of 3)" in task.error_message
        assert row.status == "available"
        # the API process never died, and the supervisor replaced the killed worker
        deadline = time.time() + 20
        while time.time() < deadline and len(worker_children(srv)) < 2:
            time.sleep(0.2)
        kids = worker_children(srv)
        assert len(kids) == 2 and victim not in kids
        assert "restarting" in srv.log()
        restore_and_check(c, b["id"], disk["id"], img, sha256(img))
        print(f"failover: backup finished {time.time() - t0:.1f} s after the kill")
