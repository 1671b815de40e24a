"""The console's vault lock card (docs/vault-lock.md): an administrator locks a vault from its details
page; a compliance lock then offers no way to lift it, and the vault's backups cannot be deleted."""

from __future__ import annotations

from tests.console.test_console import browser, dialog, expect, page, server, sign_in  # noqa: F401
from tests.support.clients import api, new_tenant


def test_lock_a_vault_from_its_details(page, server):  # noqa: F811
    creds = new_tenant(server, "lock-console")
    vault = api(server, creds).post("/vaults", {"vault": {"name": "worm", "billing": {"object_type": "disk",
                                                                                      "size": 10}}})["vault"]
    sign_in(page, creds)
    page.goto(f"/console/#/vault/{vault['id']}")
    card = page.locator("#vault-lock")
    expect(card).to_contain_text("Not locked")
    card.get_by_role("button", name="Set Lock").click()
    dlg = dialog(page)
    dlg.locator("select[name=mode]").select_option("compliance")
    dlg.locator("input[name=retention_days]").fill("7")
    dlg.locator("input[name=lock_days]").fill("30")
    dlg.get_by_role("button", name="Lock").click()
    expect(dialog(page)).to_have_count(0)
    expect(card).to_contain_text("Locked · compliance")
    expect(card).to_contain_text("7 days")
    expect(card.get_by_role("button", name="Lift")).to_be_disabled()
    lock = api(server, creds).get(f"/vaults/{vault['id']}/lock")["lock"]
    assert (lock["mode"], lock["retention_days"], lock["active"]) == ("compliance", 7, True)
