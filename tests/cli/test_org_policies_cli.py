"""``cbr admin org-policy`` as the operator runs it: separate processes against a real server (SQLite),
--json output, a tenant refused, the deployment status per project."""

from __future__ import annotations

from tests.support.clients import api, cli, new_tenant
from tests.support.server import sqlite_server_fixture

server = sqlite_server_fixture("orgpol-cli")


def ok(r):
    assert r.code == 0, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    return r


def test_org_policy_commands(server):
    tenant = new_tenant(server, "cli-org-a")
    account_id = api(server, tenant).get("/iam/whoami")["account_id"]
    org = ok(cli(server, "admin", "org-policy", "create", "nightly", "--accounts", "cli-org-a", "--pattern",
                 "FREQ=DAILY;INTERVAL=1;BYHOUR=3;BYMINUTE=00", "--keep", "7", "--json")).json()
    assert (org["policy_name"], org["effective_scope"], org["status"]) == ("nightly", account_id, "success")
    assert org["policy_operation_definition"]["max_backups"] == 7
    # the tenant has the policy, cannot delete it, and cannot create organization policies
    [deployed] = ok(cli(server, "policy", "list", "--json", creds=tenant)).json()
    assert deployed["name"] == "nightly"
    shown = ok(cli(server, "policy", "show", "nightly", creds=tenant)).out
    assert "Managed by" in shown and org["id"] in shown
    refused = cli(server, "policy", "delete", deployed["id"], "--yes", creds=tenant)
    assert refused.code != 0 and "organization policy" in " ".join((refused.out + refused.err).split())
    mine = cli(server, "admin", "org-policy", "create", "mine", "--pattern", "FREQ=DAILY;INTERVAL=1;BYHOUR=3;BYMINUTE=00",
               "--keep", "7", creds=tenant)
    assert mine.code != 0 and "only the operator" in " ".join((mine.out + mine.err).split())
    status = ok(cli(server, "admin", "org-policy", "status", "nightly", "--json")).json()
    assert [(s["project_id"], s["status"], s["policy_id"]) for s in status] == [
        (tenant.project_id, "success", deployed["id"])]
    ok(cli(server, "admin", "org-policy", "update", "nightly", "--keep", "9", "--disable"))
    shown = ok(cli(server, "admin", "org-policy", "show", org["id"][:8], "--json")).json()
    assert shown["policy_operation_definition"]["max_backups"] == 9 and shown["policy_enabled"] is False
    table = ok(cli(server, "admin", "org-policy", "list")).out
    assert "nightly" in table and "keep 9" in table
    ok(cli(server, "admin", "org-policy", "delete", "nightly", "--yes"))
    assert ok(cli(server, "policy", "list", "--json", creds=tenant)).json() == []
