"""Verify checks a backup's catalog row against the sealed manifest it names: a damaged or edited row
(another disk, another type, another size) would restore the wrong thing, so verify fails and names the
field (found by the corruption campaign, tools/campaigns/corruption.py). File-system backups verify
too (verify_tree was called with a positional progress argument and raised TypeError)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

from tests.support.clients import api
from tests.support.clients import wait_task as wait
from tests.support.disks import MiB, make_image

BILLING = {"object_type": "disk", "size": 50, "consistent_level": "crash_consistent", "protect_type": "backup"}


def _backup(c, tmp_path, name, kind):
    if kind == "disk":
        res = c.post("/inventory/disks", {"name": name, "path": make_image(tmp_path / f"{name}.img", 2 * MiB)})["disk"]
        billing, rtype = BILLING, "OS::Cinder::Volume"
    else:
        root = tmp_path / name
        os.makedirs(root / "sub")
        (root / "sub" / "a.txt").write_bytes(b"hello " * 5000)
        res = c.post("/inventory/file-systems", {"name": name, "path": str(root)})["file_system"]
        billing, rtype = {**BILLING, "object_type": "turbo"}, "OS::Sfs::Turbo"
    v = c.post("/vaults", {"vault": {"name": name, "billing": billing,
                                     "resources": [{"id": res["id"], "type": rtype}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    assert wait(c, b["task_id"])["status"] == "success"
    return b


@pytest.mark.parametrize("kind, column, value", [
    ("disk", "resource_type", "OS::Cinder::Volumf"),
    ("disk", "resource_size_bytes", 3 * MiB),
    ("fs", "resource_id", "00000000-0000-0000-0000-000000000000"),
])
def test_verify_names_a_catalog_row_that_does_not_match_the_manifest(server, tmp_path, kind, column, value):
    c = api(server)
    b = _backup(c, tmp_path, f"row-{kind}-{column}-{server.backend}".replace("_", "-"), kind)
    log = wait(c, c.post(f"/backups/{b['id']}/verify")["operation_log_id"])
    assert log["status"] == "success", log["error_info"]  # clean: the row matches
    engine = create_engine(server.catalog_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE backups SET {column} = :v WHERE id = :id"), {"v": value, "id": b["id"]})
    engine.dispose()
    log = wait(c, c.post(f"/backups/{b['id']}/verify")["operation_log_id"])
    assert log["status"] == "failed"
    msg = log["error_info"]["message"]
    assert column in msg and b["id"] in msg and "manifest" in msg, msg
