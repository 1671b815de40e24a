"""Moving resources, with their backups, to another vault of the same type (CBR v3 API:
migrate_vault_resource).

The request (:func:`migrate_resources`) checks both vaults and the room the destination needs, moves the
resources' association to the destination at once (their policy from now on is the destination's) and
queues one ``migrate`` task. The task (:func:`run_migrate`) moves the backups one at a time, oldest first:

1. the engine's disk backup runs over the source backup's image (``replication.BackupImageSource``) into
   the destination's repository: the chunks are re-cut and re-encrypted under the destination's keys,
   and only those it lacks are stored; the manifest keeps the backup's id;
2. only then, in one transaction, the backup's rows (a server backup and its disks) switch vault, and
   both vaults' used capacity is accounted again;
3. then the source's manifest is deleted; its chunks go at the source vault's next GC (queued at the end).

A kill at any point leaves each backup whole in one vault: before 2 it is still the source's (a copy in
the destination is reused or removed later), after it the destination's. The next attempt (or, when no
attempt is left, a ``cleanup_only`` task) first removes what an interrupted one left behind. File-system
backups cannot be moved yet (the tree format keys its catalogs by the vault's chunk names).
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Checkpoint, Task, Vault, VaultResource
from opencbr.domain import backup as B
from opencbr.domain import vault as V
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound, QuotaExceeded, StateConflict
from opencbr.engine import BackupCancelled, Missing, Repository
from opencbr.services import backups, tasks, vault_locks
from opencbr.services import resources as res_svc
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import data_backups, get_vault
from opencbr.services.principal import Principal
from opencbr.services.progress import TaskProgress
from opencbr.services.replication import BackupImageSource
from opencbr.services.repositories import repository
from opencbr.services.vaults import vault_state

GB = 1024**3
OPERATION = "migrate"
MAX_RESOURCES = 256


class MigrationRefused(CBRError):
    status = 400
    code = "BackupService.6971"


class MigrationIncomplete(CBRError):
    """Some backups stayed in the source vault (the message says which and why)."""

    status = 409
    code = "BackupService.6972"


# ------------------------------------------------------------------------------------ the request
def _check_request(destination_vault_id: object, resource_ids: object) -> list[str]:
    if not isinstance(destination_vault_id, str) or not destination_vault_id:
        raise InvalidParameter("destination_vault_id is required")
    if (not isinstance(resource_ids, list) or not resource_ids or len(resource_ids) > MAX_RESOURCES
            or not all(isinstance(i, str) and i for i in resource_ids)):
        raise InvalidParameter(f"resource_ids must be a list of 1 to {MAX_RESOURCES} resource ids")
    return list(dict.fromkeys(resource_ids))


def _check_vaults(src: Vault, dest: Vault) -> None:
    """Same type and protection type; a backup vault; the destination takes changes; nothing leaves a
    locked vault; encrypted backups never land unencrypted."""
    if src.id == dest.id:
        raise MigrationRefused("the destination vault is the source vault")
    if src.object_type != dest.object_type or src.protect_type != dest.protect_type:
        raise MigrationRefused(f"vault {src.name} is a {src.object_type} {src.protect_type} vault and vault "
                               f"{dest.name} a {dest.object_type} {dest.protect_type} vault; resources move only "
                               "between vaults of the same type and protection type")
    if src.protect_type != "backup":
        raise MigrationRefused("replication vaults hold replicas, not resources; nothing can be migrated")
    if src.object_type == "turbo":
        raise MigrationRefused("file system (SFS Turbo) backups cannot be migrated between vaults yet")
    if src.locked:
        raise MigrationRefused(f"vault {src.name} is locked: its backups cannot leave it")
    if src.encrypted and not dest.encrypted:
        raise MigrationRefused(f"vault {src.name} is encrypted and vault {dest.name} is not; its backups would "
                               "be stored unencrypted")
    for v in (src, dest):
        if v.status not in ("available", "locked"):
            raise StateConflict(f"vault {v.name} is {v.status}", code="BackupService.6211")


def migrate_resources(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, destination_vault_id: object,
                      resource_ids: object) -> tuple[list[str], str]:
    """Move resources and their backups from vault ``vault_id`` to the destination; returns the resource
    ids and the task that moves the backups. A resource moved already whose backups are still partly in
    the source (an interrupted or failed migration) may be named again: its remaining backups move."""
    p.require_write()
    ids = _check_request(destination_vault_id, resource_ids)
    first, second = sorted([vault_id, destination_vault_id])  # one lock order: A->B and B->A never deadlock
    locked = {i: get_vault(s, p.project_id, i, for_update=True) for i in (first, second) if isinstance(i, str)}
    src, dest = locked[vault_id], locked[destination_vault_id]
    _check_vaults(src, dest)
    vault_locks.check_migration(s, ctx, src.id, ids)
    bindings = {b.resource_id: b for b in s.scalars(select(VaultResource).where(VaultResource.resource_id.in_(ids)))}
    left_in_source = set(s.scalars(select(Backup.resource_id).where(Backup.vault_id == src.id,
                                                                    Backup.resource_id.in_(ids))))
    moving = []
    for rid in ids:
        b = bindings.get(rid)
        if b is not None and b.vault_id == src.id:
            moving.append(rid)
        elif not (b is not None and b.vault_id == dest.id and rid in left_in_source):  # (not resuming either)
            raise NotFound(f"resource {rid} is not associated with vault {vault_id}", code="BackupService.6108")
    _check_not_busy(s, p, src, ids)
    _check_room(s, src, dest, moving, ids)
    for rid in moving:
        bindings[rid].vault_id = dest.id
    now = ctx.now()
    src.updated_at = dest.updated_at = now
    info = {"source_vault_id": src.id, "destination_vault_id": dest.id, "resource_ids": ids}
    task = tasks.new_task(s, project_id=p.project_id, operation_type=OPERATION, now=now, vault_id=src.id,
                          vault_name=src.name, request_id=p.request_id, params=dict(info),
                          extra_info={"migrate": {**info, "destination_vault_name": dest.name}},
                          max_attempts=ctx.settings.task_max_attempts)
    return ids, task.id


def _check_not_busy(s: Session, p: Principal, src: Vault, ids: list[str]) -> None:
    running = s.scalar(select(Backup.resource_name).where(Backup.vault_id == src.id, Backup.resource_id.in_(ids),
                                                          Backup.parent_id.is_(None), Backup.status == B.PROTECTING))
    if running is not None:
        raise StateConflict(f"a backup of {running} is running; migrate it when it has finished",
                            code="BackupService.6422")
    for t in s.scalars(select(Task).where(Task.project_id == p.project_id, Task.operation_type == OPERATION,
                                          Task.status.in_((tasks.WAITING, tasks.RUNNING)))):
        if set((t.params or {}).get("resource_ids") or []) & set(ids):
            raise StateConflict(f"these resources are being migrated already (task {t.id})",
                                code="BackupService.6973")


def _check_room(s: Session, src: Vault, dest: Vault, moving: list[str], ids: list[str]) -> None:
    """The destination takes the new resources (guide 2.3 rules) and has room for their backups: the
    stored bytes each added to the source, a bound on what they need in the destination."""
    if moving:
        states = [res_svc.resource_state(s, res_svc.get_resource(s, src.project_id, rid)) for rid in moving]
        V.check_add_resources(vault_state(s, dest), states, [], [])
    needed = int(s.scalar(select(func.coalesce(func.sum(Backup.added_bytes), 0)).where(Backup.vault_id == src.id, Backup.resource_id.in_(ids),
                                              Backup.parent_id.is_(None), Backup.status == B.AVAILABLE)) or 0)
    if not dest.auto_expand and dest.used_bytes + needed > dest.size_gb * GB:
        raise QuotaExceeded(f"vault {dest.name} has no room for these backups: it uses "
                            f"{dest.used_bytes / GB:.2f} GB of {dest.size_gb} GB and they need up to "
                            f"{needed / GB:.2f} GB; expand it first", code="BackupService.6974")


# ------------------------------------------------------------------------------------ the task
def run_migrate(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    params = run.params
    with ctx.tx() as s:
        src, dest = s.get(Vault, params["source_vault_id"]), s.get(Vault, params["destination_vault_id"])
        if src is None or dest is None:
            raise NotFound("a vault of this migration was deleted meanwhile", code="BackupService.6101")
        s.expunge(src)
        s.expunge(dest)
    try:
        src_repo = repository(ctx, src, create=False)
    except Missing:
        src_repo = None  # no data was ever stored: only rows (failed backups) move
    dest_repo = repository(ctx, dest)
    ids = params["resource_ids"]
    _reconcile(ctx, src, dest, src_repo, dest_repo, ids, cleanup=bool(params.get("cleanup_only")))
    if params.get("cleanup_only"):
        backups.queue_gc(ctx, run.project_id, src)
        backups.queue_gc(ctx, run.project_id, dest)
        return
    with ctx.read() as s:
        top_ids = list(s.scalars(select(Backup.id).where(Backup.vault_id == src.id, Backup.resource_id.in_(ids),
                                                         Backup.parent_id.is_(None)).order_by(Backup.created_at)))
    progress = TaskProgress(run)
    moved, left = [], []
    try:
        for i, top_id in enumerate(top_ids):
            span = progress.span(int(99 * i / len(top_ids)), int(99 * (i + 1) / len(top_ids)))
            outcome = _move_one(ctx, run, src, dest, src_repo, dest_repo, top_id, span)
            if outcome is True:
                moved.append(top_id)
            elif outcome:
                left.append(outcome)
            run.set_extra(migrate={**params, "moved_backups": moved, "left": left})
    finally:
        if moved:
            backups.queue_gc(ctx, run.project_id, src)
    if left:
        raise MigrationIncomplete(f"{len(moved)} backup(s) moved; {len(left)} stayed in the source vault: "
                                  + "; ".join(left[:10]) + " (name the resources again to move the rest)")


def _move_one(ctx: ServiceContext, run: tasks.TaskRun, src: Vault, dest: Vault, src_repo: Repository | None,
              dest_repo: Repository, top_id: str, progress: TaskProgress) -> bool | str | None:
    """Move one top-level backup: True when moved, a reason when it stays, None when it is gone."""
    with ctx.read() as s:
        b = s.get(Backup, top_id)
        if b is None or b.vault_id != src.id:
            return None
        status, name, part_ids = b.status, b.name, [x.id for x in data_backups(s, b)]
    if status == B.AVAILABLE:
        for pid in part_ids:
            _copy(src_repo, dest_repo, dest, pid, progress, run)
    elif status != B.ERROR:  # (an error backup has no data: its rows move alone)
        return f"backup {name} is {status}"
    used = dest_repo.usage()
    with ctx.tx() as s:
        if not tasks.still_owned(s, run):
            raise tasks.LeaseLost(run.task_id)
        target = s.get(Vault, dest.id, with_for_update=True)  # (vault, then backup: the order of the others)
        b = s.get(Backup, top_id, with_for_update=True)
        if b is None or b.vault_id != src.id or b.status != status:  # deleted, restoring... meanwhile
            reason = f"backup {name} changed while it was copied ({b.status if b else 'deleted'})"
        elif target is None or target.status not in ("available", "locked"):
            reason = f"backup {name} stays: the destination vault is {target.status if target else 'deleted'}"
        else:
            reason = None
            _switch(s, ctx, b, src, dest, used)
    if reason is not None:
        for pid in part_ids:  # the copy would never be used
            dest_repo.delete_backup(pid, unfinished=True)
        return reason
    if src_repo is not None and status == B.AVAILABLE:
        for pid in part_ids:
            src_repo.delete_backup(pid)
        used_src = src_repo.usage()
        with ctx.tx() as s:
            v = s.get(Vault, src.id)
            if v is not None:
                v.used_bytes = used_src
    return True


def _copy(src_repo: Repository | None, dest_repo: Repository, dest: Vault, part_id: str, progress: TaskProgress,
          run: tasks.TaskRun) -> None:
    """One disk backup's data into the destination under the same id (kept if an earlier attempt
    stored it already)."""
    if dest_repo.chunks.has_manifest(part_id):
        return
    if src_repo is None:
        raise Missing(f"backup {part_id} is not in the source vault's repository")
    header = src_repo.read_manifest(part_id)
    if header.get("type", "disk") != "disk":
        raise MigrationRefused(f"backup {part_id} is a file-system backup; these cannot be migrated yet")
    meta = {**(header.get("meta") or {}), "vault_id": dest.id, "vault_name": dest.name,
            "vault": {"id": dest.id, "name": dest.name, "object_type": dest.object_type,
                      "protect_type": dest.protect_type, "consistent_level": dest.consistent_level,
                      "size_gb": dest.size_gb, "encrypted": dest.encrypted, "description": dest.description},
            "encrypted": dest.encrypted, "migrated_from": src_repo.prefix}
    try:
        dest_repo.backup_disk(BackupImageSource(src_repo.chunks, part_id), backup_id=part_id, meta=meta,
                              progress=progress, cancel=progress.cancel)
    except BackupCancelled:
        if progress.lease_lost or run.released.is_set():
            raise tasks.LeaseLost(run.task_id) from None
        raise tasks.TaskCancelled(run.task_id) from None


def _switch(s: Session, ctx: ServiceContext, b: Backup, src: Vault, dest: Vault, dest_used: int) -> None:
    """The backup's rows become the destination's; its checkpoint follows (or, when other backups of it
    stay in the source, one checkpoint of the destination takes the ones that move)."""
    now = ctx.now()
    rows = [b, *s.scalars(select(Backup).where(Backup.parent_id == b.id))]
    checkpoint_id = _checkpoint_in(s, b, src, dest)
    for row in rows:
        row.vault_id, row.checkpoint_id, row.encrypted, row.updated_at = dest.id, checkpoint_id, dest.encrypted, now
    v = s.get(Vault, dest.id)
    v.used_bytes = dest_used
    backups.auto_expand(s, ctx, v, dest_used)


def _checkpoint_in(s: Session, b: Backup, src: Vault, dest: Vault) -> str:
    cp = s.get(Checkpoint, b.checkpoint_id) if b.checkpoint_id else None
    if cp is None or cp.vault_id != src.id:
        return b.checkpoint_id
    split_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"opencbr:checkpoint:{cp.id}:{dest.id}"))
    others = s.scalar(select(Backup.id).where(Backup.checkpoint_id == cp.id, Backup.parent_id.is_(None),
                                              Backup.id != b.id, Backup.vault_id == src.id).limit(1))
    if s.get(Checkpoint, split_id) is None:
        if others is None:
            cp.vault_id = dest.id
            return cp.id
        s.add(Checkpoint(id=split_id, project_id=cp.project_id, vault_id=dest.id, status=cp.status, name=cp.name,
                         description=cp.description, retention_duration_days=cp.retention_duration_days,
                         auto_trigger=cp.auto_trigger, policy_id=cp.policy_id, created_at=cp.created_at,
                         updated_at=cp.updated_at))
        s.flush()
    elif others is None:
        s.delete(cp)
    return split_id


def _reconcile(ctx: ServiceContext, src: Vault, dest: Vault, src_repo: Repository | None, dest_repo: Repository,
               resource_ids: list[str], *, cleanup: bool) -> None:
    """What an interrupted attempt left: the source's manifest of a backup that switched already goes;
    with ``cleanup`` (no attempt will follow) so does the destination's copy of one that did not."""
    with ctx.read() as s:
        tops = list(s.scalars(select(Backup).where(Backup.vault_id.in_((src.id, dest.id)),
                                                   Backup.resource_id.in_(resource_ids), Backup.parent_id.is_(None))))
        parts = [(top.vault_id, part.id) for top in tops for part in data_backups(s, top)]
    for vault_id, pid in parts:
        if vault_id == dest.id and src_repo is not None and src_repo.chunks.has_manifest(pid):
            src_repo.delete_backup(pid)
        elif vault_id == src.id and cleanup and dest_repo.chunks.has_manifest(pid):
            dest_repo.delete_backup(pid, unfinished=True)


def abandon_migrate(s: Session, task: Task) -> None:
    """No attempt is left: every backup is whole in one vault; a cleanup task removes the copies the
    interrupted attempts left (their chunks would otherwise hold capacity)."""
    params = task.params or {}
    if params.get("cleanup_only"):
        return
    tasks.new_task(s, project_id=task.project_id, operation_type=OPERATION, now=task.ended_at or task.updated_at,
                   vault_id=task.vault_id, vault_name=task.vault_name, params={**params, "cleanup_only": True},
                   extra_info={"migrate": {**params, "cleanup_only": True}}, max_attempts=3)
