"""Sharing backups between projects (guide 4.2) through the services, on both catalogs: a real disk image
backed up by the sharer, accepted by a project of another account, a new disk made from it and compared
byte for byte; the sharer's deletion and GC; every refusal the guide states."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, BackupMember, Project, Resource, Vault
from opencbr.config import load_settings
from opencbr.domain.errors import CBRError, Forbidden, InvalidParameter, NotFound, QuotaExceeded
from opencbr.services import backups, iam, memberships, resources, restore, sharing, vaults
from opencbr.services.context import open_context
from tests.support.disks import MiB, make_image, mutate, sha256
from tests.support.scheduler import Driver, backup_now, top_backups, vault

GB = 1024**3


@pytest.fixture()
def ctx(catalog_url, tmp_path, clock):
    """The shared ``ctx``, with the test's directory as the tenants' root: the recipient names paths too."""
    settings = load_settings(env={}, data_dir=str(tmp_path), catalog_url=catalog_url, task_lease_seconds=30,
                             resource_roots=(str(tmp_path),))
    c = open_context(settings, clock=clock)
    yield c
    c.close()


def other_tenant(ctx, name: str):
    """A project of another account, as its admin."""
    _account, project, user, _cred = iam.create_account(ctx, name)
    return iam.principal_for_user(ctx, user.id, project.id)


def shared_disk_backup(ctx, tenant, tmp_path, clock, *, seed: int = 3, encrypted: bool = False, size: int = 4 * MiB):
    """A disk image of the sharer, backed up once: (disk, vault, backup id, sha256 of the image then)."""
    img = make_image(tmp_path / f"src-{seed}.img", size, seed=seed)
    with ctx.tx() as s:
        disk = resources.register_disk(s, ctx, tenant, name=f"src{seed}", path=img, encrypted=encrypted)
    v = vault(ctx, tenant, f"sharer{seed}", resource_ids=[disk.id])
    backup_now(ctx, tenant, v.id)
    Driver(ctx, clock).drain()
    (b,) = [x for x in top_backups(ctx, v.id) if x.status == "available"]
    return disk, v, b.id, sha256(img)


def share(ctx, p, backup_id, *projects):
    with ctx.tx() as s:
        return [m.dest_project_id for m in sharing.add_members(s, ctx, p, backup_id, list(projects))]


def answer(ctx, p, backup_id, status, vault_id=None):
    with ctx.tx() as s:
        return sharing.update_member_status(s, ctx, p, backup_id, p.project_id, status, vault_id)


def listed(ctx, p, own_type="shared", **kw):
    with ctx.tx() as s:
        views, _ = sharing.list_backups(s, p, backups.BackupFilter(**kw), own_type)
        return [(v.view.backup.id, v.member.status if v.member else None) for v in views]


def vault_row(ctx, vault_id):
    with ctx.tx() as s:
        return s.get(Vault, vault_id)


def test_share_accept_create_disk_then_the_sharer_deletes(ctx, tenant, clock, tmp_path):
    _disk, v, bid, digest = shared_disk_backup(ctx, tenant, tmp_path, clock)
    other = other_tenant(ctx, "recipient")
    assert share(ctx, tenant, bid, other.project_id) == [other.project_id]
    assert listed(ctx, other) == [(bid, "pending")]
    assert listed(ctx, other, "private") == []
    assert listed(ctx, tenant) == []  # the sharer's own backups are not shared with it
    mine = vault(ctx, other, "inbox")
    answer(ctx, other, bid, "accepted", mine.id)
    assert vault_row(ctx, mine.id).shared_bytes == 4 * MiB  # counted against the recipient's vault
    assert listed(ctx, other, "all_granted", vault_id=mine.id) == [(bid, "accepted")]
    assert listed(ctx, other, "shared", vault_id=v.id) == []  # the sharer's vault means nothing to it

    target = tmp_path / "made.img"
    with ctx.tx() as s:
        task_id, disk_id = restore.create_disk_from_backup(s, ctx, other, bid, name="made", path=str(target))
    Driver(ctx, clock).drain()
    assert sha256(target) == digest
    with ctx.tx() as s:
        made = s.get(Resource, disk_id)
        assert made.project_id == other.project_id and made.status == "available"
        # the backed-up disk was not encrypted: its vault's encryption at rest does not make the new one so
        # (it could then never be shared again, nor go into an unencrypted vault)
        assert made.encrypted is False and s.get(Backup, bid).encrypted is True
        assert memberships.may_read(s, other.project_id, bid) and not memberships.may_read(s, "nobody", bid)

    with ctx.tx() as s:
        backups.delete_backup(s, ctx, tenant, bid)
    assert listed(ctx, other) == [(bid, "accepted")]  # (deleting, until its task has run)
    Driver(ctx, clock).drain()
    assert listed(ctx, other) == [] and listed(ctx, other, "all_granted") == []
    assert vault_row(ctx, mine.id).shared_bytes == 0
    assert sha256(target) == digest  # the disk made from it stays (guide 4.2)
    with ctx.tx() as s:
        assert s.get(Resource, disk_id) is not None and s.scalars(select(BackupMember)).all() == []


def test_gc_of_the_sharers_vault_keeps_what_a_shared_backup_needs(ctx, tenant, clock, tmp_path):
    disk, v, first, _ = shared_disk_backup(ctx, tenant, tmp_path, clock, seed=5)
    mutate(disk.path, seed=9)
    changed = sha256(disk.path)
    backup_now(ctx, tenant, v.id)
    Driver(ctx, clock).drain()
    (second,) = [b.id for b in top_backups(ctx, v.id) if b.id != first]
    other = other_tenant(ctx, "gc-recipient")
    share(ctx, tenant, second, other.project_id)
    answer(ctx, other, second, "accepted", vault(ctx, other, "inbox").id)
    with ctx.tx() as s:  # the full backup goes; the incremental one shares most of its chunks
        backups.delete_backup(s, ctx, tenant, first)
    Driver(ctx, clock).drain()  # the delete, then the GC it queues
    with ctx.tx() as s:
        assert s.get(Backup, first) is None
        restore.create_disk_from_backup(s, ctx, other, second, name="after-gc", path=str(tmp_path / "after.img"))
    Driver(ctx, clock).drain()
    assert sha256(tmp_path / "after.img") == changed


def test_refusals(ctx, tenant, clock, tmp_path):
    _disk, _v, bid, _ = shared_disk_backup(ctx, tenant, tmp_path, clock)
    _d2, _v2, encrypted, _ = shared_disk_backup(ctx, tenant, tmp_path, clock, seed=4, encrypted=True)
    other = other_tenant(ctx, "refused")
    cases = [(encrypted, [other.project_id], InvalidParameter, "encrypted"),
             (bid, [tenant.project_id], InvalidParameter, "own project"),
             (bid, ["0" * 32], NotFound, "not found"),
             (bid, [], InvalidParameter, "at least one")]
    for backup_id, projects, error, words in cases:
        with pytest.raises(error, match=words), ctx.tx() as s:
            sharing.add_members(s, ctx, tenant, backup_id, projects)
    with pytest.raises(NotFound), ctx.tx() as s:  # another project's backup cannot be shared by it
        sharing.add_members(s, ctx, other, bid, [tenant.project_id])

    projects = [iam.create_project(ctx, tenant, f"p{i}").id for i in range(11)]
    share(ctx, tenant, bid, *projects[:10])
    share(ctx, tenant, bid, projects[0])  # sharing again with a member changes nothing
    with pytest.raises(QuotaExceeded, match="at most 10"), ctx.tx() as s:
        sharing.add_members(s, ctx, tenant, bid, [projects[10]])
    with ctx.tx() as s:
        sharing.delete_member(s, ctx, tenant, bid, projects[9])  # cancel one: room for another
    share(ctx, tenant, bid, projects[10])


def test_recipient_rules(ctx, tenant, clock, tmp_path):
    _disk, _v, bid, _ = shared_disk_backup(ctx, tenant, tmp_path, clock)
    other = other_tenant(ctx, "answers")
    share(ctx, tenant, bid, other.project_id)
    with pytest.raises(Forbidden), ctx.tx() as s:  # only the recipient answers
        sharing.update_member_status(s, ctx, other, bid, tenant.project_id, "accepted", None)
    with pytest.raises(NotFound), ctx.tx() as s:  # the sharer is not a member of its own share
        sharing.update_member_status(s, ctx, tenant, bid, tenant.project_id, "accepted", None)
    with pytest.raises(InvalidParameter, match="vault_id is required"):
        answer(ctx, other, bid, "accepted")
    with pytest.raises(InvalidParameter, match="disk backup vault"):
        answer(ctx, other, bid, "accepted", vault(ctx, other, "servers", object_type="server").id)
    with pytest.raises(NotFound):  # the sharer's vault is not the recipient's
        answer(ctx, other, bid, "accepted", _v.id)
    with pytest.raises(NotFound), ctx.tx() as s:  # not accepted yet: no disk from it
        restore.create_disk_from_backup(s, ctx, other, bid, name="early", path=str(tmp_path / "early.img"))
    with pytest.raises(NotFound), ctx.tx() as s:  # the recipient cannot delete the sharer's backup
        backups.delete_backup(s, ctx, other, bid)

    a, b = vault(ctx, other, "a"), vault(ctx, other, "b")
    answer(ctx, other, bid, "accepted", a.id)
    answer(ctx, other, bid, "accepted", b.id)  # moved
    assert (vault_row(ctx, a.id).shared_bytes, vault_row(ctx, b.id).shared_bytes) == (0, 4 * MiB)
    answer(ctx, other, bid, "rejected")
    assert vault_row(ctx, b.id).shared_bytes == 0 and listed(ctx, other) == [(bid, "rejected")]
    answer(ctx, other, bid, "accepted", a.id)
    with ctx.tx() as s:  # the recipient deletes the vault holding it: the share waits again
        vaults.delete_vault(s, ctx, other, a.id)
    Driver(ctx, clock).drain()
    assert listed(ctx, other) == [(bid, "pending")]


def test_a_vault_without_room_refuses_and_counts_accepted_backups(ctx, tenant, clock, tmp_path):
    """The backup of a sparse 6 GB disk (little data, a large size): one fits a 10 GB vault, two do not;
    then the recipient's own backups into that vault see the capacity taken."""
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(6 * GB)
    with ctx.tx() as s:
        disk = resources.register_disk(s, ctx, tenant, name="big", path=str(path))
    v = vault(ctx, tenant, "big", resource_ids=[disk.id], size=20)
    for _ in range(2):
        backup_now(ctx, tenant, v.id, {"incremental": False})
        Driver(ctx, clock).drain()
    first, second = [b.id for b in top_backups(ctx, v.id)]
    other = other_tenant(ctx, "full")
    share(ctx, tenant, first, other.project_id)
    share(ctx, tenant, second, other.project_id)
    inbox = vault(ctx, other, "inbox", size=10)
    answer(ctx, other, first, "accepted", inbox.id)
    with pytest.raises(QuotaExceeded, match="remaining space"):
        answer(ctx, other, second, "accepted", inbox.id)
    with ctx.tx() as s:
        s.get(Vault, inbox.id).used_bytes = 5 * GB  # its own backups, as a finished backup records them
    with pytest.raises(CBRError, match="capacity"):
        backup_now(ctx, other, inbox.id)


def test_a_disk_made_from_an_encrypted_disks_backup_is_encrypted(ctx, tenant, clock, tmp_path):
    disk, _v, bid, digest = shared_disk_backup(ctx, tenant, tmp_path, clock, seed=8, encrypted=True)
    target = tmp_path / "secret-copy.img"
    with ctx.tx() as s:
        _task, disk_id = restore.create_disk_from_backup(s, ctx, tenant, bid, name="copy", path=str(target))
    Driver(ctx, clock).drain()
    with ctx.tx() as s:
        assert s.get(Resource, disk_id).encrypted is True
    assert sha256(target) == digest


def test_sharing_with_a_whole_account(ctx, tenant, clock, tmp_path):
    """Guide 4.2, sharer step 3: the sharer names the recipient's account (the API's ``domains``); each of
    its projects in the region becomes a member, and counts towards the 10."""
    _disk, _v, bid, _ = shared_disk_backup(ctx, tenant, tmp_path, clock)
    acme = other_tenant(ctx, "acme")
    second = iam.create_project(ctx, acme, "acme-second")
    with ctx.read() as s:
        account_id = s.get(Project, acme.project_id).account_id
    with ctx.tx() as s:
        named = sharing.add_members(s, ctx, tenant, bid, [], [account_id])
        assert [m.dest_project_id for m in named] == [acme.project_id, second.id]
    with ctx.tx() as s:  # by its name too; sharing again changes nothing
        assert len(sharing.add_members(s, ctx, tenant, bid, [acme.project_id], ["acme"])) == 2
    assert listed(ctx, acme) == [(bid, "pending")]
    with pytest.raises(NotFound) as e, ctx.tx() as s:
        sharing.add_members(s, ctx, tenant, bid, [], ["no-such-account"])
    assert e.value.code == "BackupService.6719"
    with ctx.read() as s:
        own_account = s.get(Project, tenant.project_id).account_id
    with pytest.raises(InvalidParameter) as e, ctx.tx() as s:  # its own account has no other project
        sharing.add_members(s, ctx, tenant, bid, [], [own_account])
    assert e.value.code == "BackupService.6720"
    with pytest.raises(InvalidParameter, match="at least one"), ctx.tx() as s:
        sharing.add_members(s, ctx, tenant, bid, [], [])
