"""Images through the services (guide 6.2, 13.1.4, 13.7.3), on both catalogs with a real worker and real
files: a server backup with two disks becomes one image, the image becomes two servers whose disks hash
like the source's; what cannot become an image; a backup with an image stays (delete, retention, vault
delete); a failed server creation leaves nothing; another project sees nothing."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, BackupMember, Image, Resource, Task
from opencbr.domain.errors import InvalidParameter, NotFound, StateConflict
from opencbr.services import backups, images, policies, resources, retention, sharing, vaults
from opencbr.worker.runner import Worker
from tests.support.disks import MiB, make_image, sha256
from tests.support.scheduler import drain, read_task


def _backed_up(ctx, p, resource, object_type: str, rtype: str) -> tuple[str, str]:
    """(vault id, the id of an available backup of ``resource`` in a new vault)."""
    with ctx.tx() as s:
        vault = vaults.create_vault(s, ctx, p, {"name": f"v-{resource.name}", "billing": {
            "object_type": object_type, "size": 10, "consistent_level": "crash_consistent",
            "protect_type": "backup"}, "resources": [{"id": resource.id, "type": rtype}]}).vault
    with ctx.tx() as s:
        cp = backups.create_checkpoint(s, ctx, p, vault.id)
    drain(ctx)
    with ctx.read() as s:
        assert backups.show_backup(s, p, cp.backups[0].id).backup.status == "available"
    return vault.id, cp.backups[0].id


@pytest.fixture()
def server_backup(rctx, owner, roots):
    """A stopped server with a 3 MiB system disk and a 2 MiB data disk, backed up: (vault, backup, hashes)."""
    src = roots / "src"
    src.mkdir()
    sys_img = make_image(src / "sys.img", 3 * MiB, seed=71)
    data_img = make_image(src / "data.img", 2 * MiB, seed=72)
    with rctx.tx() as s:
        sd = resources.register_disk(s, rctx, owner, name="sys", path=sys_img)
        dd = resources.register_disk(s, rctx, owner, name="data", path=data_img)
    with rctx.tx() as s:
        srv = resources.register_server(s, rctx, owner, name="web", system_disk=sd.id, data_disks=[dd.id],
                                        status="stopped")
    vault_id, backup_id = _backed_up(rctx, owner, srv, "server", "OS::Nova::Server")
    return vault_id, backup_id, [sha256(sys_img), sha256(data_img)]


def _image(ctx, p, backup_id: str, name: str = "web-image") -> Image:
    with ctx.tx() as s:
        image = images.create_image(s, ctx, p, backup_id, name=name, description="golden")
        s.expunge(image)
        return image


def _new_server(ctx, p, image_id: str, name: str, **where) -> tuple[str, str, list[str]]:
    with ctx.tx() as s:
        return images.create_server_from_image(s, ctx, p, image_id, name=name, **where)


def test_one_image_many_servers_bit_exact(rctx, owner, roots, server_backup):
    vault_id, backup_id, hashes = server_backup
    image = _image(rctx, owner, backup_id)
    assert [d["disk_role"] for d in image.disks] == ["system", "data"]
    assert image.size_bytes == 5 * MiB and image.source_image_type == "backup"
    # guide 6.2: one image per backup
    with pytest.raises(StateConflict, match="one image per backup"):
        _image(rctx, owner, backup_id, "again")
    # two servers from the one image (13.1.4), by paths and into a directory
    (roots / "b").mkdir()
    t1, s1, d1 = _new_server(rctx, owner, image.id, "web-a", paths=[str(roots / "a-sys.img"), str(roots / "a-data.img")])
    t2, s2, d2 = _new_server(rctx, owner, image.id, "web-b", directory=str(roots / "b"), power_on=True)
    drain(rctx)
    assert read_task(rctx, t1).status == "success" and read_task(rctx, t2).status == "success", read_task(rctx, t2).error_message
    assert [sha256(roots / "a-sys.img"), sha256(roots / "a-data.img")] == hashes
    assert [sha256(roots / "b" / "web-b-1.img"), sha256(roots / "b" / "web-b-2.img")] == hashes
    with rctx.read() as s:
        for server_id, disk_ids, status in ((s1, d1, "stopped"), (s2, d2, "running")):
            server = resources.get_resource(s, owner.project_id, server_id, "OS::Nova::Server")
            assert server.status == status and server.size_bytes == 5 * MiB
            disks = resources.server_disks(s, server_id)
            assert [d.id for d in disks] == disk_ids
            assert [(d.disk_role, d.status) for d in disks] == [("system", "in-use"), ("data", "in-use")]
            assert disks[0].identity["ino"] == os.stat(disks[0].path).st_ino
        assert images.show_image(s, owner, image.id).servers_created == 2
    # the new server can itself be backed up and imaged (13.7.3: how to drop the first backup)
    with rctx.read() as s:
        new_server = s.get(Resource, s1)
        s.expunge(new_server)
    _v2, backup2 = _backed_up(rctx, owner, new_server, "server", "OS::Nova::Server")
    _image(rctx, owner, backup2, "second-generation")


def test_each_new_disk_is_encrypted_as_the_disk_it_was_backed_up_from(rctx, owner, roots, server_backup):
    """Not as the vault stores data: the backup of an unencrypted disk in an encrypted vault makes a plain
    disk, the encrypted system disk's backup an encrypted one."""
    _vault_id, backup_id, _ = server_backup
    with rctx.tx() as s:
        kids = s.scalars(select(Backup).where(Backup.parent_id == backup_id)).all()
        system = next(k for k in kids if k.disk_role == "system")
        s.get(Resource, system.resource_id).encrypted = True
    image = _image(rctx, owner, backup_id)
    task_id, _server, disk_ids = _new_server(rctx, owner, image.id, "enc", directory=str(roots))
    drain(rctx)
    assert read_task(rctx, task_id).status == "success"
    with rctx.read() as s:
        assert [s.get(Resource, d).encrypted for d in disk_ids] == [True, False]


def test_a_backup_with_an_image_stays_until_the_image_goes(rctx, owner, server_backup):
    vault_id, backup_id, _ = server_backup
    image = _image(rctx, owner, backup_id)
    with pytest.raises(StateConflict, match="delete the image first"), rctx.tx() as s:
        backups.delete_backup(s, rctx, owner, backup_id)
    with pytest.raises(StateConflict, match="delete the image before the vault"), rctx.tx() as s:
        vaults.delete_vault(s, rctx, owner, vault_id)
    with rctx.tx() as s:
        images.delete_image(s, rctx, owner, image.id)
    with rctx.read() as s:
        assert images.list_images(s, owner) == ([], 0)
        assert s.get(Backup, backup_id).used_by_image is False
    with rctx.tx() as s:
        backups.delete_backup(s, rctx, owner, backup_id)
    drain(rctx)
    with rctx.read() as s:
        assert s.get(Backup, backup_id) is None


def test_what_cannot_become_an_image(rctx, owner, roots, server_backup):
    _vault_id, backup_id, _ = server_backup
    with rctx.tx() as s:
        disk = resources.register_disk(s, rctx, owner, name="lone", path=make_image(roots / "lone.img", MiB, seed=3))
    _v, disk_backup = _backed_up(rctx, owner, disk, "disk", "OS::Cinder::Volume")
    (roots / "fs").mkdir()
    (roots / "fs" / "f.txt").write_text("hello")
    with rctx.tx() as s:
        fs = resources.register_file_system(s, rctx, owner, name="fs", path=str(roots / "fs"))
    drain(rctx)  # (its measure task)
    _v, fs_backup = _backed_up(rctx, owner, fs, "turbo", "OS::Sfs::Turbo")
    for bid in (disk_backup, fs_backup):
        with pytest.raises(InvalidParameter, match="cloud server backups only"):
            _image(rctx, owner, bid)
    with rctx.read() as s:
        child = s.scalar(select(Backup.id).where(Backup.parent_id == backup_id))
    with pytest.raises(InvalidParameter, match="one disk of a server backup"):
        _image(rctx, owner, child)
    with rctx.tx() as s:  # as a backup made with the system disk left out
        s.delete(s.scalar(select(Backup).where(Backup.parent_id == backup_id, Backup.disk_role == "system")))
    with pytest.raises(InvalidParameter, match="system disk"):
        _image(rctx, owner, backup_id)
    with pytest.raises(InvalidParameter, match="image name"):
        _image(rctx, owner, disk_backup, " bad/name")
    with rctx.read() as s:
        assert s.scalar(select(Image.id)) is None


def test_server_paths_are_checked_and_a_failed_server_leaves_nothing(rctx, owner, roots, server_backup):
    _vault_id, backup_id, _ = server_backup
    image = _image(rctx, owner, backup_id)
    with pytest.raises(InvalidParameter, match="outside the directories"):
        _new_server(rctx, owner, image.id, "out", paths=[str(roots.parent / "outside" / "x.img"), str(roots / "y.img")])
    with pytest.raises(InvalidParameter, match="2 path"):
        _new_server(rctx, owner, image.id, "one", paths=[str(roots / "only.img")])
    with pytest.raises(StateConflict, match="already exists"):
        _new_server(rctx, owner, image.id, "taken", paths=[str(roots / "src" / "sys.img"), str(roots / "z.img")])
    # the second disk's directory is swapped for a symlink out of the roots before the task runs: the task
    # fails there, and the first disk it wrote goes too (file and row); no server is registered
    (roots / "c").mkdir()
    decoy = roots.parent / "outside" / "c"
    decoy.mkdir()
    task_id, server_id, disk_ids = _new_server(rctx, owner, image.id, "half",
                                               paths=[str(roots / "half-sys.img"), str(roots / "c" / "half-data.img")])
    with rctx.read() as s:
        assert [s.get(Resource, d).status for d in disk_ids] == ["restoring", "restoring"]
    (roots / "c").rename(roots / "c.orig")
    (roots / "c").symlink_to(decoy)
    drain(rctx)
    task = read_task(rctx, task_id)
    assert task.status == "failed" and task.error_code == resources.PATH_REFUSED, task.error_message
    assert not (roots / "half-sys.img").exists() and os.listdir(decoy) == []
    with rctx.read() as s:
        assert s.get(Resource, server_id) is None and all(s.get(Resource, d) is None for d in disk_ids)
        assert images.show_image(s, owner, image.id).servers_created == 0


def test_another_project_neither_sees_nor_uses_an_image(rctx, owner, stranger, roots, server_backup):
    _vault_id, backup_id, _ = server_backup
    image = _image(rctx, owner, backup_id)
    with pytest.raises(NotFound), rctx.read() as s:
        images.show_image(s, stranger, image.id)
    with rctx.read() as s:
        assert images.list_images(s, stranger) == ([], 0)
    with pytest.raises(NotFound), rctx.tx() as s:
        images.delete_image(s, rctx, stranger, image.id)
    with pytest.raises(NotFound):
        _new_server(rctx, stranger, image.id, "theirs", paths=[str(roots / "t1.img"), str(roots / "t2.img")])
    with pytest.raises(NotFound):  # nor make an image of another project's backup
        _image(rctx, stranger, backup_id, "stolen")
    with rctx.read() as s:
        assert images.list_images(s, owner)[1] == 1


def test_retention_neither_deletes_nor_counts_a_backup_with_an_image(ctx, tenant):
    """Guide 6.2: "If a backup is automatically generated based on a backup policy and the backup has been
    used to create an image, the backup will not be counted as a retained backup and will not be deleted
    automatically." Catalog rows only: retention looks at no data."""
    with ctx.tx() as s:
        vault = vaults.create_vault(s, ctx, tenant, {"name": "ret", "billing": {
            "object_type": "server", "protect_type": "backup", "size": 100}}).vault
    with ctx.tx() as s:
        pol = policies.create_policy(s, ctx, tenant, {
            "name": "keep3", "operation_type": "backup", "operation_definition": {"max_backups": 3},
            "trigger": {"properties": {"pattern": ["FREQ=DAILY;BYHOUR=2"]}}}).policy
    with ctx.tx() as s:
        policies.associate(s, ctx, tenant, vault.id, pol.id)
    now = datetime(2026, 1, 5, 10, 0)
    ids = []
    with ctx.tx() as s:
        for i in range(6):
            at = now - timedelta(days=6 - i)
            b = Backup(project_id=tenant.project_id, vault_id=vault.id, name=f"b{i}", resource_id="srv-1",
                       resource_name="web", resource_type="OS::Nova::Server", status="available", auto_trigger=True,
                       retention_rule="count:3", created_at=at, updated_at=at)
            s.add(b)
            s.flush()
            s.add(Backup(project_id=tenant.project_id, vault_id=vault.id, parent_id=b.id, name=f"b{i}-sys",
                         resource_id="disk-1", resource_type="OS::Cinder::Volume", disk_role="system",
                         status="available", created_at=at, updated_at=at))
            ids.append(b.id)
    with ctx.tx() as s:
        images.create_image(s, ctx, tenant, ids[-1], name="newest")  # the newest backup
    with ctx.tx() as s:
        retention.apply_retention(s, ctx, vault.id, "srv-1", now=now)
    with ctx.read() as s:
        got = [s.get(Backup, i).status for i in ids]
    # the three most recent backups *without* an image stay, and the imaged one with them
    assert got == ["deleting", "deleting", "available", "available", "available", "available"]


class WorkerDied(BaseException):
    """Stands for a worker killed mid-task: nothing of the handler's own clean-up runs."""


def test_a_server_creation_whose_worker_died_is_cleaned_up_when_abandoned(rctx, owner, roots, clock, server_backup,
                                                                          monkeypatch):
    from opencbr.services import tasks
    from opencbr.worker.runner import task_handlers

    _vault_id, backup_id, _ = server_backup
    image = _image(rctx, owner, backup_id)
    task_id, server_id, disk_ids = _new_server(rctx, owner, image.id, "dies",
                                               paths=[str(roots / "d-1.img"), str(roots / "d-2.img")])

    def die(*args, **kwargs):
        raise WorkerDied()

    monkeypatch.setattr(images, "_register_server", die)  # both disks are written; the server never registered
    with pytest.raises(WorkerDied):
        Worker(rctx, "w-dies").run_once()
    monkeypatch.undo()
    assert (roots / "d-1.img").exists() and (roots / "d-2.img").exists()
    clock.advance(seconds=120)
    assert tasks.expire_leases(rctx, task_handlers().abandoned) == 1
    assert not (roots / "d-1.img").exists() and not (roots / "d-2.img").exists()
    with rctx.read() as s:
        assert s.get(Resource, server_id) is None and all(s.get(Resource, d) is None for d in disk_ids)
        assert s.get(Task, task_id).status == "failed"


def test_a_shared_server_backup_makes_an_image_and_servers_for_the_recipient(rctx, owner, stranger, roots,
                                                                             server_backup):
    """Guide 4.2: an accepted server backup makes servers (through an image of the recipient's own, 6.2);
    when the sharer deletes the backup the image goes, the servers made from it stay."""
    _vault_id, backup_id, hashes = server_backup
    with rctx.tx() as s:
        sharing.add_members(s, rctx, owner, backup_id, [stranger.project_id])
    with pytest.raises(NotFound):  # shared but not accepted yet: not readable
        _image(rctx, stranger, backup_id, "too-early")
    with rctx.tx() as s:
        inbox = vaults.create_vault(s, rctx, stranger, {"name": "inbox", "billing": {
            "object_type": "server", "size": 10, "consistent_level": "crash_consistent",
            "protect_type": "backup"}}).vault.id
    # the recipient's image lives as long as the share stands accepted: rejected or cancelled, it goes
    for undo in ("rejected", "cancelled"):
        with rctx.tx() as s:
            sharing.update_member_status(s, rctx, stranger, backup_id, stranger.project_id, "accepted", inbox)
        gone = _image(rctx, stranger, backup_id, f"before-{undo}")
        with rctx.tx() as s:
            if undo == "rejected":
                sharing.update_member_status(s, rctx, stranger, backup_id, stranger.project_id, "rejected")
            else:
                sharing.delete_member(s, rctx, owner, backup_id, stranger.project_id)
                sharing.add_members(s, rctx, owner, backup_id, [stranger.project_id])
        with rctx.read() as s:
            assert s.get(Image, gone.id) is None
    with rctx.tx() as s:
        sharing.update_member_status(s, rctx, stranger, backup_id, stranger.project_id, "accepted", inbox)
    mine = _image(rctx, owner, backup_id, "sharers-image")  # one image per backup *and project*
    theirs = _image(rctx, stranger, backup_id, "recipients-image")
    assert theirs.vault_id == inbox and [d["disk_role"] for d in theirs.disks] == ["system", "data"]
    with pytest.raises(StateConflict, match="one image per backup"):
        _image(rctx, stranger, backup_id, "again")
    with rctx.read() as s:
        assert sharing.show_member(s, owner, backup_id, stranger.project_id).image_id == theirs.id
        assert images.list_images(s, owner)[0][0].id == mine.id  # each sees its own image only
        assert [i.id for i in images.list_images(s, stranger)[0]] == [theirs.id]
    (roots / "r").mkdir()
    task_id, server_id, disk_ids = _new_server(rctx, stranger, theirs.id, "copy", directory=str(roots / "r"))
    drain(rctx)
    task = read_task(rctx, task_id)
    assert task.status == "success", task.error_message
    assert task.project_id == stranger.project_id and task.vault_id == inbox  # nothing of the sharer's vault
    assert [sha256(roots / "r" / "copy-1.img"), sha256(roots / "r" / "copy-2.img")] == hashes
    with pytest.raises(StateConflict, match="delete the image before the vault"), rctx.tx() as s:
        vaults.delete_vault(s, rctx, stranger, inbox)  # guide 13.7.5
    # the sharer deletes its backup (its own image first); the recipient's image does not stop it
    with rctx.tx() as s:
        images.delete_image(s, rctx, owner, mine.id)
    with rctx.tx() as s:
        backups.delete_backup(s, rctx, owner, backup_id)
    drain(rctx)
    with rctx.read() as s:
        assert s.get(Backup, backup_id) is None and s.get(Image, theirs.id) is None
        assert s.scalar(select(BackupMember).where(BackupMember.backup_id == backup_id)) is None
        server = resources.get_resource(s, stranger.project_id, server_id, "OS::Nova::Server")
        assert [d.id for d in resources.server_disks(s, server.id)] == disk_ids
    assert sha256(roots / "r" / "copy-1.img") == hashes[0]

