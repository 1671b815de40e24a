"""A vault is not deleted while a task reads or writes its data (services/vaults.py): the vault_delete task
destroyed the repository under a running backup (which then failed, "lost its repository lock (stalled
longer than the stale timeout)"), and could do so under a restore reading it."""

from __future__ import annotations

import pytest

from opencbr.domain.errors import StateConflict
from opencbr.services import backups, resources, restore, vaults
from tests.services.test_images import _backed_up
from tests.support.disks import MiB, make_image
from tests.support.scheduler import drain, read_task


@pytest.fixture()
def disk(rctx, owner, roots):
    img = make_image(roots / "d.img", 2 * MiB, seed=93)
    with rctx.tx() as s:
        return resources.register_disk(s, rctx, owner, name="d", path=img)


def test_not_while_a_backup_is_waiting_or_running(rctx, owner, disk):
    vault_id, _ = _backed_up(rctx, owner, disk, "disk", "OS::Cinder::Volume")
    with rctx.tx() as s:
        backups.create_checkpoint(s, rctx, owner, vault_id)
    with rctx.tx() as s, pytest.raises(StateConflict) as e:
        vaults.delete_vault(s, rctx, owner, vault_id)
    assert e.value.code == "BackupService.6221" and "backup task" in str(e.value)
    drain(rctx)
    with rctx.tx() as s:
        task_id = vaults.delete_vault(s, rctx, owner, vault_id)
    drain(rctx)
    assert read_task(rctx, task_id).status == "success"


def test_not_while_a_restore_is_waiting_or_running(rctx, owner, disk):
    vault_id, backup_id = _backed_up(rctx, owner, disk, "disk", "OS::Cinder::Volume")
    with rctx.tx() as s:
        restore.restore_backup(s, rctx, owner, backup_id, {"volume_id": disk.id})
    with rctx.tx() as s, pytest.raises(StateConflict) as e:
        vaults.delete_vault(s, rctx, owner, vault_id)
    assert "restore task" in str(e.value)
    drain(rctx)
    with rctx.tx() as s:
        assert vaults.delete_vault(s, rctx, owner, vault_id)
