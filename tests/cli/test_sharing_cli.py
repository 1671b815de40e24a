"""``cbr backup share / members / unshare / shared / accept / reject`` against a real server, between two
accounts (tests/api/test_members.py covers the API on both catalogs)."""

from __future__ import annotations

import pytest

from tests.support.clients import api, cli, new_tenant, sdk, sdk_wait_backups
from tests.support.disks import MiB, make_image


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_share_accept_reject_unshare(server, tmp_path):
    owner = api(server)
    disk = owner.post("/inventory/disks", {"name": "cli-shared", "path": make_image(tmp_path / "d.img", MiB, seed=31)})
    vault = owner.post("/vaults", {"vault": {"name": "cli-share", "resources": [
        {"id": disk["disk"]["id"], "type": "OS::Cinder::Volume"}], "billing": {
        "object_type": "disk", "protect_type": "backup", "consistent_level": "crash_consistent", "size": 10}}})["vault"]
    cp = owner.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {"name": "cli-shared-bk"}}})
    (bid,) = [b["id"] for b in owner.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"]]
    sdk_wait_backups(sdk(server), [bid])
    other = new_tenant(server, "cli-recipient")
    api(server, other).post("/vaults", {"vault": {"name": "cli-inbox", "resources": [], "billing": {
        "object_type": "disk", "protect_type": "backup", "consistent_level": "crash_consistent", "size": 10}}})

    out = cli(server, "backup", "share", "cli-shared-bk", "--project", other.project_id, "--json")
    assert out.code == 0, out.err
    assert [(m["dest_project_id"], m["status"]) for m in out.json()["members"]] == [(other.project_id, "pending")]
    shared = cli(server, "backup", "shared", creds=other)
    assert shared.code == 0 and "cli-shared-bk" in shared.out and "pending" in shared.out, shared.err
    out = cli(server, "backup", "accept", "cli-shared-bk", "--vault", "cli-inbox", creds=other)
    assert out.code == 0 and "accepted into vault" in out.out, out.err
    members = cli(server, "backup", "members", "cli-shared-bk", "--json").json()["members"]
    assert members[0]["status"] == "accepted" and members[0]["vault_id"]
    out = cli(server, "backup", "reject", bid, creds=other)
    assert out.code == 0 and f"backup {bid} rejected" in out.out, out.err
    out = cli(server, "backup", "unshare", "cli-shared-bk", "--project", other.project_id)
    assert out.code == 0 and "not shared with any project" in out.out, out.err
    assert "no backups are shared with you" in cli(server, "backup", "shared", creds=other).out
