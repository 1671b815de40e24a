"""Alarms: a vault's ``threshold`` and ``smn_notify`` act (CBR v3 API: VaultCreate options; guide 10.1's
vault_util is what the threshold is compared with), and failed tasks of the kinds in ``TASK_KINDS``
are reported.

Three steps, all in the scheduler process, never in the API:

1. *Events*: a vault's usage crossing its threshold upwards (once per crossing: ``VaultAlarmState``
   remembers which side of it the last sample was on) and a failed task, each recorded once under a
   unique key. A vault with ``smn_notify`` off records its events but sends them nowhere.
2. *Deliveries*: one row per event and target (the project's own targets and the operator's).
3. *Sending*: ``deliver_due`` sends what is due, outside any transaction, and on failure tries again
   after a growing pause (``backoff``) up to ``alarm_max_attempts``; every attempt's outcome is an
   audit event (``deliverAlarm``) of the project's account.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencbr.catalog.models import (
    AlarmDelivery,
    AlarmEvent,
    AlarmTarget,
    Project,
    Task,
    Vault,
    VaultAlarmState,
)
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound
from opencbr.services import audit, iam, notify_email, notify_webhook
from opencbr.services.context import ServiceContext
from opencbr.services.metrics import GB, VaultSample
from opencbr.services.principal import Principal

WEBHOOK, EMAIL = "webhook", "email"
KINDS = (WEBHOOK, EMAIL)
VAULT_THRESHOLD, TASK_FAILED = "vault_threshold", "task_failed"
#: The kinds of task whose failure is an alarm. Generic: a kind added here (or a new kind of task that
#: fails when it finds damage) needs nothing else.
TASK_KINDS = ("backup", "replication", "verify", "restore_test")
#: How far back the scan for failed tasks looks (it runs every tick; a day covers a stopped scheduler).
SCAN_WINDOW = timedelta(days=1)
#: How long one sender holds a delivery it is trying (another scheduler leaves it alone meanwhile).
SENDING_LEASE = timedelta(minutes=2)
MAX_TARGETS = 20
#: Events and their deliveries are kept as long as tasks are (guide ch. 9: the past 30 days).
KEEP = timedelta(days=30)
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

TARGET_NOT_FOUND = "BackupService.6603"
INVALID_TARGET = "BackupService.6604"
NO_SMTP = "BackupService.6605"
TOO_MANY_TARGETS = "BackupService.6606"
DELIVERY_FAILED = "BackupService.6610"
FORBIDDEN_WEBHOOK = "BackupService.6611"

_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


@dataclass(frozen=True)
class NewTarget:
    target: AlarmTarget
    secret: str  # the webhook's signing secret, shown once; empty for email


def backoff(attempts: int) -> timedelta:
    """The pause after the ``attempts``-th failed try: 30 s, 1, 2, 4 ... minutes, at most an hour."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


# ------------------------------------------------------------------------------------ targets
def _scope(p: Principal, operator: bool) -> str:
    """The project a target belongs to: the caller's (its admins), or none (the operator's, for all)."""
    if operator:
        p.require_operator()
        return ""
    p.require_admin()
    return p.project_id


def _check_address(ctx: ServiceContext, kind: str, address: str, *, tenant: bool) -> None:
    if kind == WEBHOOK:
        try:
            url = urlsplit(address)
            host = url.hostname
            url.port  # noqa: B018 -- raises ValueError for a port that is no number of 0-65535 (e.g. '²')
        except ValueError:  # e.g. a malformed IPv6 literal, or port
            host = None
        if host is None or url.scheme not in ("http", "https") or len(address) > 512 or any(
                ch.isspace() for ch in address):
            raise InvalidParameter("a webhook target needs an http:// or https:// URL of at most 512 characters",
                                   code=INVALID_TARGET)
        if tenant:  # the operator's own targets may point anywhere; a tenant's only at public addresses
            try:
                notify_webhook.checked_addresses(address, notify_webhook.Reach.of(ctx.settings))
            except notify_webhook.Unresolved:
                pass  # (a name not in DNS yet, or DNS down): judged at each delivery, where it must resolve
            except notify_webhook.ForbiddenAddress as e:
                raise InvalidParameter(str(e), code=FORBIDDEN_WEBHOOK) from None
    elif kind == EMAIL:
        if not _EMAIL.match(address) or len(address) > 254:
            raise InvalidParameter(f"{address!r} is not an email address", code=INVALID_TARGET)
        if not ctx.settings.smtp_host:
            raise InvalidParameter("this installation sends no email (the operator has set no smtp_host)",
                                   code=NO_SMTP)
    else:
        raise InvalidParameter(f"a target is a {' or '.join(KINDS)}", code=INVALID_TARGET)


def create_target(s: Session, ctx: ServiceContext, p: Principal, *, kind: str, address: str, description: str = "",
                  operator: bool = False) -> NewTarget:
    project_id = _scope(p, operator)
    _check_address(ctx, kind, address, tenant=bool(project_id))
    count = s.scalar(select(func.count()).select_from(AlarmTarget).where(
        AlarmTarget.project_id == project_id, AlarmTarget.account_id == p.account_id))
    if count >= MAX_TARGETS:
        raise InvalidParameter(f"at most {MAX_TARGETS} alarm targets", code=TOO_MANY_TARGETS)
    secret = secrets.token_hex(32) if kind == WEBHOOK else ""
    target = AlarmTarget(account_id=p.account_id, project_id=project_id, kind=kind, address=address,
                         secret_sealed=iam.seal_secret(ctx.master_key, secret) if secret else "",
                         description=description[:255], created_at=ctx.now())
    s.add(target)
    s.flush()
    return NewTarget(target, secret)


def list_targets(s: Session, p: Principal, *, operator: bool = False) -> list[AlarmTarget]:
    project_id = _scope(p, operator)
    return list(s.scalars(select(AlarmTarget).where(AlarmTarget.project_id == project_id,
                                                    AlarmTarget.account_id == p.account_id)
                          .order_by(AlarmTarget.created_at, AlarmTarget.id)))


def delete_target(s: Session, p: Principal, target_id: str, *, operator: bool = False) -> AlarmTarget:
    project_id = _scope(p, operator)
    target = s.get(AlarmTarget, target_id)
    if target is None or target.project_id != project_id or target.account_id != p.account_id:
        raise NotFound(f"alarm target {target_id} not found", code=TARGET_NOT_FOUND)
    s.delete(target)
    return target


def list_deliveries(s: Session, p: Principal, *, limit: int = 100) -> list[tuple[AlarmDelivery, AlarmEvent]]:
    """The newest deliveries of the caller's project's events (to its own targets and the operator's)."""
    p.require_admin()
    rows = s.execute(select(AlarmDelivery, AlarmEvent).join(AlarmEvent, AlarmEvent.id == AlarmDelivery.event_id)
                     .where(AlarmEvent.project_id == p.project_id)
                     .order_by(AlarmDelivery.id.desc()).limit(max(1, min(limit, 1000))))
    return [(d, e) for d, e in rows]


# ------------------------------------------------------------------------------------ events
def _record(s: Session, *, key: str, project_id: str, vault_id: str, kind: str, payload: dict, now: datetime,
            notify: bool) -> AlarmEvent | None:
    """The event under ``key`` and its deliveries; None when it was recorded before."""
    if s.scalar(select(AlarmEvent.id).where(AlarmEvent.key == key)) is not None:
        return None
    event = AlarmEvent(key=key, project_id=project_id, vault_id=vault_id, kind=kind, payload=payload, created_at=now)
    s.add(event)
    s.flush()
    if not notify:
        return event
    account_id = s.scalar(select(Project.account_id).where(Project.id == project_id))
    targets = s.scalars(select(AlarmTarget.id).where(
        ((AlarmTarget.project_id == project_id) & (AlarmTarget.account_id == account_id))
        | (AlarmTarget.project_id == "")))
    for target_id in targets:
        s.add(AlarmDelivery(event_id=event.id, target_id=target_id, project_id=project_id, status=PENDING,
                            attempts=0, next_attempt_at=now, created_at=now))
    return event


def record_threshold_crossings(ctx: ServiceContext, samples: list[VaultSample], now: datetime | None = None) -> int:
    """Compare each sample with its vault's threshold; an event for each upward crossing. The count."""
    now = now or ctx.now()
    fired = 0
    for smp in samples:
        above = smp.util >= smp.threshold
        try:
            with ctx.tx() as s:
                state = s.get(VaultAlarmState, smp.vault_id, with_for_update=True)
                if state is None:
                    state = VaultAlarmState(vault_id=smp.vault_id, above=False, changed_at=now)
                    s.add(state)
                if state.above == above:
                    continue
                state.above, state.changed_at = above, now
                if above and _record(s, key=f"threshold:{smp.vault_id}:{now:%Y%m%dT%H%M%S}", project_id=smp.project_id,
                                     vault_id=smp.vault_id, kind=VAULT_THRESHOLD, now=now, notify=smp.smn_notify,
                                     payload={"vault_name": smp.vault_name, "vault_util": round(smp.util, 2),
                                              "used_vault_size": round(smp.used_bytes / GB, 3),
                                              "threshold": smp.threshold}):
                    fired += 1
        except IntegrityError:  # another scheduler recorded the same state change
            continue
    return fired


def record_failed_tasks(ctx: ServiceContext, now: datetime | None = None) -> int:
    """An event for every task of ``TASK_KINDS`` that failed within ``SCAN_WINDOW`` and has none yet."""
    now = now or ctx.now()
    with ctx.read() as s:
        failed = list(s.scalars(select(Task).where(Task.status.in_(("failed", "timeout")),
                                                   Task.operation_type.in_(TASK_KINDS),
                                                   Task.ended_at >= now - SCAN_WINDOW)))
        known = set(s.scalars(select(AlarmEvent.key).where(AlarmEvent.key.in_([f"task:{t.id}" for t in failed]))))
    fired = 0
    for t in failed:
        if f"task:{t.id}" in known:
            continue
        try:
            with ctx.tx() as s:
                vault = s.get(Vault, t.vault_id) if t.vault_id else None
                payload = {"task_id": t.id, "operation_type": t.operation_type, "status": t.status,
                           "vault_name": t.vault_name, "resource_id": t.resource_id,
                           "resource_name": t.resource_name, "error_code": t.error_code,
                           "error_message": t.error_message[:1000],
                           "ended_at": t.ended_at.isoformat() + "Z" if t.ended_at else ""}
                if _record(s, key=f"task:{t.id}", project_id=t.project_id, vault_id=t.vault_id, kind=TASK_FAILED,
                           payload=payload, now=now, notify=vault is None or bool(vault.smn_notify)):
                    fired += 1
        except IntegrityError:
            continue
    return fired


def purge_old(s: Session, now: datetime) -> int:
    """Drop the events (and their deliveries) older than ``KEEP``; the number of events dropped."""
    old = select(AlarmEvent.id).where(AlarmEvent.created_at < now - KEEP).scalar_subquery()
    s.execute(delete(AlarmDelivery).where(AlarmDelivery.event_id.in_(old)))
    return s.execute(delete(AlarmEvent).where(AlarmEvent.created_at < now - KEEP)).rowcount or 0


# ------------------------------------------------------------------------------------ sending
def _message(event: AlarmEvent, delivery_id: int) -> dict:
    return {"id": event.key, "delivery_id": delivery_id, "event": event.kind, "project_id": event.project_id,
            "vault_id": event.vault_id, "time": event.created_at.isoformat() + "Z", **event.payload}


def _subject(event: AlarmEvent) -> str:
    p = event.payload
    if event.kind == VAULT_THRESHOLD:
        return f"[OpenCBR] vault {p.get('vault_name')} is {p.get('vault_util')}% full (threshold {p.get('threshold')}%)"
    return f"[OpenCBR] {p.get('operation_type')} task failed: {p.get('resource_name') or p.get('vault_name')}"


def _send(ctx: ServiceContext, target: AlarmTarget, event: AlarmEvent, delivery_id: int) -> None:
    message = _message(event, delivery_id)
    if target.kind == WEBHOOK:
        secret = iam.unseal_secret(ctx.master_key, target.secret_sealed)
        reach = notify_webhook.Reach.of(ctx.settings) if target.project_id else None  # checked again: DNS changes
        notify_webhook.send(target.address, secret, json.dumps(message, sort_keys=True).encode(), reach)
    else:
        notify_email.send(ctx.settings, target.address, _subject(event), json.dumps(message, indent=2, sort_keys=True))


def _claim(ctx: ServiceContext, now: datetime, limit: int) -> list[int]:
    """Deliveries due now, each leased to this sender for ``SENDING_LEASE`` (a conditional update)."""
    with ctx.read() as s:
        due = list(s.execute(select(AlarmDelivery.id, AlarmDelivery.next_attempt_at).where(
            AlarmDelivery.status == PENDING, AlarmDelivery.next_attempt_at <= now)
            .order_by(AlarmDelivery.next_attempt_at).limit(limit)))
    claimed = []
    for delivery_id, due_at in due:
        with ctx.tx() as s:
            won = s.execute(update(AlarmDelivery).where(AlarmDelivery.id == delivery_id,
                                                        AlarmDelivery.next_attempt_at == due_at)
                            .values(next_attempt_at=now + SENDING_LEASE)).rowcount
        if won:
            claimed.append(delivery_id)
    return claimed


def _audit(ctx: ServiceContext, target: AlarmTarget, event: AlarmEvent, d: AlarmDelivery, error: str) -> None:
    with ctx.read() as s:
        account_id = s.scalar(select(Project.account_id).where(Project.id == event.project_id)) or target.account_id
    who = Principal(account_id=account_id, project_id=event.project_id, user_id="", user_name="opencbr-alarms",
                    role="admin")
    trace = audit.Trace("deliverAlarm", {"event": event.kind, "key": event.key, "target_kind": target.kind,
                                         "address": target.address, "attempt": d.attempts},
                        resource_id=target.id, resource_name=target.address)
    failure = CBRError(error, code=DELIVERY_FAILED, status=502) if error else None
    audit.record(ctx, who, trace, outcome="failure" if error else "success", http_status=502 if error else 200,
                 error=failure)


def deliver_due(ctx: ServiceContext, now: datetime | None = None, *, limit: int = 50) -> int:
    """Send the due deliveries; the number delivered. A failure is retried after ``backoff``, up to
    ``alarm_max_attempts`` tries; every try is audited."""
    now = now or ctx.now()
    delivered = 0
    for delivery_id in _claim(ctx, now, limit):
        with ctx.read() as s:
            d = s.get(AlarmDelivery, delivery_id)
            target = s.get(AlarmTarget, d.target_id) if d else None
            event = s.get(AlarmEvent, d.event_id) if d else None
            if d is None or target is None or event is None:
                continue
            s.expunge_all()
        error = ""
        try:
            _send(ctx, target, event, delivery_id)
        except Exception as e:  # the network, the receiver, the mail server: tried again later
            error = f"{type(e).__name__}: {e}"[:1000]
        with ctx.tx() as s:
            row = s.get(AlarmDelivery, delivery_id)
            if row is None:
                continue
            row.attempts += 1
            if not error:
                row.status, row.delivered_at, row.last_error = DELIVERED, now, ""
                delivered += 1
            else:
                row.last_error = error
                if row.attempts >= ctx.settings.alarm_max_attempts:
                    row.status = FAILED
                else:
                    row.next_attempt_at = now + backoff(row.attempts)
            s.flush()
            s.expunge(row)
        _audit(ctx, target, event, row, error)
    return delivered
