"""Tenant isolation: a project never sees or touches another project's vaults, resources or tasks."""

from __future__ import annotations

import pytest

from opencbr.cli.client import ClientError
from tests.support.clients import api, new_tenant
from tests.support.server import Creds

GB = 1024**3
BILLING = {"object_type": "disk", "size": 100, "consistent_level": "crash_consistent", "protect_type": "backup"}


def expect(status, fn, *args, **kw):
    with pytest.raises(ClientError) as e:
        fn(*args, **kw)
    assert e.value.status == status, e.value.message
    return e.value


@pytest.fixture(scope="module")
def tenants(server, tmp_path_factory):
    a_creds = new_tenant(server, f"iso-a-{server.backend}")
    b_creds = new_tenant(server, f"iso-b-{server.backend}")
    a, b = api(server, a_creds), api(server, b_creds)
    d = tmp_path_factory.mktemp("iso")
    img = d / "a.img"
    img.write_bytes(b"\0" * 65536)
    disk = a.post("/inventory/disks", {"name": "a-disk", "path": str(img)})["disk"]
    vault = a.post("/vaults", {"vault": {"name": "a-vault", "billing": BILLING,
                                         "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    return a, b, a_creds, b_creds, vault, disk, d


def test_b_cannot_list_or_show(tenants):
    a, b, _, _, vault, disk, _ = tenants
    assert all(v["id"] != vault["id"] for v in b.get("/vaults")["vaults"])
    assert b.get("/vaults", id=vault["id"])["count"] == 0
    assert b.get("/vaults", resource_ids=disk["id"])["count"] == 0
    expect(404, b.get, f"/vaults/{vault['id']}")
    assert all(r["id"] != disk["id"] for r in b.get("/inventory/disks")["resources"])
    expect(404, b.get, f"/inventory/disks/{disk['id']}")
    assert b.get("/protectables/OS::Cinder::Volume/instances")["instances"] == []
    expect(404, b.get, f"/protectables/OS::Cinder::Volume/instances/{disk['id']}")
    # B's summary counts B's own vaults (another test here may have made one), never A's
    assert b.get("/vaults/summary")["size"] == sum(v["billing"]["size"] for v in b.get("/vaults")["vaults"])


def test_b_cannot_change_or_delete(tenants):
    a, b, _, _, vault, disk, _ = tenants
    expect(404, b.put, f"/vaults/{vault['id']}", {"vault": {"name": "stolen"}})
    expect(404, b.delete, f"/vaults/{vault['id']}")
    expect(404, b.post, f"/vaults/{vault['id']}/addresources", {"resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]})
    expect(404, b.post, f"/vaults/{vault['id']}/removeresources", {"resource_ids": [disk["id"]]})
    expect(404, b.delete, f"/inventory/disks/{disk['id']}")
    # B cannot put A's disk into its own vault, nor build a server from it
    bv = b.post("/vaults", {"vault": {"name": "b-vault", "billing": BILLING}})["vault"]
    expect(404, b.post, f"/vaults/{bv['id']}/addresources", {"resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]})
    expect(404, b.post, "/inventory/servers", {"name": "b-srv", "system_disk": disk["id"]})
    # nor register the same file as its own disk
    expect(409, b.post, "/inventory/disks", {"name": "copy", "path": disk["path"]})
    # A's objects are unchanged
    v = a.get(f"/vaults/{vault['id']}")["vault"]
    assert v["name"] == "a-vault" and [r["id"] for r in v["resources"]] == [disk["id"]]


def test_b_cannot_use_a_project_path(tenants, server):
    a, b, a_creds, b_creds, vault, _, _ = tenants
    # B's key on A's project path: 403 from the signature check
    cross = api(server, Creds(b_creds.ak, b_creds.sk, a_creds.project_id))
    expect(403, cross.get, "/vaults")
    expect(403, cross.get, f"/vaults/{vault['id']}")
    expect(403, cross.delete, f"/vaults/{vault['id']}")


def test_b_cannot_see_tasks_or_audit(tenants):
    a, b, a_creds, b_creds, vault, _, _ = tenants
    expect(404, b.put, f"/vaults/{vault['id']}", {"vault": {"name": "stolen"}})  # in B's trail, whatever ran before
    tmp = a.post("/vaults", {"vault": {"name": "a-doomed", "billing": BILLING}})["vault"]
    task_id = a.delete(f"/vaults/{tmp['id']}")["operation_log_id"]
    assert a.get(f"/operation-logs/{task_id}")["operation_log"]["vault_id"] == tmp["id"]
    expect(404, b.get, f"/operation-logs/{task_id}")
    assert b.get("/operation-logs", vault_id=tmp["id"])["count"] == 0
    expect(404, b.post, f"/operation-logs/{task_id}/cancel")
    b_events = b.get("/iam/audit-events")["events"]
    # B's trail holds only B's own calls (its failed attempts on A's vault among them), never A's
    assert all(e["project_id"] == b_creds.project_id for e in b_events)
    assert any(e["resource_id"] == vault["id"] and e["outcome"] != "success" for e in b_events), b_events
    assert not any(e["resource_id"] == vault["id"] and e["outcome"] == "success" for e in b_events)
    assert any(e["resource_id"] == vault["id"] for e in a.get("/iam/audit-events")["events"])
    # a tenant admin cannot read another account's trail
    expect(403, b.get, "/iam/audit-events", account_id="someone-else")
