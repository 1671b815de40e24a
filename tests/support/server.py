"""A real OpenCBR server in a child process, talking HTTP on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass

import httpx

from opencbr.config import load_settings
from opencbr.services import iam
from opencbr.services.context import open_context
from tests.support.databases import fresh_sqlite_catalog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(endpoint: str, timeout: float = 60) -> None:
    """Wait until something accepts connections at ``host:port`` (e.g. a replication receiver, which a
    worker process binds some time after the API answers /health)."""
    host, port = endpoint.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens at {endpoint} after {timeout} s") from None
            time.sleep(0.05)


#: Every server a test started, so that the session's end stops any a failed fixture or test left running:
#: a leaked server's worker processes poll the catalog for ever, and on a loaded machine (a start that
#: timed out) each leak made the next start slower, until PostgreSQL ran out of connections.
_STARTED: "weakref.WeakSet[ServerProcess]" = weakref.WeakSet()


def stop_leftover_servers() -> int:
    """Kill the servers still running (called when the test session ends); returns how many."""
    left = [srv for srv in list(_STARTED) if srv.proc is not None and srv.proc.poll() is None]
    for srv in left:
        srv.kill()
    return len(left)


@dataclass
class Creds:
    ak: str
    sk: str
    project_id: str


#: The environment variable through which tests/conftest.py names pytest's --basetemp (a resource root too).
BASETEMP_ENV = "OPENCBR_TEST_BASETEMP"


class ServerProcess:
    """``opencbr serve`` as a subprocess. The bootstrap credentials are read from the catalog (bootstrap
    is idempotent), so tests never parse the banner."""

    def __init__(self, data_dir: str, catalog_url: str, *, workers: int = 2, extra_env: dict | None = None):
        self.data_dir = data_dir
        self.catalog_url = catalog_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "OPENCBR_DATA_DIR": data_dir, "OPENCBR_CATALOG_URL": catalog_url,
                    "OPENCBR_LISTEN": f"127.0.0.1:{self.port}", "OPENCBR_WORKERS": str(workers),
                    "OPENCBR_CLIENT_CONFIG": os.path.join(data_dir, "client.toml"),
                    "NO_PROXY": "127.0.0.1,localhost",
                    # tenants other than the operator may only use paths below these (tests live in /tmp, or
                    # below --basetemp: conftest.py passes it on)
                    "OPENCBR_RESOURCE_ROOTS": ",".join(["/tmp"] + [r for r in [os.environ.get(BASETEMP_ENV)] if r]),
                    # the tests' alarm receivers listen on loopback, which tenants' webhooks may not reach unless allowed
                    "OPENCBR_ALARM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", **(extra_env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(data_dir, "server.log")
        # the catalog is migrated here, before the server starts (open_context below): a new SQLite one is
        # a copy of this process's migrated template instead, like the catalog_url fixture's (the Alembic
        # chain cost 1-2 s of CPU for each of the ~60 servers a run starts on a new SQLite file)
        fresh_sqlite_catalog(catalog_url)
        self.settings = load_settings(env=self.env)
        ctx = open_context(self.settings)
        info = iam.bootstrap(ctx)
        ctx.close()
        self.admin = Creds(info.access_key, info.secret_key, info.project_id)

    def start(self, timeout: float = 90) -> ServerProcess:
        """Start the server and wait for its /health. A server that does not answer in ``timeout`` is
        killed with its workers before the error is raised (a fixture whose set-up fails never tears
        down: the process would outlive the test)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "serve", "--no-write-config"],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        _STARTED.add(self)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-5000:]

    def worker_pids(self) -> list[int]:
        """The worker processes the service runs beside its API process."""
        if not self.proc:
            return []
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except (OSError, ValueError):
                continue
            if ppid == self.proc.pid and b"worker" in cmd:
                out.append(int(pid))
        return out

    def kill(self) -> None:
        """SIGKILL of the API process and its worker processes at once: a crash, no clean-up."""
        if self.proc and self.proc.poll() is None:
            workers = self.worker_pids()
            self.proc.send_signal(signal.SIGKILL)
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli_env(self, creds: Creds | None = None) -> dict:
        c = creds or self.admin
        # a wide terminal: tables and messages then keep their cells whole whatever else the shared server
        # holds (tests of narrow terminals set COLUMNS themselves)
        return {**self.env, "OPENCBR_ENDPOINT": self.url, "OPENCBR_PROJECT_ID": c.project_id,
                "OPENCBR_AK": c.ak, "OPENCBR_SK": c.sk, "COLUMNS": "200"}


def store_bytes(server: ServerProcess, vault_id: str) -> int:
    """Bytes a vault holds in the server's local object store."""
    root = os.path.join(server.data_dir, "objects", "vaults", vault_id)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def sqlite_server_fixture(name: str):
    """A module-scoped ``server`` fixture on SQLite alone, for modules that test the CLI or the console
    rather than the catalog (which ``tests/conftest.py``'s ``server`` runs on both backends)."""
    import pytest

    from tests.support.databases import sqlite_url

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        d = str(tmp_path_factory.mktemp(name))
        srv = ServerProcess(d, sqlite_url(d)).start()
        yield srv
        srv.stop()

    return server
