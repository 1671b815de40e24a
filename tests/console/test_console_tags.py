"""The console's vault tags: shown in the vault's details, edited in a dialog (added, changed, removed),
and the server's tag rules shown when broken."""

from __future__ import annotations

from tests.console.test_console import browser, dialog, expect, nav, page, row, server, sign_in  # noqa: F401
from tests.support.clients import api


def test_vault_tags(page, server):  # noqa: F811
    client = api(server)
    vault = client.post("/vaults", {"vault": {"name": "tag-vault", "billing": {"object_type": "disk", "size": 10},
                                              "tags": [{"key": "env", "value": "test"}]}})["vault"]
    sign_in(page, server.admin)
    nav(page, "Cloud Disk Backups")
    row(page, "vault-name", "tag-vault").get_by_role("link", name="tag-vault").click()
    expect(page.locator("dl.kv").first).to_contain_text("env=test")

    page.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Edit Tags").click()
    tags = dialog(page).get_by_label("Tags")
    expect(tags).to_have_value("env=test")
    tags.fill("owner=a/b")
    dialog(page).get_by_role("button", name="Save").click()
    expect(dialog(page).get_by_role("alert")).to_contain_text("tag value")
    tags.fill("owner=ops\nteam=backup")
    dialog(page).get_by_role("button", name="Save").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator("dl.kv").first).to_contain_text("owner=ops")
    assert client.get(f"/vault/{vault['id']}/tags")["tags"] == [{"key": "owner", "value": "ops"},
                                                                {"key": "team", "value": "backup"}]
