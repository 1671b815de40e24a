"""The console's Monitoring page in a real headless Chromium: a vault's usage over time drawn from the
series the scheduler keeps, and the project's alarm targets (add a webhook, see its secret once, delete).
SQLite only (the suite's time budget)."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest

from opencbr.catalog.models import Vault
from opencbr.services import metrics
from opencbr.services.context import open_context
from tests.support.clients import api, new_tenant
from tests.support.server import sqlite_server_fixture

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):  # pragma: no cover - depends on the machine
    pytest.skip(f"CONSOLE TESTS NOT RUN: {CHROMIUM} is missing", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
GB = 1024**3
server = sqlite_server_fixture("monitoring-console")


def test_usage_chart_and_alarm_targets(server, tmp_path):
    creds = new_tenant(server, "watcher")
    c = api(server, creds)
    v = c.post("/vaults", {"vault": {"name": "charted", "billing": {
        "consistent_level": "crash_consistent", "object_type": "disk", "protect_type": "backup", "size": 10}}})["vault"]
    ctx = open_context(server.settings, migrate=False)
    try:  # four 15-minute samples of a growing vault, up to now (the scheduler's round, played at once)
        for i, used in enumerate((1, 2, 3, 4)):
            with ctx.tx() as s:
                s.get(Vault, v["id"]).used_bytes = used * GB
            metrics.sample_vaults(ctx, ctx.now() - timedelta(minutes=15 * (3 - i)))
    finally:
        ctx.close()
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
        expect(history).to_contain_text("Used Vault Size (used_vault_size) of vault charted")
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
