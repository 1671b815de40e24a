"""A vault's repository as the services open it: the data plane's memory bound and scratch directory
come from the settings (config.py: dedup_memory_entries, scratch_dir)."""

from __future__ import annotations

import dataclasses

from opencbr.services import backups, repositories, resources, restore, vaults
from opencbr.services.context import open_context
from tests.support.disks import MiB, make_image, sha256
from tests.support.scheduler import drain, read_task

BILLING = {"object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"}


def test_the_settings_bound_the_dedup_set_and_place_its_table(rctx, owner, roots, tmp_path):
    scratch = tmp_path / "scratch"
    ctx = open_context(dataclasses.replace(rctx.settings, dedup_memory_entries=4, scratch_dir=str(scratch)),
                       clock=rctx.clock)
    try:
        img = make_image(roots / "d.img", 4 * MiB, seed=5)  # 64 blocks: the set spills past 4
        with ctx.tx() as s:
            disk = resources.register_disk(s, ctx, owner, name="d", path=img)
        with ctx.tx() as s:
            vault = vaults.create_vault(s, ctx, owner, {"name": "v", "billing": BILLING, "resources": [
                {"id": disk.id, "type": "OS::Cinder::Volume"}]}).vault
        repo = repositories.repository(ctx, vault)
        assert (repo.chunks.memory_entries, repo.chunks.spill_dir) == (4, str(scratch))
        assert scratch.is_dir() and oct(scratch.stat().st_mode & 0o777) == "0o700"
        with ctx.tx() as s:
            backup_id = backups.create_checkpoint(s, ctx, owner, vault.id).backups[0].id
        drain(ctx)
        expected = sha256(img)
        with ctx.tx() as s:
            task_id = restore.restore_backup(s, ctx, owner, backup_id, {"volume_id": disk.id})
        make_image(roots / "d.img", 4 * MiB, seed=6)
        drain(ctx)
        assert read_task(ctx, task_id).status == "success"
        assert sha256(img) == expected
    finally:
        ctx.close()


def test_the_default_scratch_directory_is_in_the_data_directory(rctx):
    assert rctx.settings.effective_scratch_dir == f"{rctx.settings.data_dir}/tmp"
