"""Vault metrics, alarm targets and the Prometheus listener of a real ``opencbr serve`` (SQLite only, the
suite's time budget; the rules run on both catalogs in tests/services): the routes and their refusals,
tenant isolation, the CLI, and an alarm that the server's scheduler delivers to a loopback webhook. The
console's Monitoring page is tested here too, in a real headless Chromium, on the same server (one server
start less for the suite)."""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opencbr.catalog.models import Task, Vault
from opencbr.cli.client import ClientError
from opencbr.services import alarms, metrics, notify_webhook
from opencbr.services.context import open_context
from tests.support.clients import api, cli, new_tenant
from tests.support.databases import sqlite_url
from tests.support.receivers import Webhook
from tests.support.server import ServerProcess, free_port

GB = 1024**3
BILLING = {"consistent_level": "crash_consistent", "object_type": "disk", "protect_type": "backup", "size": 10}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("metrics-srv"))
    srv = ServerProcess(d, sqlite_url(d), workers=0,
                        extra_env={"OPENCBR_METRICS_LISTEN": f"127.0.0.1:{free_port()}"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ctx(server):
    """The server's catalog, opened by the test to play the scheduler's sampling round at once."""
    c = open_context(server.settings, migrate=False)
    yield c
    c.close()


def refused(call, status: int, code: str | None = None) -> None:
    with pytest.raises(ClientError) as e:
        call()
    assert e.value.status == status and (code is None or e.value.code == code), (e.value.status, e.value.code)


def test_series_targets_prometheus_and_delivery_by_the_server(server, ctx):
    creds = new_tenant(server, "metrics-tenant")
    tenant, operator = api(server, creds), api(server)
    v = tenant.post("/vaults", {"vault": {"name": "watched", "billing": BILLING}})["vault"]
    with ctx.tx() as s:
        s.get(Vault, v["id"]).used_bytes = 2 * GB
    assert v["id"] in [smp.vault_id for smp in metrics.sample_vaults(ctx)]

    out = tenant.get(f"/vaults/{v['id']}/metrics", metric_name="vault_util", period=900)
    assert out["metric"]["display_name"] == "Vault Usage" and out["metric"]["unit"] == "%"
    assert [p["average"] for p in out["datapoints"]] == [20.0]
    refused(lambda: operator.get(f"/vaults/{v['id']}/metrics"), 404)  # another project's vault
    refused(lambda: tenant.get(f"/vaults/{v['id']}/metrics", metric_name="cpu_util"), 400, "BackupService.6601")
    refused(lambda: tenant.get(f"/vaults/{v['id']}/metrics", period=60), 400, "BackupService.6602")
    shown = cli(server, "metrics", "show", "watched", "--json", creds=creds)
    assert shown.code == 0, shown.err
    assert [p["average"] for p in shown.json()["datapoints"]] == [2.0]

    hook = Webhook()
    try:
        secret = tenant.post("/alarm-targets", {"alarm_target": {"kind": "webhook", "address": hook.url}}
                             )["alarm_target"]["secret"]
        listed = tenant.get("/alarm-targets")["alarm_targets"]
        assert [t["address"] for t in listed] == [hook.url] and "secret" not in listed[0]
        assert operator.get("/alarm-targets")["alarm_targets"] == []  # per project
        refused(lambda: tenant.get("/admin/alarm-targets"), 403)  # the operator's targets
        refused(lambda: tenant.post("/alarm-targets", {"alarm_target": {"kind": "webhook", "address": "file:///x"}}),
                400, "BackupService.6604")
        for inside in ("http://169.254.169.254/latest/meta-data", f"http://127.0.0.1:{server.port}/v3"):
            # a cloud's metadata service; the service's own API (on loopback, which the tests allow)
            refused(lambda a=inside: tenant.post("/alarm-targets", {"alarm_target": {"kind": "webhook", "address": a}}),
                    400, "BackupService.6611")
        refused(lambda: operator.delete(f"/alarm-targets/{listed[0]['id']}"), 404)

        with ctx.tx() as s:
            s.add(Task(project_id=creds.project_id, operation_type="backup", status="failed", vault_id=v["id"],
                       error_code="BackupService.6999", started_at=ctx.now(), ended_at=ctx.now()))
        assert alarms.record_failed_tasks(ctx) == 1
        deadline = time.time() + 30  # the server's scheduler sends it (its delivery thread looks every 5 s)
        while not hook.requests and time.time() < deadline:
            time.sleep(0.2)
        headers, body = hook.requests[0]
        assert notify_webhook.verify(secret, body, headers[notify_webhook.HEADER])
        for _ in range(50):  # the delivery row is updated just after the answer
            rows = tenant.get("/alarm-deliveries")["alarm_deliveries"]
            if rows and rows[0]["status"] == "delivered":
                break
            time.sleep(0.1)
        assert [(r["event"], r["status"], r["attempts"]) for r in rows] == [("task_failed", "delivered", 1)]
        assert operator.get("/alarm-deliveries")["alarm_deliveries"] == []
    finally:
        hook.stop()

    text = httpx.get(f"http://{server.settings.metrics_listen}/metrics", timeout=10, trust_env=False).text
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("opencbr_vault_used_bytes", (("project_id", creds.project_id), ("vault_id", v["id"]),
                                                ("vault_name", "watched")))] == 2 * GB
    assert values[("opencbr_tasks", (("operation_type", "backup"), ("status", "failed")))] == 1


CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]


def test_console_draws_usage_and_manages_alarm_targets(server, ctx, tmp_path):
    """The Monitoring page: a vault's usage over time drawn from the series; a webhook target added (its
    secret shown once) and deleted."""
    if not os.path.exists(CHROMIUM):  # pragma: no cover - depends on the machine
        pytest.skip(f"CONSOLE TEST NOT RUN: {CHROMIUM} is missing")
    from playwright.sync_api import expect, sync_playwright
    creds = new_tenant(server, "watcher")
    c = api(server, creds)
    v = c.post("/vaults", {"vault": {"name": "charted", "billing": {
        "consistent_level": "crash_consistent", "object_type": "disk", "protect_type": "backup", "size": 10}}})["vault"]
    for i, used in enumerate((1, 2, 3, 4)):  # four 15-minute samples of a growing vault, up to now
        with ctx.tx() as s:
            s.get(Vault, v["id"]).used_bytes = used * GB
        metrics.sample_vaults(ctx, ctx.now() - timedelta(minutes=15 * (3 - i)))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, base_url=server.url)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto("/console/")
        page.fill("#ak", creds.ak)
        page.fill("#sk", creds.sk)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/console/#/monitoring")
        history = page.locator("#metric-history")
        expect(history.locator("svg.metric-chart circle")).to_have_count(4)
        expect(history).to_contain_text("Used Vault Size of vault charted")  # readable names, ids in titles
        expect(history).not_to_contain_text("used_vault_size")
        expect(history).to_contain_text("latest 4 GB")
        page.select_option("#metric-name", "vault_util")
        expect(history).to_contain_text("latest 40 %")
        page.screenshot(path=str(tmp_path / "monitoring.png"), full_page=True)

        page.locator("#alarm-target-add").click()
        page.fill("#alarm-address", "https://hooks.example.com/cbr")
        page.locator("dialog[open]").get_by_role("button", name="Add").click()
        expect(page.locator("dialog[open]")).to_contain_text("Shown once")
        secret = page.locator("dialog[open]").text_content()
        page.locator("dialog[open] footer").get_by_role("button", name="Close").click()
        targets = c.get("/alarm-targets")["alarm_targets"]
        assert [t["address"] for t in targets] == ["https://hooks.example.com/cbr"]
        assert re.search(r"[0-9a-f]{64}", secret)
        page.get_by_role("button", name="Delete target https://hooks.example.com/cbr").click()
        page.locator("dialog[open]").get_by_role("button", name="Delete").click()
        expect(page.locator("#alarm-targets")).to_contain_text("No targets")
        assert c.get("/alarm-targets")["alarm_targets"] == []
        browser.close()
    assert not errors, errors
