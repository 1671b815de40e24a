"""SFS Turbo (file system) backups replicated to a second installation in this process (guide 3.6, 4.4):
the replica makes a new file system there, file by file identical; an incremental replica sends about
what changed; a replication policy replicates a file-system vault; and a source backup deleted while it
replicates fails the replication with a message that says so (no partial replica)."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

from opencbr.catalog.models import Backup, ReplicationRecord, Vault
from opencbr.services import backups, files, replication, resources
from opencbr.services.repositories import repository
from tests.support.engine_tree import assert_same_tree, build_tree
from tests.support.scheduler import MONDAY, Driver, associate, backup_now, policy, vault

MiB = 1 << 20
FS = "OS::Sfs::Turbo"


def _file_system(ctx, tenant, tree, name: str = "share"):
    with ctx.tx() as s:
        fs = resources.register_file_system(s, ctx, tenant, name=name, path=str(tree))
    return fs, vault(ctx, tenant, f"v-{name}", [fs.id], object_type="turbo", rtype=FS)


def _backup(ctx, tenant, clock, vault_id: str) -> str:
    bid = backup_now(ctx, tenant, vault_id).backups[0].id
    Driver(ctx, clock).drain()
    with ctx.read() as s:
        assert s.get(Backup, bid).status == "available"
    return bid


def _replicate(ctx, tenant, clock, backup_id: str, target: dict) -> ReplicationRecord:
    with ctx.tx() as s:
        rid = replication.copy_backup(s, ctx, tenant, backup_id, target)["replication_record_id"]
    Driver(ctx, clock).drain()
    with ctx.read() as s:
        rec = s.get(ReplicationRecord, rid)
        s.expunge(rec)
    return rec


def _new_file_system(dest, clock, replica_id: str, path) -> None:
    with dest.ctx.tx() as s:
        files.create_file_system_from_backup(s, dest.ctx, dest.principal(), replica_id, name=path.name,
                                             path=str(path))
    Driver(dest.ctx, clock).drain()


def test_a_file_system_replica_makes_an_identical_file_system_and_increments_cost_the_changes(
        ctx, tenant, clock, tmp_path, linked):
    dest, proxy = linked
    tree = build_tree(tmp_path / "share")
    with open(tree / "big.bin", "wb") as f:  # incompressible: bytes on the link ~ data
        f.write(os.urandom(4 * MiB))
    _fs, v = _file_system(ctx, tenant, tree)
    dv = vault(dest.ctx, dest.principal(), "dr-turbo", object_type="turbo", protect_type="replication")
    target = {"destination_project_id": dest.info.project_id, "destination_region": "region-b",
              "destination_vault_id": dv.id}
    b1 = _backup(ctx, tenant, clock, v.id)
    proxy.reset()
    rec = _replicate(ctx, tenant, clock, b1, target)
    assert rec.status == "available", rec.fail_reason
    first_up = proxy.up
    (replica,) = dest.replicas()
    assert replica.id == rec.destination_backup_id and replica.resource_type == FS
    assert replica.source_backup_id == b1 and replica.logical_bytes > 4 * MiB
    _new_file_system(dest, clock, replica.id, tmp_path / "restored-1")
    assert_same_tree(tree, tmp_path / "restored-1")

    with open(tree / "many" / "f001.txt", "ab") as f:  # a small file changed, a new one
        f.write(b"one more line\n")
    (tree / "docs" / "new.txt").write_bytes(b"a new file\n")
    b2 = _backup(ctx, tenant, clock, v.id)
    proxy.reset()
    rec2 = _replicate(ctx, tenant, clock, b2, target)
    assert rec2.status == "available", rec2.fail_reason
    # the bundle of small files that changed and the catalog travel; the unchanged files keep the
    # previous replica's records (big.bin is not read again, let alone sent)
    assert proxy.up < MiB, (proxy.up, first_up)
    with dest.ctx.read() as s:
        dvault = s.get(Vault, dv.id)
        s.expunge(dvault)
    header = repository(dest.ctx, dvault).read_manifest(rec2.destination_backup_id)
    assert header["parent"] == rec.destination_backup_id and header["stats"]["bytes_read"] < 64 << 10
    _new_file_system(dest, clock, rec2.destination_backup_id, tmp_path / "restored-2")
    assert_same_tree(tree, tmp_path / "restored-2")


def test_a_replication_policy_replicates_a_file_system_vault(ctx, tenant, clock, tmp_path, linked):
    dest, _proxy = linked
    tree = tmp_path / "small"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "one.txt").write_text("one\n")
    os.symlink("a/one.txt", tree / "link")
    _fs, v = _file_system(ctx, tenant, tree, "small")
    dv = vault(dest.ctx, dest.principal(), "dr-small", object_type="turbo", protect_type="replication")
    rep = policy(ctx, tenant, "rep", op="replication", destination_region="region-b",
                 destination_project_id=dest.info.project_id, max_backups=5)
    associate(ctx, tenant, v.id, rep.id, destination_vault_id=dv.id)
    _backup(ctx, tenant, clock, v.id)
    Driver(ctx, clock).run_until(MONDAY + timedelta(days=1, hours=3))  # Tuesday 02:00: the execution
    (replica,) = dest.replicas()
    assert replica.status == "available" and replica.auto_trigger and replica.resource_type == FS
    _new_file_system(dest, clock, replica.id, tmp_path / "restored")
    assert_same_tree(tree, tmp_path / "restored")


def test_a_source_backup_deleted_while_it_replicates_fails_it_clearly(ctx, tenant, clock, tmp_path, linked):
    dest, proxy = linked
    tree = tmp_path / "data"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(8 * MiB))
    _fs, v = _file_system(ctx, tenant, tree, "data")
    dv = vault(dest.ctx, dest.principal(), "dr-data", object_type="turbo", protect_type="replication")
    bid = _backup(ctx, tenant, clock, v.id)

    def delete_while_held() -> None:  # the transfer is paused halfway; the source backup is deleted
        if proxy.held.wait(30):
            with ctx.tx() as s:
                backups.delete_backup(s, ctx, tenant, bid)
        proxy.release()

    proxy.reset(hold_after=4 * MiB)
    deleter = threading.Thread(target=delete_while_held)
    deleter.start()
    rec = _replicate(ctx, tenant, clock, bid, {"destination_project_id": dest.info.project_id,
                                              "destination_region": "region-b", "destination_vault_id": dv.id})
    deleter.join()
    assert proxy.held.is_set()
    assert rec.status == "failed" and rec.fail_code == "BackupService.6964", (rec.fail_code, rec.fail_reason)
    assert "was deleted while it was being replicated" in rec.fail_reason, rec.fail_reason
    assert dest.replicas(statuses=("available", "protecting", "deleting", "error")) == []  # nothing half-made
    with ctx.read() as s:
        assert s.get(Backup, bid) is None  # (and the deletion went through)
