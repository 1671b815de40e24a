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


# The operator's Organization Policies page lives here to share this module's server (the suite's time budget).
def test_organization_policies_page_for_the_operator_only(page, server):  # noqa: F811
    creds = new_tenant(server, "orgpol-console")
    tenant = api(server, creds)
    sign_in(page, server.admin)
    nav(page, "Organization Policies")
    page.get_by_role("button", name="Create Organization Policy").click()
    dlg = page.locator("dialog[open]")
    dlg.locator("input[name=org-name]").fill("org-nightly")
    dlg.locator("input[name=org-policy-name]").fill("org_nightly")
    dlg.locator("input[name=org-keep]").fill("5")
    dlg.locator("input[name=org-scope]").fill("no-such-account")
    dlg.get_by_role("button", name="OK").click()
    expect(dlg.locator(".dialog-error")).to_contain_text("no-such-account")  # the server's 400, in the dialog
    dlg.locator("input[name=org-scope]").fill("orgpol-console")
    dlg.get_by_role("button", name="OK").click()
    expect(dlg).to_have_count(0)
    row = page.locator("tr[data-org-policy='org-nightly']")
    expect(row).to_contain_text("Keep the latest 5 backups")
    expect(row.locator("[data-status='success']")).to_be_visible()
    (deployed,) = tenant.get("/policies")["policies"]
    assert deployed["name"] == "org_nightly" and deployed["operation_definition"]["max_backups"] == 5

    row.get_by_role("button", name="Projects").click()  # the per-project status
    expect(page.locator(f"dialog[open] tr[data-deploy-project='{creds.project_id}']")).to_contain_text(deployed["id"])
    page.locator("dialog[open] footer button").click()  # Close

    row.get_by_role("button", name="Modify").click()
    page.locator("dialog[open] input[name=org-keep]").fill("9")
    page.locator("dialog[open]").get_by_role("button", name="OK").click()
    expect(row).to_contain_text("Keep the latest 9 backups")
    assert tenant.get(f"/policies/{deployed['id']}")["policy"]["operation_definition"]["max_backups"] == 9

    row.get_by_role("button", name="Delete").click()
    page.locator("dialog[open]").get_by_role("button", name="Yes").click()
    expect(row).to_have_count(0)
    assert tenant.get("/policies")["policies"] == []

    page.get_by_role("button", name="Sign out").click()  # a tenant has no such page
    sign_in(page, creds)
    expect(page.locator(".sidenav").get_by_role("link", name="Organization Policies")).to_have_count(0)
    page.goto("/console/#/org-policies")
    expect(page.locator(".main")).to_contain_text("Operator only")
