"""The manifests in the store are enough to rebuild a vault's catalog (`cbr admin vault rebuild`)."""

from __future__ import annotations

import sqlalchemy as sa

from opencbr.catalog.db import make_engine
from tests.support.clients import api, cli, task_ok
from tests.support.disks import MiB, make_image, sha256

BILLING = {"object_type": "server", "size": 30, "consistent_level": "crash_consistent", "protect_type": "backup"}


def test_rebuild_after_catalog_loss(server, tmp_path):
    c = api(server)
    sfx = server.backend
    sys_img = make_image(tmp_path / "s.img", 3 * MiB, seed=101)
    data_img = make_image(tmp_path / "d.img", 2 * MiB, seed=102)
    sd = c.post("/inventory/disks", {"name": f"rb-s-{sfx}", "path": sys_img})["disk"]
    dd = c.post("/inventory/disks", {"name": f"rb-d-{sfx}", "path": data_img})["disk"]
    srv = c.post("/inventory/servers", {"name": f"rb-{sfx}", "system_disk": sd["id"], "data_disks": [dd["id"]],
                                        "status": "stopped"})["server"]
    v = c.post("/vaults", {"vault": {"name": f"rebuild-{sfx}", "billing": BILLING,
                                     "resources": [{"id": srv["id"], "type": "OS::Nova::Server"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"], "parameters": {"name": "before-loss"}}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, b["task_id"])
    hashes = (sha256(sys_img), sha256(data_img))
    before = c.get(f"/backups/{b['id']}")["backup"]

    # the catalog loses the vault and its backups
    eng = make_engine(server.catalog_url)
    with eng.begin() as conn:
        conn.execute(sa.text("DELETE FROM backups WHERE vault_id = :v"), {"v": v["id"]})
        conn.execute(sa.text("DELETE FROM checkpoints WHERE vault_id = :v"), {"v": v["id"]})
        conn.execute(sa.text("DELETE FROM vault_resources WHERE vault_id = :v"), {"v": v["id"]})
        conn.execute(sa.text("DELETE FROM vaults WHERE id = :v"), {"v": v["id"]})
    eng.dispose()
    assert c.get("/backups", vault_id=v["id"])["count"] == 0
    assert v["id"] in cli(server, "admin", "vault", "stored", "--json").json()

    r = cli(server, "admin", "vault", "rebuild", v["id"], "--json")
    assert r.code == 0, r.err
    report = r.json()
    assert report["vault_created"] is True and b["id"] in report["backups_added"] and report["backups_found"] == 2
    vault = c.get(f"/vaults/{v['id']}")["vault"]
    assert vault["name"] == f"rebuild-{sfx}" and vault["billing"]["object_type"] == "server"
    after = c.get(f"/backups/{b['id']}")["backup"]
    assert (after["name"], after["status"], after["resource_id"]) == ("before-loss", "available", srv["id"])
    assert [k["disk_role"] for k in after["children"]] == ["system", "data"]
    assert after["logical_bytes"] == before["logical_bytes"]
    # rebuilding twice adds nothing
    assert cli(server, "admin", "vault", "rebuild", v["id"], "--json").json()["backups_added"] == []
    # and the rebuilt backup restores bit-exact
    for p in (sys_img, data_img):
        with open(p, "r+b") as f:
            f.write(b"\xff" * MiB)
    task_ok(c, c.post(f"/backups/{b['id']}/restore", {"restore": {"server_id": srv["id"]}})["operation_log_id"])
    assert (sha256(sys_img), sha256(data_img)) == hashes
