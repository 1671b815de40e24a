"""Service configuration: environment variables over one TOML file over defaults.

Every setting has an environment variable ``OPENCBR_<NAME>`` (upper case). The file is
``$OPENCBR_CONFIG`` if set, else ``<data_dir>/opencbr.toml`` if it exists. Example file::

    data_dir = "/var/lib/opencbr"
    listen = "0.0.0.0:8080"
    public_url = "http://backup.example.com:8080"
    catalog_url = "postgresql+psycopg://opencbr@db/opencbr"
    region = "local-1"
    availability_zones = ["local-1a", "local-1b"]
    object_store = "s3://opencbr-bucket/prod?endpoint_url=http://minio:9000"
    workers = 2
    host_group = "rack-a"
    resource_roots = ["/srv/tenants"]
    allow_shared_paths_within_account = false

Settings of the data plane (workers):

- ``workers``: how many worker *processes* ``opencbr serve`` starts beside the API (0: none; run
  ``cbr worker`` elsewhere). They are supervised: one that dies is restarted; SIGTERM stops them in order.
- ``host_group``: the host, or named group of hosts sharing storage, this machine belongs to (default:
  its host name). A disk or file system registered here is recorded as belonging to it, and only workers
  of the same ``host_group`` run the tasks that read or write it.
- ``task_lease_seconds``: how long a worker's claim on a task stays valid without a heartbeat (workers
  renew it every quarter of that); a killed worker's task is taken over after at most about 1.3x this.
- ``task_max_attempts``: how many times a backup (or restore, GC, verify, delete) whose worker was lost
  is tried in all before it fails. An orderly stop (SIGTERM) hands tasks back without using an attempt.
- ``worker_poll_seconds``: how often an idle worker looks for new tasks (a cheap read) when nothing
  wakes it sooner: queuing a task rings a doorbell that wakes idle workers at once (see
  ``services/doorbell.py``); polling is the fallback.
- ``worker_nice``: the CPU (and, derived from it, I/O) priority worker processes run their tasks at,
  lowered by 0-19 (default 10), those of ``opencbr serve`` and standalone ``cbr worker`` processes alike:
  an API on the same machine stays responsive while backups run (bench/README.md, Fleet). On a machine
  whose cores are busy with other work, backups then get a small share of them (bench/README.md); 0
  runs them at the priority the worker was started with.
- ``restore_nice``: the same for restores (restoring a backup, a new file system or disk from one,
  restoring files), default 0: a restore is what a user waits on, often to recover from an outage,
  so it runs at the API's priority (bench/README.md, realtree: at nice 10 a restore through the
  service took 1.5-2x the engine's time whenever anything else wanted the CPU).
- ``agent_poll_seconds``: how often the scheduler process asks every enrolled agent for its inventory
  (default 15); an agent silent for three intervals is offline, and its resources say so.
- ``agent_project_bandwidth``: bytes per second one project's agent backups and restores move together
  (0, the default: no limit); shared equally by the project's running agent tasks on every worker.
- ``max_tasks_per_vault`` and ``max_tasks_per_agent``: how many backups, restores, new disks and
  verifies may run at once on one vault (default 4) and on one agent's host (default 2), over all
  workers; more wait in the queue, in order (0: no limit). See docs/catalog-scale.md.
- ``max_tasks_per_project``: how many of them one project runs at once over all workers (0, the
  default: no limit). Set it below the number of worker threads so that one project's tasks, however
  many or slow (a tenant's agent that sends little), never hold every worker while another's wait.

``resource_roots``: the directories tenants' disks, file systems and restore targets must lie below.
A path of the machine belongs to one project: registering a path at, above or below another project's
resource is refused, and so is a restore target inside one; ``allow_shared_paths_within_account``
(default false) lets the projects of one account share paths (other accounts stay refused).

Quotas (``quota_vaults``, ``quota_backups``, ``quota_capacity_gb``, ``quota_policies``; -1, the default,
is no limit): what every project may have unless the operator gives it its own (``cbr admin quota set``,
docs/quotas.md).

Memory (docs/scale.md): ``dedup_memory_entries`` (chunk digests of one backup's dedup set kept in memory
before it moves to disk) and ``scratch_dir`` (where such tables go; default ``<data_dir>/tmp``).

Monitoring (docs/monitoring.md): ``metrics_listen`` (Prometheus, operator only), ``smtp_host``,
``smtp_port``, ``smtp_from``, ``smtp_starttls``, ``smtp_user``, ``smtp_password`` (alarm emails),
``alarm_max_attempts``, ``alarm_webhook_allowed_networks`` (non-public networks tenants' webhooks may reach).

The master key that wraps every vault's data key lives in ``<data_dir>/master.key`` (created on first
start, mode 0600) unless ``OPENCBR_MASTER_KEY`` gives it as 64 hex digits.
"""

from __future__ import annotations

import os
import secrets
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


def _default_data_dir() -> str:
    return os.path.abspath("data")


@dataclass(frozen=True)
class Settings:
    data_dir: str = field(default_factory=_default_data_dir)
    listen: str = "127.0.0.1:8080"
    public_url: str = ""
    catalog_url: str = ""
    region: str = "local-1"
    availability_zones: tuple[str, ...] = ("local-1a", "local-1b")
    object_store: str = ""
    workers: int = 2
    scheduler: bool = True
    # Seconds a worker's claim on a task stays valid without a heartbeat.
    task_lease_seconds: int = 30
    # Attempts a resumable task (a backup, ...) gets when its worker is lost (killed, crashed, hung).
    task_max_attempts: int = 3
    # The host or group of hosts sharing storage whose local resources this machine's workers serve.
    host_group: str = field(default_factory=lambda: socket.gethostname())
    # Seconds between an idle worker's looks for new tasks.
    worker_poll_seconds: float = 0.2
    # How much the worker processes of `opencbr serve` lower their priority (nice increment, 0-19).
    worker_nice: int = 10
    # How much restores (which a user waits on) lower it in those workers (0-19).
    restore_nice: int = 0
    # Maximum clock skew accepted on signed requests (CBR v3 API 2: 15 minutes).
    max_clock_skew_seconds: int = 900
    master_key_hex: str = ""
    # When set, disks and file systems can only be registered below these directories.
    resource_roots: tuple[str, ...] = ()
    # A path of the machine belongs to one project: a resource at, above or below another project's
    # resource (or a restore target inside one) is refused. True lets the projects of one account
    # share paths (one owner, several projects); other accounts stay refused.
    allow_shared_paths_within_account: bool = False
    # Free space (MiB) kept on the object store's and the catalog's file systems (local ones): no backup
    # starts below it and a running one stops below half of it, so deletes can still free space.
    storage_reserve_mb: int = 256
    # Seconds between two heartbeat polls of every enrolled agent (by the scheduler process). An agent
    # that has not answered for three of them is offline, and so are its resources.
    agent_poll_seconds: float = 15.0
    # Bytes per second all of one project's agent tasks move together, in both directions, across all
    # workers (0: no limit): each running task gets an equal share, recomputed every second.
    agent_project_bandwidth: int = 0
    # Data-plane tasks (services.tasks.CAPPED) running at once on one vault, and on one agent's host, over
    # all workers (0: no limit); the others wait in the queue in order.
    max_tasks_per_vault: int = 4
    max_tasks_per_agent: int = 2
    # ... and in one project (0: no limit): below the worker threads, another project always finds a worker.
    max_tasks_per_project: int = 0
    # Memory of the data plane (docs/scale.md): how many chunk digests one backup's dedup set keeps in
    # memory (~130 bytes each) before it moves to an on-disk table, and the directory those tables (and
    # a disk backup's block index) go to; empty: <data_dir>/tmp. Keep it off tmpfs, where "on disk" is RAM.
    dedup_memory_entries: int = 1 << 14
    scratch_dir: str = ""
    # Where this installation's replication receiver listens ("host:port"; empty: it receives no replicas).
    # One worker process serves it (docs/replication.md).
    replication_listen: str = ""
    # Quotas every project has unless the operator set its own (cbr admin quota set; guide ch. 12); -1:
    # no limit. Vaults, top-level backups, total vault capacity (GB) and policies of a project.
    # Guide 13.7.1: the public service puts no quota on vaults, hence no limit by default.
    quota_vaults: int = -1
    quota_backups: int = -1
    quota_capacity_gb: int = -1
    quota_policies: int = -1
    # Where the scheduler process serves Prometheus metrics ("host:port"; empty: not served). Operator
    # only: bind it to 127.0.0.1 (or a network only the monitoring system reaches); docs/monitoring.md.
    metrics_listen: str = ""
    # The SMTP server alarm emails go through (empty host: no email targets), and the sender's address.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "opencbr@localhost"
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    # How many times an alarm delivery is tried (with growing pauses) before it is given up.
    alarm_max_attempts: int = 6
    # Networks (CIDR) a tenant's webhook target may reach although they are not public: loopback,
    # link-local, private and this machine's own addresses are refused otherwise (SSRF; docs/monitoring.md).
    # The service's own listening ports on this machine stay refused even when allowed here.
    alarm_webhook_allowed_networks: tuple[str, ...] = ()

    # ---------------------------------------------------------------- derived values
    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def effective_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{os.path.join(self.data_dir, 'catalog.db')}"

    @property
    def effective_scratch_dir(self) -> str:
        return self.scratch_dir or os.path.join(self.data_dir, "tmp")

    @property
    def effective_object_store(self) -> str:
        return self.object_store or f"file://{os.path.join(self.data_dir, 'objects')}"

    def master_key(self) -> bytes:
        """The 32-byte key that wraps vault data keys; created on first use when kept in a file."""
        if self.master_key_hex:
            key = bytes.fromhex(self.master_key_hex)
            if len(key) != 32:
                raise ValueError("OPENCBR_MASTER_KEY must be 64 hex digits (32 bytes)")
            return key
        path = Path(self.data_dir) / "master.key"
        if not path.exists():
            _create_key_file(path)
        try:
            key = bytes.fromhex(path.read_text().strip())
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ValueError(f"{path} must hold 64 hex digits (32 bytes): restore it from its copy, or set "
                             "OPENCBR_MASTER_KEY")
        return key


def _create_key_file(path: Path) -> None:
    """Write a new master key to ``path`` unless another process got there first. The file appears
    whole or not at all (written aside, then hard-linked into place, which fails if the name exists):
    processes starting together on a fresh data directory must not read a half-written key, nor make
    two keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        os.unlink(aside)


_LIST_FIELDS = {"availability_zones", "resource_roots", "alarm_webhook_allowed_networks"}
_INT_FIELDS = {"workers", "task_lease_seconds", "max_clock_skew_seconds", "task_max_attempts", "storage_reserve_mb",
               "quota_vaults", "quota_backups", "quota_capacity_gb", "quota_policies", "agent_project_bandwidth",
               "max_tasks_per_vault", "max_tasks_per_agent", "max_tasks_per_project", "smtp_port", "alarm_max_attempts",
               "dedup_memory_entries", "worker_nice", "restore_nice"}
_FLOAT_FIELDS = {"worker_poll_seconds", "agent_poll_seconds"}
_BOOL_FIELDS = {"scheduler", "allow_shared_paths_within_account", "smtp_starttls"}


def _coerce(name: str, value: object) -> object:
    if name in _LIST_FIELDS:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(str(v) for v in value)  # type: ignore[union-attr]
    if name in _INT_FIELDS:
        return int(value)  # type: ignore[arg-type]
    if name in _FLOAT_FIELDS:
        return float(value)  # type: ignore[arg-type]
    if name in _BOOL_FIELDS:
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    return str(value)


def load_settings(env: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Defaults, then the TOML file, then ``OPENCBR_*`` environment variables, then ``overrides``."""
    env = dict(os.environ if env is None else env)
    names = [f.name for f in fields(Settings)]
    values: dict[str, object] = {}
    data_dir = str(overrides.get("data_dir") or env.get("OPENCBR_DATA_DIR") or _default_data_dir())
    config_file = env.get("OPENCBR_CONFIG") or os.path.join(data_dir, "opencbr.toml")
    if os.path.exists(config_file):
        with open(config_file, "rb") as f:
            for k, v in tomllib.load(f).items():
                if k not in names:
                    raise ValueError(f"{config_file}: unknown setting {k!r}")
                values[k] = _coerce(k, v)
    for name in names:
        var = "OPENCBR_" + name.upper()
        if name == "master_key_hex":
            var = "OPENCBR_MASTER_KEY"
        if var in env and env[var] != "":
            values[name] = _coerce(name, env[var])
    for k, v in overrides.items():
        if v is not None:
            values[k] = _coerce(k, v)
    for name in ("worker_nice", "restore_nice"):
        if not 0 <= int(values.get(name, 0)) <= 19:  # type: ignore[call-overload]
            raise ValueError(f"{name} must be between 0 and 19, got {values[name]}")
    values.setdefault("data_dir", data_dir)
    values["data_dir"] = os.path.abspath(str(values["data_dir"]))
    return replace(Settings(), **values)  # type: ignore[arg-type]
