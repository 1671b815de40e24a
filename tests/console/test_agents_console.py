"""The console's Agents page in a real headless Chromium against a real server: the install commands,
an enrolment token, an agent with its status and paths, adding a path, unregistering."""

from __future__ import annotations

import os

import pytest

from tests.support.clients import api, task_ok
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


def test_new_file_system_from_a_backup_can_go_to_an_agents_host(server, tmp_path):
    """The Create File System dialog offered only "an absolute path on the OpenCBR machine": a backup of a
    host's directory could be restored as a new file system only onto the backup service's machine (the
    h7 trial). With an enrolled agent it offers a Host, and the new file system is asked of that agent."""
    from opencbr.agentlink import certs
    a = api(server)
    _, csr = certs.new_key_and_csr("console-agent-2")
    a.post("/agents", {"agent": {"agent_id": "console-agent-2", "host_name": "web8", "host_ip": "10.0.0.8",
                                 "host_os": "Linux"}, "csr": csr, "endpoint": "10.0.0.8:7443"})
    src = tmp_path / "share"
    src.mkdir()
    (src / "top.txt").write_text("top level\n")
    fs = a.post("/inventory/file-systems", {"name": "agentdlg-share", "path": str(src)})["file_system"]
    vault = a.post("/vaults", {"vault": {"name": "agentdlg-vault", "billing": {"object_type": "turbo", "size": 10},
                                         "resources": [{"id": fs["id"], "type": "OS::Sfs::Turbo"}]}})["vault"]
    cp = a.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {"name": "agentdlg-bk"}}})
    backup_id = cp["checkpoint"]["vault"]["resources"][0]["backup_id"]
    task_ok(a, a.get(f"/backups/{backup_id}")["backup"]["task_id"])
    sent: list[dict] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(base_url=server.url)
        page.set_default_timeout(T)
        page.on("request", lambda r: sent.append(r.post_data_json) if r.method == "POST"
                and r.url.endswith("/create-file-system") else None)
        sign_in(page, server.admin)
        page.locator(".sidenav").get_by_role("link", name="SFS Turbo Backups", exact=True).click()
        page.get_by_role("tab", name="Backups").click()
        page.locator("tr[data-backup-name='agentdlg-bk']").get_by_role("button", name="Create File System").click()
        dlg = dialog(page)
        host = dlg.locator("select[name=target-host]")
        # a local directory's backup: the service's machine by default; the agent is offered
        expect(host).to_have_value("")
        expect(host.locator("option")).to_have_text(["The OpenCBR machine", "web8 (agent console-)"])
        host.select_option("console-agent-2")
        dlg.locator("input[name=fs-name]").fill("on-web8")
        dlg.locator("input[name=fs-path]").fill("/srv/on-web8")
        dlg.get_by_role("button", name="Create Now").click()
        page.wait_for_timeout(1000)
        browser.close()
    a.delete("/agents/console-agent-2")  # test_agents_page, on the same server, counts the agents left
    assert sent and sent[0] == {"name": "on-web8", "path": "/srv/on-web8", "agent_id": "console-agent-2"}, sent


def test_resources_page_says_why_an_agents_file_system_is_in_error(server):
    """The Resources page showed a bare "Error" badge for a host's directory whose agent was unregistered
    (or never enrolled); the reason was only in `cbr fs show --json` (h7 trial)."""
    a = api(server)
    a.post("/agents", {"agent": {"agent_id": "console-agent-3", "host_name": "web9", "host_ip": "10.0.0.9",
                                 "host_os": "Linux"}})
    a.post("/agents/console-agent-3/add-path", {"add_path": ["/srv/why"]})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(base_url=server.url)
            page.set_default_timeout(T)
            sign_in(page, server.admin)
            page.locator(".sidenav").get_by_role("link", name="Resources", exact=True).click()
            page.get_by_role("tab", name="File Systems").click()
            row = page.locator("tr[data-resource-name='web9 srv-why']")
            expect(row).to_contain_text("Error")
            expect(row.locator(".error-text")).to_contain_text("is not enrolled")
            browser.close()
    finally:
        a.delete("/agents/console-agent-3")  # test_agents_page counts the agents left
