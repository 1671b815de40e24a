"""Agents of a project (CBR v3 API: agents): register, list, show, update, unregister, the paths to
protect (add_agent_path / remove_agent_path) and check_agent. Every function is scoped by the caller's
project: another project's agent is not found."""

from __future__ import annotations

import ipaddress
import logging
import posixpath
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

import opencbr.services.agents.ca as A
import opencbr.services.agents.inventory as inventory
import opencbr.services.agents.state as state
from opencbr import __version__
from opencbr.agentlink.tls import SERVICE_CN
from opencbr.catalog.models import Agent, AgentPath, Backup, Resource, VaultResource
from opencbr.domain import resource as R
from opencbr.domain.errors import InvalidParameter, NotFound, QuotaExceeded, StateConflict
from opencbr.providers.agent import link
from opencbr.services import app_consistency
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

log = logging.getLogger("opencbr.agents")

#: The agent version this service ships; an agent reporting an older one ``is_old`` (check_agent).
CURRENT_AGENT_VERSION = __version__
MAX_AGENTS_PER_PROJECT = 1000
MAX_PATHS_PER_AGENT = 64
MAX_EXCLUDES_PER_PATH = 64
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED_AGENT_ID = "BackupService.6612"
_ENDPOINT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$")
AGENT_TYPES = ("native", "cloud")


@dataclass
class AgentView:
    agent: Agent
    status: str
    paths: list[AgentPath]
    #: When the newest available backup of one of its resources was made (None: none yet).
    last_backup_at: datetime | None = None
    #: Each path's file system as the heartbeat left it: (status, reason) by path (a path the agent
    #: refuses is registered all the same; its file system says why).
    file_systems: dict[str, tuple[str, str]] = field(default_factory=dict)


def get_agent(s: Session, project_id: str, agent_id: str) -> Agent:
    agent = s.get(Agent, agent_id) if isinstance(agent_id, str) and len(agent_id) <= 64 else None
    if agent is None or agent.project_id != project_id:
        raise NotFound(f"agent {agent_id} not found", code="BackupService.6460")
    return agent


def _views(s: Session, ctx: ServiceContext, agents: list[Agent]) -> list[AgentView]:
    paths: dict[str, list[AgentPath]] = {a.id: [] for a in agents}
    if paths:
        for ap in s.scalars(select(AgentPath).where(AgentPath.agent_id.in_(list(paths)))
                            .order_by(AgentPath.created_at, AgentPath.id)):
            paths[ap.agent_id].append(ap)
    last_backup = dict(s.execute(
        select(Resource.agent_id, func.max(Backup.created_at)).join(Backup, Backup.resource_id == Resource.id)
        .where(Resource.agent_id.in_(list(paths)), Backup.status == "available").group_by(Resource.agent_id)).all()) \
        if paths else {}
    file_systems: dict[str, dict[str, tuple[str, str]]] = {a.id: {} for a in agents}
    if paths:
        for agent_id, path, status, reason in s.execute(
                select(Resource.agent_id, Resource.path, Resource.status, Resource.status_reason)
                .where(Resource.agent_id.in_(list(paths)), Resource.type == R.FILE_SYSTEM)).all():
            file_systems[agent_id][path] = (status, reason or "")
    return [AgentView(a, state.wire_status(ctx, a), paths[a.id], last_backup.get(a.id), file_systems[a.id])
            for a in agents]


def view(s: Session, ctx: ServiceContext, agent: Agent) -> AgentView:
    return _views(s, ctx, [agent])[0]


def show_agent(s: Session, ctx: ServiceContext, p: Principal, agent_id: str) -> AgentView:
    return _views(s, ctx, [get_agent(s, p.project_id, agent_id)])[0]


def list_agents(s: Session, ctx: ServiceContext, p: Principal, *, status: str | None = None,
                ids: list[str] | None = None, limit: int = 1000, offset: int = 0) -> tuple[list[AgentView], int]:
    q = select(Agent).where(Agent.project_id == p.project_id)
    if ids:
        q = q.where(Agent.id.in_(ids))
    if status:
        online = and_(Agent.status == "active", Agent.cert_fingerprint.is_not(None),
                      Agent.last_active_time >= state.online_since(ctx))
        q = q.where({state.ONLINE: online, state.UNINSTALLED: Agent.status == "uninstalled",
                     state.OFFLINE: and_(Agent.status != "uninstalled", or_(
                         Agent.cert_fingerprint.is_(None), Agent.last_active_time.is_(None),
                         Agent.last_active_time < state.online_since(ctx)))}[status])
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = list(s.scalars(q.order_by(Agent.created_at, Agent.id).limit(limit).offset(offset)))
    return _views(s, ctx, rows), total


# ------------------------------------------------------------------------------------ registration
def check_agent_id(agent_id: object) -> str:
    if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id):
        raise InvalidParameter("agent_id must be 1 to 64 letters, digits, '.', '_' or '-'")
    if agent_id.lower() == SERVICE_CN:
        # An agent's certificate names its agent_id, and agents serve only the service's name: never
        # issue that name to a host (its certificate also lacks the client usage; docs/roles.md)
        raise InvalidParameter(f"agent_id {agent_id!r} is reserved", code=RESERVED_AGENT_ID)
    return agent_id


def check_endpoint(endpoint: object, source_ip: str = "") -> str:
    """``host:port`` where the agent listens; an unspecified host (``0.0.0.0``) is the address the
    enrolment came from."""
    if not isinstance(endpoint, str) or not _ENDPOINT.match(endpoint.strip()):
        raise InvalidParameter("endpoint must be host:port where the agent listens (e.g. 10.0.0.5:7443)")
    host, port = _ENDPOINT.match(endpoint.strip()).groups()
    if not 1 <= int(port) <= 65535:
        raise InvalidParameter("endpoint port must be between 1 and 65535")
    try:  # what a connection does with the name first: an empty or 64-letter label fails there, not here
        host.strip("[]").encode("idna")
    except UnicodeError:
        raise InvalidParameter(f"endpoint host {host[:80]!r} is not a host name (empty label, or one over 63 "
                               "characters)") from None
    if host in ("0.0.0.0", "[::]", "") and source_ip:
        host = f"[{source_ip}]" if ":" in source_ip else source_ip
    return f"{host}:{int(port)}"


def _text(fields: dict, name: str, *, required: bool = False, max_chars: int = 255) -> str:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise InvalidParameter(f"agent.{name} is required")
        return ""
    if not isinstance(value, str) or len(value) > max_chars or any(c < " " for c in value):
        raise InvalidParameter(f"agent.{name} must be printable text of at most {max_chars} characters")
    return value


def _describe(agent: Agent, fields: dict) -> None:
    agent.host_name = _text(fields, "host_name", required=True)
    agent.host_ip = _text(fields, "host_ip", required=True, max_chars=64)
    try:
        ipaddress.ip_address(agent.host_ip)
    except ValueError:
        raise InvalidParameter(f"agent.host_ip must be the host's IP address, not {agent.host_ip[:64]!r}") from None
    agent.host_os = _text(fields, "host_os", required=True)
    agent.host_nickname = _text(fields, "host_nickname") or agent.host_nickname or ""
    agent.agent_version = _text(fields, "agent_version", max_chars=32) or agent.agent_version or ""
    agent_type = _text(fields, "agent_type", max_chars=16) or "native"
    if agent_type not in AGENT_TYPES:
        raise InvalidParameter(f"agent.agent_type must be one of {', '.join(AGENT_TYPES)}")
    agent.agent_type = agent_type


def register_agent(s: Session, ctx: ServiceContext, p: Principal, fields: dict, *, csr: str | None = None,
                   endpoint: str | None = None, source_ip: str = "") -> tuple[Agent, str | None]:
    """register_agent: the agent's record, and with a CSR its certificate (it is enrolled: the service
    will connect to ``endpoint`` and accept that certificate only). Without one the agent is registered
    but not enrolled until an ``opencbr-agent register`` with this ``agent_id`` brings a CSR. The
    backup-only role may: it is the credential to enrol a host with (docs/roles.md)."""
    p.require_backup()
    return register(s, ctx, p.project_id, fields, csr=csr, endpoint=endpoint, source_ip=source_ip)


def register(s: Session, ctx: ServiceContext, project_id: str, fields: dict, *, csr: str | None,
             endpoint: str | None, source_ip: str = "") -> tuple[Agent, str | None]:
    agent_id = check_agent_id(fields.get("agent_id"))
    agent = s.get(Agent, agent_id)
    if agent is not None and (agent.project_id != project_id or agent.cert_fingerprint or not csr
                              or agent.status == "uninstalled"):
        raise StateConflict(f"agent {agent_id} is already registered", code="BackupService.6461")
    if agent is None:
        count = s.scalar(select(func.count()).select_from(Agent).where(Agent.project_id == project_id)) or 0
        if count >= MAX_AGENTS_PER_PROJECT:
            raise QuotaExceeded(f"a project has at most {MAX_AGENTS_PER_PROJECT} agents")
        agent = Agent(id=agent_id, project_id=project_id, created_at=ctx.now(), updated_at=ctx.now())
    _describe(agent, fields)
    certificate = None
    if csr is not None or endpoint is not None:
        if not csr or not endpoint:
            raise InvalidParameter("an agent enrols with both csr and endpoint")
        agent.endpoint = check_endpoint(endpoint, source_ip)
        certificate = _sign(s, ctx, agent, csr)
    s.add(agent)
    s.flush()
    return agent, certificate


def _sign(s: Session, ctx: ServiceContext, agent: Agent, csr: str) -> str:
    if not isinstance(csr, str) or "BEGIN CERTIFICATE REQUEST" not in csr or len(csr) > 16384:
        raise InvalidParameter("csr must be a PEM certificate signing request")
    row = A.authority_row(s, ctx)
    try:
        certificate = link.sign_agent_csr(row.ca_cert, A.ca_key(ctx, row), csr, agent.id)
    except ValueError as e:
        raise InvalidParameter(f"csr is not a valid certificate signing request: {e}") from None
    agent.cert_fingerprint = link.fingerprint(certificate)
    agent.enrolled_at = ctx.now()
    agent.status, agent.last_error = "active", ""
    return certificate


def ca_certificate(s: Session, ctx: ServiceContext) -> str:
    return A.authority_row(s, ctx).ca_cert


def update_agent(s: Session, ctx: ServiceContext, p: Principal, agent_id: str, *, status: str | None = None,
                 host_nickname: str | None = None,
                 bandwidth_limit: int | None = None) -> tuple[AgentView, link.AgentAddress | None]:
    """update_agent: ``status`` ``uninstall`` (the agent was removed from its host: the service stops
    using it, as unregister does, but keeps its record); the extensions ``host_nickname`` and
    ``bandwidth_limit`` (bytes per second its tasks may move, 0 for none). Returns the agent, and where it
    was when this call uninstalled it: an agent still running there is told (``notify_revoked``)."""
    p.require_write()
    if status is None and host_nickname is None and bandwidth_limit is None:
        raise InvalidParameter("agent names nothing to change: status (uninstall), host_nickname or bandwidth_limit")
    agent = get_agent(s, p.project_id, agent_id)
    address = None
    if status is not None:
        if status not in ("uninstall", "uninstalled"):
            raise InvalidParameter("agent.status can only be uninstall")
        address = _address(agent)
        agent.status, agent.cert_fingerprint = "uninstalled", None
        state.mark_resources(s, agent.id, f"agent {state.label(agent)} was uninstalled")
    if host_nickname is not None:
        agent.host_nickname = _text({"host_nickname": host_nickname}, "host_nickname")
    if bandwidth_limit is not None:
        if not 0 <= bandwidth_limit <= 2**40:
            raise InvalidParameter("bandwidth_limit must be between 0 (none) and 2^40 bytes per second")
        agent.bandwidth_limit = bandwidth_limit
    agent.updated_at = ctx.now()
    s.flush()
    return show_agent(s, ctx, p, agent_id), address


def _address(agent: Agent) -> link.AgentAddress | None:
    """Where the service reaches ``agent`` (None when it has no certificate or endpoint any more)."""
    return (link.AgentAddress(agent.id, agent.project_id, agent.endpoint, agent.cert_fingerprint)
            if agent.cert_fingerprint and agent.endpoint else None)


def unregister_agent(s: Session, ctx: ServiceContext, p: Principal, agent_id: str) -> link.AgentAddress | None:
    """unregister_agent: from the commit on the service never connects to it again; its resources stay
    (with their backups) in error. Returns where it was, for a best-effort ``revoke`` (``notify_revoked``)."""
    p.require_write()
    agent = get_agent(s, p.project_id, agent_id)
    address = _address(agent)
    state.mark_resources(s, agent.id, f"agent {state.label(agent)} was unregistered")
    s.execute(update(Resource).where(Resource.agent_id == agent.id).values(agent_id=None))
    s.execute(delete(AgentPath).where(AgentPath.agent_id == agent.id))
    s.delete(agent)
    s.flush()
    return address


def notify_revoked(ctx: ServiceContext, address: link.AgentAddress | None, timeout: float = 3) -> bool:
    """Tell an unregistered (or uninstalled) agent to forget its certificate (best effort: it is refused
    anyway)."""
    if address is None:
        return False
    try:
        link.call(A.service_identity(ctx), address, "revoke", timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - best effort, after the catalog has revoked it: never the caller's error
        log.warning("agent %s could not be told it was revoked", address.agent_id, exc_info=True)
        return False


# ------------------------------------------------------------------------------------ paths
#: The longest name a Linux file system takes for one component of a path (``NAME_MAX``), in bytes.
NAME_MAX = 255


def normal_path(path: object, what: str = "path") -> str:
    """An absolute path, made normal (``/srv/www/`` is ``/srv/www``); no NUL, at most 4096 characters,
    no component longer than a file system takes (the agent could never open it)."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path or len(path) > 4096:
        raise InvalidParameter(f"{what} must be an absolute path on the agent's host: {str(path)[:80]!r}")
    normal = posixpath.normpath(path)
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in normal.split("/")):
        raise InvalidParameter(f"{what} has a name longer than {NAME_MAX} bytes: {normal[:80]!r}")
    return "/" if normal == "//" else normal


def known_roots(agent: Agent) -> list[str] | None:
    """The directories the agent said at its last heartbeat it may read and write below (its ``roots``),
    or None before it said (a path is then taken, and the agent's heartbeat says if it refuses it)."""
    roots = (agent.inventory or {}).get("roots")
    if not isinstance(roots, list) or not roots or not all(isinstance(r, str) and r.startswith("/") for r in roots):
        return None
    return [posixpath.normpath(r) for r in roots]


def check_below_roots(agent: Agent, path: str) -> None:
    """A path outside the agent's roots is refused at once, not one heartbeat later (the agent refuses it
    on every open anyway: this only spares a file system that can never be backed up, or a restore
    task that can only fail on the host)."""
    roots = known_roots(agent)
    if roots is None or any(r == "/" or path == r or path.startswith(r + "/") for r in roots):
        return
    raise InvalidParameter(f"{path} is outside the roots of agent {state.label(agent)} ({', '.join(roots)[:300]}): "
                           "add the directory to roots in the agent's configuration on the host and restart the "
                           "agent, then add the path again; or name a directory below one")


def _excludes(dir_path: str, names: list) -> list[str]:
    if len(names) > MAX_EXCLUDES_PER_PATH:
        raise InvalidParameter(f"a path has at most {MAX_EXCLUDES_PER_PATH} exclude paths")
    out = []
    for name in names:
        normal = normal_path(name, "exclude_path_name")
        if normal == dir_path or not normal.startswith(dir_path.rstrip("/") + "/"):
            raise InvalidParameter(f"exclude path {normal} does not lie inside {dir_path}")
        if normal not in out:
            out.append(normal)
    return out


def add_agent_path(s: Session, ctx: ServiceContext, p: Principal, agent_id: str, add_path: list[str],
                   exclude_path: list[dict] | None = None) -> tuple[list[str], list[str]]:
    """add_agent_path: each new path becomes a file system of the project (provider ``agent``).
    ``exclude_path`` [{path_name, exclude_path_name}] sets what a backup of a path leaves out.
    Returns (added, existed)."""
    p.require_write()
    agent = get_agent(s, p.project_id, agent_id)
    if agent.status == "uninstalled":
        raise StateConflict(f"agent {state.label(agent)} was uninstalled", code="BackupService.6462")
    wanted = list(dict.fromkeys(normal_path(x) for x in add_path))
    if not wanted:
        raise InvalidParameter("add_path names at least one path")
    for path in wanted:
        check_below_roots(agent, path)
    current = {ap.dir_path: ap for ap in s.scalars(select(AgentPath).where(AgentPath.agent_id == agent.id))}
    added, existed = [], []
    for path in wanted:
        ap = current.get(path)
        if ap is not None and ap.status == "available":
            existed.append(path)
            continue
        if ap is None:
            ap = current[path] = AgentPath(agent_id=agent.id, dir_path=path, exclude_paths=[], created_at=ctx.now())
            s.add(ap)
        ap.status = "available"
        added.append(path)
    if sum(ap.status == "available" for ap in current.values()) > MAX_PATHS_PER_AGENT:
        raise QuotaExceeded(f"an agent has at most {MAX_PATHS_PER_AGENT} paths")
    for ex in exclude_path or []:
        path = normal_path(ex.get("path_name"), "path_name")
        if path not in current or current[path].status != "available":
            raise InvalidParameter(f"exclude_path names {path}, which is not a path of this agent")
        current[path].exclude_paths = _excludes(path, list(ex.get("exclude_path_name") or []))
    s.flush()
    offline = None if state.is_online(ctx, agent) else state.offline_reason(agent)
    for path in added:
        res = inventory.file_system(s, ctx, agent, path)
        if offline:
            res.status, res.status_reason = "error", offline
    return added, existed


def remove_agent_path(s: Session, ctx: ServiceContext, p: Principal, agent_id: str,
                      remove_path: list[str]) -> tuple[list[str], list[str]]:
    """remove_agent_path: the path is no longer protected. Its file system goes from the inventory
    unless it has backups or a vault (then it stays, in error, saying why). Returns (removed, not_existed)."""
    p.require_write()
    agent = get_agent(s, p.project_id, agent_id)
    current = {ap.dir_path: ap for ap in s.scalars(select(AgentPath).where(AgentPath.agent_id == agent.id))}
    removed, not_existed = [], []
    for path in dict.fromkeys(normal_path(x) for x in remove_path):
        ap = current.get(path)
        if ap is None or ap.status != "available":
            not_existed.append(path)
            continue
        s.delete(ap)
        removed.append(path)
        for res in state.resources_of(s, agent.id):
            if res.type == R.FILE_SYSTEM and res.path == path:
                _retire(s, res, f"path {path} was removed from agent {state.label(agent)}", agent)
    s.flush()
    return removed, not_existed


def _retire(s: Session, res: Resource, reason: str, agent: Agent) -> None:
    """A removed path's file system: gone, or, with backups or a vault, kept in error, remembering whose it
    was, so that adding the path again brings back this resource (its vault, its backups' chain) rather
    than a new one beside it (inventory.file_system)."""
    kept = s.scalar(select(func.count()).select_from(Backup).where(Backup.resource_id == res.id)) or \
        s.scalar(select(func.count()).select_from(VaultResource).where(VaultResource.resource_id == res.id))
    if kept:
        res.status, res.status_reason, res.agent_id = "error", reason, None
        res.identity = {**(res.identity or {}), inventory.RETIRED_FROM: agent.id}
    else:
        s.delete(res)


# ------------------------------------------------------------------------------------ check_agent
def version_key(version: str) -> tuple[int, ...]:
    """An agent version's numbers, to compare ("0.10.1" after "0.9")."""
    return tuple(int(x) for x in re.findall(r"\d+", version or "")[:4])


def is_old(version: str | None) -> bool:
    """Whether an agent of ``version`` is older than this service's agent (check_agent's ``is_old``)."""
    return version_key(version or "") < version_key(CURRENT_AGENT_VERSION)


def check_agent(s: Session, ctx: ServiceContext, p: Principal, items: list[dict]) -> list[dict]:
    """check_agent: for each resource, whether an agent serves it (installed: enrolled and online),
    its version, and whether that is older than this service's agent (``is_old``). Code 0 is
    ready; otherwise ``message`` says why not."""
    if not items:
        raise InvalidParameter("agent_status names at least one resource")
    out = []
    for item in items:
        rid = item.get("resource_id")
        rtype = item.get("resource_type")  # (the API requires it; None here: of any type)
        if rtype is not None:
            R.check_resource_type(rtype)
        res = s.get(Resource, rid) if isinstance(rid, str) else None
        entry = {"resource_id": rid, "installed": False, "version": "", "is_old": False}
        if res is None or res.project_id != p.project_id or rtype not in (None, res.type):
            out.append({**entry, "code": 404, "message": f"resource {rid} not found" + (f" among {rtype}" if rtype else "")})
            continue
        agent = s.get(Agent, res.agent_id) if res.agent_id else None
        if res.provider != inventory.PROVIDER:
            out.append({**entry, "code": 1, "message": "a resource of the service's own machines needs no agent"})
        elif agent is None:
            out.append({**entry, "code": 2, "message": res.status_reason or "the resource's agent was unregistered"})
        else:
            version = agent.agent_version or ""
            entry.update(version=version, is_old=is_old(version))
            if state.is_online(ctx, agent) and res.type == R.SERVER:  # and its applications (guide 7.3)
                ready = (agent.inventory or {}).get("app_consistency")
                app_consistency.want_readiness(agent, ctx.now())
                out.append({**entry, "installed": True, "code": 0, "message": app_consistency.check_message(ready),
                            "app_consistency": (ready or {}).get("hooks") or []})
            elif state.is_online(ctx, agent):
                out.append({**entry, "installed": True, "code": 0, "message": ""})
            else:
                out.append({**entry, "code": 3, "message": state.offline_reason(agent)})
    return out
