"""Authentication and authorization: AK/SK signatures, the clock, project scoping, roles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from huaweicloudsdkcbr.v1 import ListVaultRequest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.cli.client import ClientError
from opencbr.domain import signing
from tests.support.clients import api, new_tenant, sdk
from tests.support.server import Creds


def raw(server, method, path, *, ak, sk, project_header=None, body=None, now=None, query="", headers=None,
        sign=True):
    data = b"" if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json", "Host": urlsplit(server.url).netloc,
         "X-Project-Id": project_header or server.admin.project_id, **(headers or {})}
    if sign:
        h = signing.sign_headers(method, path, query, h, data, ak, sk, now=now)
    return httpx.request(method, server.url + path + (f"?{query}" if query else ""), content=data or None,
                         headers=h, trust_env=False)


def assert_error(resp, status, code_prefix):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error_code", "error_msg"}
    assert body["error_code"].startswith(code_prefix) and body["error_msg"]
    assert resp.headers.get("X-Request-Id")


def test_valid_request(server):
    a = server.admin
    r = raw(server, "GET", f"/v3/{a.project_id}/vaults", ak=a.ak, sk=a.sk, query="limit=5")
    assert r.status_code == 200 and "vaults" in r.json()


def test_missing_authorization(server):
    a = server.admin
    assert_error(raw(server, "GET", f"/v3/{a.project_id}/vaults", ak=a.ak, sk=a.sk, sign=False), 401, "APIGW")


def test_unknown_key(server):
    a = server.admin
    assert_error(raw(server, "GET", f"/v3/{a.project_id}/vaults", ak="NOSUCHKEY", sk=a.sk), 401, "APIGW")


def test_wrong_secret(server):
    a = server.admin
    assert_error(raw(server, "GET", f"/v3/{a.project_id}/vaults", ak=a.ak, sk="wrong" + a.sk), 401, "APIGW")


def test_tampered_body(server):
    a = server.admin
    path = f"/v3/{a.project_id}/vaults"
    body = json.dumps({"vault": {"name": "x"}}).encode()
    h = signing.sign_headers("POST", path, "", {"Content-Type": "application/json", "Host": urlsplit(server.url).netloc,
                                                "X-Project-Id": a.project_id}, body, a.ak, a.sk)
    r = httpx.post(server.url + path, content=body.replace(b"x", b"y"), headers=h, trust_env=False)
    assert_error(r, 401, "APIGW")


@pytest.mark.parametrize("skew", [timedelta(minutes=16), -timedelta(minutes=16)])
def test_stale_or_future_date(server, skew):
    a = server.admin
    r = raw(server, "GET", f"/v3/{a.project_id}/vaults", ak=a.ak, sk=a.sk, now=datetime.now(UTC) + skew)
    assert_error(r, 401, "APIGW")
    assert "15 minutes" in r.json()["error_msg"]


def test_small_skew_is_fine(server):
    a = server.admin
    r = raw(server, "GET", f"/v3/{a.project_id}/vaults", ak=a.ak, sk=a.sk, now=datetime.now(UTC) - timedelta(minutes=14))
    assert r.status_code == 200


def test_project_of_another_account(server):
    other = new_tenant(server, f"auth-other-{server.backend}")
    a = server.admin
    r = raw(server, "GET", f"/v3/{other.project_id}/vaults", ak=a.ak, sk=a.sk, project_header=other.project_id)
    assert_error(r, 403, "APIGW")
    # path and X-Project-Id must agree
    r = raw(server, "GET", f"/v3/{a.project_id}/vaults", ak=a.ak, sk=a.sk, project_header=other.project_id)
    assert_error(r, 403, "APIGW")


def test_sdk_sees_401(server):
    a = server.admin
    bad = sdk(server, Creds(a.ak, "not-the-secret", a.project_id))
    with pytest.raises(ClientRequestException) as e:
        bad.list_vault(ListVaultRequest())
    assert e.value.status_code == 401 and e.value.error_code == "APIGW.0301"


def test_unknown_route_is_404_with_body(server):
    a = server.admin
    assert_error(raw(server, "GET", f"/v3/{a.project_id}/no-such-thing", ak=a.ak, sk=a.sk), 404, "APIGW")


def test_roles(server, tmp_path):
    admin = api(server)
    name = f"ro-{server.backend}"
    admin.post("/iam/users", {"name": name, "role": "readonly"})
    ro_cred = admin.post("/iam/credentials", {"user_name": name})["credential"]
    ro = api(server, Creds(ro_cred["access_key"], ro_cred["secret_key"], server.admin.project_id))
    assert "vaults" in ro.get("/vaults")
    with pytest.raises(ClientError) as e:
        ro.post("/vaults", {"vault": {"billing": {"object_type": "disk", "size": 10}}})
    assert e.value.status == 403
    img = tmp_path / "ro.img"
    img.write_bytes(b"\0" * 4096)
    with pytest.raises(ClientError) as e:
        ro.post("/inventory/disks", {"name": "ro", "path": str(img)})
    assert e.value.status == 403
    with pytest.raises(ClientError) as e:
        ro.post("/iam/users", {"name": "x"})
    assert e.value.status == 403
    # a member can change things but not administer the account
    mname = f"member-{server.backend}"
    admin.post("/iam/users", {"name": mname, "role": "member"})
    m_cred = admin.post("/iam/credentials", {"user_name": mname})["credential"]
    member = api(server, Creds(m_cred["access_key"], m_cred["secret_key"], server.admin.project_id))
    v = member.post("/vaults", {"vault": {"billing": {"object_type": "disk", "size": 10,
                                                      "consistent_level": "crash_consistent", "protect_type": "backup"}}})
    assert v["vault"]["user_id"]
    with pytest.raises(ClientError) as e:
        member.post("/iam/projects", {"name": "nope"})
    assert e.value.status == 403
    with pytest.raises(ClientError) as e:
        member.get("/iam/audit-events")
    assert e.value.status == 403
    # deleting the key revokes it
    admin.delete(f"/iam/credentials/{ro_cred['access_key']}")
    with pytest.raises(ClientError) as e:
        ro.get("/vaults")
    assert e.value.status == 401


def _signed_for(server, path, signed_query, sent_query):
    """Headers signed over ``signed_query``, and the request actually sent with ``sent_query``."""
    a = server.admin
    h = signing.sign_headers("GET", path, signed_query, {"Host": urlsplit(server.url).netloc,
                                                         "X-Project-Id": a.project_id}, b"", a.ak, a.sk)
    return httpx.get(f"{server.url}{path}?{sent_query}", headers=h, trust_env=False)


def test_repeated_single_valued_parameter_is_refused(server):
    """``limit=1&limit=5`` and ``limit=5&limit=1`` share a signature (pairs are sorted) but the framework
    keeps the last one: a parameter that takes one value may appear once."""
    a = server.admin
    path = f"/v3/{a.project_id}/vaults"
    r = _signed_for(server, path, "limit=1&limit=5", "limit=5&limit=1")
    assert_error(r, 400, "BackupService")
    assert "limit" in r.json()["error_msg"]
    assert_error(raw(server, "GET", f"/v3/{a.project_id}/backups", ak=a.ak, sk=a.sk, query="offset=0&offset=1"),
                 400, "BackupService")
    # list parameters may repeat (status and id of the backup list, id of the vault list)
    r = raw(server, "GET", f"/v3/{a.project_id}/backups", ak=a.ak, sk=a.sk, query="status=available&status=error")
    assert r.status_code == 200, r.text
    r = raw(server, "GET", f"/v3/{a.project_id}/vaults", ak=a.ak, sk=a.sk, query="id=x&id=y")
    assert r.status_code == 200 and r.json()["count"] == 0, r.text


def test_plus_in_a_query_cannot_borrow_a_signature(server):
    """A request signed for ``name=a%2Bb`` (a plus) and sent as ``name=a+b`` (a space, once decoded)
    asks something else, so its signature does not verify."""
    a = server.admin
    path = f"/v3/{a.project_id}/vaults"
    r = _signed_for(server, path, "name=a%2Bb", "name=a+b")
    assert_error(r, 401, "APIGW")
    # and a client that writes a space as + (form encoding) is understood and verified
    assert _signed_for(server, path, "name=a+b", "name=a+b").status_code == 200
    assert _signed_for(server, path, "name=a%20b", "name=a+b").status_code == 200


def test_revoked_key_stops_at_once_despite_the_cache(server):
    """Access keys are cached briefly; deleting one through the API drops it from the cache."""
    admin = api(server)
    c = admin.post("/iam/credentials", {})["credential"]
    mine = api(server, Creds(c["access_key"], c["secret_key"], server.admin.project_id))
    assert "vaults" in mine.get("/vaults")  # now cached
    admin.delete(f"/iam/credentials/{c['access_key']}")
    with pytest.raises(ClientError) as e:
        mine.get("/vaults")
    assert e.value.status == 401


@pytest.mark.parametrize("vault_id", ["%2e%2e", "a%20b", "%41"])
def test_an_id_with_percent_escapes_is_not_found_rather_than_a_bad_signature(server, vault_id):
    """The SDK sends such an id percent-encoded once more, and its signer decodes the path it sends once:
    the service must too (it had decoded twice: 401 ``APIGW.0301``)."""
    from huaweicloudsdkcbr.v1 import ShowAgentRequest, ShowVaultRequest

    client = sdk(server, server.admin)
    for call in (lambda: client.show_vault(ShowVaultRequest(vault_id=vault_id)),
                 lambda: client.show_agent(ShowAgentRequest(agent_id=vault_id))):
        with pytest.raises(ClientRequestException) as e:
            call()
        assert e.value.status_code == 404, (e.value.error_code, e.value.error_msg)


@pytest.mark.parametrize("vault_id", ["", "."])
def test_an_empty_id_is_not_found_rather_than_redirected(server, vault_id):
    """The SDK's client turns ``/vaults/.`` and ``/vaults/`` into ``/vaults/``; a redirect to ``/vaults``
    is a 3xx without a body, which the SDK takes for success: a delete that deleted nothing said done."""
    from huaweicloudsdkcbr.v1 import DeleteVaultRequest, UnregisterAgentRequest

    client = sdk(server, server.admin)
    for call in (lambda: client.delete_vault(DeleteVaultRequest(vault_id=vault_id)),
                 lambda: client.unregister_agent(UnregisterAgentRequest(agent_id=vault_id))):
        with pytest.raises(ClientRequestException) as e:
            call()
        assert e.value.status_code == 404
    a = server.admin
    assert_error(raw(server, "GET", f"/v3/{a.project_id}/vaults/", ak=a.ak, sk=a.sk), 404, "APIGW")
