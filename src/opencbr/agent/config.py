"""The agent's configuration: one JSON file, readable by its owner only.

It holds the agent's identity (agent_id, project_id), where the service's API is, where the agent
listens and what address it tells the service, what it may touch (roots, devices), and its private
key with the certificates of the enrolment. The key makes the file a secret: it is written with mode
0600 in a directory of mode 0700, through a temporary file renamed into place (a crash never leaves half
a configuration), and it is never printed (:meth:`AgentConfig.summary`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

DEFAULT_PATH = "/etc/opencbr-agent/agent.json"
DEFAULT_STATE_DIR = "/var/lib/opencbr-agent"
DEFAULT_PORT = 7443
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
#: Device patterns (fnmatch, on the path asked for) an agent may open when none were given: any block
#: device of the host. The device must also be a block device the kernel lists (confinement.py).
DEFAULT_DEVICES = ("/dev/*",)


class ConfigError(Exception):
    """The configuration is missing, unreadable or not the agent's."""


@dataclass
class AgentConfig:
    agent_id: str
    project_id: str
    api_endpoint: str                      # http(s)://host:port of the API (enrolment, status)
    listen: str = DEFAULT_LISTEN            # host:port the agent binds
    advertise: str = ""                     # host:port the service connects to
    roots: list[str] = field(default_factory=list)     # directories it may read and write below
    devices: list[str] = field(default_factory=lambda: list(DEFAULT_DEVICES))  # block devices it may open
    key_pem: str = ""
    cert_pem: str = ""
    ca_pem: str = ""
    bandwidth_limit: int = 0                # bytes per second the agent sends at most; 0 = no limit
    max_tasks: int = 2                      # data operations at once; more are answered `busy`
    state_dir: str = DEFAULT_STATE_DIR      # snapshots in flight (crash cleanup)

    @property
    def enrolled(self) -> bool:
        return bool(self.cert_pem and self.key_pem and self.ca_pem)

    def summary(self) -> dict:
        """What ``status`` shows: everything but the key (and the PEM texts, which say nothing to a reader)."""
        shown = {k: v for k, v in asdict(self).items() if k not in ("key_pem", "cert_pem", "ca_pem")}
        shown["enrolled"] = self.enrolled
        return shown


def load(path: str = DEFAULT_PATH) -> AgentConfig:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: enrol this host first (opencbr-agent register ...)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read: {e}") from None
    known = {f.name for f in fields(AgentConfig)}
    try:
        return AgentConfig(**{k: v for k, v in raw.items() if k in known})
    except TypeError as e:
        raise ConfigError(f"{path} is not an agent configuration: {e}") from None


def save(config: AgentConfig, path: str = DEFAULT_PATH) -> None:
    """Write ``path`` (0600) in its directory (created 0700; an existing one is narrowed to 0700)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # (the umask may have narrowed it further; never wider)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            json.dump(asdict(config), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def forget(path: str = DEFAULT_PATH) -> bool:
    """Remove the configuration (and with it the key). True if there was one."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, or a bare host (the default port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"{text!r}: no host")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number") from None
