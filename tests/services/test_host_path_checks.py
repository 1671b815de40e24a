"""A path is checked again when the task that uses it runs, not only when the request was accepted: a
restore, a new disk or file system, or single files restored after the target (or a directory above
it) was swapped for a symlink out of the roots write nothing there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Resource, User
from opencbr.config import load_settings
from opencbr.domain.errors import StateConflict
from opencbr.services import backups, files, iam, resources, restore, vaults
from opencbr.services.context import open_context
from tests.support.disks import make_image, sha256
from tests.support.scheduler import drain, read_task

SECRET = b"OUTSIDE-SECRET\n" * 1000




def _backed_up(ctx, p, resource, object_type: str) -> str:
    """The id of an available backup of ``resource``."""
    rtype = "OS::Sfs::Turbo" if object_type == "turbo" else "OS::Cinder::Volume"
    with ctx.tx() as s:
        view = vaults.create_vault(s, ctx, p, {"name": f"v-{object_type}", "billing": {
            "object_type": object_type, "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": resource.id, "type": rtype}]})
    with ctx.tx() as s:
        cp = backups.create_checkpoint(s, ctx, p, view.vault.id)
    drain(ctx)
    with ctx.read() as s:
        assert backups.show_backup(s, p, cp.backups[0].id).backup.status == "available"
    return cp.backups[0].id


def _swap_for_symlink(path: Path, target: Path) -> None:
    path.rename(path.with_name(path.name + ".orig"))
    path.symlink_to(target)


def test_a_restore_accepted_before_the_disk_was_swapped_writes_nothing_through_it(rctx, owner, roots):
    img = Path(make_image(roots / "bd.img", 256 * 1024, seed=4))
    with rctx.tx() as s:
        disk = resources.register_disk(s, rctx, owner, name="bd", path=str(img))
    backup_id = _backed_up(rctx, owner, disk, "disk")
    secret = roots.parent / "outside" / "secret.img"
    secret.write_bytes(SECRET * 20)
    before = sha256(secret)
    with rctx.tx() as s:
        task_id = restore.restore_backup(s, rctx, owner, backup_id, {"volume_id": disk.id})
    _swap_for_symlink(img, secret)
    drain(rctx)
    task = read_task(rctx, task_id)
    assert task.status == "failed" and task.error_code == resources.PATH_REFUSED, task.error_message
    assert "symbolic link" in task.error_message
    assert sha256(secret) == before
    with rctx.read() as s:
        view = resources.show_resource(s, owner, disk.id)
    assert view.status == "error" and "symbolic link" in view.resource.status_reason
    with rctx.read() as s:
        assert backups.show_backup(s, owner, backup_id).backup.status == "available"


def _fs_backup(ctx, p, roots: Path) -> str:
    tree = roots / "tree"
    tree.mkdir()
    (tree / "note.txt").write_bytes(b"a note\n")
    with ctx.tx() as s:
        fs = resources.register_file_system(s, ctx, p, name="tree", path=str(tree))
    return _backed_up(ctx, p, fs, "turbo")


def test_files_restored_after_the_destination_was_swapped_land_nowhere_outside(rctx, owner, roots):
    backup_id = _fs_backup(rctx, owner, roots)
    (roots / "b").mkdir()
    decoy = roots.parent / "outside" / "b"
    decoy.mkdir()
    task_id = files.restore_files(rctx, owner, backup_id, ["/note.txt"], str(roots / "b" / "out"))
    _swap_for_symlink(roots / "b", decoy)
    drain(rctx)
    task = read_task(rctx, task_id)
    assert task.status == "failed" and task.error_code == resources.PATH_REFUSED, task.error_message
    assert os.listdir(decoy) == []


def test_a_new_file_system_whose_parent_was_swapped_is_not_made_outside(rctx, owner, roots):
    backup_id = _fs_backup(rctx, owner, roots)
    (roots / "c").mkdir()
    decoy = roots.parent / "outside" / "c"
    decoy.mkdir()
    with rctx.tx() as s:
        task_id, fs_id = files.create_file_system_from_backup(s, rctx, owner, backup_id, name="new", path=str(roots / "c" / "new"))
    _swap_for_symlink(roots / "c", decoy)
    drain(rctx)
    task = read_task(rctx, task_id)
    assert task.status == "failed" and task.error_code == resources.PATH_REFUSED, task.error_message
    assert os.listdir(decoy) == []
    with rctx.tx() as s:
        assert s.get(Resource, fs_id) is None  # the half-made resource went away


def test_a_new_disk_whose_parent_was_swapped_is_not_made_outside(rctx, owner, roots):
    with rctx.tx() as s:
        disk = resources.register_disk(s, rctx, owner, name="bd", path=make_image(roots / "bd.img", 256 * 1024))
    backup_id = _backed_up(rctx, owner, disk, "disk")
    (roots / "d").mkdir()
    decoy = roots.parent / "outside" / "d"
    decoy.mkdir()
    with rctx.tx() as s:
        task_id, disk_id = restore.create_disk_from_backup(s, rctx, owner, backup_id, name="copy",
                                                              path=str(roots / "d" / "copy.img"))
    _swap_for_symlink(roots / "d", decoy)
    drain(rctx)
    task = read_task(rctx, task_id)
    assert task.status == "failed" and task.error_code == resources.PATH_REFUSED, task.error_message
    assert os.listdir(decoy) == []
    # and where nothing was swapped, the new disk is made, with its identity recorded
    with rctx.tx() as s:
        task_id, disk_id = restore.create_disk_from_backup(s, rctx, owner, backup_id, name="copy2",
                                                              path=str(roots / "copy2.img"))
    drain(rctx)
    assert read_task(rctx, task_id).status == "success"
    assert sha256(roots / "copy2.img") == sha256(roots / "bd.img")
    with rctx.tx() as s:
        assert s.get(Resource, disk_id).identity["ino"] == os.stat(roots / "copy2.img").st_ino


def test_projects_of_one_account_share_paths_only_when_the_operator_says_so(catalog_url, tmp_path, roots, clock):
    fs = roots / "shared"
    (fs / "sub").mkdir(parents=True)
    for allowed in (False, True):
        settings = load_settings(env={}, data_dir=str(tmp_path / "data"), catalog_url=catalog_url,
                                 resource_roots=(str(roots),), allow_shared_paths_within_account=allowed)
        ctx = open_context(settings, clock=clock)
        try:
            info = iam.bootstrap(ctx)
            with ctx.tx() as s:
                user = s.scalar(select(User).where(User.account_id == info.account_id))
            p = iam.principal_for_user(ctx, user.id, info.project_id)
            other = iam.create_project(ctx, p, f"second-{allowed}")
            p2 = iam.principal_for_user(ctx, user.id, other.id)
            with ctx.tx() as s:
                resources.register_file_system(s, ctx, p, name=f"one-{allowed}", path=str(fs))
            if allowed:
                with ctx.tx() as s:
                    assert resources.register_file_system(s, ctx, p2, name=f"two-{allowed}", path=str(fs / "sub"))
            else:
                with pytest.raises(StateConflict), ctx.tx() as s:
                    resources.register_file_system(s, ctx, p2, name=f"two-{allowed}", path=str(fs / "sub"))
            with ctx.tx() as s:
                for r in s.scalars(select(Resource)):
                    s.delete(r)
        finally:
            ctx.close()


def test_the_whole_tree_restored_as_files_never_replaces_what_the_destination_holds(rctx, owner, roots):
    """restore-files of ``/`` from a file-system backup puts the tree straight into the destination (a disk
    backup's ``/`` goes to ``destination/root``); the clash check looked for ``destination/root`` only, so
    ``note.txt`` already in the destination was replaced by the backup's, and the task succeeded."""
    backup_id = _fs_backup(rctx, owner, roots)
    dest = roots / "dest"
    dest.mkdir()
    (dest / "note.txt").write_bytes(b"mine\n")
    for path in ("/", "/.", "//"):
        with pytest.raises(StateConflict, match="is not empty"):
            files.restore_files(rctx, owner, backup_id, [path], str(dest))
    assert (dest / "note.txt").read_bytes() == b"mine\n"
    empty = roots / "empty"
    empty.mkdir()
    for target in (empty, roots / "new"):
        task_id = files.restore_files(rctx, owner, backup_id, ["/"], str(target))
        drain(rctx)
        assert read_task(rctx, task_id).status == "success"
        assert (target / "note.txt").read_bytes() == b"a note\n"
