"""Verify of a file-system backup through the running service (issue 11, item 4): the CLI and the API
verify a clean tree backup, and after a flipped byte in a stored pack they report the damage, naming
the chunk and the file that uses it. A vault's verify and restore-test policies (issue 19, items 3, 4, 7):
the CLI sets and runs them; a flipped byte fails both, the official SDK sees the damaged backup as
``error``; the next backup of the live source repairs it and both pass again, the restore test with its
measured recovery time; another tenant reaches none of it; bad input is a 4xx."""

from __future__ import annotations

import os

import pytest
from huaweicloudsdkcbr.v1 import ShowBackupRequest

from opencbr.cli.client import ClientError
from tests.support.clients import api, cli, new_tenant, sdk, task_ok
from tests.support.clients import wait_task as wait
from tests.support.disks import MiB, flip_byte, make_image


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


LATER = "2999-01-01T00:00:00Z"  # the service's own scheduler must not fire during the test


def _backup(c, vault_id):
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": vault_id}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, b["task_id"])
    return b["id"]


def _refused(call, status: int, code: str) -> None:
    with pytest.raises(ClientError) as e:
        call()
    assert (e.value.status, e.value.code) == (status, code), e.value.message


# The vault's verify and restore-test policies (docs/verification.md) end to end on one catalog (the suite's
# time budget; their rules run on both in tests/services/test_verification.py and test_restore_tests.py).
@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_policies_find_damage_and_see_it_repaired(server, tmp_path):
    c = api(server)
    disk = c.post("/inventory/disks", {"name": "chk-disk", "path": make_image(tmp_path / "d.img", 2 * MiB, seed=9)})
    v = c.post("/vaults", {"vault": {"name": "chk-vault", "billing": {
        "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": disk["disk"]["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    first = _backup(c, v["id"])

    out = cli(server, "verify-policy", "set", "chk-vault", "--every", "7", "--share", "100", "--start-at", LATER, "--json")
    assert out.code == 0 and out.json()["share_percent"] == 100, out.err
    c.put(f"/vaults/{v['id']}/checks/restore_test", {"check": {"start_at": LATER, "backup_rule": "latest"}})
    task_ok(c, c.post(f"/vaults/{v['id']}/checks/verify/run", {})["task_id"])
    assert c.get(f"/vaults/{v['id']}/checks/verify")["check"]["last"]["message"] == "1 backup(s) intact"

    flip_byte(max(data_packs(server, v["id"]), key=os.path.getsize))
    test = wait(c, c.post(f"/vaults/{v['id']}/checks/restore_test/run", {})["task_id"])
    assert test["status"] == "failed" and test["error_info"]["code"] == "BackupService.6640", test["error_info"]
    damaged = cli(server, "verify-policy", "run", "chk-vault", "--wait")
    assert damaged.code == 1 and "BackupService.6631" in damaged.err and "damaged chunk" in damaged.err
    seen = sdk(server).show_backup(ShowBackupRequest(backup_id=first)).backup
    assert seen.status == "error"
    assert c.get(f"/backups/{first}")["backup"]["error_info"]["code"] == "BackupService.6630"
    assert c.post(f"/vaults/{v['id']}/checks/restore_test/run", {})["task_id"] is None  # none available

    _backup(c, v["id"])  # the live source: the damaged chunk is stored anew
    task_ok(c, c.post(f"/vaults/{v['id']}/checks/verify/run", {})["task_id"])
    assert c.get(f"/backups/{first}")["backup"]["status"] == "available"
    task_ok(c, c.post(f"/vaults/{v['id']}/checks/restore_test/run", {})["task_id"])
    checks = {x["kind"]: x for x in c.get(f"/vaults/{v['id']}/checks")["checks"]}
    assert checks["verify"]["last"]["status"] == "success" and checks["verify"]["last"]["damaged_chunks"] == 0
    last = checks["restore_test"]["last"]
    assert last["status"] == "success" and last["recovery_seconds"] is not None and last["check_seconds"] is not None
    shown = cli(server, "restore-test", "show", "chk-vault")
    assert "Recovery time" in shown.out and "success" in shown.out, shown.out

    other = api(server, new_tenant(server, "chk-stranger"))
    for call in (lambda: other.get(f"/vaults/{v['id']}/checks"),
                 lambda: other.get(f"/vaults/{v['id']}/checks/verify"),
                 lambda: other.put(f"/vaults/{v['id']}/checks/verify", {"check": {"share_percent": 5}}),
                 lambda: other.post(f"/vaults/{v['id']}/checks/verify/run", {}),
                 lambda: other.request("DELETE", f"/vaults/{v['id']}/checks/verify")):
        _refused(call, 404, "BackupService.6101")
    _refused(lambda: c.put(f"/vaults/{v['id']}/checks/verify", {"check": {"share_percent": 0}}), 400,
             "BackupService.6632")
    _refused(lambda: c.get(f"/vaults/{v['id']}/checks/nightly"), 400, "BackupService.6632")
    mine = other.post("/vaults", {"vault": {"name": "chk-own", "billing": {
        "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"}}})
    _refused(lambda: other.put(f"/vaults/{mine['vault']['id']}/checks/restore_test",
                               {"check": {"check_command": ["true"]}}), 403, "BackupService.6634")
    c.request("DELETE", f"/vaults/{v['id']}/checks/verify")
    _refused(lambda: c.get(f"/vaults/{v['id']}/checks/verify"), 404, "BackupService.6633")
