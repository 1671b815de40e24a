"""The console's vault page shows and sets the vault's checks (docs/verification.md): a verify policy set up
in the dialog and run from the page shows its result; a restore test's result shows its recovery time."""

from __future__ import annotations

from tests.console.test_console import browser, dialog, expect, page, server, sign_in  # noqa: F401
from tests.support.clients import api, task_ok
from tests.support.disks import MiB, make_image


def test_vault_page_sets_and_shows_checks(page, server, tmp_path):  # noqa: F811
    c = api(server)
    disk = c.post("/inventory/disks", {"name": "cc-disk", "path": make_image(tmp_path / "cc.img", MiB, seed=3)})["disk"]
    v = c.post("/vaults", {"vault": {"name": "cc-vault", "billing": {
        "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    task_ok(c, c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]["task_id"])
    c.put(f"/vaults/{v['id']}/checks/restore_test", {"check": {"start_at": "2999-01-01T00:00:00Z"}})
    task_ok(c, c.post(f"/vaults/{v['id']}/checks/restore_test/run", {})["task_id"])

    sign_in(page, server.admin)
    page.goto(f"/console/#/vault/{v['id']}")
    card = page.locator("[data-card='checks']")
    expect(card.locator("[data-check='restore_test']")).to_contain_text("Recovery time")
    expect(card.locator("[data-check='restore_test']")).to_contain_text("restored and checked")
    card.get_by_role("button", name="Set Up").click()
    dialog(page).locator("input[name='share_percent']").fill("50")
    dialog(page).get_by_role("button", name="Save").click()
    verify = card.locator("[data-check='verify']")
    expect(verify).to_contain_text("50% of the backups")
    verify.get_by_role("button", name="Run Now").click()
    expect(verify).to_contain_text("1 backup(s) intact", timeout=30_000)
