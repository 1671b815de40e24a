"""Console sessions: sign in with AK/SK, then X-Auth-Token on the same API (docs/design.md)."""

from __future__ import annotations

import httpx

from tests.support.clients import api, new_tenant


def login(server, creds, **kw):
    return httpx.post(server.url + "/v3/auth/console-tokens", trust_env=False,
                      json={"access_key": creds.ak, "secret_key": creds.sk, **kw})


def test_token_login_and_use(server):
    a = server.admin
    r = login(server, a)
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["project_id"] == a.project_id and tok["role"] == "admin"
    h = {"X-Auth-Token": tok["token"]}
    ok = httpx.get(f"{server.url}/v3/{a.project_id}/vaults", headers=h, trust_env=False)
    assert ok.status_code == 200 and "vaults" in ok.json()
    # wrong secret, tampered token, another project, a revoked key: all refused with the CBR body
    assert login(server, type(a)(a.ak, "nope", a.project_id)).status_code == 401
    bad = httpx.get(f"{server.url}/v3/{a.project_id}/vaults", headers={"X-Auth-Token": tok["token"][:-2] + "00"},
                    trust_env=False)
    assert bad.status_code == 401 and bad.json()["error_code"].startswith("APIGW")
    other = new_tenant(server, f"token-other-{server.backend}")
    cross = httpx.get(f"{server.url}/v3/{other.project_id}/vaults", headers=h, trust_env=False)
    assert cross.status_code == 403
    assert login(server, a, project_id=other.project_id).status_code == 403
    extra = api(server).post("/iam/credentials", {})["credential"]
    t2 = login(server, type(a)(extra["access_key"], extra["secret_key"], a.project_id)).json()["token"]
    api(server).delete(f"/iam/credentials/{extra['access_key']}")
    gone = httpx.get(f"{server.url}/v3/{a.project_id}/vaults", headers={"X-Auth-Token": t2}, trust_env=False)
    assert gone.status_code == 401 and "revoked" in gone.json()["error_msg"]
