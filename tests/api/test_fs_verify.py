"""Verify of a file-system backup through the running service (issue 11, item 4): the CLI and the API
verify a clean tree backup, and after a flipped byte in a stored pack they report the damage, naming
the chunk and the file that uses it."""

from __future__ import annotations

import os

from tests.support.clients import api, cli, task_ok
from tests.support.clients import wait_task as wait
from tests.support.disks import flip_byte


def random_tree(root):
    """Files big enough to fill their own packs (random data does not deduplicate or compress)."""
    os.makedirs(os.path.join(root, "docs"))
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(os.urandom(6 * 1024 * 1024))
    with open(os.path.join(root, "docs", "note.txt"), "w") as f:
        f.write("keep this\n" * 100)
    return str(root)


def data_packs(server, vault_id):
    packs = []
    for d, _, files in os.walk(os.path.join(server.data_dir, "objects", "vaults", vault_id, "data")):
        packs += [os.path.join(d, f) for f in files]
    return packs


def test_verify_file_system_backup(server, tmp_path):
    c, sfx = api(server), server.backend
    fs = c.post("/inventory/file-systems", {"name": f"vfs-{sfx}", "path": random_tree(tmp_path / "share")})
    v = c.post("/vaults", {"vault": {"name": f"vfs-{sfx}", "billing": {
        "object_type": "turbo", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": fs["file_system"]["id"], "type": "OS::Sfs::Turbo"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, b["task_id"])

    clean = cli(server, "backup", "verify", b["id"], "--json")
    assert clean.code == 0, clean.err
    report = clean.json()
    assert report["ok"] is True and report["disks"][0]["chunks_checked"] > 0
    assert report["disks"][0]["bytes_checked"] >= 6 * 1024 * 1024

    victim = max(data_packs(server, v["id"]), key=os.path.getsize)
    flip_byte(victim)
    log = wait(c, c.post(f"/backups/{b['id']}/verify")["operation_log_id"])
    assert log["status"] == "failed" and log["error_info"]["code"] == "BackupService.6010", log["error_info"]
    disk = log["extra_info"]["verify"]["disks"][0]
    assert disk["ok"] is False and disk["damaged_count"] == 1 and len(disk["damaged"]) == 1
    bad = disk["damaged"][0]
    assert len(bad["digest"]) == 64 and bad["paths"] == ["/big.bin"], bad
    assert bad["digest"] in log["error_info"]["message"] and "/big.bin" in log["error_info"]["message"]

    damaged = cli(server, "backup", "verify", b["id"])
    assert damaged.code == 1
    assert "1 damaged" in damaged.err and bad["digest"][:16] in damaged.err and "/big.bin" in damaged.err
