"""Bad input on every route answers 400 (413 for an oversized body) with the CBR error body naming what
is wrong, never a 500, and is refused before any work: integer parameters have bounds, list filters
follow the same rules on every list (routes/common.py), every list and string of every request body is
bounded."""

from __future__ import annotations

import time

import pytest
from huaweicloudsdkcbr.v1 import ListBackupsRequest, ListOpLogsRequest, ListVaultRequest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.support.clients import api, fill_ids, sdk, signed, task_ok

HUGE = "99999999999999999999"  # beyond a 64-bit integer


@pytest.fixture(scope="module")
def ids(server, tmp_path_factory):
    """A disk in a vault with one backup, and a policy: real ids for the routes below."""
    d = tmp_path_factory.mktemp("bounds")
    c = api(server)
    img = d / "disk.img"
    img.write_bytes(b"bounds" * 50_000)
    disk = c.post("/inventory/disks", {"name": f"bounds-{server.backend}", "path": str(img)})["disk"]
    vault = c.post("/vaults", {"vault": {"name": f"bounds-{server.backend}", "billing": {
        "object_type": "disk", "size": 10}, "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})["checkpoint"]
    backup = cp["vault"]["resources"][0]["backup_id"]
    task_ok(c, c.get(f"/backups/{backup}")["backup"]["task_id"])
    policy = c.post("/policies", {"policy": {
        "name": f"bounds-{server.backend}", "operation_type": "backup", "enabled": False,
        "operation_definition": {"max_backups": 3},
        "trigger": {"properties": {"pattern": ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=03;BYMINUTE=00"]}}}})["policy"]
    return {"vault": vault["id"], "disk": disk["id"], "backup": backup, "policy": policy["id"], "dir": str(d)}


def assert_400(r, *words: str, status: int = 400):
    assert r.status_code == status, (r.status_code, r.text[:400])
    body = r.json()
    assert set(body) == {"error_code", "error_msg"}, body
    for w in words:
        assert w in body["error_msg"], (w, body["error_msg"])


# ------------------------------------------------------------------------------------ integers in queries
LISTS = ["/vaults", "/backups", "/operation-logs", "/inventory/disks", "/protectables/OS::Cinder::Volume/instances",
         "/storage_usage", "/iam/audit-events"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("query", [{"offset": HUGE}, {"limit": HUGE}, {"offset": "-1"}, {"limit": "0"},
                                   {"limit": "1001"}, {"offset": "1e3"}, {"limit": "ten"}])
def test_page_parameters_are_bounded(server, path, query):
    name = next(iter(query))
    assert_400(signed(api(server), "GET", path, params=query), name)


def test_policy_count_parameters_are_bounded(server, ids):
    c = api(server)
    assert_400(signed(c, "GET", f"/policies/{ids['policy']}/executions", params={"limit": HUGE}), "limit")
    assert_400(signed(c, "GET", f"/policies/{ids['policy']}/preview", params={"next": HUGE}), "next")


def test_sdk_huge_offset_is_a_400(server):
    """The official SDK sends what it is given; a 20-digit offset was a 500 (integer too large for SQLite)."""
    c = sdk(server)
    for call in (lambda: c.list_vault(ListVaultRequest(offset=int(HUGE))),
                 lambda: c.list_backups(ListBackupsRequest(offset=int(HUGE))),
                 lambda: c.list_op_logs(ListOpLogsRequest(offset=int(HUGE)))):
        with pytest.raises(ClientRequestException) as e:
            call()
        assert e.value.status_code == 400 and "offset" in e.value.error_msg


# ------------------------------------------------------------------------------------ list filters
# (list, the filters it has): every list applies the same rules to the same parameter.
FILTERS = {
    "/vaults": ("status", "time", "sort", "name"),
    "/backups": ("status", "time", "sort", "name"),
    "/operation-logs": ("status", "time", "sort", "vault_name"),
    "/iam/audit-events": ("outcome", "time", "sort", "user_name"),
    "/inventory/disks": ("status", "sort", "name"),
    "/protectables/OS::Cinder::Volume/instances": ("status", "sort", "name"),
}
BAD = {
    "status": [({"status": "bogus"}, "status")],
    "outcome": [({"outcome": "bogus"}, "outcome")],
    "time": [({"start_time": "notatime"}, "start_time"), ({"end_time": "2024-13-45"}, "end_time"),
             ({"start_time": "2024-02-01T00:00:00Z", "end_time": "2024-01-01T00:00:00Z"}, "start_time")],
    "sort": [({"sort": ";drop"}, "sort"), ({"sort": "created_at:sideways"}, "sort"),
             ({"sort": "secret_sealed"}, "sort")],
}
CASES = [(path, query, word) for path, kinds in FILTERS.items() for kind in kinds
         for query, word in BAD.get(kind, [({kind: "\x00"}, kind), ({kind: "x" * 256}, kind)])]


@pytest.mark.parametrize("path,query,word", CASES, ids=[f"{p} {q}"[:80] for p, q, _ in CASES])
def test_list_filters_follow_the_same_rules_everywhere(server, path, query, word):
    assert_400(signed(api(server), "GET", path, params=query), word)


def test_name_filter_matches_literally(server, ids):
    """``%`` and ``_`` are characters, not wildcards: ``name=%`` is not "everything"."""
    c = api(server)
    assert c.get("/vaults", name=f"bounds-{server.backend}")["count"] == 1
    assert c.get("/vaults", name="%")["count"] == 0
    assert c.get("/vaults", name="_")["count"] == 0
    assert c.get("/backups", name="%")["count"] == 0


def test_vault_list_sorts_and_filters_by_time(server, ids):
    c = api(server)
    names = [v["name"] for v in c.get("/vaults", sort="name:asc")["vaults"]]
    assert names == sorted(names) and len(names) >= 1
    assert c.get("/vaults", start_time="2000-01-01T00:00:00Z")["count"] >= 1
    assert c.get("/vaults", end_time="2000-01-01T00:00:00Z")["count"] == 0
    assert c.get("/vaults", status="available")["count"] >= 1


# ------------------------------------------------------------------------------------ request bodies
def _restore_files(paths):
    return ("POST", "/backups/{backup}/restore-files", {"paths": paths, "destination_path": "{dir}/out"})


_ID = "00000000-0000-0000-0000-000000000000"
_BILLING = {"object_type": "disk", "size": 10}
BODIES = [
    # (method, path, body, the field the 400 names)
    ("POST", "/vaults", {"vault": {"billing": _BILLING, "resources": [
        {"id": f"r{i}", "type": "OS::Cinder::Volume"} for i in range(257)]}}, "resources"),
    ("POST", "/vaults", {"vault": {"billing": _BILLING, "tags": [{"key": f"k{i}"} for i in range(101)]}}, "tags"),
    ("POST", "/vaults", {"vault": {"billing": _BILLING, "name": "n" * 2000}}, "name"),
    ("POST", "/vaults", {"vault": {"billing": {**_BILLING, "size": 10**20}}}, "billing.size"),
    ("POST", "/vaults", {"vault": {"billing": {**_BILLING, "size": "1_000"}}}, "billing.size"),
    ("POST", "/vaults", {"vault": {"billing": {**_BILLING, "size": True}}}, "billing.size"),
    ("POST", "/vaults", {"vault": {"billing": {**_BILLING, "size": "\u0663"}}}, "billing.size"),
    ("POST", "/vaults", {"vault": {"billing": {**_BILLING, "period_num": 10**20}}}, "billing.period_num"),
    ("POST", "/vaults", {"vault": {"billing": _BILLING, "threshold": 10**20}}, "threshold"),
    ("POST", "/vaults", {"vault": {"billing": _BILLING, "bind_rules": {"tags": [{"key": "k"}] * 101}}}, "bind_rules"),
    ("PUT", "/vaults/{vault}", {"vault": {"billing": {"size": 10**20}}}, "billing.size"),
    ("PUT", "/vaults/{vault}", {"vault": {"description": "d" * 5000}}, "description"),
    ("POST", "/vaults/{vault}/addresources", {"resources": [{"id": _ID, "type": "OS::Cinder::Volume"}] * 257},
     "resources"),
    ("POST", "/vaults/{vault}/addresources", {"resources": [{"id": _ID, "type": "OS::Cinder::Volume",
                                                             "extra_info": {"exclude_volumes": ["x"] * 65}}]},
     "exclude_volumes"),
    ("POST", "/vaults/{vault}/removeresources", {"resource_ids": [f"r{i}" for i in range(257)]}, "resource_ids"),
    ("POST", "/vaults/{vault}/removeresources", {"resource_ids": ["{disk}", "{disk}"]}, "resource_ids"),
    ("POST", "/vaults/{vault}/associatepolicy", {"add_policy_ids": [f"p{i}" for i in range(17)]}, "add_policy_ids"),
    ("POST", "/inventory/servers", {"name": "s", "system_disk": "{disk}", "data_disks": [f"d{i}" for i in range(61)]},
     "data_disks"),
    ("POST", "/inventory/disks", {"name": "d", "path": "/tmp/" + "p" * 5000}, "path"),
    ("POST", "/inventory/file-systems", {"name": "f" * 2000, "path": "/tmp/x"}, "name"),
    ("POST", "/checkpoints", {"checkpoint": {"vault_id": "{vault}", "parameters": {
        "resources": [f"r{i}" for i in range(257)]}}}, "resources"),
    ("POST", "/checkpoints", {"checkpoint": {"vault_id": "{vault}", "parameters": {
        "resources": ["{disk}", "{disk}"]}}}, "resources"),
    ("POST", "/checkpoints", {"checkpoint": {"vault_id": "{vault}", "parameters": {
        "resource_details": [{"id": "x"}] * 257}}}, "resource_details"),
    ("POST", "/checkpoints", {"checkpoint": {"vault_id": "{vault}", "parameters": {
        "resource_details": [{"x": list(range(101))}]}}}, "resource_details"),
    ("POST", "/checkpoints", {"checkpoint": {"vault_id": "{vault}", "parameters": {
        "retention_duration_days": 10**20}}}, "retention_duration_days"),
    ("POST", "/backups/{backup}/restore", {"restore": {"volume_id": "{disk}", "mappings": [
        {"backup_id": "b", "volume_id": "v"}] * 65}}, "mappings"),
    ("POST", "/backups/{backup}/restore", {"restore": {"volume_id": "{disk}", "details": {
        "destination_path": "/" + "d" * 5000}}}, "destination_path"),
    ("POST", "/backups/{backup}/create-disk", {"name": "n", "path": "{dir}/new.img", "size_bytes": 2**70},
     "size_bytes"),
    ("PUT", "/backups/{backup}", {"backup": {"name": "n" * 2000}}, "name"),
    _restore_files([f"/f{i}" for i in range(101)]) + ("paths",),
    _restore_files(["/etc", "/etc/"]) + ("paths",),
    _restore_files([]) + ("paths",),
    ("POST", "/policies", {"policy": {"name": "p", "trigger": {"properties": {"pattern": ["x"] * 101}}}}, "policy"),
    ("POST", "/policies", {"policy": {"name": "p" * 2000}}, "policy"),
    ("POST", "/policies", {"policy": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {}}}}}}}}}}}, "policy"),
    ("PUT", "/policies/{policy}", {"policy": {"operation_definition": {"max_backups": 10**30}}}, "policy"),
    ("POST", "/policies/{policy}/prune", {"vault_id": "v" * 100}, "vault_id"),
    ("POST", "/iam/users", {"name": "u" * 2000}, "name"),
    ("POST", "/iam/credentials", {"description": "d" * 2000}, "description"),
]


@pytest.mark.parametrize("method,path,body,field", BODIES, ids=[f"{m} {p} {f}" for m, p, _, f in BODIES])
def test_every_body_field_is_bounded(server, ids, method, path, body, field):
    assert_400(signed(api(server), method, fill_ids(path, ids), body=fill_ids(body, ids)), field)


def test_restore_files_refuses_ten_thousand_paths_at_once(server, ids):
    """10,000 paths took 2 s to accept and held a worker for minutes; now they are refused outright."""
    t0 = time.monotonic()
    method, path, body = _restore_files([f"/file-{i}" for i in range(10_000)])
    r = signed(api(server), method, fill_ids(path, ids), body=fill_ids(body, ids))
    assert_400(r, "paths", "100")
    assert time.monotonic() - t0 < 2
    tasks = api(server).get("/operation-logs", operation_type="restore")["operation_logs"]
    assert not [t for t in tasks if t["status"] in ("waiting", "running")]


def test_oversized_body_is_a_413(server):
    r = signed(api(server), "POST", "/vaults", body={"vault": {"billing": _BILLING, "description": "x" * (2 << 20)}})
    assert_400(r, "larger", status=413)


def test_backup_marker_pages_after_the_marker(server, ids):
    """``marker`` (the SDK's paging by id) starts after that backup, counted by the database; a backup
    not in the list is a 400."""
    c = api(server)
    for _ in range(2):
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": ids["vault"]}})["checkpoint"]
        task_ok(c, c.get(f"/backups/{cp['vault']['resources'][0]['backup_id']}")["backup"]["task_id"])
    client = sdk(server)
    every = [b.id for b in client.list_backups(ListBackupsRequest(vault_id=ids["vault"])).backups]
    assert len(every) >= 3
    after = client.list_backups(ListBackupsRequest(vault_id=ids["vault"], marker=every[0], limit=1))
    assert [b.id for b in after.backups] == [every[1]] and after.count == len(every)
    after = client.list_backups(ListBackupsRequest(vault_id=ids["vault"], marker=every[0], offset=1))
    assert [b.id for b in after.backups] == every[2:]
    with pytest.raises(ClientRequestException) as e:
        client.list_backups(ListBackupsRequest(vault_id=ids["vault"], marker="no-such-backup"))
    assert e.value.status_code == 400 and "marker" in e.value.error_msg
