"""Sharing backups (guide 4.2) end to end through the official SDK against a real server (SQLite and
PostgreSQL catalogs), between two projects of different accounts: the sharer shares a disk backup and a
server backup, the recipient lists them, accepts them into its vaults (capacity counted), creates disks
from them (compared by SHA-256), and keeps those disks when the sharer deletes the backup; every refusal
answers a 4xx CBR body; the recipient sees nothing else of the sharer."""

from __future__ import annotations

import os

import pytest
from huaweicloudsdkcbr.v1 import (
    AddMemberRequest,
    AddMembersReq,
    BackupRestore,
    BackupRestoreReq,
    DeleteBackupRequest,
    DeleteMemberRequest,
    ListBackupsRequest,
    ResourceCreate,
    RestoreBackupRequest,
    ShowBackupRequest,
    ShowCheckpointRequest,
    ShowMemberDetailRequest,
    ShowMembersDetailRequest,
    ShowOpLogRequest,
    ShowVaultRequest,
    UpdateMember,
    UpdateMemberStatusRequest,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.cli.client import ClientError
from tests.api.test_backups_e2e import checkpoint, create_vault
from tests.support.clients import api, new_tenant, sdk, sdk_wait_backups, task_ok
from tests.support.disks import MiB, make_image, sha256

# The SDK end to end on one catalog (the suite's time budget); the same rules run on both catalogs in
# tests/services/test_sharing.py.
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


DISK, SERVER = "OS::Cinder::Volume", "OS::Nova::Server"
GB = 1024**3


def backed_up(c, client, vault_id) -> str:
    cp = checkpoint(c, vault_id)
    (bid,) = [b["id"] for b in client.get("/backups", checkpoint_id=cp.id)["backups"]]
    sdk_wait_backups(c, [bid])
    return bid


def refused(call, status: int, words: str) -> None:
    with pytest.raises(ClientRequestException) as e:
        call()
    assert e.value.status_code == status and e.value.error_code.startswith("BackupService."), e.value
    assert words in e.value.error_msg, e.value.error_msg


def share(c, backup_id, *projects):
    return c.add_member(AddMemberRequest(backup_id=backup_id, body=AddMembersReq(members=list(projects)))).members


def answer(c, backup_id, project_id, status, vault_id=None):
    body = UpdateMember(status=status, vault_id=vault_id)
    return c.update_member_status(UpdateMemberStatusRequest(backup_id=backup_id, member_id=project_id,
                                                            body=body)).member


@pytest.fixture(scope="module")
def world(server, tmp_path_factory):
    """The sharer (the server's admin) with a disk and a one-disk server, each backed up; a recipient of
    another account with a disk vault and a server vault."""
    d = tmp_path_factory.mktemp("share")
    c, client = sdk(server), api(server)
    disk_img = make_image(d / "disk.img", 4 * MiB, seed=21)
    sys_img = make_image(d / "sys.img", 2 * MiB, seed=22)
    disk = client.post("/inventory/disks", {"name": "shared-disk", "path": disk_img})["disk"]
    sysd = client.post("/inventory/disks", {"name": "shared-sys", "path": sys_img})["disk"]
    srv = client.post("/inventory/servers", {"name": "shared-srv", "system_disk": sysd["id"]})["server"]
    dv = create_vault(c, f"share-disks-{server.backend}", "disk", [ResourceCreate(id=disk["id"], type=DISK)])
    sv = create_vault(c, f"share-servers-{server.backend}", "server", [ResourceCreate(id=srv["id"], type=SERVER)])
    creds = new_tenant(server, f"recipient-{server.backend}")
    rc, rclient = sdk(server, creds), api(server, creds)
    inbox = rclient.post("/vaults", {"vault": {"name": "inbox", "resources": [], "billing": {
        "object_type": "disk", "protect_type": "backup", "consistent_level": "crash_consistent", "size": 10}}})["vault"]
    sinbox = rclient.post("/vaults", {"vault": {"name": "sinbox", "resources": [], "billing": {
        "object_type": "server", "protect_type": "backup", "consistent_level": "crash_consistent", "size": 10}}})["vault"]
    return {"c": c, "client": client, "rc": rc, "rclient": rclient, "recipient": creds.project_id, "dir": d,
            "disk": disk, "disk_img": disk_img, "sys_img": sys_img, "dv": dv, "sv": sv,
            "disk_backup": backed_up(c, client, dv.id), "server_backup": backed_up(c, client, sv.id),
            "inbox": inbox["id"], "sinbox": sinbox["id"]}


def test_share_accept_create_disks_and_the_sharer_deletes(world):
    w = world
    c, rc, rclient, me = w["c"], w["rc"], w["rclient"], w["recipient"]
    bid, sid = w["disk_backup"], w["server_backup"]
    (m,) = share(c, bid, me)
    assert (m.id, m.dest_project_id, m.status, m.backup_id, m.vault_id) == (me, me, "pending", bid, None)
    share(c, sid, me)
    members = c.show_members_detail(ShowMembersDetailRequest(backup_id=bid))
    assert members.count == 1 and members.members[0].dest_project_id == me

    pending = rc.list_backups(ListBackupsRequest(own_type="shared", member_status="pending"))
    assert {bid, sid} <= {b.id for b in pending.backups} and pending.count == len(pending.backups)
    assert rc.list_backups(ListBackupsRequest()).count == 0  # private: its own, none yet
    shown = rc.show_backup(ShowBackupRequest(backup_id=bid)).backup
    assert shown.vault_id is None and shown.checkpoint_id == "" and shown.resource_name == "shared-disk"

    accepted = answer(rc, bid, me, "accepted", w["inbox"])
    assert accepted.status == "accepted" and accepted.vault_id == w["inbox"]
    answer(rc, sid, me, "accepted", w["sinbox"])
    assert c.show_member_detail(ShowMemberDetailRequest(backup_id=bid, member_id=me)).member.status == "accepted"
    inbox = rc.show_vault(ShowVaultRequest(vault_id=w["inbox"])).vault
    assert inbox.billing.used == 4  # MB: the accepted backup counts against the vault (guide 4.2)
    in_inbox = rc.list_backups(ListBackupsRequest(own_type="all_granted", vault_id=w["inbox"])).backups
    assert [(b.id, b.vault_id) for b in in_inbox] == [(bid, w["inbox"])]

    made = {}
    server_view = rclient.get(f"/backups/{sid}")["backup"]
    (child,) = server_view["children"]
    for backup_id, name in ((bid, "from-disk"), (child["id"], "from-server")):
        out = rclient.post(f"/backups/{backup_id}/create-disk", {"name": name, "path": str(w["dir"] / f"{name}.img")})
        log = task_ok(rclient, out["operation_log_id"])
        assert log["vault_id"] == (w["inbox"] if backup_id == bid else w["sinbox"])  # its own vault, not the sharer's
        made[name] = out["disk_id"]
    assert sha256(w["dir"] / "from-disk.img") == sha256(w["disk_img"])
    assert sha256(w["dir"] / "from-server.img") == sha256(w["sys_img"])

    task_ok(w["client"], w["client"].delete(f"/backups/{bid}")["operation_log_id"])
    granted = {b.id for b in rc.list_backups(ListBackupsRequest(own_type="all_granted")).backups}
    assert sid in granted and bid not in granted
    refused(lambda: rc.show_backup(ShowBackupRequest(backup_id=bid)), 404, "not found")
    assert rc.show_vault(ShowVaultRequest(vault_id=w["inbox"])).vault.billing.used == 0
    disk = rclient.get(f"/inventory/disks/{made['from-disk']}")["resource"]
    assert disk["status"] == "available" and sha256(w["dir"] / "from-disk.img") == sha256(w["disk_img"])

    c.delete_member(DeleteMemberRequest(backup_id=sid, member_id=me))  # cancel sharing
    assert sid not in {b.id for b in rc.list_backups(ListBackupsRequest(own_type="shared")).backups}
    assert rc.show_vault(ShowVaultRequest(vault_id=w["sinbox"])).vault.billing.used == 0
    with pytest.raises(ClientError) as e:  # no longer shared: no more disks from it
        rclient.post(f"/backups/{child['id']}/create-disk", {"name": "late", "path": str(w["dir"] / "late.img")})
    assert e.value.status == 404 and e.value.code == "BackupService.6110"


def test_refusals(world, server):
    w = world
    c, client, rc, me = w["c"], w["client"], w["rc"], w["recipient"]
    d = w["dir"]
    enc = client.post("/inventory/disks", {"name": "enc", "path": make_image(d / "enc.img", MiB, seed=23),
                                           "encrypted": True})["disk"]
    ev = create_vault(c, f"share-enc-{server.backend}", "disk", [ResourceCreate(id=enc["id"], type=DISK)])
    os.makedirs(d / "tree")
    (d / "tree" / "f.txt").write_text("hello")
    fs = client.post("/inventory/file-systems", {"name": "tree", "path": str(d / "tree")})["file_system"]
    fv = create_vault(c, f"share-fs-{server.backend}", "turbo", [ResourceCreate(id=fs["id"], type="OS::Sfs::Turbo")])
    big_path = d / "big.img"
    with open(big_path, "wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(11 * GB)  # sparse: little data, larger than the recipient's 10 GB vault
    big = client.post("/inventory/disks", {"name": "big", "path": str(big_path)})["disk"]
    bv = create_vault(c, f"share-big-{server.backend}", "disk", [ResourceCreate(id=big["id"], type=DISK)])
    encrypted, tree, large = (backed_up(c, client, v.id) for v in (ev, fv, bv))

    refused(lambda: share(c, encrypted, me), 400, "encrypted")
    refused(lambda: share(c, tree, me), 400, "only server and disk backups")
    refused(lambda: share(c, large, server.admin.project_id), 400, "own project")
    refused(lambda: share(c, large, "0" * 32), 404, "not found")
    refused(lambda: c.add_member(AddMemberRequest(backup_id=large, body=AddMembersReq(domains=["no-such-account"]))),
            404, "account no-such-account not found")  # sharing with a whole account (its projects)
    refused(lambda: share(rc, large, me), 404, "not found")  # not the recipient's to share
    share(c, large, me)
    refused(lambda: answer(rc, large, me, "accepted", w["inbox"]), 400, "remaining space")
    refused(lambda: answer(rc, large, me, "accepted"), 400, "vault_id is required")
    refused(lambda: answer(c, large, me, "accepted", w["inbox"]), 404, "not found")  # the sharer cannot answer
    refused(lambda: answer(rc, large, me, "maybe"), 400, "accepted or rejected")
    refused(lambda: rc.list_backups(ListBackupsRequest(own_type="everything")), 400, "own_type")
    refused(lambda: rc.list_backups(ListBackupsRequest(own_type="shared", member_status="maybe")), 400, "member_status")
    peers = [client.post("/iam/projects", {"name": f"peer-{server.backend}-{i}"})["project"]["id"] for i in range(10)]
    share(c, large, *peers[:9])  # 10 with the recipient
    refused(lambda: share(c, large, peers[9]), 400, "at most 10")
    assert c.show_members_detail(ShowMembersDetailRequest(backup_id=large)).count == 10


def test_the_recipient_sees_nothing_else_of_the_sharer(world):
    w = world
    c, rc, client, me = w["c"], w["rc"], w["client"], w["recipient"]
    other = backed_up(c, client, w["dv"].id)  # not shared
    shared = backed_up(c, client, w["dv"].id)
    share(c, shared, me)
    b = client.get(f"/backups/{shared}")["backup"]
    visible = {x.id for x in rc.list_backups(ListBackupsRequest(own_type="all_granted")).backups}
    assert shared in visible and other not in visible
    for call in (lambda: rc.show_backup(ShowBackupRequest(backup_id=other)),
                 lambda: rc.show_vault(ShowVaultRequest(vault_id=w["dv"].id)),
                 lambda: rc.show_checkpoint(ShowCheckpointRequest(checkpoint_id=b["checkpoint_id"])),
                 lambda: rc.show_op_log(ShowOpLogRequest(operation_log_id=b["task_id"])),
                 lambda: rc.show_members_detail(ShowMembersDetailRequest(backup_id=shared)),
                 lambda: rc.delete_backup(DeleteBackupRequest(backup_id=shared)),
                 lambda: rc.restore_backup(RestoreBackupRequest(backup_id=shared, body=BackupRestoreReq(
                     restore=BackupRestore(volume_id=w["disk"]["id"])))),
                 lambda: rc.delete_member(DeleteMemberRequest(backup_id=shared, member_id=me))):
        refused(call, 404, "not found")
    with pytest.raises(ClientError) as e:
        w["rclient"].get(f"/inventory/disks/{w['disk']['id']}")
    assert e.value.status == 404
    seen = rc.show_backup(ShowBackupRequest(backup_id=shared)).backup
    assert seen.vault_id is None and seen.checkpoint_id == "" and w["dv"].id not in str(seen.to_dict())
    assert rc.show_member_detail(ShowMemberDetailRequest(backup_id=shared, member_id=me)).member.status == "pending"
    refused(lambda: rc.show_member_detail(ShowMemberDetailRequest(backup_id=other, member_id=me)), 404, "not found")
    assert c.show_backup(ShowBackupRequest(backup_id=shared)).backup.status == "available"  # untouched


def test_an_accepted_server_backup_makes_an_image_and_a_server(world):
    """Guide 4.2: the recipient makes a server from an accepted server backup, through an image of its own
    (6.2); the member names the image (image_id); the sharer's deletion takes the image, not the server."""
    w = world
    c, client, rc, rclient, me = w["c"], w["client"], w["rc"], w["rclient"], w["recipient"]
    sid = backed_up(c, client, w["sv"].id)
    share(c, sid, me)
    with pytest.raises(ClientError) as e:  # not accepted yet: not the recipient's to read
        rclient.post("/images", {"image": {"backup_id": sid, "name": "early"}})
    assert e.value.status == 404
    answer(rc, sid, me, "accepted", w["sinbox"])
    image = rclient.post("/images", {"image": {"backup_id": sid, "name": "from-shared"}})["image"]
    for caller in (c, rc):  # both sides see which image the recipient made
        assert caller.show_member_detail(ShowMemberDetailRequest(backup_id=sid, member_id=me)).member.image_id \
            == image["id"]
    assert image["id"] not in {i["id"] for i in client.get("/images")["images"]}  # the recipient's, not the sharer's
    assert not c.show_backup(ShowBackupRequest(backup_id=sid)).backup.extend_info.os_images_data
    path = str(w["dir"] / "shared-server-sys.img")
    out = rclient.post(f"/images/{image['id']}/servers", {"server": {"name": "from-shared", "paths": [path]}})
    assert task_ok(rclient, out["operation_log_id"])["vault_id"] == w["sinbox"]
    assert sha256(path) == sha256(w["sys_img"])
    task_ok(client, client.delete(f"/backups/{sid}")["operation_log_id"])
    with pytest.raises(ClientError) as e:
        rclient.get(f"/images/{image['id']}")
    assert e.value.status == 404
    got = rclient.get(f"/inventory/servers/{out['server_id']}")["resource"]
    assert [d["id"] for d in got["disks"]] == out["disk_ids"] and sha256(path) == sha256(w["sys_img"])
