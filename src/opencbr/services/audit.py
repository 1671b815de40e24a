"""The audit trail (guide chapter 11, CTS): who did which key operation, when, on what, and how it
ended. Events are appended in their own transaction, so a failed operation is recorded too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Account, AuditEvent
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound
from opencbr.services import engine_errors, listing, space
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

#: Guide table 11-1: the operations recorded, and the kind of resource each concerns. OpenCBR adds the
#: IAM operations of its own tenant administration.
TRACES = {
    "createPolicy": "policy", "updatePolicy": "policy", "deletePolicy": "policy",
    "associatePolicy": "vault", "dissociatePolicy": "vault",
    "createVault": "vault", "updateVault": "vault", "deleteVault": "vault",
    "removeResources": "vault", "addResources": "vault", "createVaultBackup": "vault",
    "createBackup": "backup", "deleteBackup": "backup", "restoreBackup": "backup",
    "createProject": "iam", "createUser": "iam", "createCredential": "iam", "deleteCredential": "iam",
    "createAccount": "iam", "updateTracker": "iam",
}
# tags and the rest of the vault API (the public CTS trace names where it has them)
TRACES.update({"createVaultTag": "vault", "deleteVaultTag": "vault", "bulkCreateOrDeleteVaultTags": "vault",
               "setResourceTags": "resource", "setVaultResources": "vault", "batchUpdateVaults": "vault",
               "updateBackupExpirationTime": "vault"})
TRACES.update({"replicationBackup": "backup", "replicationCheckpoint": "vault"})  # cross-region replication
TRACES.update({"addMember": "backup", "updateMemberStatus": "backup", "deleteMember": "backup"})  # sharing (4.2)
TRACES.update({"createOrganizationPolicy": "policy", "updateOrganizationPolicy": "policy",
               "deleteOrganizationPolicy": "policy"})
TRACES.update({"createImage": "image", "deleteImage": "image", "createServerFromImage": "image"})  # guide 6.2
TRACES.update({"createAlarmTarget": "alarm", "deleteAlarmTarget": "alarm", "deliverAlarm": "alarm"})  # alarms


@dataclass
class Trace:
    """An operation being recorded; the caller names what it touched once it knows."""

    trace_name: str
    request: dict = field(default_factory=dict)
    resource_id: str = ""
    resource_name: str = ""

    def resource(self, resource_id: str, resource_name: str = "") -> None:
        self.resource_id, self.resource_name = resource_id or "", resource_name or ""


def record(ctx: ServiceContext, p: Principal, t: Trace, *, outcome: str, http_status: int,
           error: CBRError | None = None) -> None:
    with ctx.tx() as s:
        account = s.get(Account, p.account_id)
        if account is not None and not account.audit_enabled and t.trace_name != "updateTracker":
            return
        # What a client sent (an id from the path, a name) may be longer than any real one: clip it.
        s.add(AuditEvent(time=ctx.now(), account_id=p.account_id, project_id=p.project_id, user_id=p.user_id,
                         user_name=p.user_name, access_key=p.access_key, source_ip=p.source_ip[:64],
                         trace_name=t.trace_name, resource_type=TRACES[t.trace_name],
                         resource_id=t.resource_id[:36], resource_name=t.resource_name[:255], request=t.request,
                         outcome=outcome, http_status=http_status, error_code=error.code if error else "",
                         error_message=error.message if error else "", request_id=p.request_id))


@contextmanager
def trace(ctx: ServiceContext, p: Principal, trace_name: str, request: dict | None = None,
          resource_id: str = "", resource_name: str = "") -> Iterator[Trace]:
    """Record ``trace_name`` around a block: success when it returns, failure (with the error) when it
    raises a client error. Other exceptions are recorded as failures with status 500 and re-raised."""
    if trace_name not in TRACES:
        raise ValueError(f"unknown trace {trace_name}")
    t = Trace(trace_name, request or {}, resource_id, resource_name)
    try:
        yield t
    except CBRError as e:
        record(ctx, p, t, outcome="failure", http_status=e.status, error=e)
        raise
    except Exception as e:
        err = (engine_errors.cbr_error(e) or space.storage_full(ctx, e)
               or CBRError(f"internal error: {type(e).__name__}", code="BackupService.9999", status=500))
        record(ctx, p, t, outcome="failure", http_status=err.status, error=err)
        raise
    record(ctx, p, t, outcome="success", http_status=200)


@dataclass
class AuditFilter:
    trace_name: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    user_name: str | None = None
    outcome: str | None = None
    project_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    account_id: str | None = None  # operator only


SORT_KEYS = {"time": AuditEvent.time, "trace_name": AuditEvent.trace_name, "user_name": AuditEvent.user_name,
             "outcome": AuditEvent.outcome}
OUTCOMES = ("success", "failure")


def list_events(s: Session, p: Principal, f: AuditFilter, *, limit: int = 100,
                offset: int = 0, sort: listing.Sort | None = None) -> tuple[list[AuditEvent], int]:
    """Audit events of the caller's account (admins), or of any account (the operator)."""
    p.require_admin()
    account_id = f.account_id or p.account_id
    if account_id != p.account_id:
        p.require_operator()
    if f.trace_name and f.trace_name not in TRACES:
        raise InvalidParameter(f"unknown trace name {f.trace_name!r}")
    conds = [AuditEvent.account_id == account_id]
    for col, val in ((AuditEvent.trace_name, f.trace_name), (AuditEvent.resource_type, f.resource_type),
                     (AuditEvent.resource_id, f.resource_id), (AuditEvent.user_name, f.user_name),
                     (AuditEvent.outcome, f.outcome), (AuditEvent.project_id, f.project_id)):
        if val:
            conds.append(col == val)
    if f.start_time:
        conds.append(AuditEvent.time >= f.start_time)
    if f.end_time:
        conds.append(AuditEvent.time <= f.end_time)
    total = s.scalar(select(func.count()).select_from(AuditEvent).where(and_(*conds))) or 0
    order = listing.order_by(sort, SORT_KEYS, [AuditEvent.time.desc(), AuditEvent.id.desc()], AuditEvent.id)
    rows = list(s.scalars(select(AuditEvent).where(and_(*conds)).order_by(*order).limit(limit).offset(offset)))
    return rows, total


def set_tracker(s: Session, p: Principal, enabled: bool) -> None:
    """Guide ch. 11: disabling the tracker stops recording; existing records stay readable."""
    p.require_admin()
    account = s.get(Account, p.account_id)
    if account is None:
        raise NotFound("account not found")
    account.audit_enabled = bool(enabled)
TRACES.update({"setProjectQuotas": "iam", "resetProjectQuotas": "iam",  # quotas (operator)
               "migrateResources": "vault"})  # moving resources and their backups to another vault
TRACES.update({"setVaultLock": "vault", "deleteVaultLock": "vault",  # docs/vault-lock.md
               "grantVaultLockGovernor": "iam"})
TRACES.update({"setVaultCheck": "vault", "deleteVaultCheck": "vault", "runVaultCheck": "vault"})  # verification
