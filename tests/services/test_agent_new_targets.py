"""New resources from backups on agents' hosts (guide 6.4, 6.5, 13.4.8): a disk image and a file system
created on the host a backup was read on and on another agent's host, through the agents (the service
never opens their files), compared by SHA-256 and file by file; what the agent refuses at run time
(an existing file, a non-empty directory) fails the task and leaves nothing in the catalog; what the
request can tell at once (suffix, another project's agent, a taken path) is refused at once."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from opencbr.cli.client import ClientError
from tests.services.test_agent_backup_sdk import Agent, _checkpoint, _make_disk, _protectable, _sha, _vault
from tests.support.clients import api, cli, new_tenant, sdk, sdk_wait_backups, task_ok, wait_task
from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess
from tests.support.trees import build_tree, snapshot


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("agent-targets"))
    srv = ServerProcess(d, sqlite_url(d), extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def hosts(server, tmp_path_factory):
    """Two agents of the admin's project, each with its own root (two hosts)."""
    base = tmp_path_factory.mktemp("hosts")
    roots = [base / "a", base / "b"]
    for r in roots:
        r.mkdir()
    _make_disk(roots[0] / "src.img", 8, seed=11)  # (there when the agent first walks its roots)
    agents = [Agent(server, base / f"agent-{i}", r) for i, r in enumerate(roots)]
    _wait_online(server, agents)
    yield list(zip(agents, roots, strict=True))
    for a in agents:
        a.stop()



def _wait_online(server, agents, timeout: float = 60) -> None:
    """Until the service has heard from every agent (as a user waits for "online" before using a host):
    a request right after enrolment may otherwise meet the state of the poll that ran before ``run``."""
    client, deadline = api(server), time.time() + timeout
    while time.time() < deadline:
        if all(client.get(f"/agents/{a.agent_id}")["agent"]["status"] == "online" for a in agents):
            return
        time.sleep(0.2)
    raise AssertionError(f"agents not online: {[client.get(f'/agents/{a.agent_id}')['agent'] for a in agents]}")

def _fs(client, fs_id: str) -> dict:
    return client.get(f"/inventory/file-systems/{fs_id}")["resource"]


def test_a_new_disk_on_the_same_and_on_another_agent_host(server, hosts):
    c, client = sdk(server), api(server)
    (a, root_a), (b, root_b) = hosts
    disk = _protectable(client, "OS::Cinder::Volume", str(root_a / "src.img"))
    vault = _vault(c, "targets-disk", "disk", disk, "OS::Cinder::Volume")
    backup = sdk_wait_backups(c, [_checkpoint(c, client, vault.id)])[0]
    want = _sha(root_a / "src.img")

    same = client.post(f"/backups/{backup.id}/create-disk", {"name": "copy-a", "path": str(root_a / "copy.img"),
                                                              "agent_id": a.agent_id})
    other = client.post(f"/backups/{backup.id}/create-disk", {"name": "copy-b", "path": str(root_b / "copy.img"),
                                                               "agent_id": b.agent_id, "size_bytes": 12 << 20})
    task_ok(client, same["operation_log_id"])
    task_ok(client, other["operation_log_id"])
    assert _sha(root_a / "copy.img") == want
    grown = (root_b / "copy.img").read_bytes()  # larger than the source: the backup, then zeros (6.4)
    assert len(grown) == 12 << 20 and grown[8 << 20:] == bytes(4 << 20)
    assert _sha(root_a / "src.img") == want
    assert hashlib.sha256(grown[:8 << 20]).hexdigest() == want
    shown = cli(server, "agent", "show", a.agent_id)  # the host's last backup, as the CLI shows it
    assert shown.code == 0 and "Last backup" in shown.out, shown.err
    last = client.get(f"/agents/{a.agent_id}")["agent"]["last_backup_time"]
    line = next(x for x in shown.out.splitlines() if x.strip().startswith("Last backup"))
    assert last and any(ch.isdigit() for ch in line), shown.out  # a time, not empty
    made = client.get(f"/inventory/disks/{other['disk_id']}")["resource"]
    assert made["status"] == "available" and made["size_bytes"] == 12 << 20 and made["path"] == str(root_b / "copy.img")
    time.sleep(2.5)  # the agents' next inventories find the images: the disks stay available, nothing doubles
    for out in (same, other):
        assert client.get(f"/inventory/disks/{out['disk_id']}")["resource"]["status"] == "available"
    paths = [i["detail"]["path"] for i in client.get("/protectables/OS::Cinder::Volume/instances")["instances"]]
    assert paths.count(str(root_b / "copy.img")) == 1

    # an existing file is never overwritten: the agent refuses (O_EXCL), the task fails, the row goes
    (root_b / "taken.img").write_bytes(b"keep me")
    out = client.post(f"/backups/{backup.id}/create-disk", {"name": "clash", "path": str(root_b / "taken.img"),
                                                             "agent_id": b.agent_id})
    done = wait_task(client, out["operation_log_id"])
    assert done["status"] == "failed" and "agent" in done["error_info"]["message"], done
    assert (root_b / "taken.img").read_bytes() == b"keep me"
    with pytest.raises(ClientError) as e:
        client.get(f"/inventory/disks/{out['disk_id']}")
    assert e.value.status == 404

    # refused at once: not an image name; a path already a resource of that agent; another tenant's agent
    for body, status in (({"path": str(root_b / "copy.bin")}, 400), ({"path": str(root_b / "copy.img")}, 409)):
        with pytest.raises(ClientError) as e:
            client.post(f"/backups/{backup.id}/create-disk", {"name": "x", "agent_id": b.agent_id, **body})
        assert e.value.status == status, e.value
    other_tenant = api(server, new_tenant(server, "targets-other"))
    with pytest.raises(ClientError) as e:
        other_tenant.post(f"/backups/{backup.id}/create-disk", {"name": "x", "path": str(root_b / "y.img"),
                                                                 "agent_id": b.agent_id})
    assert e.value.status == 404


@pytest.fixture(scope="module")
def www_backup(server, hosts):
    """A file-system backup of directory www on agent a's host, and what www held."""
    c, client = sdk(server), api(server)
    (a, root_a), _ = hosts
    www = Path(build_tree(root_a / "www", seed=7))
    from huaweicloudsdkcbr.v1 import AddAgentPathRequest, AgentAddPathReq

    c.add_agent_path(AddAgentPathRequest(agent_id=a.agent_id, body=AgentAddPathReq(add_path=[str(www)])))
    fs = _protectable(client, "OS::Sfs::Turbo", str(www))
    vault = _vault(c, "targets-fs", "turbo", fs, "OS::Sfs::Turbo")
    return sdk_wait_backups(c, [_checkpoint(c, client, vault.id)])[0], snapshot(www)


def test_a_new_file_system_on_another_agent_host(server, hosts, www_backup):
    client = api(server)
    _, (b, root_b) = hosts
    backup, before = www_backup

    out = client.post(f"/backups/{backup.id}/create-file-system", {"name": "www-copy", "path": str(root_b / "www"),
                                                                   "agent_id": b.agent_id})
    task_ok(client, out["operation_log_id"])
    assert snapshot(root_b / "www") == before
    made = _fs(client, out["file_system_id"])
    assert made["status"] == "available" and made["name"] == "www-copy"
    time.sleep(2.5)  # it is one of the agent's paths now: its inventories keep it
    assert _fs(client, out["file_system_id"])["status"] == "available"
    listed = client.get(f"/agents/{b.agent_id}")["agent"]
    assert str(root_b / "www") in [p["dir_path"] for p in listed["paths"]]

    # single files onto the other host, with the CLI (13.4.8: data to another server)
    picked = cli(server, "backup", "restore-files", backup.id, "/docs", "--to", str(root_b / "picked"),
                 "--agent", b.agent_id, "--wait")
    assert picked.code == 0, picked.err
    assert snapshot(root_b / "picked" / "docs") == {k[len("docs/"):]: v for k, v in before.items()
                                                     if k.startswith("docs/")}

    # a destination no agent could ever write is refused at once, not queued to fail on the host
    for dest in (str(root_b / "nul\x00here"), str(root_b / ("n" * 256))):
        with pytest.raises(ClientError) as e:
            client.post(f"/backups/{backup.id}/restore-files", {"paths": ["/docs"], "destination_path": dest,
                                                                 "agent_id": b.agent_id})
        assert e.value.status == 400, e.value
        with pytest.raises(ClientError) as e:
            client.post(f"/backups/{backup.id}/create-disk", {"name": "x", "path": dest + ".img",
                                                               "agent_id": b.agent_id})
        assert e.value.status == 400, e.value

    # a directory that holds something is not a new file system: the task fails, no row, no agent path
    (root_b / "busy").mkdir()
    (root_b / "busy" / "mine.txt").write_text("mine")
    out = client.post(f"/backups/{backup.id}/create-file-system", {"name": "busy", "path": str(root_b / "busy"),
                                                                   "agent_id": b.agent_id})
    done = wait_task(client, out["operation_log_id"])
    assert done["status"] == "failed" and "not empty" in done["error_info"]["message"], done
    assert sorted(p.name for p in (root_b / "busy").iterdir()) == ["mine.txt"]
    with pytest.raises(ClientError) as e:
        _fs(client, out["file_system_id"])
    assert e.value.status == 404
    listed = client.get(f"/agents/{b.agent_id}")["agent"]
    assert str(root_b / "busy") not in [p["dir_path"] for p in listed["paths"]]


def test_a_failed_new_file_system_leaves_nothing_on_the_host(server, hosts, www_backup):
    """The restore fails after the agent made the directories (the backup's manifest is gone from the
    vault): the row and agent path go, and the agent removes the directories it made for the task
    (tests/providers/agent/test_made_and_disk_files.py: with what a restore wrote in them)."""
    c, client = sdk(server), api(server)
    _, (b, root_b) = hosts
    first, _ = www_backup
    vault_id = client.get(f"/backups/{first.id}")["backup"]["vault_id"]
    backup = sdk_wait_backups(c, [_checkpoint(c, client, vault_id)])[0]  # (nothing changed: quick)
    (manifest,) = Path(server.data_dir).rglob(f"manifests/{backup.id}")
    manifest.unlink()
    target = root_b / "made" / "gone"
    out = client.post(f"/backups/{backup.id}/create-file-system", {"name": "gone", "path": str(target),
                                                                   "agent_id": b.agent_id})
    done = wait_task(client, out["operation_log_id"])
    assert done["status"] == "failed", done
    assert "left_on_host" not in (done.get("extra_info") or {}), done
    assert not (root_b / "made").exists()
    with pytest.raises(ClientError) as e:
        _fs(client, out["file_system_id"])
    assert e.value.status == 404
    assert str(target) not in [p["dir_path"] for p in client.get(f"/agents/{b.agent_id}")["agent"]["paths"]]
