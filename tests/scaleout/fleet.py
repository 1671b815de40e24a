"""An OpenCBR installation spread over "machines" that are Linux network namespaces on this host.

Layout (all traffic stays on this machine)::

    switch ns:  bridge  ──┬── veth ── root ns (the test: client, operator)   10.X.Y.1
                          ├── veth ── api   (opencbr serve, no workers)      10.X.Y.2
                          ├── veth ── s3    (moto_server)                    10.X.Y.3
                          ├── veth ── db    (a PostgreSQL of its own)        10.X.Y.4
                          └── veth ── w1, w2, ... (opencbr worker)           10.X.Y.11, .12, ...

Each machine has its own network stack (its loopback reaches only itself), its own host name (a UTS
namespace: worker ids say which machine they are on), and its own data directory; the catalog is the
PostgreSQL on ``db`` and the object store the S3 server on ``s3``, both reached over the bridge. What the
namespaces do not separate is the file system: every machine sees this host's files. The disk images the
tests back up therefore play the part of shared storage (an NFS or SAN volume mounted at the same path on
every machine), which is what the design requires of a disk served by workers of one ``host_group``.

``Fleet.kill_machine`` SIGKILLs every process of one namespace at once: the machine's power is cut.
``Fleet.close`` removes every namespace (the veths go with them) even after a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import sqlalchemy as sa

from opencbr.config import load_settings
from opencbr.services import iam
from opencbr.services.context import open_context
from tests.support.server import Creds

PG_BIN_CANDIDATES = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")
API_PORT, S3_PORT, PG_PORT = 8080, 9000, 5432
HOST_GROUP = "shared-storage"  # every machine serves the disks of the shared storage


def unavailable_reason() -> str | None:
    """None when this host can build the fleet; else why not (the tests skip with it)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "runuser"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if _pg_bin("initdb") is None:
        return "PostgreSQL's initdb/pg_ctl are not installed"
    probe = f"cbrprobe{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` fails here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _pg_bin(name: str) -> str | None:
    for d in PG_BIN_CANDIDATES:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name)


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")


def _free_subnet() -> str:
    """A /24 (``10.X.Y``) that no route of this host uses."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    while True:
        net = f"10.{secrets.randbelow(40) + 200}.{secrets.randbelow(254) + 1}"
        if f"{net}." not in routes:
            return net


@dataclass
class Machine:
    name: str
    ns: str
    ip: str
    data_dir: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    starts: int = 0

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, f"{self.name}.log")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Fleet:
    """Build with ``Fleet(workers=2).start()``; always ``close()`` (also a context manager)."""

    def __init__(self, workers: int = 2, *, threads_per_worker: int = 1, lease_seconds: int = 4,
                 extra_env: dict[str, str] | None = None):
        self.tag = secrets.token_hex(2)
        self.net = _free_subnet()
        self.root = tempfile.mkdtemp(prefix=f"opencbr-fleet-{self.tag}-")
        os.chmod(self.root, 0o755)  # PostgreSQL runs as its own user and must reach its directory
        self.switch = f"cbr{self.tag}-sw"
        self.host_if = f"cbr{self.tag}h"
        self.threads_per_worker = threads_per_worker
        self.machines: dict[str, Machine] = {}
        self.namespaces: list[str] = []
        names = ["api", "s3", "db"] + [f"w{i + 1}" for i in range(workers)]
        for i, name in enumerate(names):
            last = 2 + i if i < 3 else 11 + i - 3
            self.machines[name] = Machine(name, f"cbr{self.tag}-{name}", f"{self.net}.{last}",
                                          os.path.join(self.root, name))
        self.catalog_url = f"postgresql+psycopg://postgres@{self.ip('db')}:{PG_PORT}/opencbr"
        self.s3_url = f"http://{self.ip('s3')}:{S3_PORT}"
        self.object_store = (f"s3://fleet-{self.tag}/objects?endpoint_url={self.s3_url}&region=us-east-1"
                             "&access_key=test&secret_key=test")
        self.url = f"http://{self.ip('api')}:{API_PORT}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "NO_PROXY": "*",
            "OPENCBR_CATALOG_URL": self.catalog_url, "OPENCBR_OBJECT_STORE": self.object_store,
            "OPENCBR_MASTER_KEY": secrets.token_hex(32), "OPENCBR_HOST_GROUP": HOST_GROUP,
            "OPENCBR_TASK_LEASE_SECONDS": str(lease_seconds), "OPENCBR_RESOURCE_ROOTS": "/tmp",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", **(extra_env or {})}
        self.admin: Creds | None = None
        self.show_logs = True  # print the machines' logs when closing (for a failed test's report)

    def ip(self, machine: str) -> str:
        return self.machines[machine].ip

    def worker_names(self) -> list[str]:
        return [n for n in self.machines if n.startswith("w")]

    # ------------------------------------------------------------------ building
    def start(self) -> Fleet:
        try:
            self._network()
            self._database()
            self._s3()
            self._bootstrap()
            self.spawn_api()
            for name in self.worker_names():  # all at once: each takes seconds to import and connect
                self.spawn_worker(name)
            self._wait_http(self.url + "/health", "api")
            self.wait_workers()
            return self
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _network(self) -> None:
        _run("ip", "netns", "add", self.switch)
        self.namespaces.append(self.switch)
        sw = ("ip", "netns", "exec", self.switch)
        _run(*sw, "ip", "link", "add", "br0", "type", "bridge")
        _run(*sw, "ip", "link", "set", "br0", "up")
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "p-host", "netns", self.switch)
        self._attach(None, self.host_if, "p-host", f"{self.net}.1")
        for m in self.machines.values():
            _run("ip", "netns", "add", m.ns)
            self.namespaces.append(m.ns)
            os.makedirs(m.data_dir, exist_ok=True)
            _run("ip", "netns", "exec", m.ns, "ip", "link", "set", "lo", "up")
            _run("ip", "link", "add", "eth0", "netns", m.ns, "type", "veth", "peer", "name", f"p-{m.name}",
                 "netns", self.switch)
            self._attach(m.ns, "eth0", f"p-{m.name}", m.ip)

    def _attach(self, ns: str | None, inner: str, port: str, ip: str) -> None:
        inside = ("ip", "netns", "exec", ns) if ns else ()
        sw = ("ip", "netns", "exec", self.switch)
        _run(*sw, "ip", "link", "set", port, "master", "br0")
        _run(*sw, "ip", "link", "set", port, "up")
        _run(*inside, "ip", "addr", "add", f"{ip}/24", "dev", inner)
        _run(*inside, "ip", "link", "set", inner, "up")

    def spawn(self, machine: str, argv: list[str], env: dict[str, str] | None = None,
              user: str | None = None) -> subprocess.Popen:
        """Run ``argv`` on ``machine``: in its network namespace, with its own host name, logging to its log."""
        m = self.machines[machine]
        inner = ["runuser", "-u", user, "--", *argv] if user else argv
        cmd = ["ip", "netns", "exec", m.ns, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
               m.name, *inner]
        log = open(m.log_path, "ab")
        proc = subprocess.Popen(cmd, env={**self.env, "OPENCBR_DATA_DIR": m.data_dir, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        m.procs.append(proc)
        return proc

    def _database(self) -> None:
        m = self.machines["db"]
        os.chmod(m.data_dir, 0o755)
        shutil.chown(m.data_dir, "postgres")
        pgdata = os.path.join(m.data_dir, "pgdata")
        _run("runuser", "-u", "postgres", "--", _pg_bin("initdb"), "-D", pgdata, "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8")
        with open(os.path.join(pgdata, "pg_hba.conf"), "a") as f:
            f.write(f"host all all {self.net}.0/24 trust\n")
        _run("ip", "netns", "exec", m.ns, "runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", pgdata,
             "-w", "-l", os.path.join(m.data_dir, "postgres.log"), "-o",
             f"-c listen_addresses={m.ip} -p {PG_PORT} -k {m.data_dir} -c fsync=off -c max_connections=200",
             "start")
        admin = sa.create_engine(self.catalog_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text("CREATE DATABASE opencbr"))
        admin.dispose()

    def _s3(self) -> None:
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        argv = [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "moto.server"]
        self.spawn("s3", [*argv, "-H", self.ip("s3"), "-p", str(S3_PORT)])
        self._wait_http(self.s3_url + "/moto-api/", "s3")

    def _bootstrap(self) -> None:
        """The operator's credentials, straight from the catalog (bootstrap is idempotent); this also
        creates the schema before any process of the fleet starts."""
        settings = load_settings(env={**self.env, "OPENCBR_DATA_DIR": os.path.join(self.root, "client")})
        ctx = open_context(settings)
        try:
            info = iam.bootstrap(ctx)
        finally:
            ctx.close()
        self.admin = Creds(info.access_key, info.secret_key, info.project_id)

    def spawn_api(self) -> None:
        self.spawn("api", [sys.executable, "-m", "opencbr.cli.main", "serve", "--no-write-config"],
                   env={"OPENCBR_LISTEN": f"{self.ip('api')}:{API_PORT}", "OPENCBR_WORKERS": "0"})

    def spawn_worker(self, name: str) -> None:
        self.machines[name].starts += 1
        self.spawn(name, [sys.executable, "-m", "opencbr.cli.main", "worker", "--count",
                          str(self.threads_per_worker)])

    def start_worker(self, name: str) -> None:
        """(Re)start a worker machine's process and wait until it takes tasks."""
        self.spawn_worker(name)
        self._wait_worker(name)

    def wait_workers(self) -> None:
        """Until every worker machine's latest process takes tasks."""
        for name in self.worker_names():
            self._wait_worker(name)

    def _wait_worker(self, name: str, timeout: float = 60) -> None:
        """Until the machine's latest worker process says it runs (each start logs one such line)."""
        m = self.machines[name]
        deadline = time.monotonic() + timeout
        while m.log().count(" running (host group ") < m.starts:
            if time.monotonic() > deadline or any(p.poll() is not None for p in m.procs):
                raise RuntimeError(f"worker machine {name} did not start:\n{m.log()[-3000:]}")
            time.sleep(0.1)

    def _wait_http(self, url: str, machine: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.machines[machine].procs):
                raise RuntimeError(f"{machine} did not come up:\n{self.machines[machine].log()[-3000:]}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ failures
    def limit_uplink(self, machine: str, mbit: int | None) -> None:
        """What ``machine`` sends goes out at ``mbit`` megabits per second at most (a token bucket on its
        link), so that work over the link takes a known time whatever this host's speed; None: no limit."""
        inside = ("ip", "netns", "exec", self.machines[machine].ns)
        if mbit is None:
            subprocess.run([*inside, "tc", "qdisc", "del", "dev", "eth0", "root"], capture_output=True)
            return
        _run(*inside, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", f"{mbit}mbit",
             "burst", "256kb", "latency", "200ms")

    def pids(self, machine: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.machines[machine].ns], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill_machine(self, machine: str) -> int:
        """SIGKILL every process of the machine at once (its power is cut); how many there were."""
        pids = self.pids(machine)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        m = self.machines[machine]
        for p in m.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        m.procs.clear()
        return len(pids)

    # ------------------------------------------------------------------ tearing down
    def close(self) -> None:
        """Stop everything and remove every namespace, whatever state the fleet is in. The machines' logs
        end on stdout (pytest shows them when a test failed)."""
        for m in self.machines.values() if self.show_logs else ():
            print(f"----- {m.name} ({m.ip}) log, last 4000 characters -----\n{m.log()[-4000:]}")
        pgdata = os.path.join(self.machines["db"].data_dir, "pgdata")
        if os.path.exists(os.path.join(pgdata, "postmaster.pid")) and self.machines["db"].ns in self.namespaces:
            subprocess.run(["ip", "netns", "exec", self.machines["db"].ns, "runuser", "-u", "postgres", "--",
                            _pg_bin("pg_ctl") or "pg_ctl", "-D", pgdata, "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        for ns in reversed(self.namespaces):
            if ns != self.switch:
                self.kill_machine(next(m.name for m in self.machines.values() if m.ns == ns))
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)  # gone with its peer already
        shutil.rmtree(self.root, ignore_errors=True)
