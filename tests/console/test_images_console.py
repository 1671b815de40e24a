"""The console's images in a real headless Chromium against a real server: "Create Image" on a server
backup, the Images page, a server made from the image (its disk bit-exact), the image deleted."""

from __future__ import annotations

import os

import pytest

from tests.support.clients import api, task_ok
from tests.support.disks import MiB, make_image, sha256
from tests.support.server import sqlite_server_fixture

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):  # pragma: no cover - depends on the machine
    pytest.skip(f"CONSOLE TESTS NOT RUN: {CHROMIUM} is missing", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.console.test_console import ARGS, T, dialog, sign_in  # noqa: E402

server = sqlite_server_fixture("console-images")


def test_create_image_then_a_server_from_it(server, tmp_path):
    a = api(server)
    sys_img = make_image(tmp_path / "sys.img", MiB, seed=95)
    sd = a.post("/inventory/disks", {"name": "con-sys", "path": sys_img})["disk"]
    srv = a.post("/inventory/servers", {"name": "con-srv", "system_disk": sd["id"], "status": "stopped"})["server"]
    vault = a.post("/vaults", {"vault": {"name": "con-img", "billing": {
        "object_type": "server", "protect_type": "backup", "size": 10, "consistent_level": "crash_consistent"},
        "resources": [{"id": srv["id"], "type": "OS::Nova::Server"}]}})["vault"]
    cp = a.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})["checkpoint"]
    backup = a.get("/backups", checkpoint_id=cp["id"])["backups"][0]
    task_ok(a, a.get(f"/backups/{backup['id']}")["backup"]["task_id"])
    (tmp_path / "vms").mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(base_url=server.url)
        page.set_default_timeout(T)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, server.admin)
        page.goto("/console/#/servers/backups")
        row = page.locator(f"tr[data-backup-id='{backup['id']}']")
        row.get_by_role("button", name="More ▾").click()
        page.get_by_role("menuitem", name="Create Image").click()
        dialog(page).locator("input[name=image-name]").fill("console-golden")
        dialog(page).get_by_role("button", name="Create").click()
        expect(dialog(page)).to_have_count(0)
        page.locator(".sidenav").get_by_role("link", name="Images", exact=True).click()
        image_row = page.locator("tr[data-image-name='console-golden']")
        expect(image_row).to_contain_text("con-srv")
        image_row.get_by_role("button", name="Create Server").click()
        dialog(page).locator("input[name=server-name]").fill("con-copy")
        dialog(page).locator("input[name=server-directory]").fill(str(tmp_path / "vms"))
        dialog(page).get_by_role("button", name="Create Now").click()
        expect(dialog(page)).to_have_count(0)
        task_ok(a, a.get("/operation-logs", operation_type="create_server")["operation_logs"][0]["id"])
        assert sha256(tmp_path / "vms" / "con-copy-1.img") == sha256(sys_img)
        page.locator(".sidenav").get_by_role("link", name="Images", exact=True).click()
        expect(image_row).to_contain_text("1")
        image_row.get_by_role("button", name="More ▾").click()
        page.get_by_role("menuitem", name="Delete").click()
        dialog(page).get_by_role("button", name="Yes").click()
        expect(image_row).to_have_count(0)
        browser.close()
    assert not errors, errors
    assert a.get("/images")["count"] == 0
