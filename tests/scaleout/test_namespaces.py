"""Scale-out for real (issue 18, item 5): the API, two worker machines, the PostgreSQL catalog and the S3
server each in a network namespace of its own (``fleet.py`` draws the layout), talking over a bridge.

- tasks run on either worker machine;
- when one worker machine's processes are all SIGKILLed in the middle of a backup, the lease runs out,
  another worker's janitor requeues the task and the other machine finishes it: every Available backup
  then restores bit-exact (the crash rules of docs/design.md hold across machines).

The disk images live in this host's /tmp, which every namespace sees: they stand for shared storage
mounted at the same path on every machine (all machines are in one ``host_group``)."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from huaweicloudsdkcbr.v1 import (
    CreateCheckpointRequest,
    ListBackupsRequest,
    VaultBackup,
    VaultBackupReq,
)

from opencbr.cli.client import ApiClient, ClientConfig
from tests.scaleout.fleet import Fleet, unavailable_reason
from tests.support.clients import restore_and_check, sdk, sdk_task_ok, wait_running, wait_task
from tests.support.disks import MiB, big_random_image, make_image, sha256

BILLING = {"object_type": "disk", "size": 100, "consistent_level": "crash_consistent", "protect_type": "backup"}
CLAIMED = re.compile(r"task (\S+) \((\w+), attempt (\d+)\) claimed by (w\d+):")


@pytest.fixture(scope="module")
def fleet():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"the scale-out test needs network namespaces: {reason}")
    with Fleet(workers=2, lease_seconds=4) as f:
        yield f


def client(fleet: Fleet) -> ApiClient:
    return ApiClient(ClientConfig(fleet.url, fleet.admin.project_id, fleet.admin.ak, fleet.admin.sk))


def claims(fleet: Fleet) -> dict[str, list[tuple[str, int]]]:
    """Task id -> [(machine, attempt)] as the worker machines' own logs tell it."""
    out: dict[str, list[tuple[str, int]]] = {}
    for name in fleet.worker_names():
        for task_id, _type, attempt, host in CLAIMED.findall(fleet.machines[name].log()):
            assert host == name, "a worker's id names the machine it runs on"
            out.setdefault(task_id, []).append((name, int(attempt)))
    return out


def new_vault(c: ApiClient, name: str, disks: list[dict]) -> dict:
    return c.post("/vaults", {"vault": {"name": name, "billing": BILLING, "resources": [
        {"id": d["id"], "type": "OS::Cinder::Volume"} for d in disks]}})["vault"]


def test_tasks_run_on_either_worker_machine(fleet, tmp_path):
    fleet.wait_workers()
    c, sdk_client = client(fleet), sdk(fleet)
    images = [make_image(tmp_path / f"d{i}.img", 8 * MiB, seed=70 + i) for i in range(4)]
    disks = [c.post("/inventory/disks", {"name": f"shared-{i}", "path": p})["disk"] for i, p in enumerate(images)]
    v = new_vault(c, "spread", disks)
    body = VaultBackupReq(checkpoint=VaultBackup(vault_id=v["id"]))
    cp = sdk_client.create_checkpoint(CreateCheckpointRequest(body=body)).checkpoint
    backups = sdk_client.list_backups(ListBackupsRequest(checkpoint_id=cp.id)).backups
    assert len(backups) == len(disks)
    for b in backups:
        sdk_task_ok(sdk_client, c.get(f"/backups/{b.id}")["backup"]["task_id"])
    ran_on = {machine for b in backups for machine, _ in claims(fleet)[c.get(f"/backups/{b.id}")["backup"]["task_id"]]}
    assert ran_on == {"w1", "w2"}, claims(fleet)
    # the restores run on the worker machines too, writing the shared disks
    by_id = {d["id"]: p for d, p in zip(disks, images, strict=True)}
    for b in backups[:2]:
        restore_and_check(c, b.id, b.resource_id, by_id[b.resource_id], sha256(by_id[b.resource_id]))


def test_worker_machine_killed_mid_backup(fleet, tmp_path):
    c = client(fleet)
    small = make_image(tmp_path / "small.img", 4 * MiB, seed=81)
    big = big_random_image(tmp_path / "big.img", 128 * MiB)
    d_small = c.post("/inventory/disks", {"name": "kill-small", "path": small})["disk"]
    d_big = c.post("/inventory/disks", {"name": "kill-big", "path": big})["disk"]
    v = new_vault(c, "crash", [d_small, d_big])
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"], "parameters": {"resources": [d_small["id"]]}}})
    good = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    assert wait_task(c, good["task_id"])["status"] == "success"

    # The big disk's packs go to S3 over links of 160 Mbit/s (~7 s for 128 MiB of random data): the backup
    # is still running when the test looks, on a fast host too (unthrottled it ended within the progress
    # report's one-second interval there, before anything could interrupt it).
    for name in fleet.worker_names():
        fleet.limit_uplink(name, 160)
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"], "parameters": {"resources": [d_big["id"]]}}})
    doomed = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    try:
        wait_running(c, doomed["task_id"], min_progress=3)
        victim = lease_owner(fleet, doomed["task_id"]).split(":", 1)[0]
        survivor = next(n for n in fleet.worker_names() if n != victim)
        assert fleet.kill_machine(victim) >= 1
    finally:
        for name in fleet.worker_names():
            fleet.limit_uplink(name, None)
    try:
        log = wait_task(c, doomed["task_id"], timeout=120)
        assert log["status"] == "success", log
        assert log["extra_info"]["attempts"][0]["outcome"] == "lost"
        assert f"worker {victim}:" in log["extra_info"]["attempts"][0]["reason"], log["extra_info"]["attempts"]
        assert sorted(claims(fleet)[doomed["task_id"]], key=lambda c: c[1]) == [(victim, 1), (survivor, 2)]
        # no Available backup that cannot be restored: both restore bit-exact (on the surviving machine)
        listed = c.get("/backups", vault_id=v["id"])["backups"]
        assert sorted(b["status"] for b in listed) == ["available", "available"], listed
        restore_and_check(c, good["id"], d_small["id"], small, sha256(small))
        restore_and_check(c, doomed["id"], d_big["id"], big, sha256(big))
    finally:
        fleet.spawn_worker(victim)  # the machine comes back for whatever runs next (not waited for here)


def lease_owner(fleet: Fleet, task_id: str) -> str:
    """The worker holding a running task, read from the catalog on the database machine."""
    engine = sa.create_engine(fleet.catalog_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT lease_owner FROM tasks WHERE id = :id"), {"id": task_id}).scalar_one()
    finally:
        engine.dispose()
