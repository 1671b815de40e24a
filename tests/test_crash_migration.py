"""Crash safety of migrate_vault_resource: the service is killed (SIGKILL) while a migration copies a
backup into the destination vault. Every Available backup still restores bit-exact from the vault its
row names, the retried task finishes the move, and the source keeps no copy of a moved backup."""

from __future__ import annotations

import pytest

from tests.support.clients import api, restore_and_check, task_ok, wait_running, wait_task
from tests.support.disks import MiB, big_random_image, mutate, sha256
from tests.support.server import ServerProcess, store_bytes

BILLING = {"object_type": "disk", "size": 100, "consistent_level": "crash_consistent", "protect_type": "backup"}


@pytest.mark.slow  # (about 80 s on a loaded machine: two starts of the service, a lease to expire)
def test_kill_during_migration(tmp_path):
    srv = ServerProcess(str(tmp_path / "srv"), f"sqlite:///{tmp_path}/srv/catalog.db",
                        extra_env={"OPENCBR_TASK_LEASE_SECONDS": "6"}).start()
    try:
        c = api(srv)
        img = big_random_image(tmp_path / "m.img", 96 * MiB)  # the copy takes long enough to be killed in
        disk = c.post("/inventory/disks", {"name": "m", "path": img})["disk"]["id"]
        src = c.post("/vaults", {"vault": {"name": "src", "billing": BILLING,
                                           "resources": [{"id": disk, "type": "OS::Cinder::Volume"}]}})["vault"]
        dest = c.post("/vaults", {"vault": {"name": "dest", "billing": BILLING}})["vault"]
        expected = {}
        for step in range(2):
            if step:
                mutate(img, seed=7, regions=64)
            cp = c.post("/checkpoints", {"checkpoint": {"vault_id": src["id"]}})["checkpoint"]
            b = c.get("/backups", checkpoint_id=cp["id"])["backups"][0]
            task_ok(c, b["task_id"])
            expected[b["id"]] = sha256(img)

        moved = c.post(f"/vaults/{src['id']}/migrateresources",
                       {"destination_vault_id": dest["id"], "resource_ids": [disk]})
        wait_running(c, moved["operation_log_id"], min_progress=2)
        srv.kill()
        assert store_bytes(srv, dest["id"]) > 0, "nothing was copied before the kill; the test tested nothing"

        srv.start()
        log = wait_task(c, moved["operation_log_id"], timeout=240)
        assert log["status"] == "success", log
        assert log["extra_info"]["attempts"][0]["outcome"] == "lost"
        for backup_id, digest in expected.items():
            assert c.get(f"/backups/{backup_id}")["backup"]["vault_id"] == dest["id"]
            restore_and_check(c, backup_id, disk, img, digest)
        assert c.get(f"/vaults/{src['id']}")["vault"]["used_bytes"] == 0
        assert c.get(f"/vaults/{dest['id']}")["vault"]["used_bytes"] > 96 * MiB
    finally:
        srv.stop()
