"""The same backup round trip with the vault data in S3 (a real S3 server on loopback)."""

from __future__ import annotations

from urllib.parse import urlsplit

import boto3
import pytest

from tests.support.clients import api, task_ok
from tests.support.disks import MARKER, MiB, make_image, mutate, sha256
from tests.support.s3 import s3_store_url
from tests.support.server import ServerProcess

BILLING = {"object_type": "disk", "size": 50, "consistent_level": "crash_consistent", "protect_type": "backup"}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory, moto_url):
    d = tmp_path_factory.mktemp("s3srv")
    store = s3_store_url(moto_url, prefix="prod")
    srv = ServerProcess(str(d), f"sqlite:///{d}/catalog.db", extra_env={"OPENCBR_OBJECT_STORE": store}).start()
    srv.s3_url = moto_url
    srv.bucket = urlsplit(store).netloc
    yield srv
    srv.stop()


def test_s3_roundtrip(s3_server, tmp_path):
    c = api(s3_server)
    img = make_image(tmp_path / "s3.img", 6 * MiB, seed=81)
    disk = c.post("/inventory/disks", {"name": "s3disk", "path": img})["disk"]
    v = c.post("/vaults", {"vault": {"name": "s3vault", "billing": BILLING,
                                     "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    hashes, ids = [], []
    for i in range(2):
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
        b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
        task_ok(c, b["task_id"])
        hashes.append(sha256(img))
        ids.append(b["id"])
        mutate(img, seed=90 + i)
    for bid, h in zip(ids, hashes, strict=True):
        tid = c.post(f"/backups/{bid}/restore", {"restore": {"volume_id": disk["id"]}})["operation_log_id"]
        task_ok(c, tid)
        assert sha256(img) == h
    # the data is in the bucket (not on local disk), and none of it is plaintext
    s3 = boto3.client("s3", endpoint_url=s3_server.s3_url, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_server.bucket, Prefix="prod/")
            for o in page.get("Contents", [])]
    assert any(f"vaults/{v['id']}/" in k for k in keys)
    for k in keys:
        assert MARKER not in s3.get_object(Bucket=s3_server.bucket, Key=k)["Body"].read(), k
    # deleting the vault removes its data from the bucket
    task_ok(c, c.delete(f"/vaults/{v['id']}")["operation_log_id"])
    left = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_server.bucket,
                                                                             Prefix=f"prod/vaults/{v['id']}/")
            for o in page.get("Contents", [])]
    assert left == []
