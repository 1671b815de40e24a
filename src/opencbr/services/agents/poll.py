"""The heartbeat: the scheduler process asks every enrolled agent for its inventory, all at once on a
bounded pool of threads, and records what each answered (or why it did not). The API never talks to
agents; it shows what the poll stored.

The data path asks here where an agent is (:func:`address_of`) and whether it may be used now
(:func:`require_online`); :func:`link_error` turns a broken link into the CBR error a task shows.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

import opencbr.services.agents.ca as A
import opencbr.services.agents.inventory as inventory
import opencbr.services.agents.state as state
from opencbr.catalog.models import Agent, AgentPath, Resource, utcnow
from opencbr.domain.errors import CBRError, StateConflict
from opencbr.providers.agent import link
from opencbr.services import app_consistency
from opencbr.services.context import ServiceContext

log = logging.getLogger("opencbr.agents")

#: Agents asked at the same time by one poll.
MAX_POLL_THREADS = 32
AGENT_OFFLINE = "BackupService.6463"
AGENT_REFUSED = "BackupService.6464"
NO_AGENT = "BackupService.6465"
_MAX_ERROR_CHARS = 500


@dataclass
class PollReport:
    answered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _address(agent: Agent) -> link.AgentAddress:
    return link.AgentAddress(agent.id, agent.project_id, agent.endpoint, agent.cert_fingerprint or "")


def _ask(identity: link.ServiceIdentity, address: link.AgentAddress, paths: list[dict],
         timeout: float, readiness: bool) -> tuple[dict | None, str]:
    try:
        return link.call(identity, address, "inventory", timeout=timeout, paths=paths, readiness=readiness), ""
    except link.RemoteError as e:
        return None, f"the agent refused: {e.code}: {e.message}"[:_MAX_ERROR_CHARS]
    except (link.LinkError, OSError) as e:
        return None, (str(e) or type(e).__name__)[:_MAX_ERROR_CHARS]
    except Exception as e:  # noqa: BLE001 - one agent's failure is that agent's, never the whole poll's
        log.warning("agent %s: asking it failed", address.agent_id, exc_info=True)
        return None, f"{type(e).__name__}: {e}"[:_MAX_ERROR_CHARS]


def poll_agents(ctx: ServiceContext, *, timeout: float = 5) -> PollReport:
    """Ask every enrolled agent for its inventory; update status, version, last answer and resources."""
    report = PollReport()
    with ctx.read() as s:
        agents = list(s.scalars(select(Agent).where(Agent.status == "active", Agent.cert_fingerprint.is_not(None))))
        paths: dict[str, list[dict]] = {a.id: [] for a in agents}
        for ap in s.scalars(select(AgentPath).where(AgentPath.status == "available")):
            if ap.agent_id in paths:
                paths[ap.agent_id].append({"dir_path": ap.dir_path, "exclude_paths": list(ap.exclude_paths or [])})
        readiness = app_consistency.readiness_wanted(s, ctx.now(), agents)
    if not agents:
        return report
    identity = A.service_identity(ctx)
    asked_at = utcnow()
    with ThreadPoolExecutor(max_workers=min(MAX_POLL_THREADS, len(agents)), thread_name_prefix="agent-poll") as pool:
        asked = {pool.submit(_ask, identity, _address(a), paths[a.id], timeout, a.id in readiness): a for a in agents}
        for future in as_completed(asked):
            agent = asked[future]
            answer, error = future.result()
            try:
                _record(ctx, agent.id, agent.cert_fingerprint, answer, error, asked_at)
            except Exception:  # one agent's odd answer must not stop the others
                log.exception("agent %s: recording its answer failed", agent.id)
                error = error or "its inventory could not be recorded"
            if answer is not None and not error:
                report.answered.append(agent.id)
            else:
                report.failed[agent.id] = error
    return report


def _record(ctx: ServiceContext, agent_id: str, fingerprint: str | None, answer: dict | None, error: str,
            asked_at: datetime | None = None) -> None:
    with ctx.tx() as s:
        agent = s.get(Agent, agent_id)
        if agent is None or agent.cert_fingerprint != fingerprint or agent.status != "active":
            return  # unregistered or re-enrolled meanwhile: this answer is not about it
        now = ctx.now()
        agent.last_poll_at = now
        if answer is None:
            agent.last_error = error
            if not state.is_online(ctx, agent, now):
                state.mark_resources(s, agent.id, state.offline_reason(agent))
            return
        answer, dropped = inventory.storable_answer(answer)
        agent.last_active_time = now
        agent.last_error = f"{dropped} entries of its inventory named in bytes that are not UTF-8 were left out" \
            if dropped else ""
        agent.agent_version = str(answer.get("version") or agent.agent_version)[:32]
        host = answer.get("host") if isinstance(answer.get("host"), dict) else {}
        for name, limit in (("host_name", 255), ("host_os", 255), ("host_ip", 64)):
            if isinstance(host.get(name), str) and host[name]:
                setattr(agent, name, host[name][:limit])
        agent.inventory = {**app_consistency.kept_with_inventory(agent.inventory),
                           **{k: answer.get(k) for k in ("host", "block_devices", "paths", "roots", "version")}}
        agent.inventory["app_consistency"] = app_consistency.readiness(answer.get("app_consistency"))
        inventory.apply(s, ctx, agent, answer, asked_at=asked_at)


# ------------------------------------------------------------------------------------ for the data path
def address_of(s: Session, resource: Resource) -> link.AgentAddress:
    """Where the agent holding ``resource`` listens and which certificate it must show."""
    agent = s.get(Agent, resource.agent_id) if resource.agent_id else None
    if agent is None:
        raise StateConflict(f"{resource.name}: {resource.status_reason or 'its agent was unregistered'}",
                            code=NO_AGENT)
    if not state.is_enrolled(agent) or not agent.endpoint:
        raise StateConflict(f"{resource.name}: {state.offline_reason(agent)}", code=NO_AGENT)
    return _address(agent)


def require_online(s: Session, ctx: ServiceContext, resource: Resource) -> link.AgentAddress:
    """``address_of``, refused with a clear error when the agent has missed the last polls."""
    address = address_of(s, resource)
    agent = s.get(Agent, address.agent_id)
    if not state.is_online(ctx, agent):
        raise CBRError(f"{resource.name}: {state.offline_reason(agent)}", code=AGENT_OFFLINE, status=409)
    return address


def link_error(address: link.AgentAddress, error: Exception) -> CBRError:
    """The CBR error for a failed conversation with an agent."""
    if isinstance(error, link.RemoteError):
        return CBRError(f"agent {address.agent_id} refused: {error.code}: {error.message}", code=AGENT_REFUSED)
    return CBRError(f"agent {address.agent_id} is offline or unreachable at {address.endpoint}: {error}",
                    code=AGENT_OFFLINE)


def exclude_paths(s: Session, resource: Resource) -> list[str]:
    """What a backup of an agent's file system leaves out (add_agent_path's ``exclude_path``)."""
    ap = s.scalar(select(AgentPath).where(AgentPath.agent_id == resource.agent_id,
                                          AgentPath.dir_path == resource.path))
    return list(ap.exclude_paths or []) if ap is not None else []
