"""The audit trail (guide ch. 11): key operations with who, when, what and the outcome; admins query it;
the tracker can be switched off and on."""

from __future__ import annotations

from opencbr.cli.client import ClientError
from tests.support.clients import api, new_tenant

BILLING = {"object_type": "disk", "size": 20, "consistent_level": "crash_consistent", "protect_type": "backup"}


def events(client, **kw):
    return client.get("/iam/audit-events", **kw)["events"]


def test_vault_operations_are_recorded(server, tmp_path):
    creds = new_tenant(server, f"audit-{server.backend}")
    c = api(server, creds)
    img = tmp_path / "d.img"
    img.write_bytes(b"\0" * 4096)
    disk = c.post("/inventory/disks", {"name": "d", "path": str(img)})["disk"]
    v = c.post("/vaults", {"vault": {"name": "audited", "billing": BILLING}})["vault"]
    c.put(f"/vaults/{v['id']}", {"vault": {"name": "audited2"}})
    c.post(f"/vaults/{v['id']}/addresources", {"resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]})
    c.post(f"/vaults/{v['id']}/removeresources", {"resource_ids": [disk["id"]]})
    try:
        c.post("/vaults", {"vault": {"name": "bad name", "billing": BILLING}})
    except ClientError:
        pass
    c.delete(f"/vaults/{v['id']}")

    evs = events(c)
    names = [e["trace_name"] for e in reversed(evs)]  # oldest first
    assert names == ["createVault", "updateVault", "addResources", "removeResources", "createVault", "deleteVault"]
    ok = [e for e in evs if e["outcome"] == "success"]
    assert all(e["resource_id"] == v["id"] and e["user_name"] == "admin" and e["time"] for e in ok)
    failed = [e for e in evs if e["outcome"] == "failure"]
    assert len(failed) == 1 and failed[0]["http_status"] == 400 and "vault name" in failed[0]["error_msg"]
    assert failed[0]["error_code"] == "BackupService.6201"
    assert events(c, trace_name="deleteVault")[0]["resource_id"] == v["id"]
    assert {e["trace_name"] for e in events(c, outcome="failure")} == {"createVault"}
    assert events(c, resource_id=v["id"], trace_name="updateVault")[0]["request"] == {"name": "audited2"}


def test_tracker_off_stops_recording(server):
    creds = new_tenant(server, f"tracker-{server.backend}")
    c = api(server, creds)
    c.put("/iam/tracker", {"enabled": False})
    c.post("/vaults", {"vault": {"name": "unrecorded", "billing": BILLING}})
    assert not any(e["trace_name"] == "createVault" for e in events(c))
    c.put("/iam/tracker", {"enabled": True})
    c.post("/vaults", {"vault": {"name": "recorded", "billing": BILLING}})
    created = [e for e in events(c) if e["trace_name"] == "createVault"]
    assert [e["resource_name"] for e in created] == ["recorded"]
    # the switch itself is always on the record
    assert [e["request"]["enabled"] for e in events(c, trace_name="updateTracker")] == [True, False]


def test_operator_reads_any_account(server):
    creds = new_tenant(server, f"watched-{server.backend}")
    c = api(server, creds)
    c.post("/vaults", {"vault": {"name": "watched", "billing": BILLING}})
    me = c.get("/iam/whoami")
    op = api(server)
    evs = op.get("/iam/audit-events", account_id=me["account_id"])["events"]
    assert any(e["resource_name"] == "watched" for e in evs)
