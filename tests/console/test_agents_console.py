"""The console's Agents page in a real headless Chromium against a real server: the install commands,
an enrolment token, an agent with its status and paths, adding a path, unregistering."""

from __future__ import annotations

import os

import pytest

from tests.support.clients import api
from tests.support.server import sqlite_server_fixture

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):  # pragma: no cover - depends on the machine
    pytest.skip(f"CONSOLE TESTS NOT RUN: {CHROMIUM} is missing", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.console.test_console import ARGS, T, dialog, sign_in  # noqa: E402

server = sqlite_server_fixture("console-agents")


def test_agents_page(server):
    a = api(server)
    a.post("/agents", {"agent": {"agent_id": "console-agent", "host_name": "web7", "host_ip": "10.0.0.7",
                                 "host_os": "Linux"}})
    a.post("/agents/console-agent/add-path", {"add_path": ["/srv/www"]})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(base_url=server.url)
        page.set_default_timeout(T)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, server.admin)
        page.locator(".sidenav").get_by_role("link", name="Agents", exact=True).click()
        expect(page.locator("#agent-install")).to_contain_text("opencbr-agent register --endpoint")
        # the test's server listens on loopback only: the page says the commands work on no other host
        expect(page.locator("#agent-address-warning")).to_contain_text("own loopback address")
        expect(page.locator("#agent-address-warning")).to_contain_text('listen = "0.0.0.0:')
        expect(page.locator("#agent-install")).to_contain_text("replace <DIRECTORY> with a directory")
        row = page.locator("tr[data-agent-id='console-agent']")
        expect(row).to_contain_text("web7")
        expect(row).to_contain_text("/srv/www")
        expect(row.locator(".badge")).to_have_text("Offline")
        # the path's file system says why it cannot be backed up (here: its agent was never enrolled)
        expect(row.locator(".agent-path .error-text")).to_contain_text("is not enrolled")
        page.get_by_role("button", name="Create enrolment token").click()
        expect(page.locator("#agent-install")).to_contain_text("--token ocbr1.")
        expect(page.locator("#agent-address-warning")).to_contain_text("own loopback address")
        row.get_by_role("button", name="Add path").click()
        dialog(page).locator("textarea[name=agent-paths]").fill("/var/lib/app")
        dialog(page).get_by_role("button", name="Add").click()
        expect(row).to_contain_text("/var/lib/app")
        row.get_by_role("button", name="Unregister").click()
        dialog(page).get_by_role("button", name="Yes").click()
        expect(row).to_have_count(0)
        browser.close()
    assert not errors, errors
    assert a.get("/agents")["count"] == 0
