"""Alarms: a vault's threshold and smn_notify act, failed tasks of the alarm kinds are reported, and
deliveries reach a loopback webhook (signed) and SMTP server, with retries, backoff and an audit entry
per attempt; targets are per project (tenant admins) or for all projects (the operator)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import AlarmDelivery, AuditEvent, Task, Vault
from opencbr.domain.errors import CBRError
from opencbr.scheduler import Scheduler
from opencbr.services import alarms, iam, notify_webhook
from tests.support import scheduler as S
from tests.support.receivers import Mailbox, Webhook

GB = 1024**3
# Delivery is the same on both catalogs and the suite's time budget is tight: SQLite only. The parts that
# differ by catalog (the series, the collector's SQL) run on both in test_metrics.py and test_prometheus.py.
pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def loopback_webhooks(ctx):
    """The receivers here are on loopback: allowed as an operator would (tests/services/test_notify_webhook.py)."""
    ctx.settings = replace(ctx.settings, alarm_webhook_allowed_networks=("127.0.0.0/8",))


@pytest.fixture()
def webhook():
    hook = Webhook()
    yield hook
    hook.stop()


@pytest.fixture()
def mailbox():
    box = Mailbox()
    yield box
    box.stop()


def set_used(ctx, vault_id: str, gb: float) -> None:
    with ctx.tx() as s:
        s.get(Vault, vault_id).used_bytes = int(gb * GB)


def target(ctx, p, kind, address, *, operator=False):
    with ctx.tx() as s:
        new = alarms.create_target(s, ctx, p, kind=kind, address=address, operator=operator)
        return new.target.id, new.secret


def failed_task(ctx, p, kind: str, vault_id: str = "", status: str = "failed") -> str:
    with ctx.tx() as s:
        t = Task(project_id=p.project_id, operation_type=kind, status=status, vault_id=vault_id,
                 resource_name="db-disk", error_code="BackupService.6999", error_message="damaged chunk",
                 started_at=ctx.now() - timedelta(minutes=5), ended_at=ctx.now())
        s.add(t)
        s.flush()
        return t.id


def test_threshold_crossings_and_failed_tasks_reach_webhook_and_email(ctx, tenant, clock, webhook, mailbox):
    ctx.settings = replace(ctx.settings, smtp_host="127.0.0.1", smtp_port=mailbox.port, smtp_from="cbr@example.org")
    v = S.vault(ctx, tenant, "v", size=10)  # threshold 80 % by default
    quiet = S.vault(ctx, tenant, "quiet", size=10)
    with ctx.tx() as s:
        s.get(Vault, quiet.id).smn_notify = False
    _, secret = target(ctx, tenant, "webhook", webhook.url)
    target(ctx, tenant, "email", "ops@example.org")
    sched = Scheduler(ctx, "s1")

    fired = []
    for used in (5, 8.5, 9, 3, 9.5):  # up, stays up, down, up again: two crossings
        set_used(ctx, v.id, used)
        set_used(ctx, quiet.id, used)
        fired.append(sched.monitor())
        clock.advance(minutes=15)
    assert fired == [0, 2, 0, 0, 2]  # both vaults cross twice; the quiet one's events go to nobody
    failed_task(ctx, tenant, "verify", v.id)
    failed_task(ctx, tenant, "restore_test", quiet.id)
    failed_task(ctx, tenant, "restore", v.id)  # not an alarm kind
    assert sched.monitor() == 2 and sched.monitor() == 0  # each failure once

    assert alarms.deliver_due(ctx) == 6  # two crossings and one verify failure, to both targets
    bodies = []
    for headers, body in webhook.requests:
        assert notify_webhook.verify(secret, body, headers[notify_webhook.HEADER])
        assert not notify_webhook.verify(secret, body + b" ", headers[notify_webhook.HEADER])
        bodies.append(json.loads(body))
    assert [(b["event"], b["vault_id"]) for b in bodies] == [("vault_threshold", v.id)] * 2 + [("task_failed", v.id)]
    assert bodies[0]["vault_util"] == 85.0 and bodies[0]["threshold"] == 80 and bodies[0]["vault_name"] == "v"
    assert bodies[2]["operation_type"] == "verify" and bodies[2]["error_message"] == "damaged chunk"
    assert [rcpt for rcpt, _ in mailbox.messages] == [["ops@example.org"]] * 3
    subjects = [m["Subject"] for _, m in mailbox.messages]
    assert "vault v is 85.0% full (threshold 80%)" in subjects[0] and "verify task failed" in subjects[2]
    assert alarms.deliver_due(ctx) == 0
    with ctx.read() as s:
        audits = list(s.scalars(select(AuditEvent).where(AuditEvent.trace_name == "deliverAlarm")))
    assert len(audits) == 6 and {a.outcome for a in audits} == {"success"}
    assert {a.project_id for a in audits} == {tenant.project_id}


def test_retries_with_backoff_targets_per_project_and_for_the_operator(ctx, tenant, clock, webhook):
    operator = tenant  # the bootstrap admin is the installation's operator
    _, project, user, _ = iam.create_account(ctx, "other")
    other = iam.principal_for_user(ctx, user.id, project.id)
    ctx.settings = replace(ctx.settings, alarm_max_attempts=3)
    t_other, other_secret = target(ctx, other, "webhook", webhook.url + "/other")
    _, operator_secret = target(ctx, operator, "webhook", webhook.url + "/operator", operator=True)
    with ctx.read() as s:  # each sees its own
        assert [t.id for t in alarms.list_targets(s, other)] == [t_other]
        assert alarms.list_targets(s, operator) == []
    for refused in ({"p": other, "operator": True}, {"p": other, "kind": "sms"}, {"p": other, "address": "ftp://x"},
                    {"p": other, "kind": "email", "address": "a@b.org"}):  # no SMTP server is configured
        args = {"kind": "webhook", "address": webhook.url, **refused}
        with ctx.tx() as s, pytest.raises(CBRError) as e:
            alarms.create_target(s, ctx, **args)
        assert e.value.code in ("APIGW.0303", "BackupService.6604", "BackupService.6605"), refused
    with ctx.tx() as s, pytest.raises(CBRError) as e:
        alarms.delete_target(s, tenant, t_other)
    assert e.value.status == 404

    failed_task(ctx, other, "backup")
    failed_task(ctx, operator, "replication")
    assert alarms.record_failed_tasks(ctx) == 2
    webhook.answers = [500] * 6  # the first two tries of each of the three deliveries fail
    assert alarms.deliver_due(ctx) == 0
    assert alarms.deliver_due(ctx) == 0  # not due again yet
    clock.advance(seconds=29)
    assert alarms.deliver_due(ctx) == 0
    clock.advance(seconds=1)
    assert alarms.deliver_due(ctx) == 0  # second failures: the next try a minute later
    clock.advance(seconds=60)
    assert alarms.deliver_due(ctx) == 3
    received = {}
    for headers, body in webhook.requests[-3:]:
        received.setdefault(json.loads(body)["project_id"], []).append((headers, body))
    # the other tenant's failure went to its own target and the operator's; the operator's to the operator's
    assert sorted(len(v) for v in received.values()) == [1, 2] and set(received) == {project.id, operator.project_id}
    (h, body), = received[operator.project_id]
    assert notify_webhook.verify(operator_secret, body, h[notify_webhook.HEADER])
    assert any(notify_webhook.verify(other_secret, b, h[notify_webhook.HEADER]) for h, b in received[project.id])
    with ctx.read() as s:
        assert sorted((r.status, r.attempts) for r in s.scalars(select(AlarmDelivery))) == [("delivered", 3)] * 3

    failed_task(ctx, other, "verify")  # a receiver that never answers 2xx: given up after three tries
    alarms.record_failed_tasks(ctx)
    webhook.answers = [500] * 6
    for _ in range(3):
        clock.advance(minutes=5)
        alarms.deliver_due(ctx)
    with ctx.read() as s:
        assert sorted(r.status for r in s.scalars(select(AlarmDelivery))) == ["delivered"] * 3 + ["failed"] * 2
        audits = [a.outcome for a in s.scalars(select(AuditEvent).where(AuditEvent.trace_name == "deliverAlarm"))]
    assert (audits.count("success"), audits.count("failure")) == (3, 12)
    clock.advance(days=31)  # kept as long as tasks are
    with ctx.tx() as s:
        assert alarms.purge_old(s, ctx.now()) == 3
        assert list(s.scalars(select(AlarmDelivery))) == []


@pytest.mark.parametrize("port", ["\u00b2", "99999", "-1"])
def test_a_webhook_port_that_is_no_port_is_refused(ctx, tenant, port):
    """urlsplit's port raised ValueError ('²' is a digit to str.isdigit, not to int()): a 500 before."""
    _, project, user, _ = iam.create_account(ctx, "ports")
    other = iam.principal_for_user(ctx, user.id, project.id)
    with ctx.tx() as s, pytest.raises(CBRError) as e:
        alarms.create_target(s, ctx, other, kind="webhook", address=f"http://93.184.216.34:{port}/hook")
    assert e.value.code == "BackupService.6604"
