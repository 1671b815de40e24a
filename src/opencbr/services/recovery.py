"""Disaster recovery of the service itself: rebuild a vault's catalog from its object store.

Every backup's manifest carries what the catalog knew of it (``meta``: names, resource, vault settings,
the server layout of server backups), so a vault whose catalog rows were lost — a dead catalog
database, or a store moved from another installation — comes back with its backups, restorable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from opencbr.catalog.models import Backup, Checkpoint, Vault
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain import vault as V
from opencbr.domain.errors import Forbidden, InvalidParameter, NotFound
from opencbr.engine import Missing, Repository
from opencbr.services import app_consistency, engine_errors, vault_locks
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

GB = 1024**3


@dataclass
class RebuildReport:
    vault_id: str
    vault_created: bool
    backups_found: int
    backups_added: list[str] = field(default_factory=list)
    backups_present: int = 0
    skipped: list[str] = field(default_factory=list)


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return dt.replace(tzinfo=None) if dt.tzinfo is None else dt.astimezone(tz=None).replace(tzinfo=None)


def stored_vault_ids(ctx: ServiceContext) -> list[str]:
    """Vaults that have a repository in the object store."""
    ids = set()
    for key, _ in ctx.store.list("vaults/"):
        parts = key.split("/")
        if len(parts) > 2 and parts[2] == "config":
            ids.add(parts[1])
    return sorted(ids)


def rebuild_vault(ctx: ServiceContext, p: Principal, vault_id: str) -> RebuildReport:
    """Recreate the catalog rows of vault ``vault_id`` (the vault if missing, and every backup whose
    manifest is in the store but not in the catalog) in the caller's project. Admins only; a vault
    whose manifests name another project needs the operator. Its own transaction, short: none is held
    while the object store is read (services/context.py)."""
    p.require_admin()
    # the id names one folder of the object store: no separators, no NUL, no dot names (which stores reject)
    if not isinstance(vault_id, str) or not vault_id or vault_id.startswith(".") or any(c in vault_id for c in "/\\\0"):
        raise InvalidParameter("give the id of a vault in the object store")
    with engine_errors.translated():
        try:
            repo = Repository.open(ctx.store, f"vaults/{vault_id}/", ctx.master_key)
        except Missing:
            raise NotFound(f"no vault {vault_id} in the object store", code="BackupService.6101") from None
        headers = [repo.read_manifest(name) for name in repo.list_manifests()]
    metas = [h.get("meta") or {} for h in headers]
    foreign = {m.get("project_id") for m in metas if m.get("project_id")} - {p.project_id}
    if foreign and not p.is_operator:
        raise Forbidden("the backups in this vault belong to another project", code="APIGW.0305")
    now = ctx.now()
    report = RebuildReport(vault_id, False, len(headers))
    with ctx.tx() as s:
        vault = s.get(Vault, vault_id)
        if vault is not None and vault.project_id != p.project_id:
            raise Forbidden("that vault belongs to another project", code="APIGW.0305")
        if vault is None:
            info = next((m["vault"] for m in metas if m.get("vault")), {})
            types = {m.get("server", {}).get("resource_id") and R.SERVER or m.get("resource_type") for m in metas}
            object_type = info.get("object_type") or (R.OBJECT_TYPE_OF.get(next(iter(types))) if len(types) == 1 else None)
            if object_type not in V.OBJECT_TYPES:
                raise InvalidParameter("cannot tell which kind of vault this was; it holds no backups",
                                       code="BackupService.6437")
            used_gb = -(-repo.usage() // GB)
            level = info.get("consistent_level", "crash_consistent")
            vault = Vault(id=vault_id, project_id=p.project_id, user_id=p.user_id,
                          name=info.get("name") or V.default_vault_name(), description=info.get("description", ""),
                          region=ctx.settings.region, object_type=object_type, protect_type="backup",
                          consistent_level=level, size_gb=max(V.MIN_CAPACITY_GB, info.get("size_gb") or 0, used_gb),
                          spec_code=V.spec_code(object_type, "backup", level), status="available",
                          encrypted=repo.encrypted, created_at=now, updated_at=now)
            s.add(vault)
            s.flush()
            report.vault_created = True
        present = {bid for (bid,) in s.execute(select(Backup.id).where(Backup.vault_id == vault_id))}
        servers: dict[str, Backup] = {}
        for h, m in zip(headers, metas, strict=True):
            bid = h.get("backup_id") or m.get("backup_id")
            if not bid or bid in present:
                report.backups_present += bool(bid)
                continue
            created = _time(m.get("created_at")) or _time(h.get("created")) or now
            cp_id = m.get("checkpoint_id") or ""
            if cp_id and s.get(Checkpoint, cp_id) is None:
                s.add(Checkpoint(id=cp_id, project_id=p.project_id, vault_id=vault_id, status="available",
                                 name=m.get("name", ""), created_at=created, updated_at=now))
                s.flush()
            parent_id = None
            srv = m.get("server")
            if srv:
                parent = servers.get(srv["backup_id"]) or s.get(Backup, srv["backup_id"])
                if parent is None:
                    layout = srv.get("layout") or []
                    parent = Backup(id=srv["backup_id"], project_id=p.project_id, vault_id=vault_id,
                                    checkpoint_id=cp_id, name=srv.get("name") or m.get("name", "restored"),
                                    description=m.get("description", ""), resource_id=srv.get("resource_id", ""),
                                    resource_name=srv.get("resource_name", ""), resource_type=R.SERVER,
                                    resource_size_bytes=sum(d.get("size_bytes", 0) for d in layout),
                                    resource_az=m.get("resource_az", ""), status=B.AVAILABLE,
                                    auto_trigger=bool(m.get("auto_trigger")), policy_id=m.get("policy_id", ""),
                                    retention_rule=m.get("retention_rule", ""), encrypted=repo.encrypted,
                                    created_at=created, updated_at=now, protected_at=created,
                                    details={"disks": layout, "consistency": m.get("consistency"),
                                             "rebuilt_at": now.isoformat()})
                    s.add(parent)
                    s.flush()
                    report.backups_added.append(parent.id)
                servers[parent.id] = parent
                parent_id = parent.id
            stats = h.get("stats") or {}
            row = Backup(id=bid, project_id=p.project_id, vault_id=vault_id, checkpoint_id=cp_id, parent_id=parent_id,
                         name=m.get("name", bid), description=m.get("description", ""),
                         resource_id=m.get("resource_id", ""), resource_name=m.get("resource_name", ""),
                         resource_type=R.DISK if h.get("type") == "disk" else m.get("resource_type", R.DISK),
                         resource_size_bytes=B.stored_resource_size(h),
                         resource_az=m.get("resource_az", ""), disk_role=m.get("disk_role"),
                         device_index=m.get("device_index"), status=B.AVAILABLE,
                         auto_trigger=bool(m.get("auto_trigger")), policy_id=m.get("policy_id", ""),
                         retention_rule=m.get("retention_rule", ""), incremental=bool(h.get("parent")),
                         full_requested=bool(h.get("full")), encrypted=repo.encrypted,
                         logical_bytes=int(h.get("disk_size") or 0), added_bytes=int(stats.get("added_bytes", 0)),
                         details=_details(repo, bid, m.get("consistency"), stats, now),
                         created_at=created, updated_at=now, protected_at=created)
            s.add(row)
            report.backups_added.append(bid)
        s.flush()
        for parent in servers.values():
            kids = list(s.scalars(select(Backup).where(Backup.parent_id == parent.id)))
            parent.logical_bytes = sum(k.logical_bytes for k in kids)
            parent.added_bytes = sum(k.added_bytes for k in kids)
        vault = s.get(Vault, vault_id)
        vault.used_bytes = repo.usage()
        vault_locks.restore_from_store(s, repo, vault, now)  # the lock outlives the catalog (docs/vault-lock.md)
    return report


def _details(repo: Repository, backup_id: str, consistency: dict | None, stats: dict, now: datetime) -> dict:
    """A rebuilt backup's details; an application-consistent one read live has its record (what it
    achieved, and the restore material's reference) in an attachment, not in its manifest."""
    app = app_consistency.rebuilt(repo, backup_id)
    if app:
        consistency = {**(consistency or {}), "app": app["app"]}
    return {"consistency": consistency, "stats": stats, "rebuilt_at": now.isoformat(),
            **({"app_consistency": app["app_consistency"]} if app else {})}
