"""Integrity and control: a flipped byte is detected (verify and restore), never restored silently;
a running backup can be cancelled and leaves nothing; another project sees none of it."""

from __future__ import annotations

import os
import time

import pytest

from opencbr.cli.client import ClientError
from tests.support.clients import api, cli, new_tenant
from tests.support.clients import wait_task as wait
from tests.support.disks import MiB, big_random_image, flip_byte, make_image, sha256

BILLING = {"object_type": "disk", "size": 50, "consistent_level": "crash_consistent", "protect_type": "backup"}


def backed_up(server, tmp_path, name, size=4 * MiB, seed=1):
    c = api(server)
    img = make_image(tmp_path / f"{name}.img", size, seed=seed)
    disk = c.post("/inventory/disks", {"name": name, "path": img})["disk"]
    v = c.post("/vaults", {"vault": {"name": name, "billing": BILLING,
                                     "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    assert wait(c, b["task_id"])["status"] == "success"
    return c, img, disk, v, b


def test_flipped_byte_is_detected(server, tmp_path):
    c, img, disk, v, b = backed_up(server, tmp_path, f"flip-{server.backend}", seed=3)
    good = sha256(img)
    packs = []
    for d, _, files in os.walk(os.path.join(server.data_dir, "objects", "vaults", v["id"])):
        packs += [os.path.join(d, f) for f in files if os.path.getsize(os.path.join(d, f)) > 256 * 1024]
    assert packs, "no pack objects found"
    victim = max(packs, key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    log = wait(c, c.post(f"/backups/{b['id']}/verify")["operation_log_id"])
    assert log["status"] == "failed" and "damaged" in log["error_info"]["message"]
    report = log["extra_info"]["verify"]
    assert report["ok"] is False and report["disks"][0]["damaged"]
    # Restoring onto the disk reads only blocks that differ there: if the damaged block is not among
    # them, the disk ends up right; if it is, the restore fails. Either way nothing wrong is written.
    with open(img, "r+b") as f:
        f.write(b"\x01" * MiB)
    log = wait(c, c.post(f"/backups/{b['id']}/restore", {"restore": {"volume_id": disk["id"]}})["operation_log_id"])
    if log["status"] == "success":
        assert sha256(img) == good
    else:  # the disk holds a mix now, and says so until a restore finishes
        res = c.get(f"/inventory/disks/{disk['id']}")["resource"]
        assert res["status"] == "error" and "did not finish" in res["status_reason"], res
    # A new disk needs every block, so it meets the damage: the task fails and no disk is left behind.
    target = tmp_path / "from-damaged.img"
    out = c.post(f"/backups/{b['id']}/create-disk", {"name": "from-damaged", "path": str(target)})
    log = wait(c, out["operation_log_id"])
    assert log["status"] == "failed" and log["error_info"]["code"] == "BackupService.6010", log["error_info"]
    assert not target.exists()
    with pytest.raises(ClientError) as e:
        c.get(f"/inventory/disks/{out['disk_id']}")
    assert e.value.status == 404
    assert c.get(f"/backups/{b['id']}")["backup"]["status"] == "available"


def test_cancel_running_backup(server, tmp_path):
    c = api(server)
    big = big_random_image(tmp_path / "cancel.img", 512 * MiB)
    try:
        _cancel_a_running_backup(c, server, big)
    finally:
        os.unlink(big)  # (512 MiB: gone now, not when pytest prunes its old runs)


def _cancel_a_running_backup(c, server, big: str) -> None:
    disk = c.post("/inventory/disks", {"name": f"cancel-{server.backend}", "path": big})["disk"]
    v = c.post("/vaults", {"vault": {"name": f"cancel-{server.backend}", "billing": BILLING,
                                     "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    deadline = time.time() + 30
    while c.get(f"/operation-logs/{b['task_id']}")["operation_log"]["status"] == "waiting" and time.time() < deadline:
        time.sleep(0.02)
    c.post(f"/operation-logs/{b['task_id']}/cancel")
    log = wait(c, b["task_id"])
    if log["status"] == "success":
        pytest.skip("the backup finished before the cancel arrived")
    assert log["status"] == "failed" and "cancelled" in log["error_info"]["message"]
    with pytest.raises(ClientError) as e:
        c.get(f"/backups/{b['id']}")
    assert e.value.status == 404  # nothing half-made remains
    assert c.get(f"/vaults/{v['id']}")["vault"]["used_bytes"] == 0
    with pytest.raises(ClientError) as e:
        c.post(f"/operation-logs/{b['task_id']}/cancel")
    assert e.value.status == 409


def test_other_project_sees_no_backups(server, tmp_path):
    c, img, disk, v, b = backed_up(server, tmp_path, f"iso-b-{server.backend}", seed=5)
    other = api(server, new_tenant(server, f"iso-backups-{server.backend}"))
    assert other.get("/backups")["count"] == 0
    assert other.get("/backups", vault_id=v["id"])["count"] == 0
    for call in (lambda: other.get(f"/backups/{b['id']}"),
                 lambda: other.delete(f"/backups/{b['id']}"),
                 lambda: other.put(f"/backups/{b['id']}", {"backup": {"name": "mine"}}),
                 lambda: other.post(f"/backups/{b['id']}/restore", {"restore": {"volume_id": disk["id"]}}),
                 lambda: other.post(f"/backups/{b['id']}/verify"),
                 lambda: other.get(f"/checkpoints/{b['checkpoint_id']}"),
                 lambda: other.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}}),
                 lambda: other.post(f"/backups/{b['id']}/create-disk", {"name": "x", "path": str(tmp_path / "x.img")})):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.status == 404, e.value.message
    with pytest.raises(ClientError) as e:
        with other.stream(f"/backups/{b['id']}/export"):
            pass
    assert e.value.status == 404
    assert other.get("/operation-logs", vault_id=v["id"])["count"] == 0
    assert c.get(f"/backups/{b['id']}")["backup"]["name"] == b["name"]


def test_verify_counts_every_damaged_chunk(server, tmp_path):
    """Issue 11 item 9: a deleted pack holds more than 100 chunks; verify counts all of them (as the
    create-disk that meets them does) and lists only the first 100, saying how many it left out."""
    c = api(server)
    name = f"count-{server.backend}"
    img = tmp_path / f"{name}.img"
    with open(img, "wb") as f:
        f.write(os.urandom(24 * MiB))
    disk = c.post("/inventory/disks", {"name": name, "path": str(img)})["disk"]
    v = c.post("/vaults", {"vault": {"name": name, "billing": BILLING,
                                     "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    assert wait(c, b["task_id"])["status"] == "success"
    os.unlink(stored_packs(server, v["id"])[-1])

    log = wait(c, c.post(f"/backups/{b['id']}/verify")["operation_log_id"])
    assert log["status"] == "failed"
    report = log["extra_info"]["verify"]["disks"][0]
    out = c.post(f"/backups/{b['id']}/create-disk", {"name": f"{name}-new", "path": str(tmp_path / "new.img")})
    restore_log = wait(c, out["operation_log_id"])
    assert restore_log["status"] == "failed"
    unreadable = int(restore_log["error_info"]["message"].split(": ")[1].split(" chunk(s)")[0])
    assert unreadable > 100
    assert report["missing_count"] + report["damaged_count"] == unreadable, (report, restore_log["error_info"])
    assert len(report["missing"]) == 100 and report["missing_not_listed"] == report["missing_count"] - 100
    assert f"{unreadable} chunk(s) failed verification" in log["error_info"]["message"]
    offsets = [m["offsets"][0] for m in report["missing"]]
    assert offsets == sorted(offsets)  # listed in disk order: the first damaged regions first


def stored_packs(server, vault_id):
    packs = []
    for d, _, files in os.walk(os.path.join(server.data_dir, "objects", "vaults", vault_id, "data")):
        packs += [os.path.join(d, f) for f in files]
    return sorted(packs, key=os.path.getsize)


def test_export_of_damaged_backup(server, tmp_path):
    """Issue 11 item 8: damage seen before the first byte (a pack gone) is a 409 naming the chunk and
    offset; damage met while streaming (a flipped byte) ends the stream so that the CLI says "backup
    damaged: chunk X at offset Y", not "cannot reach"; no partial file is left either way."""
    c, img, disk, v, b = backed_up(server, tmp_path, f"exp-{server.backend}", size=48 * MiB, seed=9)
    out = tmp_path / "exp.img"
    ok = cli(server, "backup", "export", b["id"], "-o", str(out), "--json")
    assert ok.code == 0, ok.err
    assert sha256(out) == sha256(img)
    out.unlink()

    packs = stored_packs(server, v["id"])
    assert len(packs) >= 2, packs
    flip_byte(packs[-1])
    verify = wait(c, c.post(f"/backups/{b['id']}/verify")["operation_log_id"])["extra_info"]["verify"]["disks"][0]
    assert verify["damaged_count"] == 1
    bad = verify["damaged"][0]
    r = cli(server, "backup", "export", b["id"], "-o", str(out))
    assert r.code == 1
    said = " ".join(r.err.split())
    assert f"backup damaged: chunk {bad['digest']} at offset {bad['offsets'][0]}" in said, r.err
    assert "cannot reach" not in said
    assert not out.exists() and not (tmp_path / "exp.img.part").exists()
    # a client that knows nothing of the marker still sees a body cut short of its Content-Length
    got, size = 0, None
    with pytest.raises(ClientError) as e:
        with c.stream(f"/backups/{b['id']}/export") as resp:
            size = int(resp.headers["Content-Length"])
            for chunk in resp.iter_bytes():
                got += len(chunk)
    assert got < size and "peer closed connection" in e.value.message

    os.unlink(packs[0])
    with pytest.raises(ClientError) as e:
        with c.stream(f"/backups/{b['id']}/export"):
            pass
    assert e.value.status == 409 and e.value.code == "BackupService.6010"
    assert "chunk " in e.value.message and "at disk offset " in e.value.message and "is missing" in e.value.message
    r = cli(server, "backup", "export", b["id"], "-o", str(out))
    said = " ".join(r.err.split())
    assert r.code == 1 and "is damaged" in said and "at disk offset" in said and "cannot reach" not in said
    assert not out.exists() and not (tmp_path / "exp.img.part").exists()
