"""Vaults (guide chapters 2.2, 2.3, 3; rules in ``opencbr.domain.vault``): create, list, show, update,
delete, associate and dissociate resources."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Text, bindparam, cast, func, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Resource, Task, Vault, VaultResource
from opencbr.domain import resource as R
from opencbr.domain import tags as T
from opencbr.domain import vault as V
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound, StateConflict
from opencbr.services import backups, images, listing, memberships, policies, quotas, tasks, vault_locks
from opencbr.services import resources as res_svc
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import get_vault
from opencbr.services.principal import Principal


# ------------------------------------------------------------------------------------ views
@dataclass(slots=True)
class BoundResource:
    """A resource associated with a vault, as the vault's views show it: plain values read as columns
    (a vault list page has thousands of them; loading each as an ORM entity with its JSON columns cost
    more than the rest of the request)."""

    resource_id: str
    name: str
    type: str
    auto_protect: bool
    extra_info: dict
    status: str
    size_bytes: int
    backup_count: int = 0
    backup_bytes: int = 0


@dataclass
class VaultView:
    vault: Vault
    resources: list[BoundResource] = field(default_factory=list)
    policy_ids: list[str] = field(default_factory=list)

    @property
    def allocated_bytes(self) -> int:
        return sum(r.size_bytes for r in self.resources)


# Built once: a statement object keeps its cache key, and an expanding parameter takes the page's ids
# as they are (``in_(list)`` builds and keys one bound value per id at every call). The resource columns
# are the ones ``resources.live_status`` reads. ``extra_info`` as its text: nearly always ``{}``, which
# need not be decoded thousands of times per page. Ordered by vault first: the vault_id index then yields
# the rows in order; ordered by the association's id alone, SQLite scanned every association of the
# catalog to avoid a sort (a list page's cost grew with the catalog, not with the page).
_BOUND_OF_VAULTS = (select(VaultResource.vault_id, VaultResource.auto_protect,
                           cast(VaultResource.extra_info, Text).label("extra_info"),
                           Resource.id, Resource.name, Resource.type, Resource.provider, Resource.path,
                           Resource.host, Resource.status, Resource.size_bytes)
                    .join(Resource, Resource.id == VaultResource.resource_id)
                    .where(VaultResource.vault_id.in_(bindparam("vault_ids", expanding=True)))
                    .order_by(VaultResource.vault_id, VaultResource.id))


def _bound_by_vault(s: Session, vault_ids: list[str]) -> dict[str, list[BoundResource]]:
    """The resources associated with each of the vaults, in one query (a list page is one, not one per
    vault)."""
    rows = s.execute(_BOUND_OF_VAULTS, {"vault_ids": vault_ids}).all()
    out: dict[str, list[BoundResource]] = {vid: [] for vid in vault_ids}
    disks_of = res_svc.disks_of_servers(s, rows)
    empty = (None, "{}", "null")
    # Only the status and size are shown: the whole resource_state of each of a page's thousands of
    # resources cost as much again. The rows are unpacked: reading a row's columns by name cost as much
    # as the rest of the loop.
    for row in rows:
        vault_id, auto_protect, extra_info, rid, name, rtype, provider, path, host, status, size = row
        disks = disks_of.get(rid)
        if disks is None:
            status = res_svc.live_status_of(provider, rtype, host, path, status)
        else:  # a server: its disks' (the row has the attributes of a Resource that live_status reads)
            status, size = res_svc.live_status(s, row, disks=disks), sum(d.size_bytes for d in disks)
        extra = json.loads(extra_info) or {} if extra_info not in empty else {}
        out[vault_id].append(BoundResource(rid, name, rtype, auto_protect, extra, status, size))
    return out


def _bound(s: Session, vault_id: str) -> list[BoundResource]:
    return _bound_by_vault(s, [vault_id])[vault_id]


def _views(s: Session, vaults: list[Vault]) -> list[VaultView]:
    """Views of several vaults with a fixed number of queries, whatever their number."""
    ids = [v.id for v in vaults]
    bound = _bound_by_vault(s, ids)
    policy_ids = policies.bound_policy_ids_of(s, ids)
    views = [VaultView(v, bound[v.id], policy_ids.get(v.id, [])) for v in vaults]
    backups.enrich_vault_views(s, views)
    return views


def _view(s: Session, vault: Vault) -> VaultView:
    return _views(s, [vault])[0]


def vault_state(s: Session, vault: Vault) -> V.VaultState:
    bound = _bound(s, vault.id)
    return V.VaultState(vault.id, vault.object_type, vault.protect_type, vault.region, vault.size_gb,
                        vault.status, vault.encrypted, len(bound), sum(b.size_bytes for b in bound))


# ------------------------------------------------------------------------------------ create
def _resources_to_add(s: Session, p: Principal, vault: Vault, items: list[dict]) -> list[tuple[Resource, dict]]:
    """Load and check the resources of an association request (ResourceCreate items)."""
    if not isinstance(items, list):
        raise InvalidParameter("resources must be a list")
    loaded: list[tuple[Resource, dict]] = []
    states: list[R.ResourceState] = []
    for item in items:
        rid, rtype = item.get("id"), item.get("type")
        if not rid or not isinstance(rid, str):
            raise InvalidParameter("each resource needs an id")
        R.check_resource_type(rtype)
        res = res_svc.get_resource(s, p.project_id, rid)
        if res.type != rtype:
            raise InvalidParameter(f"resource {rid} is a {res.type}, not a {rtype}", code="BackupService.6213")
        extra = item.get("extra_info") or {}
        if extra:
            disk_ids = [d.id for d in res_svc.server_disks(s, res.id)] if res.type == R.SERVER else []
            extra = V.check_server_disk_selection(res_svc.resource_state(s, res), disk_ids, extra)
        loaded.append((res, extra))
        states.append(res_svc.resource_state(s, res))
    ids = [r.id for r, _ in loaded]
    bindings = list(s.execute(select(VaultResource.resource_id, VaultResource.vault_id)
                              .where(VaultResource.resource_id.in_(ids))))
    here = [rid for rid, vid in bindings if vid == vault.id]
    elsewhere = [rid for rid, vid in bindings if vid != vault.id]
    V.check_add_resources(vault_state(s, vault), states, elsewhere, here)
    return loaded


def create_vault(s: Session, ctx: ServiceContext, p: Principal, spec: dict) -> VaultView:
    """Create a vault from a VaultCreate body (guide 2.2). ``spec['encrypted']`` (an OpenCBR extension,
    default true) chooses whether its data is encrypted."""
    p.require_write()
    billing = spec.get("billing") or {}
    if not isinstance(billing, dict):
        raise InvalidParameter("billing is required")
    name = spec.get("name")
    name = V.default_vault_name() if name in (None, "") else V.check_vault_name(name)
    object_type = billing.get("object_type")
    protect_type = billing.get("protect_type") or "backup"
    level = billing.get("consistent_level") or "crash_consistent"
    charging_mode = billing.get("charging_mode") or "post_paid"
    cloud_type = billing.get("cloud_type") or "public"
    V.check_billing_enums(object_type, protect_type, level, charging_mode, cloud_type, billing.get("period_type"))
    V.check_consistency_for_type(object_type, level)
    size = V.check_capacity(billing.get("size"))
    if protect_type == "replication" and spec.get("resources"):
        raise InvalidParameter("a replication vault stores replicas; resources cannot be associated with it",
                               code="BackupService.6212")
    az = spec.get("availability_zone") or ""
    if az and az not in ctx.settings.availability_zones:
        raise InvalidParameter(f"availability zone {az!r} does not exist")
    encrypted = spec.get("encrypted", True)
    if not isinstance(encrypted, bool):
        raise InvalidParameter("encrypted must be true or false")
    quotas.check_room(s, ctx.settings, p.project_id, quotas.VAULT)
    quotas.check_capacity(s, ctx.settings, p.project_id, size)
    now = ctx.now()
    vault = Vault(
        project_id=p.project_id, user_id=p.user_id, name=name,
        description=V.check_description(spec.get("description")), region=ctx.settings.region,
        availability_zone=az, object_type=object_type, protect_type=protect_type, consistent_level=level,
        size_gb=size, charging_mode=charging_mode, cloud_type=cloud_type,
        period_type=billing.get("period_type"), period_num=billing.get("period_num"),
        is_auto_renew=bool(billing.get("is_auto_renew")), is_auto_pay=bool(billing.get("is_auto_pay")),
        is_multi_az=bool(billing.get("is_multi_az")),
        spec_code=V.spec_code(object_type, protect_type, level, cloud_type), status="available",
        auto_bind=bool(spec.get("auto_bind")), bind_rules=T.check_bind_rules(spec.get("bind_rules")),
        auto_expand=bool(spec.get("auto_expand")), smn_notify=spec.get("smn_notify", True) is not False,
        threshold=V.check_threshold(spec.get("threshold", 80) if spec.get("threshold") is not None else 80),
        tags=V.check_tags(spec.get("tags")),
        enterprise_project_id=V.check_short_text("enterprise_project_id", spec.get("enterprise_project_id"), 64)
        or "0",
        backup_name_prefix=V.check_short_text("backup_name_prefix", spec.get("backup_name_prefix"), 32),
        demand_billing=spec.get("demand_billing", True) is not False, locked=bool(spec.get("locked")),
        sys_lock_source_service=V.check_short_text("sys_lock_source_service",
                                                   spec.get("sys_lock_source_service"), 32),
        encrypted=encrypted,
        created_at=now, updated_at=now)
    s.add(vault)
    s.flush()
    if spec.get("backup_policy_id"):
        policies.bind_at_creation(s, p, vault, spec["backup_policy_id"])
    items = spec.get("resources") or []
    if items:
        for res, extra in _resources_to_add(s, p, vault, items):
            s.add(VaultResource(vault_id=vault.id, resource_id=res.id, project_id=p.project_id,
                                extra_info=extra, created_at=now))
        s.flush()
    return _view(s, vault)


# ------------------------------------------------------------------------------------ read
@dataclass
class VaultFilter:
    name: str | None = None
    cloud_type: str | None = None
    protect_type: str | None = None
    object_type: str | None = None
    enterprise_project_id: str | None = None
    ids: list[str] | None = None
    policy_id: str | None = None
    status: str | None = None
    resource_ids: list[str] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


SORT_KEYS = {"created_at": Vault.created_at, "updated_at": Vault.updated_at, "name": Vault.name,
             "status": Vault.status, "id": Vault.id}


def list_vaults(s: Session, p: Principal, f: VaultFilter, *, limit: int = 1000,
                offset: int = 0, sort: listing.Sort | None = None) -> tuple[list[VaultView], int]:
    """Guide 3.1: vaults of the project, filterable by status, name or id, type, resources and creation
    time; newest first unless ``sort`` says otherwise."""
    q = select(Vault).where(Vault.project_id == p.project_id)
    if f.name:
        q = q.where(listing.contains(Vault.name, f.name))
    for col, val in ((Vault.cloud_type, f.cloud_type), (Vault.protect_type, f.protect_type),
                     (Vault.object_type, f.object_type), (Vault.status, f.status)):
        if val:
            q = q.where(col == val)
    if f.start_time:
        q = q.where(Vault.created_at >= f.start_time)
    if f.end_time:
        q = q.where(Vault.created_at <= f.end_time)
    if f.enterprise_project_id and f.enterprise_project_id != "all_granted_eps":
        q = q.where(Vault.enterprise_project_id == f.enterprise_project_id)
    if f.ids:
        q = q.where(Vault.id.in_(f.ids))
    if f.resource_ids:
        q = q.where(Vault.id.in_(select(VaultResource.vault_id).where(VaultResource.resource_id.in_(f.resource_ids))))
    if f.policy_id:
        q = q.where(Vault.id.in_(policies.vaults_bound_to(f.policy_id)))
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    order = listing.order_by(sort, SORT_KEYS, [Vault.created_at.desc(), Vault.id], Vault.id)
    rows = list(s.scalars(q.order_by(*order).limit(limit).offset(offset)))
    return _views(s, rows), total


def show_vault(s: Session, p: Principal, vault_id: str) -> VaultView:
    return _view(s, get_vault(s, p.project_id, vault_id))


def summary(s: Session, p: Principal) -> tuple[int, int]:
    """Project totals: capacity (GB) and used (bytes) of all vaults (accepted shared backups count: 4.2)."""
    size, used = s.execute(select(func.coalesce(func.sum(Vault.size_gb), 0),
                                  func.coalesce(func.sum(Vault.used_bytes + Vault.shared_bytes), 0))
                           .where(Vault.project_id == p.project_id)).one()
    return int(size), int(used)


# ------------------------------------------------------------------------------------ update
def update_vault(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, spec: dict) -> VaultView:
    """Guide 3.4 (expand capacity), 3.5 (change specifications one way only) and the other
    VaultUpdate fields: name, auto_bind, bind_rules, auto_expand, smn_notify, threshold, locked."""
    p.require_write()
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    if vault.status == "deleting":
        raise StateConflict(f"vault {vault_id} is being deleted", code="BackupService.6211")
    if "name" in spec and spec["name"] is not None:
        vault.name = V.check_vault_name(spec["name"])
    if "description" in spec and spec["description"] is not None:
        vault.description = V.check_description(spec["description"])
    billing = spec.get("billing") or {}
    if billing.get("size") is not None:
        size = V.check_capacity_change(vault.size_gb, billing["size"], memberships.counted_bytes(vault),
                                       vault.status)
        quotas.check_capacity(s, ctx.settings, p.project_id, size - vault.size_gb)
        vault.size_gb = size
    if billing.get("consistent_level") is not None:
        level = billing["consistent_level"]
        V.check_billing_enums(vault.object_type, vault.protect_type, level)
        vault.consistent_level = V.check_consistency_change(vault.object_type, vault.consistent_level,
                                                            level, vault.status)
        vault.spec_code = V.spec_code(vault.object_type, vault.protect_type, vault.consistent_level,
                                      vault.cloud_type)
    for key in ("auto_bind", "auto_expand", "smn_notify"):
        if spec.get(key) is not None:
            setattr(vault, key, bool(spec[key]))
    if spec.get("bind_rules") is not None:
        vault.bind_rules = T.check_bind_rules(spec["bind_rules"])
    if spec.get("threshold") is not None:
        vault.threshold = V.check_threshold(spec["threshold"])
    if spec.get("locked") is not None:
        if vault.locked and not spec["locked"]:
            raise InvalidParameter("a locked vault cannot be unlocked", code="BackupService.6222")
        vault.locked = bool(spec["locked"])
    vault.updated_at = ctx.now()
    s.flush()
    return _view(s, vault)


# ------------------------------------------------------------------------------------ resources
def add_resources(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, items: list[dict]) -> list[str]:
    """Guide 2.3: associate resources with a vault; every rule in ``domain.vault.check_add_resources``."""
    p.require_write()
    now = ctx.now()
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    added = []
    for res, extra in _resources_to_add(s, p, vault, items):
        s.add(VaultResource(vault_id=vault.id, resource_id=res.id, project_id=p.project_id,
                            extra_info=extra, created_at=now))
        added.append(res.id)
    vault.updated_at = now
    return added


def remove_resources(s: Session, ctx: ServiceContext, p: Principal, vault_id: str,
                     resource_ids: list[str]) -> list[str]:
    """Guide 3.3: dissociate resources. The vault's policy no longer applies to them, and all their
    manual and automatic backups in this vault are deleted."""
    p.require_write()
    if not isinstance(resource_ids, list) or not resource_ids or not all(isinstance(i, str) for i in resource_ids):
        raise InvalidParameter("resource_ids must be a non-empty list of resource ids")
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    V.check_vault_accepts_changes(vault_state(s, vault))
    bindings = {b.resource_id: b for b in s.scalars(select(VaultResource).where(
        VaultResource.vault_id == vault.id, VaultResource.resource_id.in_(resource_ids)))}
    missing = [i for i in resource_ids if i not in bindings]
    if missing:
        raise NotFound(f"resource {missing[0]} is not associated with vault {vault_id}",
                       code="BackupService.6108")
    vault_locks.check_dissociation(s, ctx, vault.id, list(bindings))
    backups.delete_resource_backups(s, ctx, vault, list(bindings))
    for b in bindings.values():
        s.delete(b)
    vault.updated_at = ctx.now()
    return list(bindings)


def associate_matching(s: Session, ctx: ServiceContext, vault: Vault) -> list[str]:
    """Automatic association (guide 2.2.1, "Automatic Association"): a vault with ``auto_bind`` takes, at
    its next backup period, the project's resources of its type that no vault protects yet and that carry
    one of its bind rules' tags (every such resource when it has no tag rules). A resource the vault
    cannot take (its status, an encrypted disk, the vault's 256 resources or capacity) is left out and
    tried again next period. Returns the ids associated now."""
    if not vault.auto_bind or vault.protect_type != "backup" or vault.status != "available":
        return []
    rtype = R.RESOURCE_TYPE_OF[vault.object_type]
    free = (select(Resource).where(Resource.project_id == vault.project_id, Resource.type == rtype,
                                   ~Resource.id.in_(select(VaultResource.resource_id)))
            .order_by(Resource.created_at, Resource.id))
    added = []
    now = ctx.now()
    for res in s.scalars(free):
        if not T.matches_bind_rules(vault.bind_rules, res.tags):
            continue
        try:
            V.check_add_resources(vault_state(s, vault), [res_svc.resource_state(s, res)], [], [])
        except CBRError:
            continue
        s.add(VaultResource(vault_id=vault.id, resource_id=res.id, project_id=vault.project_id, created_at=now))
        s.flush()
        added.append(res.id)
    if added:
        vault.updated_at = now
    return added


#: set_vault_resource actions: ``suspend`` stops the policy's automatic backups of the resources,
#: ``unsuspend`` resumes them (manual backups are unaffected either way).
PROTECTION_ACTIONS = {"suspend": False, "unsuspend": True}


def set_resources_protection(s: Session, ctx: ServiceContext, p: Principal, vault_id: str,
                             resource_ids: object, action: object) -> list[str]:
    """Whether the vault's policy backs up each of the resources (``auto_protect``)."""
    p.require_write()
    if action not in PROTECTION_ACTIONS:
        raise InvalidParameter("action must be suspend (no automatic backups) or unsuspend (automatic "
                               "backups again)", code="BackupService.6001")
    if not isinstance(resource_ids, list) or not resource_ids or not all(isinstance(i, str) for i in resource_ids):
        raise InvalidParameter("resource_ids must be a non-empty list of resource ids")
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    bindings = {b.resource_id: b for b in s.scalars(select(VaultResource).where(
        VaultResource.vault_id == vault.id, VaultResource.resource_id.in_(resource_ids)))}
    missing = [i for i in resource_ids if i not in bindings]
    if missing:
        raise NotFound(f"resource {missing[0]} is not associated with vault {vault_id}", code="BackupService.6108")
    for b in bindings.values():
        b.auto_protect = PROTECTION_ACTIONS[action]
    vault.updated_at = ctx.now()
    return list(dict.fromkeys(resource_ids))


# ------------------------------------------------------------------------------------ delete
def delete_vault(s: Session, ctx: ServiceContext, p: Principal, vault_id: str) -> str:
    """Guide 3.2: delete a vault that is available or in error, with all its backups. The vault turns
    ``deleting`` at once; a ``vault_delete`` task removes backups and data, then the vault."""
    p.require_write()
    now = ctx.now()
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    V.check_vault_deletable(vault.status)
    _check_no_data_task(s, vault.id)
    vault_locks.check_vault_deletable(s, ctx, vault.id)
    images.check_vault_without_images(s, vault.id)
    vault.status = "deleting"
    vault.updated_at = now
    task = tasks.new_task(s, project_id=p.project_id, operation_type="vault_delete", now=now,
                          vault_id=vault.id, vault_name=vault.name, request_id=p.request_id,
                          params={"vault_id": vault.id}, max_attempts=5)
    return task.id


#: Tasks that read or write a vault's data: the vault is not deleted under them. (Its repository was
#: destroyed under a running backup, which failed as "stalled longer than the stale timeout"; a restore or
#: a copy reading it could lose its data the same way.)
_VAULT_DATA_TASKS = ("backup", "copy", "replication", "restore", "create_disk", "create_fs", "restore_files",
                     "verify", "export", "migrate", "create_server", "restore_test")


def _check_no_data_task(s: Session, vault_id: str) -> None:
    task = s.scalar(select(Task).where(Task.vault_id == vault_id, Task.status.in_((tasks.WAITING, tasks.RUNNING)),
                                       Task.operation_type.in_(_VAULT_DATA_TASKS)).limit(1))
    if task is not None:
        raise StateConflict(f"a {task.operation_type} task of this vault ({task.id}) has not finished; delete the "
                            "vault when it has, or cancel it first", code="BackupService.6221")


def run_vault_delete(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """Every backup and the vault's data go first, then the vault (with its bindings)."""
    vault_id = run.params["vault_id"]
    try:
        backups.delete_vault_data(ctx, run, vault_id)
    except Exception:
        _vault_in_error(ctx, vault_id)
        raise
    with ctx.tx() as s:
        vault = s.get(Vault, vault_id)
        if vault is not None:
            memberships.release_vault(s, vault_id)  # shared backups accepted into it wait to be accepted again
            s.delete(vault)


def _vault_in_error(ctx: ServiceContext, vault_id: str) -> None:
    """Guide 3.1 table 3-2: a vault whose task failed is in Error (and can be deleted again, 3.2)."""
    with ctx.tx() as s:
        vault = s.get(Vault, vault_id)
        if vault is not None and vault.status == "deleting":
            vault.status = "error"


def abandon_vault_delete(s: Session, task: Task) -> None:
    vault = s.get(Vault, (task.params or {}).get("vault_id"))
    if vault is not None and vault.status == "deleting":
        vault.status = "error"
