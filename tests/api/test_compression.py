"""JSON answers are gzip-compressed for clients that accept it; streams and small answers are not
(api/compression.py)."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from huaweicloudsdkcbr.v1 import ListBackupsRequest, ListVaultRequest

from opencbr.api.compression import MIN_COMPRESSED_BYTES, accepts_gzip
from tests.support.clients import api, sdk, task_ok
from tests.support.disks import MiB, make_image

on_sqlite = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


def _raw_get(client, route: str, accept_encoding: str | None, **params) -> httpx.Response:
    """A signed GET whose body is kept as the server sent it (not inflated)."""
    url, headers, _ = client._prepare("GET", route, params, None)
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    with httpx.Client(base_url=client.cfg.endpoint, trust_env=False) as http:
        req = http.build_request("GET", url, headers=headers)
        if accept_encoding is None:
            req.headers.pop("Accept-Encoding", None)
        resp = http.send(req, stream=True)
        resp.raw_body = b"".join(resp.iter_raw())
        resp.close()
        return resp


@pytest.fixture()
def vaults(server):
    c = api(server)
    ids = [c.post("/vaults", {"vault": {"name": f"gz-{i}-{'x' * 40}", "billing": {
        "consistent_level": "crash_consistent", "object_type": "disk", "protect_type": "backup",
        "size": 10}}})["vault"]["id"] for i in range(12)]
    return ids


@on_sqlite
def test_a_big_json_answer_is_gzipped_and_decodes_to_the_same_document(server, vaults):
    c = api(server)
    plain = _raw_get(c, "/vaults", None, limit=100)
    packed = _raw_get(c, "/vaults", "gzip, deflate", limit=100)
    assert len(plain.raw_body) >= MIN_COMPRESSED_BYTES
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert int(packed.headers["content-length"]) == len(packed.raw_body) < len(plain.raw_body) / 3
    assert json.loads(gzip.decompress(packed.raw_body)) == json.loads(plain.raw_body)


@on_sqlite
def test_gzip_refused_with_quality_zero_or_not_offered_is_not_used(server, vaults):
    c = api(server)
    for header in ("gzip;q=0", "identity", "br"):
        resp = _raw_get(c, "/vaults", header, limit=100)
        assert "content-encoding" not in resp.headers, header
        json.loads(resp.raw_body)


@on_sqlite
def test_small_answers_and_errors_stay_plain(server, vaults):
    c = api(server)
    small = _raw_get(c, "/vaults", "gzip", limit=1, name="no-such-vault")
    assert "content-encoding" not in small.headers
    assert json.loads(small.raw_body)["vaults"] == []
    missing = _raw_get(c, "/vaults/00000000-0000-0000-0000-000000000000", "gzip")
    assert missing.status_code == 404 and json.loads(missing.raw_body)["error_code"]


@on_sqlite
def test_the_sdk_reads_compressed_lists(server, vaults):
    listed = sdk(server).list_vault(ListVaultRequest(limit=100)).vaults
    assert {v.id for v in listed} >= set(vaults)
    assert sdk(server).list_backups(ListBackupsRequest(limit=100)).backups is not None


@on_sqlite
def test_a_disk_export_stream_is_never_compressed(server, tmp_path):
    c = api(server)
    img = make_image(tmp_path / "gz.img", 2 * MiB, seed=5)
    disk = c.post("/inventory/disks", {"name": "gz-export", "path": img})["disk"]
    vault = c.post("/vaults", {"vault": {"name": "gz-export", "resources": [
        {"id": disk["id"], "type": "OS::Cinder::Volume"}], "billing": {
        "consistent_level": "crash_consistent", "object_type": "disk", "protect_type": "backup", "size": 10}}})
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": vault["vault"]["id"], "parameters": {}}})
    backup = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, backup["task_id"])
    resp = _raw_get(c, f"/backups/{backup['id']}/export", "gzip")
    assert resp.status_code == 200
    assert "content-encoding" not in resp.headers
    with open(img, "rb") as f:
        assert resp.raw_body == f.read()


@pytest.mark.parametrize(("header", "expected"), [
    ("gzip", True), ("deflate, gzip", True), ("GZIP;q=0.5", True), ("*", True), ("x-gzip", True),
    ("gzip;q=0", False), ("gzip;q=0.0", False), ("deflate", False), ("", False), ("gzipped", False),
])
def test_accept_encoding_is_read_as_rfc_9110_says(header, expected):
    assert accepts_gzip([(b"accept-encoding", header.encode())]) is expected


@on_sqlite
def test_answers_carry_no_server_banner(server, vaults):
    resp = _raw_get(api(server), "/vaults", "gzip", limit=100)
    assert "server" not in resp.headers
    assert resp.headers["date"] and resp.headers["x-request-id"]
