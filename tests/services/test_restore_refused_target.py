"""A server restore whose agent refuses a disk at its open (``in_use``: a device mounted or held by
another program) wrote nothing to that disk nor to those after it. They used to turn ``error``, "a
restore into it did not finish ... it holds a mix of old and restored data: restore it again", the
server stayed stopped, and its backups were refused until a restore overwrote the data the user had
kept by mounting the disk (services/restore.py)."""

from __future__ import annotations

import pytest

from opencbr.catalog.models import Resource
from opencbr.providers.agent import AgentTaskFailed
from opencbr.services import resources, restore
from tests.services.test_images import _backed_up
from tests.support.disks import MiB, registered_disks, sha256
from tests.support.scheduler import drain, read_task


@pytest.fixture()
def web(rctx, owner, roots):
    sd, dd = registered_disks(rctx, owner, roots, {"sys": (2 * MiB, 81), "data": (1 * MiB, 82)})
    with rctx.tx() as s:
        srv = resources.register_server(s, rctx, owner, name="web", system_disk=sd.id, data_disks=[dd.id])
    _, backup_id = _backed_up(rctx, owner, srv, "server", "OS::Nova::Server")
    return srv.id, sd.id, dd.id, backup_id


def _refusing(monkeypatch, disk_id: str) -> None:
    """``disk_id`` is on a host whose agent answers the restore ``in_use``."""
    real = restore._on_host
    monkeypatch.setattr(restore, "_on_host", lambda ctx, rid: rid == disk_id or real(ctx, rid))

    def refuse(ctx, repo, step, span):
        raise restore._agent_failure(AgentTaskFailed("in_use", f"{step['path']} is in use on this host"))

    monkeypatch.setattr(restore, "_restore_on_host", refuse)


def _statuses(ctx, *ids):
    with ctx.read() as s:
        return [(s.get(Resource, i).status, s.get(Resource, i).status_reason) for i in ids]


def test_a_disk_refused_first_leaves_every_disk_and_the_server_as_they_were(rctx, owner, web, monkeypatch):
    server_id, sys_id, data_id, backup_id = web
    _refusing(monkeypatch, sys_id)
    with rctx.tx() as s:
        task_id = restore.restore_backup(s, rctx, owner, backup_id, {"server_id": server_id})
    drain(rctx)
    task = read_task(rctx, task_id)
    assert task.status == "failed" and "is in use" in task.error_message
    assert _statuses(rctx, sys_id, data_id) == [("in-use", ""), ("in-use", "")]
    assert _statuses(rctx, server_id)[0][0] == "running"


def test_a_disk_refused_after_one_was_written_marks_only_the_written_one(rctx, owner, roots, web, monkeypatch):
    server_id, sys_id, data_id, backup_id = web
    before = sha256(roots / "data.img")
    _refusing(monkeypatch, data_id)
    with rctx.tx() as s:
        task_id = restore.restore_backup(s, rctx, owner, backup_id, {"server_id": server_id})
    drain(rctx)
    assert read_task(rctx, task_id).status == "failed"
    (sys_status, sys_reason), data = _statuses(rctx, sys_id, data_id)
    assert sys_status == "error" and sys_reason.startswith("a restore into it did not finish")
    assert data == ("in-use", "") and sha256(roots / "data.img") == before
    assert _statuses(rctx, server_id)[0][0] == "stopped"


@pytest.mark.parametrize("on_agent", [False, True], ids=["local", "agent"])
def test_a_server_left_faulty_by_an_unfinished_restore_is_restored_again(rctx, owner, roots, web, monkeypatch,
                                                                         on_agent):
    """Its disks say "restore it again"; the server restore refused that with 6413 (data cannot be restored
    to a faulty server), and its backups with 6102: nothing but removing the server was left. (An agent's
    server is faulty as its heartbeat sets it; a local one as its disks make it.)"""
    server_id, sys_id, data_id, backup_id = web
    with monkeypatch.context() as m:
        _refusing(m, data_id)
        with rctx.tx() as s:
            task_id = restore.restore_backup(s, rctx, owner, backup_id, {"server_id": server_id})
        drain(rctx)
    assert read_task(rctx, task_id).status == "failed"
    if on_agent:
        with rctx.tx() as s:
            server = s.get(Resource, server_id)
            server.provider, server.status = "agent", "faulty"
            monkeypatch.setattr(restore.res_svc, "live_status", lambda s, res, disks=None: res.status)
    with rctx.tx() as s:
        task_id = restore.restore_backup(s, rctx, owner, backup_id, {"server_id": server_id})
    if on_agent:
        return  # accepted: the agent's host is not here to restore onto
    drain(rctx)
    assert read_task(rctx, task_id).status == "success"
    assert _statuses(rctx, sys_id, data_id) == [("in-use", ""), ("in-use", "")]
    assert _statuses(rctx, server_id)[0][0] == "running"


def test_a_local_image_attached_to_a_loop_device_is_refused_with_nothing_written(rctx, owner, roots, web):
    """The service's own disks too: an image attached with losetup (mounted, perhaps) was written under the
    live file system, opening a file never failing with EBUSY. Refused at its open, nothing written, the
    disk keeping its status; detached, the same restore goes through."""
    import os
    import subprocess

    server_id, sys_id, data_id, backup_id = web
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    done = subprocess.run(["losetup", "-f", "--show", str(roots / "sys.img")], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"no loop device here: {done.stderr.strip()}")
    dev = done.stdout.strip()
    try:
        before = sha256(roots / "sys.img")
        with rctx.tx() as s:
            task_id = restore.restore_backup(s, rctx, owner, backup_id, {"server_id": server_id})
        drain(rctx)
        task = read_task(rctx, task_id)
        assert task.status == "failed" and f"attached to {dev}" in task.error_message, task.error_message
        assert sha256(roots / "sys.img") == before
        assert _statuses(rctx, sys_id, data_id) == [("in-use", ""), ("in-use", "")]
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
    with rctx.tx() as s:
        task_id = restore.restore_backup(s, rctx, owner, backup_id, {"server_id": server_id})
    drain(rctx)
    assert read_task(rctx, task_id).status == "success"
