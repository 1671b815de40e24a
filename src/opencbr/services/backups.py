"""Backups (guide chapters 2.4, 4, 6, 13.2-13.4): create through checkpoints, list, show, rename,
delete, restore, create disks from backups, verify, export; the tasks that do the work.

The data lives in one engine ``Repository`` per vault (``vaults/<vault_id>/`` in the object store);
the catalog holds what the API shows. Order makes crashes safe: the engine publishes a backup's
manifest only after its data, and the catalog marks the backup available only after the manifest.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, and_, bindparam, cast, func, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, BackupUsage, Checkpoint, Resource, Task, Vault, VaultResource, new_id, utcnow
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, DataCorruption, InvalidParameter, NotFound, StateConflict
from opencbr.domain.retention import RetentionRule
from opencbr.engine import BackupCancelled, Conflict, Missing, Repository
from opencbr.engine.disk.source import FileDiskSource
from opencbr.providers.agent import AgentTaskFailed
from opencbr.providers.agent.provider import HostDisk
from opencbr.providers.base import Opened, ReadView
from opencbr.services import agents, app_consistency, listing, memberships, onhost, quotas, space, tasks, vault_locks
from opencbr.services import resources as res_svc
from opencbr.services.context import ServiceContext
from opencbr.services.deletion import queue_delete, queue_delete_for_system
from opencbr.services.lookups import children, data_backups, get_backup, get_vault
from opencbr.services.principal import Principal
from opencbr.services.progress import TaskProgress
from opencbr.services.repositories import lock_timing, repository
from opencbr.services.retention import apply_retention_after_backup

log = logging.getLogger("opencbr.backups")
GB = 1024**3


# ------------------------------------------------------------------------------------ queries
@dataclass
class BackupView:
    backup: Backup
    children: list[Backup] = field(default_factory=list)


@dataclass
class BackupFilter:
    checkpoint_id: str | None = None
    vault_id: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    resource_type: str | None = None
    resource_az: str | None = None
    name: str | None = None
    statuses: list[str] | None = None
    image_type: str | None = None
    parent_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    incremental: bool | None = None
    ids: list[str] | None = None


SORT_KEYS = {"created_at": Backup.created_at, "updated_at": Backup.updated_at, "name": Backup.name,
             "status": Backup.status, "protected_at": Backup.protected_at, "id": Backup.id}
#: Newest first, as the public API lists backups. Ties (one microsecond) by id in the same direction: one
#: backward walk of ix_backups_project_parent_created_id gives the whole order; with ``created_at DESC,
#: id ASC`` SQLite's planner could choose to sort all the project's backups for every page (it did at
#: 2 M backups on 2026-12-04, and does on a small analysed catalog: bench/README.md, catalog of millions).
DEFAULT_ORDER = [(Backup.created_at, True), (Backup.id, True)]


def list_backups(s: Session, p: Principal, f: BackupFilter, *, limit: int = 1000, offset: int = 0,
                 sort: listing.Sort | None = None, marker: str | None = None,
                 scope=None) -> tuple[list[BackupView], int]:
    """Guide 4.1: search by status, name, id, vault, resource name/id/type, replica or not, and date.
    Disk backups inside a server backup are shown as its ``children``, not on their own, unless asked
    for by ``parent_id``. With ``marker`` the page starts ``offset`` rows after that backup. ``scope``
    replaces "the project's own backups" (services/sharing.py adds the ones shared with it)."""
    conds = [Backup.project_id == p.project_id if scope is None else scope]
    if f.parent_id:
        conds.append(Backup.parent_id == f.parent_id)
    else:
        conds.append(Backup.parent_id.is_(None))
    for col, val in ((Backup.checkpoint_id, f.checkpoint_id), (Backup.vault_id, f.vault_id),
                     (Backup.resource_id, f.resource_id), (Backup.resource_type, f.resource_type),
                     (Backup.resource_az, f.resource_az), (Backup.image_type, f.image_type)):
        if val:
            conds.append(col == val)
    if f.resource_name:
        conds.append(listing.contains(Backup.resource_name, f.resource_name))
    if f.name:
        conds.append(listing.contains(Backup.name, f.name))
    if f.statuses:
        conds.append(Backup.status.in_(f.statuses))
    if f.ids:
        conds.append(Backup.id.in_(f.ids))
    if f.start_time:
        conds.append(Backup.created_at >= f.start_time)
    if f.end_time:
        conds.append(Backup.created_at <= f.end_time)
    if f.incremental is not None:
        conds.append(Backup.incremental.is_(f.incremental))
    keys = listing.order_keys(sort, SORT_KEYS, DEFAULT_ORDER, Backup.id)
    order = listing.clauses(keys)
    total = _count(s, p, f, conds, scope)
    if marker:
        conds = _after_marker(s, conds, keys, order, marker)
    rows = _page(s, conds, keys, order, limit, offset)
    return [BackupView(b, children(s, b.id) if b.resource_type == R.SERVER else []) for b in rows], total


def _page(s: Session, conds: list, keys: list, order: list, limit: int, offset: int) -> list[Backup]:
    """The page's rows, each list's order one walk of an index (docs/catalog-scale.md)."""
    # parent_id has one value in every list (NULL, or the parent asked for), so leading with it changes
    # nothing, but PostgreSQL does not take ``IS NULL`` as pinning a column: without it there, it cannot see
    # that an index on (..., parent_id, created_at, id) gives the order, and sorts every matching row.
    order = [Backup.parent_id.desc() if keys[0][1] else Backup.parent_id.asc(), *order]
    page = select(Backup.id if offset else Backup).where(and_(*conds)).order_by(*order).limit(limit).offset(offset)
    if offset:
        # The skipped rows are read as index entries only (the ids), not as table rows: then the page's rows.
        page = select(Backup).where(Backup.id.in_(page)).order_by(*order)
    return list(s.scalars(page))


def _count(s: Session, p: Principal, f: BackupFilter, conds: list, scope) -> int:
    """The list's total. The filters the database keeps counts for (vault, resource, resource type,
    status: table ``backup_usage``) are answered from those counts, whatever the number of backups; the
    others count the matching rows."""
    kept = scope is None and not any((f.parent_id, f.checkpoint_id, f.resource_name, f.resource_az, f.name,
                                      f.image_type, f.ids, f.start_time, f.end_time, f.incremental is not None))
    if not kept:
        return s.scalar(select(func.count()).select_from(Backup).where(and_(*conds))) or 0
    q = select(func.coalesce(func.sum(BackupUsage.backup_count), 0)).where(BackupUsage.project_id == p.project_id)
    for col, val in ((BackupUsage.vault_id, f.vault_id), (BackupUsage.resource_id, f.resource_id),
                     (BackupUsage.resource_type, f.resource_type)):
        if val:
            q = q.where(col == val)
    if f.statuses:
        q = q.where(BackupUsage.status.in_(f.statuses))
    return int(s.scalar(q) or 0)


def _after_marker(s: Session, conds: list, keys: list, order: list, marker: str) -> list:
    """``conds`` narrowed to the rows after ``marker`` in the list's order: a seek in the index from the
    marker's sort keys, not a count of the rows before it."""
    values = s.execute(select(*(col for col, _ in keys)).where(and_(*conds), Backup.id == marker)).first()
    if values is None:
        raise InvalidParameter(f"marker {marker} is not a backup of this list")
    seek = listing.after(keys, list(values))
    if seek is not None:
        return [*conds, seek]
    # A NULL sort key (protected_at of a backup never made): the marker's position, counted.
    ranked = select(Backup.id, func.row_number().over(order_by=order).label("n")).where(and_(*conds)).subquery()
    n = int(s.scalar(select(ranked.c.n).where(ranked.c.id == marker)))
    after_ids = select(ranked.c.id).where(ranked.c.n > n)
    return [*conds, Backup.id.in_(after_ids)]


def show_backup(s: Session, p: Principal, backup_id: str) -> BackupView:
    b = get_backup(s, p.project_id, backup_id)
    return BackupView(b, children(s, b.id) if b.resource_type == R.SERVER else [])


def show_checkpoint(s: Session, p: Principal, checkpoint_id: str) -> tuple[Checkpoint, Vault, list[Backup]]:
    cp = s.get(Checkpoint, checkpoint_id) if isinstance(checkpoint_id, str) else None
    if cp is None or cp.project_id != p.project_id:
        raise NotFound(f"checkpoint {checkpoint_id} not found", code="BackupService.6111")
    vault = s.get(Vault, cp.vault_id)
    rows = list(s.scalars(select(Backup).where(Backup.checkpoint_id == cp.id, Backup.parent_id.is_(None))))
    return cp, vault, rows


def update_backup(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, name: object) -> BackupView:
    """Rename a backup (update_backup in the API)."""
    p.require_write()
    b = get_backup(s, p.project_id, backup_id, for_update=True)
    b.name = B.check_backup_name(name)
    b.updated_at = ctx.now()
    return BackupView(b, children(s, b.id) if b.resource_type == R.SERVER else [])


def resource_usage(s: Session, p: Principal, *, resource_id: str | None = None, resource_type: str | None = None,
                   limit: int = 1000, offset: int = 0) -> tuple[list[dict], int]:
    """Per resource: backup count and the stored bytes its backups added (show_storage_usage), a page of
    them in resource id order, and how many resources there are. Read from the counts the database keeps
    (``backup_usage``), not from the backups."""
    # No ``backup_count > 0``: the triggers delete a row whose count reaches 0, and without it the count
    # and the page's resource ids are read from ix_backup_usage_project_resource alone.
    conds = [BackupUsage.project_id == p.project_id]
    if resource_id:
        conds.append(BackupUsage.resource_id == resource_id)
    if resource_type:
        conds.append(BackupUsage.resource_type == resource_type)
    total = s.scalar(select(func.count(func.distinct(BackupUsage.resource_id))).where(*conds)) or 0
    # The page's resource ids first (an offset skips index entries, not table rows), then their figures.
    page = (select(BackupUsage.resource_id).where(*conds).group_by(BackupUsage.resource_id)
            .order_by(BackupUsage.resource_id).limit(limit).offset(offset))
    rows = s.execute(select(BackupUsage.resource_id, func.max(BackupUsage.resource_name),
                            func.max(BackupUsage.resource_type), func.sum(BackupUsage.backup_count),
                            func.sum(BackupUsage.backup_bytes))
                     .where(*conds, BackupUsage.resource_id.in_(page)).group_by(BackupUsage.resource_id)
                     .order_by(BackupUsage.resource_id)).all()
    return [{"resource_id": r[0], "resource_name": r[1], "resource_type": r[2], "backup_count": int(r[3]),
             "backup_bytes": int(r[4] or 0)} for r in rows], int(total)


# Built once (every vault list runs it): the statement keeps its cache key; the ids go in one parameter.
# The sums as integers: PostgreSQL's sum of a bigint is a numeric, which arrives as a Decimal per value
# (thousands per page).
_USAGE_OF_VAULTS = (select(BackupUsage.vault_id, BackupUsage.resource_id,
                           cast(func.sum(BackupUsage.backup_count), BigInteger),
                           cast(func.sum(BackupUsage.backup_bytes), BigInteger))
                    .where(BackupUsage.vault_id.in_(bindparam("vault_ids", expanding=True)))
                    .group_by(BackupUsage.vault_id, BackupUsage.resource_id))


def enrich_vault_views(s: Session, views: list) -> None:
    """Backup count and size per associated resource, for the vaults' ResourceResp items (one query over
    the counts the database keeps, a few rows per resource whatever its number of backups)."""
    stats = {(vid, rid): (n, size or 0) for vid, rid, n, size in s.execute(
        _USAGE_OF_VAULTS, {"vault_ids": [v.vault.id for v in views]})}
    for view in views:
        for r in view.resources:
            r.backup_count, r.backup_bytes = stats.get((view.vault.id, r.resource_id), (0, 0))


# ------------------------------------------------------------------------------------ create
@dataclass
class CheckpointView:
    checkpoint: Checkpoint
    vault: Vault
    backups: list[Backup]
    task_ids: list[str]


def create_checkpoint(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, params: dict | None = None, *,
                      auto_trigger: bool = False, policy_id: str = "", retention_rule: str = "",
                      now: datetime | None = None) -> CheckpointView:
    """Back up one, several or all resources of a vault (guide 2.4; the API's create_checkpoint).

    ``params`` is the API's CheckpointParam: ``resources`` (ids; default all of the vault's),
    ``name``, ``description``, ``incremental`` (false forces a full backup), ``retention_duration_days``
    (manual backups). Automatic backups (the scheduler) pass ``auto_trigger``, ``policy_id`` and the
    retention rule in force. Returns at once; one ``backup`` task per resource does the work."""
    p.require_backup()
    params = params or {}
    if params.get("retention_duration_days") is not None:
        p.require_write()  # when a backup goes is a retention decision, not the backup-only role's (docs/roles.md)
    space.check_reserve(ctx)
    description = B.check_backup_description(params.get("description"))
    base = params.get("name")
    base = B.default_backup_name(auto_trigger) if base in (None, "") else B.check_backup_name(base)
    full = params.get("incremental") is False
    if not isinstance(params.get("incremental", True), bool):
        raise InvalidParameter("incremental must be true or false")
    retention_days = params.get("retention_duration_days")
    if retention_days is not None and (isinstance(retention_days, bool) or not isinstance(retention_days, int)
                                       or not (1 <= retention_days <= 99999)):
        raise InvalidParameter("retention_duration_days must be an integer from 1 to 99999")
    wanted = params.get("resources")
    if wanted is not None and (not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted)):
        raise InvalidParameter("resources must be a list of resource ids")
    now = now or ctx.now()
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    if vault.protect_type != "backup":
        raise InvalidParameter("backups are made in backup vaults; this is a replication vault",
                               code="BackupService.6419")
    if vault.status not in ("available", "locked"):
        raise StateConflict(f"vault {vault.name} is {vault.status}", code="BackupService.6211")
    _ensure_capacity(s, ctx, vault)
    bound = {b.resource_id: b for b in s.scalars(select(VaultResource).where(VaultResource.vault_id == vault.id))}
    ids = list(dict.fromkeys(wanted)) if wanted else list(bound)
    if not ids:
        raise InvalidParameter("the vault has no resources to back up; associate resources first",
                               code="BackupService.6420")
    for rid in ids:
        if rid not in bound:
            raise InvalidParameter(f"resource {rid} is not associated with vault {vault.name}",
                                   code="BackupService.6421")
    resources, states = _protectable_resources(s, p, vault, ids)
    quotas.check_room(s, ctx.settings, p.project_id, quotas.BACKUP, len(resources))
    with_previous = _with_available_backup(s, vault.id, ids)
    cp = Checkpoint(id=new_id(), project_id=p.project_id, vault_id=vault.id, status="protecting", name=base,
                    description=description, retention_duration_days=retention_days, auto_trigger=auto_trigger,
                    policy_id=policy_id, created_at=now, updated_at=now)
    s.add(cp)
    made, task_ids = [], []
    for res, name in zip(resources, B.backup_names(base, len(resources)), strict=True):
        b = _new_backup(s, p, vault, cp, res, states[res.id], name, description, not full and res.id in with_previous,
                        full, auto_trigger, policy_id, retention_rule, retention_days, now,
                        bound[res.id].extra_info or {})
        task = tasks.new_task(s, project_id=p.project_id, operation_type="backup", now=now, vault_id=vault.id,
                              vault_name=vault.name, resource_id=res.id, resource_name=res.name,
                              resource_type=res.type, checkpoint_id=cp.id, policy_id=policy_id,
                              provider_id=R.PROVIDER_ID[res.type], request_id=p.request_id,
                              params={"backup_id": b.id}, flush=False,
                              extra_info={"backup": {"backup_id": b.id, "backup_name": b.name,
                                                     "incremental": b.incremental}})
        b.task_id = task.id
        made.append(b)
        task_ids.append(task.id)
    # One flush for the checkpoint, its backups and their tasks: the inserts go in batches (a fleet's fire
    # minute queues thousands; a flush per row was most of the scheduler's time, bench/README.md)
    s.flush()
    return CheckpointView(cp, vault, made, task_ids)


def _protectable_resources(s: Session, p: Principal, vault: Vault,
                           ids: list[str]) -> tuple[list[Resource], dict[str, R.ResourceState]]:
    """The resources ``ids`` of the project in that order, and their states, after the rules that stop a
    backup (guide 2.4: a resource in error, one whose backup in this vault is running); one query for each
    kind of row, not one per resource."""
    found = {r.id: r for r in s.scalars(select(Resource).where(Resource.id.in_(ids),
                                                               Resource.project_id == p.project_id))}
    # (get_resource: the 404 of a resource not found, or another project's)
    resources = [found.get(rid) or res_svc.get_resource(s, p.project_id, rid) for rid in ids]
    running = set(s.scalars(select(Backup.resource_id).where(
        Backup.vault_id == vault.id, Backup.resource_id.in_(ids), Backup.parent_id.is_(None),
        Backup.status == B.PROTECTING)))
    states = {}
    for res in resources:
        states[res.id] = res_svc.resource_state(s, res)
        R.check_protectable(states[res.id])
        if res.id in running:
            raise StateConflict(f"a backup of {res.name} is already running", code="BackupService.6422")
    return resources, states


def _with_available_backup(s: Session, vault_id: str, ids: list[str]) -> set[str]:
    """Those of the resources ``ids`` with an available backup in the vault (their next one can be
    incremental): for each, the first such backup found in the index by vault and resource, not its
    history."""
    available = (select(Backup.id).where(Backup.vault_id == vault_id, Backup.resource_id == VaultResource.resource_id,
                                         Backup.status == B.AVAILABLE).exists())
    return set(s.scalars(select(VaultResource.resource_id).where(
        VaultResource.vault_id == vault_id, VaultResource.resource_id.in_(ids), available)))


def _ensure_capacity(s: Session, ctx: ServiceContext, vault: Vault) -> None:
    """Guide 13.3.4 (none starts once usage exceeds capacity), with the vault's auto-expansion."""
    used = memberships.counted_bytes(vault)  # (accepted shared backups count too: guide 4.2)
    auto_expand(s, ctx, vault, used)
    B.check_capacity_allows_backup(used, vault.size_gb)


def auto_expand(s: Session, ctx: ServiceContext, vault: Vault, used: int) -> None:
    """An auto-expanding vault over its capacity grows to 125 % of its usage, as far as the project's
    capacity quota allows."""
    if vault.auto_expand and used > vault.size_gb * GB:
        wanted = min(-(-used * 5 // (4 * GB)), 10_485_760)
        room = quotas.capacity_headroom(s, ctx.settings, vault.project_id)
        vault.size_gb = max(vault.size_gb, wanted if room is None else min(wanted, vault.size_gb + room))


def _expiry(created: datetime, retention_days: int | None, retention_rule: str) -> datetime | None:
    """When a backup expires: a manual backup's ``retention_duration_days``, or an automatic backup's
    time-period rule (guide 5.2); None for quantity rules and permanent ones."""
    from datetime import UTC, timedelta

    if retention_days:
        return created + timedelta(days=retention_days)
    if retention_rule:
        end = RetentionRule.decode(retention_rule).expires_at(created.replace(tzinfo=UTC))
        return end.replace(tzinfo=None) if end else None
    return None


def _new_backup(s: Session, p: Principal, vault: Vault, cp: Checkpoint, res: Resource, state: R.ResourceState,
                name: str, description: str, incremental: bool, full: bool, auto_trigger: bool, policy_id: str,
                retention_rule: str, retention_days: int | None, now: datetime, extra_info: dict) -> Backup:
    """The backup row of one resource (and of a server's disks), not flushed yet: its id is set here."""
    b = Backup(id=new_id(), project_id=p.project_id, vault_id=vault.id, checkpoint_id=cp.id, name=name,
               description=description, resource_id=res.id, resource_name=res.name, resource_type=res.type,
               resource_size_bytes=state.size_bytes, resource_az=res.availability_zone, status=B.PROTECTING,
               auto_trigger=auto_trigger, policy_id=policy_id, retention_rule=retention_rule, full_requested=full,
               encrypted=vault.encrypted, incremental=incremental, created_at=now, updated_at=now,
               expired_at=_expiry(now, retention_days, retention_rule))
    s.add(b)
    if res.type == R.SERVER:
        disks = res_svc.server_disks(s, res.id)
        include = {v["id"] for v in extra_info.get("include_volumes") or []}
        exclude = set(extra_info.get("exclude_volumes") or [])
        chosen = [d for d in disks if (not include or d.id in include) and d.id not in exclude]
        for d in chosen:
            s.add(Backup(project_id=p.project_id, vault_id=vault.id, checkpoint_id=cp.id, parent_id=b.id,
                         name=f"{name}-{d.disk_role}-{d.device_index}", description=description, resource_id=d.id,
                         resource_name=d.name, resource_type=R.DISK, resource_size_bytes=d.size_bytes,
                         resource_az=d.availability_zone, disk_role=d.disk_role, device_index=d.device_index,
                         status=B.PROTECTING, auto_trigger=auto_trigger, policy_id=policy_id, full_requested=full,
                         encrypted=vault.encrypted, incremental=b.incremental, created_at=now, updated_at=now))
        b.details = {"disks": [{"id": d.id, "name": d.name, "role": d.disk_role, "device_index": d.device_index,
                                "size_bytes": d.size_bytes} for d in chosen]}
    return b


# ------------------------------------------------------------------------------------ backup task
def _manifest_meta(b: Backup, vault: Vault, parent: Backup | None, consistency: dict) -> dict:
    """What the store keeps with each backup, enough to rebuild the catalog (``cbr admin vault rebuild``)."""
    meta = {"backup_id": b.id, "name": b.name, "description": b.description, "project_id": b.project_id,
            "vault_id": vault.id, "vault_name": vault.name, "checkpoint_id": b.checkpoint_id,
            "resource_id": b.resource_id, "resource_name": b.resource_name, "resource_type": b.resource_type,
            "resource_size_bytes": b.resource_size_bytes, "resource_az": b.resource_az,
            "auto_trigger": b.auto_trigger, "policy_id": b.policy_id, "retention_rule": b.retention_rule,
            "created_at": b.created_at.isoformat(), "consistency": consistency,
            "encrypted": vault.encrypted,
            "vault": {"id": vault.id, "name": vault.name, "object_type": vault.object_type,
                      "protect_type": vault.protect_type, "consistent_level": vault.consistent_level,
                      "size_gb": vault.size_gb, "encrypted": vault.encrypted, "description": vault.description}}
    if parent is not None:
        meta.update(server={"backup_id": parent.id, "name": parent.name, "resource_id": parent.resource_id,
                            "resource_name": parent.resource_name, "layout": parent.details.get("disks", [])},
                    disk_role=b.disk_role, device_index=b.device_index)
    return meta


def run_backup(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """Back up one resource; on any failure the backup turns ``error`` with the reason (guide 4.1)."""
    try:
        _run_backup(ctx, run)
    except (tasks.TaskCancelled, tasks.LeaseLost):
        raise
    except CBRError as e:
        _fail(ctx, run.params["backup_id"], e.code, e.message)
        raise
    except Exception as e:
        err = tasks.error_of(ctx, e)
        _fail(ctx, run.params["backup_id"], err.code, err.message)
        raise


def _fail(ctx: ServiceContext, backup_id: str, code: str, message: str) -> None:
    with ctx.tx() as s:
        fail_backup_rows(s, backup_id, code, message, ctx.now())


def _run_backup(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    backup_id = run.params["backup_id"]
    with ctx.tx() as s:
        b = s.get(Backup, backup_id)
        if b is None:
            return  # deleted meanwhile (its vault went away)
        if b.status == B.AVAILABLE:
            return  # an earlier attempt published it, and its worker was lost before it said so
        vault = s.get(Vault, b.vault_id)
        parts = data_backups(s, b)
        server = s.get(Resource, b.resource_id) if b.resource_type == R.SERVER else None
        for part in parts:
            if s.get(Resource, part.resource_id) is None:
                raise CBRError(f"{part.resource_name} is no longer in the inventory", code="BackupService.6423")
        previous = {part.id: s.scalar(select(Backup.id).where(
            Backup.vault_id == b.vault_id, Backup.resource_id == part.resource_id, Backup.status == B.AVAILABLE,
            Backup.id != part.id).order_by(Backup.created_at.desc()).limit(1)) for part in parts}
        if server is not None:
            running = server.status == "running"
        else:  # a disk attached to a running server is written while we read it
            disk = s.get(Resource, b.resource_id)
            host = s.get(Resource, disk.server_id) if disk is not None and disk.server_id else None
            running = host is not None and host.status == "running"
        res = s.get(Resource, b.resource_id)
        provider = ctx.providers.for_resource(res)  # (a server's disks: its own)
        known_size = res.size_bytes or b.resource_size_bytes or 0  # (a file system's: measured, or the last backup's)
        for obj in {id(o): o for o in (*parts, b, vault)}.values():
            s.expunge(obj)
    space.check_reserve(ctx)  # queued while there was room; there may be none now
    repo = repository(ctx, vault)
    if run.attempt > 1:  # an earlier attempt's worker was lost, maybe after it stored a manifest: start clean
        for part in parts:
            repo.delete_backup(part.id, unfinished=True)
    progress = TaskProgress(run, guard=lambda: space.check_reserve(ctx, fraction=0.5))
    app_consistent = vault.consistent_level == "app_consistent"  # (server vaults only: domain/vault)
    if provider.capabilities.reads_on_host:  # read where it lives (an agent's host), stored here
        outcome = _backup_on_host(ctx, provider, repo, b, vault, parts, previous, progress, app_consistent)
    else:
        with ExitStack() as stack:  # every path opened and checked again (roots, symlinks, identity)
            opened = {part.id: stack.enter_context(res_svc.open_resource(ctx, part.resource_id)) for part in parts}
            if b.resource_type == R.FILE_SYSTEM:
                outcome = _backup_tree(repo, b, vault, opened[b.id], previous[b.id], progress, known_size)
            else:
                views = provider.read_view([opened[part.id] for part in parts], server_running=running)
                outcome = _backup_disks(repo, b, vault, parts, opened, previous, views, progress)
            if outcome is not None:
                for part in parts:  # what was read is the resource from now on: its identity and size
                    res_svc.record_identity(ctx, part.resource_id, opened[part.id],
                                            outcome.logical_bytes if b.resource_type == R.FILE_SYSTEM else None)
    if outcome is None:  # cancelled: nothing is left of it
        if progress.stopped_by is not None:
            raise progress.stopped_by
        if progress.lease_lost or run.released.is_set():  # (a span may have seen it): leave it to the next run
            raise tasks.LeaseLost(run.task_id)
        _discard_cancelled(ctx, b)
        queue_gc(ctx, b.project_id, vault)
        raise tasks.TaskCancelled(run.task_id)
    if app_consistent and outcome is not None and "app" not in outcome.consistency:  # guide 7.3
        _with_app_record(outcome, NO_AGENT)
    _publish(ctx, run, b, vault, UsageReading.of(repo), outcome)
    if app_consistent:
        _say_app_consistency(ctx, run, outcome.consistency["app"])
    if run.attempt > 1:  # what the lost attempt stored and never indexed goes at the next GC
        queue_gc(ctx, b.project_id, vault)
    # Guide 13.5.2: after every backup, automatic or manual, the latest retention rule is applied.
    apply_retention_after_backup(ctx, b.vault_id, b.resource_id)
    run.set_extra(backup={"backup_id": b.id, "backup_name": b.name, "incremental": b.incremental,
                          "logical_bytes": outcome.logical_bytes, "added_bytes": outcome.added_bytes,
                          "consistency": outcome.consistency["method"], "partial": outcome.partial,
                          "warnings": outcome.warnings[:50]})


NO_AGENT = {"achieved": "crash_consistent", "hooks": [],
            "reason": "no agent runs on the resource's host: nothing quiesced its applications (guide 7.3); "
                      "install the agent there for application-consistent backups"}


def app_summary(app: dict) -> dict:
    """What the backup and its task show of the application consistency: achieved, and why not."""
    return {"achieved": app.get("achieved"), "reason": app.get("reason") or ""}


def _with_app_record(outcome: BackupOutcome, app: dict) -> None:
    """The vault asked for application consistency and nothing could give it: the record says so."""
    outcome.consistency = {**outcome.consistency, "app": app}
    for _logical, _added, details in outcome.parts.values():
        if isinstance(details.get("consistency"), dict):
            details["consistency"] = outcome.consistency


def _say_app_consistency(ctx: ServiceContext, run: tasks.TaskRun, app: dict) -> None:
    """Never a silent downgrade: the task says which consistency was achieved, and why not the asked one."""
    summary = app_summary(app)
    with ctx.tx() as s:
        task = s.get(Task, run.task_id)
        if task is None:
            return
        task.extra_info = {**(task.extra_info or {}), "app_consistency": summary}
        if summary["achieved"] != "app_consistent":
            task.error_message = f"taken crash-consistent, not application-consistent: {summary['reason']}"


@dataclass
class BackupOutcome:
    """What a finished backup made: per engine backup (a disk, or a tree) its sizes and details."""

    consistency: dict
    parts: dict[str, tuple[int, int, dict]]  # backup id -> (logical bytes, added bytes, details)
    partial: bool = False
    warnings: list[dict] = field(default_factory=list)

    @property
    def logical_bytes(self) -> int:
        return sum(p[0] for p in self.parts.values())

    @property
    def added_bytes(self) -> int:
        return sum(p[1] for p in self.parts.values())


def _backup_disks(repo: Repository, b: Backup, vault: Vault, parts: list[Backup], opened: dict, previous: dict,
                  views: ReadView, progress: TaskProgress) -> BackupOutcome | None:
    """All disks of a server (or one disk) from one point in time (``views``, closed here)."""
    consistency = views.describe()
    results = {}
    try:
        total = sum(max(1, part.resource_size_bytes) for part in parts)
        done = 0
        for part, source in zip(parts, views.sources, strict=True):
            size = max(1, part.resource_size_bytes)
            span = progress.span(int(99 * done / total), int(99 * (done + size) / total))
            meta = _manifest_meta(part, vault, b if part is not b else None, consistency)
            results[part.id] = repo.backup_disk(FileDiskSource(opened[part.id].path, source), backup_id=part.id,
                                                meta=meta,
                                                parent_backup_id=previous[part.id], full=part.full_requested,
                                                progress=span, cancel=progress.cancel)
            done += size
    except BaseException as e:
        for part_id in results:  # published disks of an unfinished server backup: withdraw them too
            repo.delete_backup(part_id, unfinished=True)
        if isinstance(e, BackupCancelled):
            return None
        raise
    finally:
        views.close()
    return BackupOutcome(consistency, {pid: (r.disk_size, r.added_bytes, {"consistency": consistency,
                                                                          "stats": r.to_dict()})
                                       for pid, r in results.items()})


def _backup_tree(repo: Repository, b: Backup, vault: Vault, root: Opened, previous: str | None,
                 progress: TaskProgress, known_size: int = 0) -> BackupOutcome | None:
    """A file system (guide 2.4.3): the tree as it is while it is read; unchanged files are not read
    again. Unreadable files make the backup partial, never failed (the warnings say which)."""
    consistency = {"method": "live-tree",
                   "note": "files were read while the file system was in use (guide 2.4.3 advises quiet times)"}
    meta = _manifest_meta(b, vault, None, consistency)
    from opencbr.engine.tree import backup_tree_from  # (the tree engine loads with the first tree backup)
    from opencbr.services.tree_source import ResourceTree

    try:
        r = backup_tree_from(repo, ResourceTree(root.fd, known_size), backup_id=b.id, meta=meta,
                             parent_backup_id=previous, full=b.full_requested, progress=progress,
                             cancel=progress.cancel)
    except BackupCancelled:
        return None
    warnings = [w.to_dict() for w in r.warnings]
    stats = {k: v for k, v in r.to_dict().items() if k != "warnings"}
    return BackupOutcome(consistency, {b.id: (r.total_bytes, r.added_bytes, {
        "consistency": consistency, "stats": stats, "partial": r.partial, "warnings": warnings[:200]})},
        partial=r.partial, warnings=warnings)


_ON_HOST = {"method": "agent", "note": "read on the agent's host (it records how)"}  # replaced by the agent's


def _backup_on_host(ctx: ServiceContext, provider, repo: Repository, b: Backup, vault: Vault, parts: list[Backup],
                    previous: dict, progress: TaskProgress, app_consistent: bool = False) -> BackupOutcome | None:
    """The agent reads the disks (one point in time) or the tree on its host; the vault answers which
    chunks it needs and checks what it gets (providers/agent, engine/remote)."""
    link = onhost.link_to(ctx, b.resource_id)
    with ctx.tx() as s:
        paths = {part.id: s.get(Resource, part.resource_id).path for part in parts}
        exclude = agents.exclude_paths(s, s.get(Resource, b.resource_id)) if b.resource_type == R.FILE_SYSTEM else []
    task = {"project_id": link.project_id, "cancel": progress.cancel, "bandwidth": link.bandwidth,
            "progress": progress, "app_consistent": app_consistent, "agent_id": link.agent_id}
    try:
        if b.resource_type == R.FILE_SYSTEM:
            consistency = {"method": "live-tree", "note": "files were read on the agent's host while the file "
                                                          "system was in use (guide 2.4.3 advises quiet times)"}
            r = provider.backup_tree(repo, link.connect, path=paths[b.id], backup_id=b.id, parent=previous[b.id],
                                     meta=_manifest_meta(b, vault, None, consistency), full=b.full_requested,
                                     exclude=exclude, **task)
            recorded = _recorded_by_worker(r, [b])[b.id]
            warnings = list(r.get("warnings") or [])[:200]
            stats = _figures(r)
            if r.get("app"):
                consistency["app"] = r["app"]
            details = {"consistency": consistency, "stats": stats, "partial": bool(r.get("partial")),
                       "warnings": warnings[:200]}
            _refuse_if_revoked(ctx, link, repo, parts)
            if r.get("app_consistency"):  # what a restore needs (the manifest was written before post-thaw)
                details["app_consistency"] = app_consistency.keep(repo, b.id, r["app_consistency"])
            return BackupOutcome(consistency, {b.id: (_size(r.get("total_bytes")), recorded["added_bytes"], details)},
                                 partial=bool(r.get("partial")), warnings=warnings)
        disks = [HostDisk(paths[part.id], part.id, previous[part.id],
                          _manifest_meta(part, vault, b if part is not b else None, _ON_HOST)) for part in parts]
        r = provider.backup_disks(repo, link.connect, disks=disks, server=b.resource_type == R.SERVER,
                                  full=b.full_requested, **task)
    except AgentTaskFailed as e:
        if progress.cancel.is_set():
            return None
        link.refuse_if_revoked(ctx)
        raise onhost.agent_error(e) from None
    _refuse_if_revoked(ctx, link, repo, parts)
    recorded = _recorded_by_worker(r, parts)
    consistency = r["consistency"] if isinstance(r.get("consistency"), dict) else dict(_ON_HOST)
    said = {d.get("backup_id"): d for d in r.get("disks") or [] if isinstance(d, dict)}
    kept = {}  # read live: the restore material, known after the manifests, goes with each disk's backup
    for part in parts if r.get("app_consistency") else ():
        kept[part.id] = {"app_consistency": app_consistency.keep(repo, part.id, r["app_consistency"])}
    return BackupOutcome(consistency, {part.id: (recorded[part.id]["logical_bytes"], recorded[part.id]["added_bytes"],
                                                 {"consistency": consistency, "stats": _figures(said.get(part.id) or {}),
                                                  **kept.get(part.id, {})})
                                       for part in parts})


def _recorded_by_worker(r: dict, parts: list[Backup]) -> dict[str, dict]:
    """Each backup of the task as the worker recorded it (serve_backup): the agent's answer names the
    backups it made and their sizes, and a compromised agent named others (another resource's backup,
    then published, and given restore material of its choosing) and any size. Only this task's parts, each
    committed, are published; their sizes are the worker's."""
    recorded = r.get("recorded") if isinstance(r.get("recorded"), dict) else {}
    missing = [part.id for part in parts if part.id not in recorded]
    if missing or set(recorded) - {part.id for part in parts}:
        raise CBRError(f"the agent's task did not record backup(s) {', '.join(missing) or '?'} of this task",
                       code="BackupService.6424")
    return recorded


def _figures(said: dict) -> dict:
    """The numbers of an agent's answer, kept as the backup's stats (what it read, sent, skipped): nothing
    else of it goes into the catalog as it is."""
    return {k: v for k, v in said.items() if isinstance(k, str) and len(k) <= 64 and type(v) in (int, float, bool)}


def _size(value) -> int:
    """A size the agent says (a tree's logical bytes: the worker cannot add them up without the catalog)."""
    return value if type(value) is int and 0 <= value <= 1 << 62 else 0


def _refuse_if_revoked(ctx: ServiceContext, link, repo: Repository, parts: list[Backup]) -> None:
    """An agent revoked while it sent a backup (docs/agents.md: unregistering revokes at once) does not
    make one: its manifests go, and the task says why (the worker's own check of the catalog; the API's
    word to the agent is best effort, and an unreachable or paused agent never hears it)."""
    try:
        link.refuse_if_revoked(ctx)
    except CBRError:
        for part in parts:
            repo.delete_backup(part.id, unfinished=True)
        raise


@dataclass
class UsageReading:
    """A vault's used capacity as read from its repository (guide 13.3.3), and when the reading began.

    Backups, deletions and GCs of one vault run at once, each reads the usage after its own change and
    writes it in its own transaction: a reading that began before another task's change committed can
    reach the catalog after that task's (newer) one, and the vault would show the older figure until
    the next change. So a reading is written under the vault row's lock, and read again there when the
    vault was written since it began (rare: only then is the repository read with the lock held)."""

    repo: Repository
    used: int
    began: datetime

    # A vault written this long before a reading began counts as written after it: the workers' clocks
    # (one machine's on SQLite; NTP-close ones on PostgreSQL). Small, since every write within it reads
    # the usage again with the vault locked, which on SQLite holds the catalog's write lock meanwhile.
    CLOCK_SLACK = timedelta(seconds=0.5)

    @classmethod
    def of(cls, repo: Repository) -> "UsageReading":
        began = utcnow()
        return cls(repo, repo.usage(), began)

    def settle(self, s: Session, vault_id: str) -> Vault | None:
        """The vault, locked, with its used bytes set to a reading no older than any written before."""
        v = s.get(Vault, vault_id, with_for_update=True)
        if v is None:
            return None
        if v.updated_at is not None and v.updated_at > self.began - self.CLOCK_SLACK:
            self.used = self.repo.usage()
        v.used_bytes = self.used
        return v


def _publish(ctx: ServiceContext, run: tasks.TaskRun, b: Backup, vault: Vault, usage: UsageReading,
             outcome: BackupOutcome) -> None:
    """Make the backup available (its data and manifest are in the store already) and account for it;
    only while this worker still holds the task (a later attempt may have withdrawn this one's manifest)."""
    now = ctx.now()
    with ctx.tx() as s:
        if not tasks.still_owned(s, run):
            raise tasks.LeaseLost(run.task_id)
        for pid, (logical, added, details) in outcome.parts.items():
            row = s.get(Backup, pid)
            row.status, row.protected_at, row.updated_at = B.AVAILABLE, now, now
            row.logical_bytes, row.added_bytes = logical, added
            row.details = {**(row.details or {}), **details}
            if row.resource_type == R.FILE_SYSTEM and not row.resource_size_bytes:
                row.resource_size_bytes = logical  # asked before the tree was measured: what was read
        if b.id not in outcome.parts:  # a server backup: its disks are the parts
            row = s.get(Backup, b.id)
            row.status, row.protected_at, row.updated_at = B.AVAILABLE, now, now
            row.logical_bytes, row.added_bytes = outcome.logical_bytes, outcome.added_bytes
            row.details = {**(row.details or {}), "consistency": outcome.consistency}
        v = usage.settle(s, vault.id)
        if v is not None:
            auto_expand(s, ctx, v, usage.used)
        _settle_checkpoint(s, b.checkpoint_id, now)


def _settle_checkpoint(s: Session, checkpoint_id: str, now: datetime) -> None:
    cp = s.get(Checkpoint, checkpoint_id)
    if cp is None:
        return
    statuses = [st for (st,) in s.execute(select(Backup.status).where(Backup.checkpoint_id == cp.id,
                                                                      Backup.parent_id.is_(None)))]
    if not statuses or all(st == B.AVAILABLE for st in statuses):
        cp.status = "available"
    elif any(st == B.PROTECTING for st in statuses):
        cp.status = "protecting"
    else:
        cp.status = "error"
    cp.updated_at = now


def _discard_cancelled(ctx: ServiceContext, b: Backup) -> None:
    """A cancelled backup leaves nothing: its rows go (beyond the guide: 13.2.12 says CBR cannot stop a
    running backup)."""
    with ctx.tx() as s:
        row = s.get(Backup, b.id)
        if row is not None:
            s.delete(row)
        s.flush()
        _settle_checkpoint(s, b.checkpoint_id, ctx.now())


def fail_backup_rows(s: Session, backup_id: str, code: str, message: str, now: datetime) -> None:
    """Mark a backup (and its disk children) in error with the reason."""
    b = s.get(Backup, backup_id)
    if b is None:
        return
    for row in [b, *children(s, b.id)]:
        if row.status == B.PROTECTING:
            row.status, row.error_code, row.error_message, row.updated_at = B.ERROR, code, message, now
    _settle_checkpoint(s, b.checkpoint_id, now)


# ------------------------------------------------------------------------------------ delete
def delete_backup(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, *, reason: str = "") -> str:
    """Guide 4.3: delete an available or error backup. It turns ``deleting``; a ``delete`` task removes
    its manifest, then the rows; chunks other backups use stay (13.2.11)."""
    p.require_write()
    now = ctx.now()
    b = get_backup(s, p.project_id, backup_id, for_update=True)
    if b.parent_id is not None:
        raise InvalidParameter("this is a disk of a server backup; delete the server backup",
                               code="BackupService.6425")
    vault = s.get(Vault, b.vault_id)
    B.check_deletable(b.status, vault.status, b.used_by_image)
    vault_locks.check_backup_deletable(s, ctx, b)
    return queue_delete(s, p.project_id, b, vault, now, request_id=p.request_id, reason=reason)


def run_delete(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    backup_id = run.params["backup_id"]
    with ctx.tx() as s:
        b = s.get(Backup, backup_id)
        if b is None:
            return
        protected = vault_locks.protects(s, ctx, b)
        if protected:  # the vault was locked after the deletion was asked: the backup stays (docs/vault-lock.md)
            for row in [b, *children(s, b.id)]:
                row.status, row.updated_at = B.AVAILABLE, ctx.now()
        vault = s.get(Vault, b.vault_id)
        part_ids = [x.id for x in data_backups(s, b)]
        s.expunge(vault)
    if protected:
        run.set_extra(delete={"skipped": "the vault's lock protects this backup; it was not deleted"})
        return
    repo = repository(ctx, vault)
    for pid in part_ids:
        repo.delete_backup(pid)
    run.progress(60)
    usage = UsageReading.of(repo)
    with ctx.tx() as s:
        b = s.get(Backup, backup_id)
        if b is not None:
            cp_id = b.checkpoint_id
            memberships.withdraw(s, b.id)  # guide 4.2: gone from the recipients' accounts too
            s.delete(b)
            s.flush()
            cp = s.get(Checkpoint, cp_id)
            if cp is not None and not s.scalar(select(Backup.id).where(Backup.checkpoint_id == cp_id).limit(1)):
                s.delete(cp)
        usage.settle(s, vault.id)
    queue_gc(ctx, run.project_id, vault)


def queue_gc(ctx: ServiceContext, project_id: str, vault: Vault, *, after_seconds: float = 0.0,
             follow_up: int = 0) -> None:
    """Ask for a GC of the vault unless one is already waiting (deletes come in bursts); not before
    ``after_seconds`` from now."""
    with ctx.tx() as s:
        waiting = s.scalar(select(Task.id).where(Task.operation_type == "gc", Task.vault_id == vault.id,
                                                 Task.status == tasks.WAITING).limit(1))
        if waiting is None:
            task = tasks.new_task(s, project_id=project_id, operation_type="gc", now=ctx.now(), vault_id=vault.id,
                                  vault_name=vault.name, params={"vault_id": vault.id, **({"follow_up": follow_up} if follow_up else {})},
                                  max_attempts=3)
            task.run_after = ctx.now() + timedelta(seconds=after_seconds)


def run_gc(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """Remove chunks no backup references (safe with running backups; see engine/chunks/gc.py)."""
    with ctx.tx() as s:
        vault = s.get(Vault, run.params["vault_id"])
        if vault is None:
            return
        s.expunge(vault)
    try:
        repo = repository(ctx, vault, create=False)
    except Missing:
        return
    _discard_interrupted(ctx, repo, run.params.get("discard_backups") or [])
    progress = TaskProgress(run)
    try:
        result = repo.gc(progress)
    except Conflict:
        # Another GC holds the vault's lock. A live one does the same work; one that was killed holds it
        # until the lock goes stale, and then nothing else would sweep what it left: look again then.
        stale_after = lock_timing(ctx).stale_after
        queue_gc(ctx, run.project_id, vault, after_seconds=stale_after)
        run.set_extra(gc={"skipped": "another garbage collection holds the vault's lock; another one is queued "
                                     f"for {stale_after:.0f} s from now, when a dead one's lock has gone stale"})
        return
    usage = UsageReading.of(repo)
    with ctx.tx() as s:
        usage.settle(s, vault.id)
    extra = {"packs_deleted": result.packs_deleted, "bytes_freed": result.bytes_freed,
             "packs_repacked": result.packs_repacked, "orphan_packs": result.orphan_packs}
    pending = _follow_up_pending(ctx, run, vault, result.packs_condemned_pending, result.writers_live)
    if pending:
        extra["pending"] = pending
    if result.index_objects_damaged:  # (docs/verification.md, "Damaged index objects")
        extra.update(index_objects_damaged=result.index_objects_damaged, packs_recovered=result.packs_recovered,
                     packs_unreadable=result.packs_unreadable)
    run.set_extra(gc=extra)


#: How many GCs in a row may queue a follow-up for packs held back by writer locks (a bound: a lock that
#: keeps being refreshed belongs to a live writer, and its own end is no reason to GC again).
GC_FOLLOW_UPS = 2


def _follow_up_pending(ctx: ServiceContext, run: tasks.TaskRun, vault: Vault, pending: int,
                       writers_live: int) -> str | None:
    """Condemned packs wait until every writer that may use them has seen the condemnation. When no
    task of the vault is running, the writer locks that held them back belong to dead writers (a backup
    killed with its worker): look again once those locks have gone stale, or what the dead writer left
    (its packs, its lock) would stay until some later delete happens to queue a GC. A writer killed
    before it stored its first pack left only its lock, which is looked at again the same way."""
    if not pending and not writers_live:
        return None
    with ctx.read() as s:
        writing = s.scalar(select(Task.id).where(Task.vault_id == vault.id, Task.status == tasks.RUNNING,
                                                 Task.id != run.task_id).limit(1))
    round_ = int(run.params.get("follow_up") or 0)
    if writing is not None or round_ >= GC_FOLLOW_UPS:
        return f"{pending} condemned pack(s) wait for running writers; the next GC sweeps them" if pending else None
    stale_after = lock_timing(ctx).stale_after
    queue_gc(ctx, run.project_id, vault, after_seconds=stale_after, follow_up=round_ + 1)
    held = f"{pending} condemned pack(s) wait for" if pending else "the vault holds"
    return (f"{held} writer locks no running task owns; another GC is queued "
            f"for {stale_after:.0f} s from now, when such a lock has gone stale")


def _discard_interrupted(ctx: ServiceContext, repo: Repository, backup_ids: list[str]) -> None:
    """Manifests that interrupted backups stored before their catalog commit: never Available, they
    would otherwise keep their chunks (and the vault's used capacity) until the user deletes the row."""
    with ctx.tx() as s:
        still = [bid for bid in backup_ids
                 if (b := s.get(Backup, bid)) is None or (b.status == B.ERROR and b.error_code == INTERRUPTED)]
    for bid in still:
        repo.delete_backup(bid, unfinished=True)


def delete_vault_data(ctx: ServiceContext, run: tasks.TaskRun, vault_id: str) -> None:
    """Part of deleting a vault (guide 3.2): every backup and the repository go."""
    with ctx.tx() as s:
        vault = s.get(Vault, vault_id)
        if vault is None:
            return
        for b in s.scalars(select(Backup).where(Backup.vault_id == vault_id)):
            b.status = B.DELETING
        s.expunge(vault)
    try:
        repository(ctx, vault, create=False).destroy()
    except Missing:
        pass
    with ctx.tx() as s:
        count = 0
        for b in s.scalars(select(Backup).where(Backup.vault_id == vault_id, Backup.parent_id.is_(None))):
            memberships.withdraw(s, b.id)  # guide 4.2: gone from the recipients' accounts too
            s.delete(b)
            count += 1
        for cp in s.scalars(select(Checkpoint).where(Checkpoint.vault_id == vault_id)):
            s.delete(cp)
    run.set_extra(vault_delete={"fail_count": 0, "total_count": count})


def delete_resource_backups(s: Session, ctx: ServiceContext, vault: Vault, resource_ids: list[str]) -> list[str]:
    """Guide 3.3: dissociating a resource deletes all its manual and automatic backups in the vault."""
    task_ids = []
    for b in s.scalars(select(Backup).where(Backup.vault_id == vault.id, Backup.resource_id.in_(resource_ids),
                                            Backup.parent_id.is_(None))):
        if b.status == B.PROTECTING:
            raise StateConflict(f"a backup of {b.resource_name} is running; dissociate it when it has finished",
                                code="BackupService.6426")
        tid = queue_delete_for_system(s, ctx, b, "resource dissociated from the vault (guide 3.3)")
        if tid:
            task_ids.append(tid)
    return task_ids


# ------------------------------------------------------------------------------------ verify
def verify_backup(s: Session, ctx: ServiceContext, p: Principal, backup_id: str) -> str:
    """Re-read every chunk of a backup and report what is damaged (beyond the guide)."""
    p.require_data_access("verifying a backup (it re-reads all of its data)")
    now = ctx.now()
    b = get_backup(s, p.project_id, backup_id)
    if b.status not in (B.AVAILABLE, B.RESTORING):
        raise StateConflict(f"only available backups can be verified; this one is {b.status}",
                            code="BackupService.6435")
    vault = s.get(Vault, b.vault_id)
    task = tasks.new_task(s, project_id=p.project_id, operation_type="verify", now=now, vault_id=vault.id,
                          vault_name=vault.name, resource_id=b.resource_id, resource_name=b.resource_name,
                          resource_type=b.resource_type, request_id=p.request_id,
                          params={"backup_id": b.id}, extra_info={"verify": {"backup_id": b.id}})
    return task.id


#: Damaged or missing chunks listed per disk in a verify report; the counts always cover all of them.
VERIFY_LISTED = 100


def run_verify(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    with ctx.tx() as s:
        b = s.get(Backup, run.params["backup_id"])
        if b is None:
            raise NotFound("the backup no longer exists")
        parts = [(x.id, x.resource_name, x.disk_role) for x in data_backups(s, b)]
        rows = {x.id: _row_identity(x) for x in [b, *data_backups(s, b)]}
        vault = s.get(Vault, b.vault_id)
        s.expunge(vault)
    repo = repository(ctx, vault, create=False)
    check_row_matches_manifest(repo, rows)
    reports = []
    for i, (pid, pname, role) in enumerate(parts):
        span = TaskProgress(run, lo=int(99 * i / len(parts)), hi=int(99 * (i + 1) / len(parts)))
        rep = repo.verify(pid, span)
        reports.append({"backup_id": pid, "disk": pname, "role": role, **verify_summary(rep)})
    ok = all(r["ok"] for r in reports)
    run.set_extra(verify={"backup_id": run.params["backup_id"], "ok": ok, "disks": reports})
    if not ok:
        raise DataCorruption(damage_message(reports))


def verify_summary(rep) -> dict:
    """One disk's (or tree's) verify report for the task: every damaged and missing chunk counted,
    the first ``VERIFY_LISTED`` of each listed in disk-offset (or path) order."""
    def listed(items: list) -> list[dict]:
        rows = sorted((dict(vars(d)) for d in items), key=_where_sort_key)
        for row in rows[:VERIFY_LISTED]:
            if len(row.get("offsets") or ()) > 20:  # a block repeated all over the disk: its first 20
                row["offsets_count"], row["offsets"] = len(row["offsets"]), row["offsets"][:20]
        return rows[:VERIFY_LISTED]

    return {"ok": rep.ok, "chunks_checked": rep.chunks_checked, "bytes_checked": rep.bytes_checked,
            "damaged_count": len(rep.damaged), "missing_count": len(rep.missing),
            "index_damaged": list(rep.index_damaged),
            "damaged": listed(rep.damaged), "missing": listed(rep.missing),
            "damaged_not_listed": max(0, len(rep.damaged) - VERIFY_LISTED),
            "missing_not_listed": max(0, len(rep.missing) - VERIFY_LISTED)}


def _where_sort_key(chunk: dict) -> tuple:
    return (min(chunk.get("offsets") or [2**63]), (chunk.get("paths") or [""])[0], chunk["digest"])


def damage_message(reports: list[dict]) -> str:
    damaged = sum(r["damaged_count"] for r in reports)
    missing = sum(r["missing_count"] for r in reports)
    index = index_damage(reports)
    first = next(((r, c) for r in reports for c in r["damaged"] + r["missing"]), None)
    if first is None:  # the vault's index, not this backup's data
        return (f"the vault's index is damaged: {len(index)} index object(s) cannot be read; first: "
                f"{index[0]['object']}: {index[0]['reason']}. The backup's chunks read intact (found from their "
                f"packs); the vault's next garbage collection rewrites the index; see extra_info.verify")
    disk, chunk = first
    also = f"; damaged index object {index[0]['object']}" if index else ""
    return (f"the backup is damaged: {damaged + missing} chunk(s) failed verification ({damaged} damaged, "
            f"{missing} missing); first: chunk {chunk['digest']} {B.damaged_chunk_where(chunk)} of {disk['disk']}: "
            f"{chunk['reason']}{also}; see extra_info.verify")


def index_damage(reports: list[dict]) -> list[dict]:
    """The damaged index objects the reports name, each once."""
    return list({d["object"]: d for r in reports for d in r.get("index_damaged", ())}.values())


def _row_identity(b: Backup) -> dict:
    """The fields of a backup row that say which data it is (the rest is description; the project may
    differ after an operator rebuilt another project's vault)."""
    return {"backup_id": b.id, "vault_id": b.vault_id, "resource_id": b.resource_id,
            "resource_type": b.resource_type, "resource_size_bytes": b.resource_size_bytes}


def check_row_matches_manifest(repo: Repository, rows: dict[str, dict]) -> None:
    """A catalog row that no longer matches the sealed manifest it names (a damaged or edited catalog)
    would restore the wrong disk, type or size: verify names the field. A server backup's own row has
    no manifest (its disks' rows, which do, are checked)."""
    for backup_id, row in rows.items():
        try:
            header = repo.read_manifest(backup_id)
        except Missing:
            if row["resource_type"] == R.SERVER:
                continue
            raise CBRError(f"the catalog row of backup {backup_id} names data the vault does not hold: "
                           f"backup {backup_id} is not in the repository", code="BackupService.6010") from None
        meta = header.get("meta") or {}
        stored = {k: meta.get(k) for k in row}
        sizes = {meta.get("resource_size_bytes"), B.stored_resource_size(header)}  # a rebuilt row has the latter
        bad = [f"{k} is {row[k]!r} in the catalog but {stored[k]!r} in the stored manifest" for k in row
               if k in meta and row[k] != stored[k] and not (k == "resource_size_bytes" and row[k] in sizes)]
        if bad:
            raise CBRError(f"the catalog row of backup {backup_id} does not match its stored manifest: "
                           + "; ".join(bad), code="BackupService.6010")


# ------------------------------------------------------------------------------------ crashes
INTERRUPTED = "BackupService.6901"  # a backup whose worker died with no attempt left


def abandon_task(s: Session, task: Task) -> None:
    """A backup or delete task whose worker died: leave nothing claiming to be fine, and have a GC
    clean what a half-made backup left in the store."""
    now = task.ended_at or task.updated_at
    params = task.params or {}
    if task.operation_type == "backup" and params.get("backup_id"):
        fail_backup_rows(s, params["backup_id"], INTERRUPTED,
                         "the backup was interrupted (its worker stopped); delete it and back up again", now)
        vault = s.get(Vault, task.vault_id)
        if vault is not None:  # its worker may have stored a manifest just before it died: the GC drops it
            interrupted = [b.id for b in [s.get(Backup, params["backup_id"]), *children(s, params["backup_id"])]
                           if b is not None and b.status == B.ERROR and b.error_code == INTERRUPTED]
            tasks.new_task(s, project_id=task.project_id, operation_type="gc", now=now, vault_id=vault.id,
                           vault_name=vault.name, params={"vault_id": vault.id, "discard_backups": interrupted},
                           max_attempts=3)
    elif task.operation_type == "delete":
        b = s.get(Backup, params.get("backup_id"))
        if b is not None and b.status == B.DELETING:
            b.status = B.ERROR
            b.error_message = "deletion was interrupted; delete it again"
