"""The rest of the vault API: settings of all vaults at once, the expiry of a vault's automatic backups,
the installation's features, vaults of linked regions, and the answers of the public cloud's billing,
migration and import operations in a self-hosted installation (each a 4xx that names why)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Account, Backup, Project, Vault
from opencbr.domain import backup as B
from opencbr.domain import vault as V
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound
from opencbr.services import regions, tasks, vault_locks, vaults
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import get_vault
from opencbr.services.principal import Principal


class NotSupported(CBRError):
    """An operation of the public service that this installation cannot perform; the message says why
    (HTTP 400, so clients do not retry it)."""

    status = 400
    code = "BackupService.6900"


# ------------------------------------------------------------------------------------ batch update
def batch_update_vaults(s: Session, ctx: ServiceContext, p: Principal, spec: dict) -> list[str]:
    """``smn_notify`` and ``threshold`` of every vault of the project (BatchUpdateVault); the ids changed."""
    p.require_write()
    if spec.get("smn_notify") is None and spec.get("threshold") is None:
        raise InvalidParameter("give smn_notify, threshold or both")
    threshold = V.check_threshold(spec["threshold"]) if spec.get("threshold") is not None else None
    now = ctx.now()
    changed = []
    for vault in s.scalars(select(Vault).where(Vault.project_id == p.project_id, Vault.status != "deleting")
                           .order_by(Vault.created_at, Vault.id).with_for_update()):
        if spec.get("smn_notify") is not None:
            vault.smn_notify = bool(spec["smn_notify"])
        if threshold is not None:
            vault.threshold = threshold
        vault.updated_at = now
        changed.append(vault.id)
    return changed


# ------------------------------------------------------------------------------------ backup expiry
_TZ_RE = re.compile(r"^UTC([+-])(\d{2}):(\d{2})$")


def _expiry_instant(date: object, time_zone: object) -> datetime:
    """Midnight at the start of ``date`` (YYYY-MM-DD) in ``time_zone`` (``UTC+08:00``), as naive UTC."""
    try:
        day = datetime.strptime(date, "%Y-%m-%d") if isinstance(date, str) else None
    except ValueError:
        day = None
    if day is None:
        raise InvalidParameter("expect_expiration_date must be a date written YYYY-MM-DD")
    m = _TZ_RE.match(time_zone or "UTC+00:00") if isinstance(time_zone or "", str) else None
    if m is None:
        raise InvalidParameter("time_zone must be written UTC+HH:MM or UTC-HH:MM")
    sign, hours, minutes = m.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (1 if sign == "+" else -1)
    if abs(offset) > timedelta(hours=14):
        raise InvalidParameter("time_zone is between UTC-14:00 and UTC+14:00")
    return day.replace(tzinfo=timezone(offset)).astimezone(timezone.utc).replace(tzinfo=None)


def update_expiration_time(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, date: object,
                           time_zone: object) -> tuple[int, str, str]:
    """Every available automatic backup of the vault expires at the start of ``date`` (in ``time_zone``)
    instead of by the retention rule it was made under: retention deletes it then (a quantity rule of the
    vault's current policy still applies). Returns (backups changed, the date, the task recording it)."""
    p.require_write()
    when = _expiry_instant(date, time_zone)
    now = ctx.now()
    if when <= now:
        raise InvalidParameter("expect_expiration_date must be in the future")
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    V.check_vault_accepts_changes(vaults.vault_state(s, vault))
    changed = list(s.scalars(select(Backup).where(Backup.vault_id == vault.id, Backup.parent_id.is_(None),
                                                  Backup.auto_trigger.is_(True), Backup.status == B.AVAILABLE)))
    vault_locks.check_expiry(s, ctx, vault.id, changed, when)
    for b in changed:
        b.expired_at, b.retention_rule, b.updated_at = when, "", now
    task = tasks.new_task(s, project_id=p.project_id, operation_type="update_expiration", now=now,
                          vault_id=vault.id, vault_name=vault.name, request_id=p.request_id,
                          extra_info={"common": {"progress": 100},
                                      "update_expiration_time": {"affected_backups_count": len(changed),
                                                                 "new_expiration_day": date,
                                                                 "time_zone": time_zone or "UTC+00:00"}})
    task.status, task.progress, task.started_at, task.ended_at = tasks.SUCCESS, 100, now, now
    return len(changed), str(date), task.id


# ------------------------------------------------------------------------------------ features
def features(s: Session, ctx: ServiceContext) -> dict[str, object]:
    """What this installation can do, under the public service's feature keys: replication when it is
    linked to other regions (``cbr admin region add``), into those; no double-AZ vault storage."""
    linked = [r.name for r in regions.list_regions(s)]
    return {
        "replication.enable": bool(linked),
        "replication.source_region": ctx.settings.region,
        "replication.destination_regions": linked,
        "replication.destination_dgw_regions": [],
        "features.backup_double_az": False,
    }


def feature(s: Session, ctx: ServiceContext, key: str) -> dict[str, object]:
    values = features(s, ctx)
    if key not in values:
        raise InvalidParameter(f"feature key {key[:64]!r} is not supported; the keys are "
                               + ", ".join(sorted(values)), code="BackupService.6901")
    return {key: values[key]}


# ------------------------------------------------------------------------------------ projects
def caller_projects(s: Session, p: Principal) -> list[Project]:
    return list(s.scalars(select(Project).where(Project.account_id == p.account_id).order_by(Project.created_at)))


def account_projects(s: Session, p: Principal, domain_name: str) -> list[Project]:
    """The projects of the caller's own account, named by its name or id (the public API's domain)."""
    account = s.get(Account, p.account_id)
    if account is None or domain_name not in (account.name, account.id):
        raise NotFound(f"account {domain_name[:64]!r} is not the caller's account", code="BackupService.6902")
    return caller_projects(s, p)


def project_domain(s: Session, p: Principal, project_id: str) -> tuple[Project, Account]:
    project = s.get(Project, project_id)
    account = s.get(Account, p.account_id)
    if project is None or account is None or project.account_id != p.account_id:
        raise NotFound(f"project {project_id[:64]} not found", code="BackupService.6903")
    return project, account


# ------------------------------------------------------------------------------------ not here
NO_BILLING = ("this installation has no billing: vaults are not bought, ordered or renewed, so there is no "
              "order and no charging mode to change (create_vault and create_post_paid_vault create a vault "
              "at once)")
NO_DOMAIN_MIGRATION = ("domain migration moves an account's CBR resources between the public cloud's billing "
                       "systems; a self-hosted installation has one, so there is nothing to migrate")
NO_IMPORT = ("import_backup and import_checkpoint synchronise a hybrid-cloud vault: they register backups that an "
             "on-premises backup appliance (OceanStor BCManager, eBackup for VMware) wrote to an object-storage "
             "bucket (bucket_name, image_path). OpenCBR has no hybrid-cloud vaults and reads no other product's "
             "backup format; the backups of another OpenCBR installation come into this one by replication over a "
             "region link (copy_backup, copy_checkpoint, replication policies), which moves the data, re-encrypts "
             "it with this installation's keys and records the replicas")


def not_supported(reason: str) -> None:
    raise NotSupported(f"not supported: {reason}")
