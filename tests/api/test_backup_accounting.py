"""What the vault reports is exact (guide 13.3.3), and the restore refusals of guide 6.1 and 6.3."""

from __future__ import annotations

import os

import pytest

from opencbr.cli.client import ClientError
from opencbr.engine import Repository
from opencbr.storage import open_store
from tests.support.clients import api, task_ok
from tests.support.disks import MiB, make_image, mutate


def vault_repo(server, vault_id):
    key = bytes.fromhex(open(os.path.join(server.data_dir, "master.key")).read().strip())
    store = open_store(f"file://{server.data_dir}/objects")
    return Repository.open(store, f"vaults/{vault_id}/", key)


def test_used_capacity_is_exact(server, tmp_path):
    c, sfx = api(server), server.backend
    imgs = [make_image(tmp_path / f"u{i}.img", 3 * MiB, seed=200 + i) for i in range(2)]
    disks = [c.post("/inventory/disks", {"name": f"use-{sfx}-{i}", "path": p})["disk"] for i, p in enumerate(imgs)]
    v = c.post("/vaults", {"vault": {"name": f"use-{sfx}", "billing": {
        "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": d["id"], "type": "OS::Cinder::Volume"} for d in disks]}})["vault"]
    ids = []
    for round_ in range(2):
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
        for b in c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"]:
            task_ok(c, b["task_id"])
            ids.append(b["id"])
        for k, p in enumerate(imgs):
            mutate(p, seed=300 + 10 * round_ + k)  # different data per disk: the disks back up concurrently
    repo = vault_repo(server, v["id"])
    shown = c.get(f"/vaults/{v['id']}")["vault"]
    assert shown["used_bytes"] == repo.usage() > 0
    assert shown["billing"]["used"] == -(-repo.usage() // MiB)
    # the sum of what each backup added is what the vault holds (nothing deleted yet; two backups
    # running at once that both store the same new chunk would each count it)
    assert sum(c.get(f"/backups/{i}")["backup"]["added_bytes"] for i in ids) == repo.usage()
    # deleting backups frees exactly what only they referenced; deleting all frees everything
    task_ok(c, c.delete(f"/backups/{ids[0]}")["operation_log_id"])
    assert c.get(f"/vaults/{v['id']}")["vault"]["used_bytes"] == vault_repo(server, v["id"]).usage()
    for i in ids[1:]:
        task_ok(c, c.delete(f"/backups/{i}")["operation_log_id"])
    assert c.get(f"/vaults/{v['id']}")["vault"]["used_bytes"] == 0
    summary = c.get("/vaults/summary")
    assert summary["size"] >= 10


def test_restore_refusals(server, tmp_path):
    c, sfx = api(server), server.backend
    sys_img = make_image(tmp_path / "s.img", 2 * MiB, seed=211)
    sd = c.post("/inventory/disks", {"name": f"ref-s-{sfx}", "path": sys_img})["disk"]
    srv = c.post("/inventory/servers", {"name": f"ref-{sfx}", "system_disk": sd["id"], "status": "stopped"})["server"]
    sv = c.post("/vaults", {"vault": {"name": f"ref-srv-{sfx}", "billing": {
        "object_type": "server", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": srv["id"], "type": "OS::Nova::Server"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": sv["id"]}})
    sb = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, sb["task_id"])
    # guide 6.1: no restore to a faulty server
    c.put(f"/inventory/servers/{srv['id']}", {"status": "faulty"})
    with pytest.raises(ClientError) as e:
        c.post(f"/backups/{sb['id']}/restore", {"restore": {"server_id": srv["id"]}})
    assert e.value.status == 409 and "faulty" in e.value.message
    # guide 6.3: a disk backup goes back only to its own disk, which must be available (not in use)
    data_img = make_image(tmp_path / "d.img", 2 * MiB, seed=212)
    dd = c.post("/inventory/disks", {"name": f"ref-d-{sfx}", "path": data_img})["disk"]
    dv = c.post("/vaults", {"vault": {"name": f"ref-disk-{sfx}", "billing": {
        "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": dd["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": dv["id"]}})
    db = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, db["task_id"])
    with pytest.raises(ClientError) as e:
        c.post(f"/backups/{db['id']}/restore", {"restore": {"volume_id": sd["id"]}})
    assert e.value.status == 400 and "original disk" in e.value.message
    other_img = make_image(tmp_path / "o.img", 2 * MiB, seed=213)
    od = c.post("/inventory/disks", {"name": f"ref-o-{sfx}", "path": other_img})["disk"]
    c.post("/inventory/servers", {"name": f"ref-host-{sfx}", "system_disk": od["id"]})
    with pytest.raises(ClientError) as e:  # the original disk is fine; an in-use one is refused
        c.post(f"/backups/{db['id']}/restore", {"restore": {"volume_id": od["id"]}})
    assert e.value.status == 400
    # an error backup cannot be restored (4.1), a restoring one not deleted (4.3)
    with open(data_img, "r+b") as f:
        f.truncate(MiB)  # the disk shrank below the backup's size
    with pytest.raises(ClientError) as e:
        c.post(f"/backups/{db['id']}/restore", {"restore": {"volume_id": dd["id"]}})
    assert e.value.status == 400 and "smaller" in e.value.message
