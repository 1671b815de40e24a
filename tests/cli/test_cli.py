"""The ``cbr`` CLI as a user runs it: separate processes, --json output, errors and exit codes."""

from __future__ import annotations

import pytest

from tests.support.clients import api, cli, task_ok

GB = 1024**3


@pytest.fixture()
def images(tmp_path):
    paths = {}
    for name, size in (("sys", 2 * GB), ("data", GB)):
        p = tmp_path / f"{name}.img"
        with open(p, "wb") as f:
            f.truncate(size)
        paths[name] = str(p)
    return paths


def ok(r):
    assert r.code == 0, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    return r


def test_inventory_and_vault_lifecycle(server, images, tmp_path):
    sfx = server.backend
    sys_disk = ok(cli(server, "disk", "register", "--name", f"sys-{sfx}", "--path", images["sys"], "--json")).json()
    assert sys_disk["size_bytes"] == 2 * GB and sys_disk["status"] == "available" and sys_disk["id"]
    data_disk = ok(cli(server, "disk", "register", "--name", f"data-{sfx}", "--path", images["data"],
                       "--az", "local-1a", "--json")).json()
    assert data_disk["availability_zone"] == "local-1a" and data_disk["size_bytes"] == 1024**3
    srv = ok(cli(server, "server", "register", "--name", f"web-{sfx}", "--system-disk", sys_disk["id"],
                 "--data-disk", f"data-{sfx}", "--json")).json()
    assert [d["role"] for d in srv["disks"]] == ["system", "data"] and srv["size_bytes"] == 3 * GB
    assert ok(cli(server, "disk", "show", sys_disk["id"], "--json")).json()["status"] == "in-use"
    fsdir = tmp_path / "share"
    (fsdir / "sub").mkdir(parents=True)
    (fsdir / "sub" / "f.txt").write_bytes(b"x" * 1000)
    fs = ok(cli(server, "fs", "register", "--name", f"share-{sfx}", "--path", str(fsdir), "--json")).json()
    measured = api(server).get("/operation-logs", operation_type="measure", resource_id=fs["id"])["operation_logs"]
    task_ok(api(server), measured[0]["id"])  # a file system's size is counted in the background
    assert ok(cli(server, "fs", "show", fs["id"], "--json")).json()["size_bytes"] == 1000

    listed = ok(cli(server, "server", "list", "--json")).json()
    assert srv["id"] in [s["id"] for s in listed]
    human = ok(cli(server, "disk", "list"))
    assert "sys-" in human.out

    v = ok(cli(server, "vault", "create", "--name", f"cli-{sfx}", "--type", "server", "--size", "50",
               "--resource", srv["id"], "--json")).json()
    assert v["billing"]["object_type"] == "server" and [r["id"] for r in v["resources"]] == [srv["id"]]
    assert v["encrypted"] is True
    shown = ok(cli(server, "vault", "show", f"cli-{sfx}", "--json")).json()
    assert shown["id"] == v["id"]
    upd = ok(cli(server, "vault", "update", v["id"], "--size", "60", "--name", f"cli2-{sfx}", "--json")).json()
    assert upd["billing"]["size"] == 60 and upd["name"] == f"cli2-{sfx}"

    fv = ok(cli(server, "vault", "create", "--type", "turbo", "--size", "10", "--no-encryption", "--json")).json()
    assert fv["name"].startswith("vault_") and fv["encrypted"] is False
    added = ok(cli(server, "vault", "add-resource", fv["id"], fs["id"], "--json")).json()
    assert added["add_resource_ids"] == [fs["id"]]
    removed = ok(cli(server, "vault", "remove-resource", fv["id"], fs["id"], "--yes", "--json")).json()
    assert removed["remove_resource_ids"] == [fs["id"]]

    deleted = ok(cli(server, "vault", "delete", fv["id"], "--wait", "--yes", "--json")).json()
    assert deleted["status"] == "success"
    tasks = ok(cli(server, "task", "list", "--type", "vault_delete", "--vault", fv["id"], "--json")).json()
    assert len(tasks) == 1 and tasks[0]["status"] == "success"
    assert ok(cli(server, "task", "show", tasks[0]["id"], "--json")).json()["id"] == tasks[0]["id"]

    ok(cli(server, "server", "stop", srv["id"]))
    assert ok(cli(server, "server", "show", srv["id"], "--json")).json()["status"] == "stopped"
    # removing a server frees its disks; the disks can then be removed
    r = cli(server, "disk", "remove", sys_disk["id"], "--yes")
    assert r.code == 1 and "attached to a server" in r.err
    ok(cli(server, "vault", "remove-resource", v["id"], srv["id"], "--yes"))
    ok(cli(server, "server", "remove", srv["id"], "--yes"))
    assert ok(cli(server, "disk", "show", sys_disk["id"], "--json")).json()["status"] == "available"
    ok(cli(server, "disk", "remove", sys_disk["id"], "--yes", "--json"))


def test_errors_exit_non_zero_with_server_message(server, images, tmp_path):
    r = cli(server, "vault", "create", "--type", "disk", "--size", "5")
    assert r.code == 1 and "between 10 and 10,485,760 GB" in r.err and "BackupService" in r.err
    r = cli(server, "vault", "show", "00000000-0000-0000-0000-000000000000")
    assert r.code == 1 and "not found" in r.err
    r = cli(server, "disk", "register", "--name", "x", "--path", str(tmp_path / "not-here.img"))  # (inside the roots)
    assert r.code == 1 and "cannot open disk" in r.err
    r = cli(server, "vault", "create", "--type", "disk", "--size", "100", "--name", "bad name")
    assert r.code == 1 and "vault name" in r.err


def test_admin_commands(server):
    sfx = server.backend
    pr = ok(cli(server, "admin", "project", "create", f"proj-{sfx}", "--json")).json()
    assert pr["name"] == f"proj-{sfx}"
    assert pr["id"] in [p["id"] for p in ok(cli(server, "admin", "project", "list", "--json")).json()]
    u = ok(cli(server, "admin", "user", "create", f"alice-{sfx}", "--role", "readonly", "--json")).json()
    assert u["role"] == "readonly"
    cred = ok(cli(server, "admin", "credential", "create", "--user", f"alice-{sfx}", "--json")).json()
    assert len(cred["access_key"]) == 20 and len(cred["secret_key"]) == 40
    from tests.support.server import Creds
    alice = Creds(cred["access_key"], cred["secret_key"], pr["id"])
    me = ok(cli(server, "whoami", "--json", creds=alice)).json()
    assert me["user_name"] == f"alice-{sfx}" and me["project_id"] == pr["id"] and me["role"] == "readonly"
    r = cli(server, "vault", "create", "--type", "disk", "--size", "10", creds=alice)
    assert r.code == 1 and "read-only" in r.err
    events = ok(cli(server, "admin", "audit", "list", "--trace", "createUser", "--json")).json()
    assert any(e["resource_name"] == f"alice-{sfx}" and e["outcome"] == "success" for e in events)
    acct = ok(cli(server, "admin", "account", "create", f"tenant-{sfx}", "--json")).json()
    assert acct["credential"]["access_key"] and acct["project"]["id"]
