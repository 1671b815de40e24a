"""Where a tenant's webhook may point (SSRF): loopback, link-local, private networks and this machine are
refused at creation and again at delivery, unless the operator allows a network; the service's own ports
never; the operator's own targets anywhere; redirects are not followed."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import AlarmDelivery, Task
from opencbr.domain.errors import CBRError
from opencbr.services import alarms
from tests.support.receivers import Webhook

pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)

REFUSED = ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://169.254.169.254/latest/meta-data",
           "http://10.1.2.3/hook", "http://192.168.0.1/hook", "http://172.16.5.5/hook", "http://100.64.0.1/hook",
           "http://[::1]:9/hook", "http://[::ffff:127.0.0.1]:9/hook", "http://[fe80::1]/hook", "http://0.0.0.0:9/"]


@pytest.fixture()
def webhook():
    hook = Webhook()
    yield hook
    hook.stop()


def _create(ctx, p, address, *, operator=False):
    with ctx.tx() as s:
        return alarms.create_target(s, ctx, p, kind="webhook", address=address, operator=operator).target.id


@pytest.mark.parametrize("address", REFUSED)
def test_a_tenants_webhook_may_not_point_inside(ctx, tenant, address):
    with pytest.raises(CBRError) as e:
        _create(ctx, tenant, address)
    assert (e.value.code, e.value.status) == ("BackupService.6611", 400), e.value


def test_public_addresses_the_operators_targets_and_allowed_networks(ctx, tenant):
    _create(ctx, tenant, "http://93.184.216.34/hook")  # a public address (nothing is sent at creation)
    _create(ctx, tenant, "http://no-such-host.invalid/hook")  # not resolvable now: judged at each delivery
    _create(ctx, tenant, "http://127.0.0.1:9/hook", operator=True)  # the bootstrap admin is the operator
    ctx.settings = replace(ctx.settings, alarm_webhook_allowed_networks=("127.0.0.0/8", "10.0.0.0/8"))
    _create(ctx, tenant, "http://127.0.0.1:9/hook")
    _create(ctx, tenant, "http://10.1.2.3/hook")
    with pytest.raises(CBRError) as e:  # still refused: another private network
        _create(ctx, tenant, "http://192.168.0.1/hook")
    assert e.value.code == "BackupService.6611"
    with pytest.raises(CBRError) as e:  # never the service's own API, even on an allowed network
        _create(ctx, tenant, f"http://127.0.0.1:{ctx.settings.port}/v3")
    assert e.value.code == "BackupService.6611" and "own ports" in e.value.message


def _failed_task(ctx, p):
    with ctx.tx() as s:
        s.add(Task(project_id=p.project_id, operation_type="backup", status="failed", resource_name="db",
                   error_code="BackupService.6999", error_message="x", started_at=ctx.now() - timedelta(minutes=1),
                   ended_at=ctx.now()))


def test_the_address_is_checked_again_at_delivery_and_redirects_are_not_followed(ctx, tenant, clock, webhook):
    loopback = ("127.0.0.0/8", "::1/128")  # ("localhost" may resolve to both)
    ctx.settings = replace(ctx.settings, alarm_webhook_allowed_networks=loopback, alarm_max_attempts=5)
    _create(ctx, tenant, webhook.url.replace("127.0.0.1", "localhost"))
    _failed_task(ctx, tenant)
    assert alarms.record_failed_tasks(ctx) == 1
    ctx.settings = replace(ctx.settings, alarm_webhook_allowed_networks=())  # the operator withdrew it
    assert alarms.deliver_due(ctx) == 0 and webhook.requests == []
    with ctx.read() as s:
        d = s.scalar(select(AlarmDelivery))
        assert d.status == "pending" and "this machine" in d.last_error

    ctx.settings = replace(ctx.settings, alarm_webhook_allowed_networks=loopback)
    webhook.answers = [302]  # a redirect is an answer that is not 2xx: nothing follows it
    clock.advance(minutes=5)
    assert alarms.deliver_due(ctx) == 0 and len(webhook.requests) == 1
    clock.advance(minutes=5)
    assert alarms.deliver_due(ctx) == 1
    headers, _ = webhook.requests[-1]
    assert headers["Host"] == f"localhost:{webhook.server.server_port}"  # the name, though the checked address is used
