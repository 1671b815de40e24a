"""What to quiesce on this host: the PostgreSQL clusters and MariaDB/MySQL servers that run here (found
from ``/proc``) or are configured, and the custom script directory.

The agent's configuration (``agent.json``, key ``hooks``) may hold::

    {"discover": true,                      # look for running servers (default true)
     "postgresql": [{"name", "host", "port", "user", "dbname", "os_user", "data_dir", "password_file"}],
     "mysql": [{"name", "socket", "host", "port", "user", "defaults_file", "data_dir"}],
     "script_dir": "/etc/opencbr-agent/hooks",
     "psql": "psql", "mariadb": "mariadb"}

A configured server replaces a discovered one with the same data directory (or socket).
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass, field

DEFAULT_SCRIPT_DIR = "/etc/opencbr-agent/hooks"


@dataclass
class PostgresTarget:
    name: str
    host: str  # a socket directory (starts with "/") or a host name
    port: int = 5432
    user: str | None = None  # the database role; None: the OS user's name (psql's default)
    dbname: str = "postgres"
    os_user: str | int | None = None  # run psql as this OS user (peer authentication); None: the agent's
    data_dir: str | None = None
    password_file: str | None = None  # a .pgpass file (PGPASSFILE)
    discovered: bool = False


@dataclass
class MysqlTarget:
    name: str
    socket: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = "root"  # root over the socket: MariaDB's unix_socket authentication
    defaults_file: str | None = None  # an option file with [client] user/password
    data_dir: str | None = None
    discovered: bool = False


@dataclass
class HookPlan:
    postgresql: list[PostgresTarget] = field(default_factory=list)
    mysql: list[MysqlTarget] = field(default_factory=list)
    script_dir: str | None = None  # holds pre-freeze.d/ and post-thaw.d/
    psql: str = "psql"
    mariadb: str = "mariadb"
    notes: list[str] = field(default_factory=list)  # what discovery saw but could not use
    discovered: bool = True  # whether running servers were looked for (``discover``)

    @property
    def empty(self) -> bool:
        return not (self.postgresql or self.mysql or self.script_dir)

    def nothing_found(self) -> str:
        """Why there is nothing to quiesce: what was looked for, and where (the fallback's reason)."""
        looked = ("no running PostgreSQL or MariaDB/MySQL server was found" if self.discovered
                  else "discovery is off (hooks.discover is false)")
        said = (f"no application to quiesce on this host: {looked}, none is configured (the agent's "
                f"'hooks' key) and there is no script directory ({DEFAULT_SCRIPT_DIR} does not exist)")
        return said + "".join(f"; noted: {n}" for n in self.notes)


# -- /proc

def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _processes() -> list[dict]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        status = _read(f"/proc/{entry}/status")
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if not fields:
            continue
        found.append({"pid": int(entry), "comm": fields.get("Name", "").strip(),
                      "ppid": int(fields.get("PPid", "0").strip() or 0),
                      "uid": int(fields.get("Uid", "0").split()[0]),
                      "cmdline": _read(f"/proc/{entry}/cmdline").split("\0")})
    return found


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def listening_sockets(pid: int) -> tuple[list[str], list[int]]:
    """The unix socket paths and TCP ports process ``pid`` listens on (from /proc/net)."""
    inodes = _socket_inodes(pid)
    paths, ports = [], []
    for line in _read("/proc/net/unix").splitlines()[1:]:
        parts = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 = accepting connections
        if len(parts) >= 8 and parts[6] in inodes and int(parts[3], 16) & 0x10000:
            paths.append(parts[7])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table).splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 10 and parts[9] in inodes and parts[3] == "0A":
                ports.append(int(parts[1].rsplit(":", 1)[1], 16))
    return paths, sorted(set(ports))


def _user_name(uid: int) -> str | int:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid


def discover_postgresql(notes: list[str]) -> list[PostgresTarget]:
    procs = _processes()
    by_pid = {p["pid"]: p for p in procs}
    found = []
    for p in procs:
        parent = by_pid.get(p["ppid"], {})
        if p["comm"] not in ("postgres", "postmaster") or parent.get("comm") in ("postgres", "postmaster"):
            continue
        data_dir = _cwd(p["pid"])
        lines = _read(f"{data_dir}/postmaster.pid").splitlines() if data_dir else []
        if len(lines) < 4 or lines[0].strip() != str(p["pid"]):
            notes.append(f"postgres pid {p['pid']}: cannot read its data directory's postmaster.pid")
            continue
        port = int(lines[3])
        socket_dir = lines[4].strip() if len(lines) > 4 else ""
        listen = lines[5].strip() if len(lines) > 5 else ""
        host = socket_dir or ("127.0.0.1" if listen in ("", "*", "0.0.0.0") else listen.split(",")[0].strip())
        os_user = _user_name(p["uid"])
        found.append(PostgresTarget(name=f"postgresql:{data_dir}", host=host, port=port, data_dir=data_dir,
                                    os_user=os_user, user=os_user if isinstance(os_user, str) else None,
                                    discovered=True))
    return found


def discover_mysql(notes: list[str]) -> list[MysqlTarget]:
    found = []
    for p in _processes():
        if p["comm"] not in ("mariadbd", "mysqld"):
            continue
        paths, ports = listening_sockets(p["pid"])
        data_dir = _cwd(p["pid"])
        if not paths and not ports:
            notes.append(f"{p['comm']} pid {p['pid']}: listens on no socket or port this agent can see")
            continue
        socket = paths[0] if paths else None
        found.append(MysqlTarget(name=f"mysql:{data_dir or socket}", socket=socket,
                                 host=None if socket else "127.0.0.1", port=None if socket else ports[0],
                                 data_dir=data_dir, discovered=True))
    return found


def _merge(found: list, configured: list, key) -> list:
    mine = {key(t) for t in configured if key(t)}
    return configured + [t for t in found if key(t) not in mine]


def _targets(cls, entries: list, kind: str, default_name) -> list:
    targets = []
    for i, entry in enumerate(entries):
        try:
            targets.append(cls(**{"name": default_name(entry), **entry}))
        except TypeError as e:
            raise ValueError(f"app_consistency.{kind}[{i}]: {e}") from e
    return targets


def discover(config: dict | None = None) -> HookPlan:
    """The hook plan for this host: configured servers, running ones (unless ``discover`` is false),
    and the script directory (the configured one, or the default one if it exists)."""
    config = config or {}
    plan = HookPlan(psql=config.get("psql") or shutil.which("psql") or "psql",
                    mariadb=config.get("mariadb") or shutil.which("mariadb") or shutil.which("mysql") or "mariadb")
    pg = _targets(PostgresTarget, config.get("postgresql", []), "postgresql",
                  lambda c: f"postgresql:{c.get('data_dir') or c.get('host')}:{c.get('port', 5432)}")
    my = _targets(MysqlTarget, config.get("mysql", []), "mysql",
                  lambda c: f"mysql:{c.get('data_dir') or c.get('socket') or c.get('port')}")
    plan.discovered = bool(config.get("discover", True))  # on by default: docs/app-consistent.md says why
    if plan.discovered:
        pg = _merge(discover_postgresql(plan.notes), pg, lambda t: t.data_dir)
        my = _merge(discover_mysql(plan.notes), my, lambda t: t.data_dir or t.socket)
    plan.postgresql, plan.mysql = pg, my
    script_dir = config.get("script_dir")
    if script_dir:
        plan.script_dir = script_dir
    elif os.path.isdir(DEFAULT_SCRIPT_DIR):
        plan.script_dir = DEFAULT_SCRIPT_DIR
    return plan
