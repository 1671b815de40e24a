"""Verify and restore-test policies through the running service (issue 19, items 3, 4, 7): the CLI sets and
runs them; a flipped byte in a stored pack fails the verify and the restore test, the official SDK sees the
damaged backup as ``error``; the next backup of the live source repairs it and both pass again, the
restore test with its measured recovery time; another tenant reaches none of it; bad input is a 4xx."""

from __future__ import annotations

import os

import pytest
from huaweicloudsdkcbr.v1 import ShowBackupRequest

from opencbr.cli.client import ClientError
from tests.support.clients import api, cli, new_tenant, sdk, task_ok
from tests.support.clients import wait_task as wait
from tests.support.disks import MiB, flip_byte, make_image

# End to end on one catalog (the suite's time budget); the rules run on both in tests/services.
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
LATER = "2999-01-01T00:00:00Z"  # the service's own scheduler must not fire during the test


def _packs(server, vault_id):
    out = []
    for d, _, files in os.walk(os.path.join(server.data_dir, "objects", "vaults", vault_id, "data")):
        out += [os.path.join(d, f) for f in files]
    return out


def _backup(c, vault_id):
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": vault_id}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, b["task_id"])
    return b["id"]


def _refused(call, status: int, code: str) -> None:
    with pytest.raises(ClientError) as e:
        call()
    assert (e.value.status, e.value.code) == (status, code), e.value.message


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

    flip_byte(max(_packs(server, v["id"]), key=os.path.getsize))
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
