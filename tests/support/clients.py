"""Clients of a running server: the official SDK, our signed HTTP client, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from huaweicloudsdkcbr.v1 import CbrClient
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig

from opencbr.cli.client import ApiClient, ClientConfig
from tests.support.disks import MiB, sha256
from tests.support.server import Creds, ServerProcess

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


def sdk(server: ServerProcess, creds: Creds | None = None) -> CbrClient:
    """The official huaweicloudsdkcbr client, pointed at our endpoint (CBR v3 API 1)."""
    c = creds or server.admin
    cfg = HttpConfig.get_default_config()
    cfg.ignore_ssl_verification = True
    cfg.timeout = (5, 60)
    return (CbrClient.new_builder().with_http_config(cfg)
            .with_credentials(BasicCredentials(c.ak, c.sk, c.project_id))
            .with_endpoint(server.url).build())


def api(server: ServerProcess, creds: Creds | None = None) -> ApiClient:
    c = creds or server.admin
    return ApiClient(ClientConfig(server.url, c.project_id, c.ak, c.sk))


class CLIResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        return json.loads(self.out)


def cli(server: ServerProcess, *args: str, creds: Creds | None = None, timeout: float = 120) -> CLIResult:
    """Run ``cbr ARGS`` as a separate process against the server."""
    proc = subprocess.run([sys.executable, "-m", "opencbr.cli.main", *args], env=server.cli_env(creds),
                          capture_output=True, text=True, timeout=timeout)
    return CLIResult(proc)


def new_tenant(server: ServerProcess, name: str) -> Creds:
    """A new account (with its project and admin credentials), created by the operator over the API."""
    out = api(server).post("/iam/accounts", {"name": name})
    return Creds(out["credential"]["access_key"], out["credential"]["secret_key"], out["project"]["id"])


def wait_task(client: ApiClient, task_id: str, timeout: float = 120, *, require_success: bool = False) -> dict:
    """Poll an operation log until it finishes; returns it (asserting success when asked)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        log = client.get(f"/operation-logs/{task_id}")["operation_log"]
        if log["status"] in ("success", "failed", "skipped", "timeout"):
            if require_success:
                assert log["status"] == "success", log["error_info"]
            return log
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s")


def task_ok(client: ApiClient, task_id: str, timeout: float = 120) -> dict:
    """Wait for a task and assert it succeeded."""
    return wait_task(client, task_id, timeout, require_success=True)


def wait_running(client: ApiClient, task_id: str, min_progress: int = 1, timeout: float = 60) -> dict:
    """Poll an operation log until its task runs with at least ``min_progress`` percent done (to interrupt it
    there); fails if the task finishes first."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        log = client.get(f"/operation-logs/{task_id}")["operation_log"]
        if log["status"] == "running" and log["extra_info"]["common"]["progress"] >= min_progress:
            return log
        if log["status"] in ("success", "failed"):
            raise AssertionError(f"task finished before it could be interrupted: {log['status']}")
        time.sleep(0.05)
    raise AssertionError("task did not start")


def restore_and_check(client: ApiClient, backup_id: str, disk_id: str, path, expected: str) -> None:
    """Restore a disk backup onto its disk at ``path`` and check the result hashes to ``expected``."""
    with open(path, "r+b") as f:  # scribble first, so a no-op restore cannot pass
        f.write(os.urandom(MiB))
    tid = client.post(f"/backups/{backup_id}/restore", {"restore": {"volume_id": disk_id}})["operation_log_id"]
    assert wait_task(client, tid)["status"] == "success"
    assert sha256(path) == expected


def sdk_wait_backups(c: CbrClient, ids: list[str], timeout: float = 120) -> list:
    """With the official SDK: wait until the backups are available (asserting none ended in error)."""
    import time

    from huaweicloudsdkcbr.v1 import ShowBackupRequest

    deadline = time.time() + timeout
    while time.time() < deadline:
        bs = [c.show_backup(ShowBackupRequest(backup_id=i)).backup for i in ids]
        if all(b.status in ("available", "error") for b in bs):
            assert all(b.status == "available" for b in bs), [(b.id, b.status) for b in bs]
            return bs
        time.sleep(0.2)
    raise AssertionError("backups did not finish")


def sdk_task_ok(c: CbrClient, task_id: str, timeout: float = 120):
    """With the official SDK: wait for an operation log to finish and assert it succeeded."""
    import time

    from huaweicloudsdkcbr.v1 import ShowOpLogRequest

    deadline = time.time() + timeout
    while time.time() < deadline:
        log = c.show_op_log(ShowOpLogRequest(operation_log_id=task_id)).operation_log
        if log.status in ("success", "failed"):
            assert log.status == "success", (log.error_info.code, log.error_info.message)
            return log
        time.sleep(0.2)
    raise AssertionError("task did not finish")


def signed(client: ApiClient, method: str, path: str, *, params: dict | None = None, body=None):
    """One signed request through ``client``'s credentials, returning the raw response (for status checks
    and routes the SDK has no call for)."""
    return client.send(method, path, params=params, body=body)


def fill_ids(value, ids: dict):
    """``value`` (a path or a JSON body) with every ``{name}`` replaced by ``ids[name]``."""
    if isinstance(value, str):
        for k, v in ids.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [fill_ids(x, ids) for x in value]
    if isinstance(value, dict):
        return {k: fill_ids(v, ids) for k, v in value.items()}
    return value
