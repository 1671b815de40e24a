"""File-system (SFS Turbo) backups end to end: the official SDK backs up a directory tree into a turbo
vault and restores it into a new file system; the CLI creates a file system from a backup, browses
backups and restores single files; the guide's refusals are clear 4xx errors."""

from __future__ import annotations

import os
import shutil

import pytest
from huaweicloudsdkcbr.v1 import (
    BackupRestore,
    BackupRestoreReq,
    BillingCreate,
    CheckpointParam,
    CreateCheckpointRequest,
    CreateVaultRequest,
    ResourceCreate,
    RestoreBackupRequest,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.cli.client import ClientError
from tests.support.clients import api, cli, sdk, sdk_wait_backups, task_ok
from tests.support.trees import build_tree, snapshot


def checkpoint(c, client, vault_id, **params):
    cp = c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(
        vault_id=vault_id, parameters=CheckpointParam(**params) if params else None)))).checkpoint
    return client.get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]


def test_sfs_turbo_backup_and_new_file_system(server, tmp_path):
    c, client, sfx = sdk(server), api(server), server.backend
    src = build_tree(tmp_path / "share", seed=7)
    before = snapshot(src)
    fs = client.post("/inventory/file-systems", {"name": f"share-{sfx}", "path": src})["file_system"]
    billing = BillingCreate(consistent_level="crash_consistent", object_type="turbo", protect_type="backup", size=10)
    vault = c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=VaultCreate(
        name=f"turbo-{sfx}", billing=billing, resources=[ResourceCreate(id=fs["id"], type="OS::Sfs::Turbo")])))).vault
    assert vault.billing.spec_code == "vault.backup.turbo.normal"
    b1 = sdk_wait_backups(c, [checkpoint(c, client, vault.id)])[0]
    assert b1.resource_type == "OS::Sfs::Turbo" and b1.name.startswith("manualbk_")
    raw = client.get(f"/backups/{b1.id}")["backup"]
    assert raw["logical_bytes"] > 3 * 1024 * 1024 and raw["added_bytes"] > 0

    # a new, empty file system receives the backup (guide 6.5) through the SDK's restore_backup
    new_dir = tmp_path / "restored"
    new_dir.mkdir()
    new_fs = client.post("/inventory/file-systems", {"name": f"restored-{sfx}", "path": str(new_dir)})["file_system"]
    c.restore_backup(RestoreBackupRequest(backup_id=b1.id, body=BackupRestoreReq(
        restore=BackupRestore(resource_id=new_fs["id"]))))
    task = client.get("/operation-logs", operation_type="restore", vault_id=vault.id)["operation_logs"][0]
    task_ok(client, task["id"])
    assert snapshot(new_dir) == before

    # restoring over the original file system is refused (guide 1.6)
    with pytest.raises(ClientRequestException) as e:
        c.restore_backup(RestoreBackupRequest(backup_id=b1.id, body=BackupRestoreReq(
            restore=BackupRestore(resource_id=fs["id"]))))
    assert e.value.status_code == 400 and "original file system" in e.value.error_msg
    # ... and so is a target that is not empty
    with pytest.raises(ClientRequestException) as e:
        c.restore_backup(RestoreBackupRequest(backup_id=b1.id, body=BackupRestoreReq(
            restore=BackupRestore(resource_id=new_fs["id"]))))
    assert e.value.status_code == 409 and "not empty" in e.value.error_msg

    # an incremental backup after a change stores little, and restores the new state
    with open(os.path.join(src, "docs", "f-new.txt"), "w") as f:
        f.write("a new file\n")
    os.unlink(os.path.join(src, "dangling"))
    b2 = sdk_wait_backups(c, [checkpoint(c, client, vault.id, name="second")])[0]
    raw2 = client.get(f"/backups/{b2.id}")["backup"]
    assert raw2["incremental"] is True and raw2["added_bytes"] < raw["added_bytes"] / 10
    after = snapshot(src)

    out = cli(server, "fs", "create-from-backup", b2.id, "--name", f"cli-fs-{sfx}", "--path",
              str(tmp_path / "via-cli"), "--wait", "--json")
    assert out.code == 0, out.err
    made = out.json()
    assert made["status"] == "available" and made["type"] == "OS::Sfs::Turbo" and made["id"]
    assert snapshot(tmp_path / "via-cli") == after
    # the first backup is still the old state (every backup is a virtual full)
    out = cli(server, "fs", "create-from-backup", b1.id, "--name", f"cli-fs1-{sfx}", "--path",
              str(tmp_path / "via-cli-1"), "--wait", "--json")
    assert out.code == 0, out.err
    assert snapshot(tmp_path / "via-cli-1") == before


def test_browse_and_single_file_restore(server, tmp_path):
    client, sfx = api(server), server.backend
    src = build_tree(tmp_path / "tree", seed=9)
    fs = client.post("/inventory/file-systems", {"name": f"browse-{sfx}", "path": src})["file_system"]
    v = client.post("/vaults", {"vault": {"name": f"browse-{sfx}", "billing": {
        "object_type": "turbo", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": fs["id"], "type": "OS::Sfs::Turbo"}]}})["vault"]
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = client.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(client, b["task_id"])

    top = cli(server, "backup", "ls", b["id"], "--json")
    assert top.code == 0, top.err
    names = {e["name"]: e["type"] for e in top.json()}
    assert names["docs"] == "dir" and names["link-to-docs"] == "symlink" and names["pipe"] == "fifo"
    docs = {e["name"] for e in cli(server, "backup", "ls", b["id"], "/docs", "--json").json()}
    assert docs == set(os.listdir(os.path.join(src, "docs")))
    assert "f" in cli(server, "backup", "ls", b["id"], "/docs").out  # human table

    dest = tmp_path / "single"
    r = cli(server, "backup", "restore-files", b["id"], "/data/random.bin", "/docs", "--to", str(dest), "--wait", "--json")
    assert r.code == 0, r.err
    assert snapshot(dest / "docs") == {k[len("docs/"):]: v for k, v in snapshot(src).items() if k.startswith("docs/")}
    with open(dest / "random.bin", "rb") as a, open(os.path.join(src, "data", "random.bin"), "rb") as b2:
        assert a.read() == b2.read()

    # bad inputs: a path outside the backup, a destination that would be overwritten, the FS not available
    with pytest.raises(ClientError) as e:
        client.get(f"/backups/{b['id']}/files", path="/no/such/dir")
    assert e.value.status == 404
    with pytest.raises(ClientError) as e:
        client.post(f"/backups/{b['id']}/restore-files", {"paths": ["/nope.txt"], "destination_path": str(dest)})
    assert e.value.status == 404
    with pytest.raises(ClientError) as e:
        client.post(f"/backups/{b['id']}/restore-files", {"paths": ["/docs"], "destination_path": str(dest)})
    assert e.value.status == 409 and "already exists" in e.value.message
    with pytest.raises(ClientError) as e:
        client.get(f"/backups/{b['id']}/files", path="/../../etc")
    assert e.value.status in (400, 404)
    shutil.rmtree(src)
    with pytest.raises(ClientError) as e:
        client.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    assert e.value.status == 409 and "error" in e.value.message


def _children_of(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def test_big_file_system_restores_in_two_processes_inside_the_service(server, tmp_path):
    """A file system above the engine's PARALLEL_MIN (64 MiB) is restored by the service in two
    processes (the task's worker thread forks the second one from the running server, threads,
    catalog connections and all): the result is exact, the task says so, and the server is left
    with no child process."""
    from opencbr.engine.tree.restore.parts import PARALLEL_MIN

    client, sfx = api(server), server.backend
    src = build_tree(tmp_path / "big", seed=11)
    rnd = __import__("random").Random(5)
    os.makedirs(os.path.join(src, "blobs"))
    for i in range(9):  # (incompressible, so the backup's logical size is the restore's size)
        with open(os.path.join(src, "blobs", f"b{i}.bin"), "wb") as f:
            f.write(rnd.randbytes(PARALLEL_MIN // 8 + 12345))
    before = snapshot(src)
    fs = client.post("/inventory/file-systems", {"name": f"big-{sfx}", "path": src})["file_system"]
    v = client.post("/vaults", {"vault": {"name": f"big-{sfx}", "billing": {
        "object_type": "turbo", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": fs["id"], "type": "OS::Sfs::Turbo"}]}})["vault"]
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})["checkpoint"]
    bid = client.get("/backups", checkpoint_id=cp["id"])["backups"][0]["id"]
    c = sdk(server)
    sdk_wait_backups(c, [bid])
    assert client.get(f"/backups/{bid}")["backup"]["logical_bytes"] > PARALLEL_MIN
    out = cli(server, "fs", "create-from-backup", bid, "--name", f"big-new-{sfx}", "--path",
              str(tmp_path / "big-new"), "--wait", "--json")
    assert out.code == 0, out.err
    assert out.json()["status"] == "available"
    assert snapshot(tmp_path / "big-new") == before
    # the service's only children are its worker processes, and they are left with none of their own
    workers = server.worker_pids()
    assert sorted(_children_of(server.proc.pid)) == sorted(workers)
    assert [kid for w in workers for kid in _children_of(w)] == []
    logs = client.get("/operation-logs", vault_id=v["id"])["operation_logs"]
    results = [t["extra_info"]["restore_result"] for t in logs if "restore_result" in t.get("extra_info", {})]
    assert [r["processes"] for r in results] == [min(2, os.cpu_count() or 1)]  # (one on a 1-CPU machine)


def test_names_that_are_not_utf8_are_browsed_and_restored_as_shown(server, tmp_path):
    """A name that is not UTF-8 is shown with each undecodable byte as ``\\xNN`` (it was a 500 for the
    whole listing), and that shown path -- or the bytes themselves on the command line -- names it for
    browsing and restore-files. A name that really holds a backslash and an x stays itself."""
    client, sfx = api(server), server.backend
    src = tmp_path / "odd"
    os.makedirs(os.fsencode(src) + b"/dir\xff")
    for name, data in ((b"dir\xff/inner.txt", b"inner"), (b"caf\xe9.txt", b"latin-1"), (b"lit\\xff", b"literal"),
                       (b"lit\xff", b"byte")):
        with open(os.fsencode(src) + b"/" + name, "wb") as f:
            f.write(data)
    fs = client.post("/inventory/file-systems", {"name": f"odd-{sfx}", "path": str(src)})["file_system"]
    v = client.post("/vaults", {"vault": {"name": f"odd-{sfx}", "billing": {
        "object_type": "turbo", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": fs["id"], "type": "OS::Sfs::Turbo"}]}})["vault"]
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = client.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(client, b["task_id"])

    top = sorted((e["name"], e["path"]) for e in client.get(f"/backups/{b['id']}/files", path="/")["entries"])
    # (lit\\xff and lit<0xff> show alike: a shown path names the literal one where the backup holds it)
    assert top == [("caf\\xe9.txt", "/caf\\xe9.txt"), ("dir\\xff", "/dir\\xff"), ("lit\\xff", "/lit\\xff"),
                   ("lit\\xff", "/lit\\xff")], top
    inner = client.get(f"/backups/{b['id']}/files", path="/dir\\xff")["entries"]
    assert [e["name"] for e in inner] == ["inner.txt"]
    raw = cli(server, "backup", "ls", b["id"], os.fsdecode(b"/dir\xff"), "--json")  # the bytes, as a shell passes them
    assert raw.code == 0, raw.err
    assert [e["name"] for e in raw.json()] == ["inner.txt"]

    dest = tmp_path / "picked"
    task_ok(client, client.post(f"/backups/{b['id']}/restore-files", {
        "paths": ["/dir\\xff"], "destination_path": str(dest)})["operation_log_id"])
    d = os.fsencode(dest)
    assert os.listdir(d) == [b"dir\xff"]
    with open(d + b"/dir\xff/inner.txt", "rb") as f:
        assert f.read() == b"inner"
    r = cli(server, "backup", "restore-files", b["id"], os.fsdecode(b"/caf\xe9.txt"), "--to", str(tmp_path / "byte"),
            "--wait", "--json")  # the bytes themselves on the command line
    assert r.code == 0, r.err
    with open(os.fsencode(tmp_path / "byte") + b"/caf\xe9.txt", "rb") as f:
        assert f.read() == b"latin-1"
    task_ok(client, client.post(f"/backups/{b['id']}/restore-files", {
        "paths": ["/lit\\xff"], "destination_path": str(tmp_path / "lit")})["operation_log_id"])
    assert os.listdir(tmp_path / "lit") == ["lit\\xff"]
    with open(tmp_path / "lit" / "lit\\xff", "rb") as f:
        assert f.read() == b"literal"
