"""The console's Quotas panel (guide ch. 12): what the project has against the limits the operator set."""

from __future__ import annotations

from tests.console.test_console import browser, expect, nav, page, server, sign_in  # noqa: F401
from tests.support.clients import api, new_tenant


def test_quotas_panel(page, server):  # noqa: F811
    creds = new_tenant(server, "quota-console")
    api(server).put(f"/admin/quotas/{creds.project_id}", {"quotas": {"vault": 5, "capacity": 40}})
    api(server, creds).post("/vaults", {"vault": {"name": "qv", "billing": {"object_type": "disk", "size": 20}}})
    sign_in(page, creds)
    nav(page, "Quotas")
    expect(page.get_by_role("heading", name="Quotas", exact=True)).to_be_visible()
    expect(page.locator("tr[data-quota='vault']")).to_contain_text("1")
    expect(page.locator("tr[data-quota='vault']")).to_contain_text("5")
    expect(page.locator("tr[data-quota='capacity']")).to_contain_text("20 GB / 40 GB")
    expect(page.locator("tr[data-quota='policy']")).to_contain_text("No limit")
    expect(page.locator(".main")).to_contain_text("ask the operator")
