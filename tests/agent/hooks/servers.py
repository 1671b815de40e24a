"""Real database servers for the hook tests: a PostgreSQL cluster (initdb) and a MariaDB server
(mariadb-install-db) in temporary directories, on unix sockets only (no TCP port to collide on).
As root, the servers run as their usual unprivileged users (PostgreSQL refuses root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
# small files: quick copies; the redo log written, not flushed, at commit (a copy reads the page cache)
SMALL = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M", "--innodb-flush-log-at-trx-commit=2"]
MARIADBD = shutil.which("mariadbd", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))


def _user(name: str) -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no {name} user to run the server as")


# memory, not disk: these copies are made and deleted by the thousand files (deleting on a disk mounted
# with online discard took seconds)
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def unmount(point: str, timeout: float = 15.0) -> None:
    """Unmount ``point``, waiting while something still has files open there: ``pg_ctl -m immediate -w
    stop`` returns once the postmaster is gone, and its backends may still be exiting (the unmount then
    failed with "target is busy", and removing the mount point with EBUSY)."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["umount", point], capture_output=True, text=True)
        if r.returncode == 0 or not os.path.ismount(point):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cannot unmount {point}: {r.stderr.strip()}")
        time.sleep(0.1)


def scratch_dir(owner: pwd.struct_passwd | None, prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix, dir=SCRATCH)
    os.chmod(path, 0o755)
    if owner:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def copy_tree(source: str, target: str) -> None:
    """The test's "snapshot": a plain live copy (``cp -a``), which is not atomic."""
    subprocess.run(["cp", "-a", source, target], check=True)


def log_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Postgres:
    def __init__(self, data_dir: str, owner: pwd.struct_passwd | None, port: int = 5432):
        self.bin = os.path.dirname(PG_BIN[-1])
        self.data_dir = data_dir
        self.owner = owner
        self.port = port
        self.socket_dir = os.path.dirname(data_dir)
        self.log = os.path.join(self.socket_dir, f"{os.path.basename(data_dir)}.log")

    @classmethod
    def create(cls) -> Postgres:
        if not PG_BIN:
            pytest.skip("PostgreSQL server binaries are not installed")
        owner = _user("postgres")
        pg = cls(os.path.join(scratch_dir(owner, "ocbr-pg-"), "data"), owner)
        pg._run([os.path.join(pg.bin, "initdb"), "-D", pg.data_dir, "-A", "trust", "-U", "postgres", "--no-sync", "--wal-segsize=1",
                 "--no-instructions"])
        return pg

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        if self.owner:
            argv = ["runuser", "-u", self.owner.pw_name, "--"] + argv
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        # fsync off: a copy reads the page cache, so what a commit wrote is in it all the same
        opts = f"-p {self.port} -k {self.socket_dir} -c listen_addresses='' -c max_wal_senders=0 -c fsync=off"
        out = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data_dir, "-o", opts, "-l", self.log,
                         "-w", "-t", "60", "start"], check=False)
        assert out.returncode == 0, out.stdout + out.stderr + log_text(self.log)

    def stop(self) -> None:
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data_dir, "-m", "immediate", "-w", "stop"],
                  check=False)

    def copy_to(self, name: str, port: int) -> Postgres:
        target = os.path.join(self.socket_dir, name)
        copy_tree(self.data_dir, target)
        return Postgres(target, self.owner, port)

    def connect(self):
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user="postgres", dbname="postgres",
                               autocommit=True, connect_timeout=10)

    def sql(self, query: str):
        with self.connect() as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None

    def amcheck(self) -> subprocess.CompletedProcess:
        return self._run([os.path.join(self.bin, "pg_amcheck"), "-h", self.socket_dir, "-p", str(self.port),
                          "-U", "postgres", "--all", "--install-missing", "--heapallindexed"], check=False)

    def target(self, **extra) -> dict:
        return {"name": f"pg-test:{self.data_dir}", "host": self.socket_dir, "port": self.port,
                "user": "postgres", "data_dir": self.data_dir, **extra}


class Mariadb:
    def __init__(self, data_dir: str, owner: pwd.struct_passwd | None):
        self.data_dir = data_dir
        self.owner = owner
        self.base = os.path.dirname(data_dir)
        name = os.path.basename(data_dir)
        self.socket = os.path.join(self.base, f"{name}.sock")
        self.log = os.path.join(self.base, f"{name}.err")
        self.proc: subprocess.Popen | None = None

    @classmethod
    def create(cls) -> Mariadb:
        if not MARIADBD or not shutil.which("mariadb-install-db"):
            pytest.skip("MariaDB server binaries are not installed")
        owner = _user("mysql")
        db = cls(os.path.join(scratch_dir(owner, "ocbr-my-"), "data"), owner)
        argv = ["mariadb-install-db", "--no-defaults", f"--datadir={db.data_dir}", "--skip-test-db", *SMALL,
                "--auth-root-authentication-method=normal"] + ([f"--user={owner.pw_name}"] if owner else [])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        return db

    def start(self) -> None:
        argv = [MARIADBD, "--no-defaults", f"--datadir={self.data_dir}", f"--socket={self.socket}",
                "--skip-networking", f"--log-error={self.log}", f"--pid-file={self.base}/{os.path.basename(self.data_dir)}.pid",
                "--log-bin=binlog", "--server-id=1", "--skip-name-resolve", *SMALL]
        argv += [f"--user={self.owner.pw_name}"] if self.owner else []
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mariadbd exited:\n" + log_text(self.log)[-4000:])
            if os.path.exists(self.socket) and self.run("SELECT 1").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("mariadbd did not come up:\n" + log_text(self.log)[-4000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def run(self, sql: str, user: str = "root", timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", f"--user={user}", "--batch",
                               "--skip-column-names", "-e", sql], capture_output=True, text=True, timeout=timeout)

    def sql(self, sql: str, user: str = "root") -> list[list[str]]:
        out = self.run(sql, user)
        assert out.returncode == 0, out.stderr
        return [line.split("\t") for line in out.stdout.splitlines()]

    def copy_to(self, name: str) -> Mariadb:
        target = os.path.join(self.base, name)
        copy_tree(self.data_dir, target)
        return Mariadb(target, self.owner)

    def target(self, **extra) -> dict:
        return {"name": f"mariadb-test:{self.data_dir}", "socket": self.socket, "user": "root",
                "data_dir": self.data_dir, **extra}


def numbered_postgres() -> Postgres:
    """A started cluster with the table a :class:`Writer` fills."""
    server = Postgres.create()
    server.start()
    server.sql("CREATE TABLE numbered (id bigint PRIMARY KEY, pad text NOT NULL)")
    return server


class Writer:
    """Commits numbered rows one by one; ``committed`` is the last id whose commit returned."""

    def __init__(self, pg: Postgres, start: int):
        self.pg = pg
        self.committed = start - 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with self.pg.connect() as conn:
            while not self._stop.is_set():
                conn.execute("INSERT INTO numbered VALUES (%s, repeat('x', 300))", (self.committed + 1,))
                self.committed += 1

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 10
        start = self.committed
        while self.committed < start + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
