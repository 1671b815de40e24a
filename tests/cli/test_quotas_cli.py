"""``cbr quota``, ``cbr admin quota show/set/reset`` and ``cbr vault migrate-resources`` against a real
server."""

from __future__ import annotations

from tests.support.clients import api, cli, new_tenant, task_ok
from tests.support.disks import MiB, make_image
from tests.support.server import sqlite_server_fixture

server = sqlite_server_fixture("cli-quotas")


def by_type(rows: list[dict]) -> dict:
    return {r["type"]: (r["used"], r["quota"]) for r in rows}


def test_quota_commands(server):
    """(The refusals themselves are tested in tests/api/test_quotas.py.)"""
    creds = new_tenant(server, "cli-quota")
    pid = creds.project_id
    r = cli(server, "admin", "quota", "set", pid, "--vaults", "1", "--capacity-gb", "-1", "--json")
    assert r.code == 0, r.err
    assert by_type(r.json()["resources"])["vault"] == (0, 1)
    r = cli(server, "quota", creds=creds)
    assert r.code == 0 and "vault" in r.out and "no limit" in r.out and "project" in r.out, r.out
    tenant = api(server, creds)
    tenant.post("/vaults", {"vault": {"name": "first", "billing": {"object_type": "disk", "size": 10}}})
    r = cli(server, "admin", "quota", "reset", pid, "--only", "vault", "--json")
    assert r.code == 0 and by_type(r.json()["resources"])["vault"] == (1, -1)
    r = cli(server, "admin", "quota", "show", pid)
    assert r.code == 0 and "default" in r.out


def test_vault_migrate_resources(server, tmp_path):
    creds = new_tenant(server, "cli-migrate")
    client = api(server, creds)
    img = make_image(tmp_path / "cm.img", 2 * MiB, seed=31)
    disk = client.post("/inventory/disks", {"name": "cm", "path": img})["disk"]["id"]
    a = client.post("/vaults", {"vault": {"name": "cm-a", "billing": {"object_type": "disk", "size": 10},
                                          "resources": [{"id": disk, "type": "OS::Cinder::Volume"}]}})["vault"]
    client.post("/vaults", {"vault": {"name": "cm-b", "billing": {"object_type": "disk", "size": 10}}})
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": a["id"]}})["checkpoint"]
    backup = client.get("/backups", checkpoint_id=cp["id"])["backups"][0]
    task_ok(client, client.get("/operation-logs", vault_id=a["id"], operation_type="backup")["operation_logs"][0]["id"])
    r = cli(server, "vault", "migrate-resources", "cm-a", "cm", "--to", "cm-b", "--wait", "--json", creds=creds)
    assert r.code == 0, r.err + r.out
    assert r.json()["migrated_resources"] == [disk]
    assert client.get(f"/backups/{backup['id']}")["backup"]["vault_id"] != a["id"]
    assert client.get("/backups", vault_id=a["id"])["count"] == 0
