"""The image routes against a real server (SQLite and PostgreSQL catalogs): a two-disk server backed up
through the official SDK, one image of it, two servers from the image whose disks hash like the
source's; the refusals as CBR error bodies; a backup with an image cannot be deleted (409) until the
image is; another project sees and uses nothing."""

from __future__ import annotations

import pytest
from huaweicloudsdkcbr.v1 import DeleteBackupRequest, ShowBackupRequest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.cli.client import ClientError
from tests.api.test_backups_e2e import checkpoint, create_vault
from tests.support.clients import api, new_tenant, sdk, sdk_wait_backups, task_ok
from tests.support.disks import MiB, make_image, sha256

# The SDK end to end on one catalog (the suite's time budget); the same rules run on both catalogs in
# tests/services/test_images.py.
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)



def _err(fn) -> ClientError:
    with pytest.raises(ClientError) as e:
        fn()
    return e.value


@pytest.fixture(scope="module")
def imaged(server, tmp_path_factory):
    """A server (system 3 MiB, data 2 MiB) backed up with the SDK: (tmp dir, backup id, source hashes)."""
    from huaweicloudsdkcbr.v1 import ResourceCreate

    tmp = tmp_path_factory.mktemp("images")
    c, client, sfx = sdk(server), api(server), server.backend
    sys_img = make_image(tmp / "sys.img", 3 * MiB, seed=81)
    data_img = make_image(tmp / "data.img", 2 * MiB, seed=82)
    sd = client.post("/inventory/disks", {"name": f"img-sys-{sfx}", "path": sys_img})["disk"]
    dd = client.post("/inventory/disks", {"name": f"img-data-{sfx}", "path": data_img})["disk"]
    srv = client.post("/inventory/servers", {"name": f"img-srv-{sfx}", "system_disk": sd["id"],
                                             "data_disks": [dd["id"]], "status": "stopped"})["server"]
    vault = create_vault(c, f"img-{sfx}", "server", [ResourceCreate(id=srv["id"], type="OS::Nova::Server")])
    cp = checkpoint(c, vault.id)
    bid = client.get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]
    sdk_wait_backups(c, [bid])
    return tmp, bid, [sha256(sys_img), sha256(data_img)]


def test_an_image_makes_servers_bit_exact(server, imaged):
    tmp, backup_id, hashes = imaged
    client = api(server)
    image = client.post("/images", {"image": {"backup_id": backup_id, "name": "golden", "description": "v1"}})["image"]
    assert image["status"] == "active" and image["backup_id"] == backup_id and image["min_disk"] == 1
    assert [(d["disk_role"], d["size_bytes"]) for d in image["disks"]] == [("system", 3 * MiB), ("data", 2 * MiB)]
    assert client.get(f"/images/{image['id']}")["image"]["name"] == "golden"
    listed = client.get("/images", name="gold")
    assert listed["count"] == 1 and [i["id"] for i in listed["images"]] == [image["id"]]
    e = _err(lambda: client.post("/images", {"image": {"backup_id": backup_id, "name": "twice"}}))
    assert e.status == 409 and e.code == "BackupService.6808"

    made = []
    for n in (1, 2):
        paths = [str(tmp / f"s{n}-sys.img"), str(tmp / f"s{n}-data.img")]
        out = client.post(f"/images/{image['id']}/servers", {"server": {"name": f"from-image-{n}", "paths": paths}})
        made.append((out, paths))
    for out, paths in made:
        log = task_ok(client, out["operation_log_id"])
        assert log["operation_type"] == "create_server"
        assert [sha256(p) for p in paths] == hashes
        got = client.get(f"/inventory/servers/{out['server_id']}")["resource"]
        assert got["status"] == "stopped"
        assert [d["id"] for d in got["disks"]] == out["disk_ids"]
    assert client.get(f"/images/{image['id']}")["image"]["servers_created"] == 2

    # the SDK sees the image on its backup (extend_info.os_images_data)
    shown = sdk(server).show_backup(ShowBackupRequest(backup_id=backup_id)).backup
    assert [d.image_id for d in shown.extend_info.os_images_data] == [image["id"]]
    assert client.get("/backups", checkpoint_id=shown.checkpoint_id)["backups"][0]["used_by_image"] is True
    # guide 6.2: the backup cannot be deleted while its image exists; then it can
    with pytest.raises(ClientRequestException) as e:
        sdk(server).delete_backup(DeleteBackupRequest(backup_id=backup_id))
    assert e.value.status_code == 409 and "delete the image first" in e.value.error_msg
    client.delete(f"/images/{image['id']}")
    assert _err(lambda: client.get(f"/images/{image['id']}")).status == 404
    sdk(server).delete_backup(DeleteBackupRequest(backup_id=backup_id))


def test_refusals_and_tenant_isolation(server, tmp_path):
    from huaweicloudsdkcbr.v1 import ResourceCreate

    c, client, sfx = sdk(server), api(server), server.backend
    img = make_image(tmp_path / "lone.img", MiB, seed=83)
    disk = client.post("/inventory/disks", {"name": f"img-lone-{sfx}", "path": img})["disk"]
    vault = create_vault(c, f"img-lone-{sfx}", "disk", [ResourceCreate(id=disk["id"], type="OS::Cinder::Volume")])
    bid = client.get("/backups", checkpoint_id=checkpoint(c, vault.id).id)["backups"][0]["id"]
    sdk_wait_backups(c, [bid])
    e = _err(lambda: client.post("/images", {"image": {"backup_id": bid, "name": "disk-image"}}))
    assert e.status == 400 and e.code == "BackupService.6804"
    assert _err(lambda: client.post("/images", {"image": {"backup_id": "nope", "name": "x"}})).status == 404
    assert _err(lambda: client.post("/images", {"image": {"name": "x"}})).status == 400

    # another project: nothing to see, use or delete, and no image of our backups
    sys_img = make_image(tmp_path / "t-sys.img", MiB, seed=84)
    sd = client.post("/inventory/disks", {"name": f"t-sys-{sfx}", "path": sys_img})["disk"]
    srv = client.post("/inventory/servers", {"name": f"t-srv-{sfx}", "system_disk": sd["id"], "status": "stopped"})["server"]
    sv = create_vault(c, f"t-srv-{sfx}", "server", [ResourceCreate(id=srv["id"], type="OS::Nova::Server")])
    sbid = client.get("/backups", checkpoint_id=checkpoint(c, sv.id).id)["backups"][0]["id"]
    sdk_wait_backups(c, [sbid])
    image = client.post("/images", {"image": {"backup_id": sbid, "name": "mine"}})["image"]
    other = api(server, new_tenant(server, f"img-other-{sfx}"))
    assert other.get("/images") == {"images": [], "count": 0}
    for call in (lambda: other.get(f"/images/{image['id']}"),
                 lambda: other.delete(f"/images/{image['id']}"),
                 lambda: other.post(f"/images/{image['id']}/servers",
                                    {"server": {"name": "theirs", "paths": [str(tmp_path / "x.img")]}}),
                 lambda: other.post("/images", {"image": {"backup_id": sbid, "name": "stolen"}})):
        e = _err(call)
        assert e.status == 404, (e.status, e.code)
    assert client.get(f"/images/{image['id']}")["image"]["id"] == image["id"]
    client.delete(f"/images/{image['id']}")
