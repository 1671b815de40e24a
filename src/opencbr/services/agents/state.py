"""What an agent is now: online or offline (from its last answer to the poll), and the statuses its
resources show when it cannot be reached."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from opencbr.catalog.models import Agent, Resource
from opencbr.domain import resource as R
from opencbr.services.context import ServiceContext

ONLINE, OFFLINE, UNINSTALLED = "online", "offline", "uninstalled"
#: The statuses list_agent shows and filters by.
WIRE_STATUSES = (ONLINE, OFFLINE, UNINSTALLED)
#: An agent is online while its last answer is at most this many heartbeats old.
MISSED_POLLS = 3
#: The longest one heartbeat waits for an agent's answer (at most the poll interval).
POLL_TIMEOUT_SECONDS = 5.0
#: Resource statuses a running task set; the poll leaves them alone (the task sets them back).
TASK_STATUSES = ("restoring", "creating")


def poll_timeout(ctx: ServiceContext) -> float:
    return min(POLL_TIMEOUT_SECONDS, ctx.settings.agent_poll_seconds)


def offline_after(ctx: ServiceContext) -> float:
    """Seconds without an answer after which an agent is offline: :data:`MISSED_POLLS` heartbeats, each
    the interval *plus* the heartbeat's own time (the interval is waited after a poll ends; a poll of a
    loaded service took longer than the interval, and agents that had answered every poll showed offline)."""
    return MISSED_POLLS * (ctx.settings.agent_poll_seconds + poll_timeout(ctx))


def online_since(ctx: ServiceContext, now: datetime | None = None) -> datetime:
    """An agent that answered at or after this time is online."""
    return (now or ctx.now()) - timedelta(seconds=offline_after(ctx))


def is_enrolled(agent: Agent) -> bool:
    return agent.status == "active" and bool(agent.cert_fingerprint)


def is_online(ctx: ServiceContext, agent: Agent, now: datetime | None = None) -> bool:
    return (is_enrolled(agent) and agent.last_active_time is not None
            and agent.last_active_time >= online_since(ctx, now))


def wire_status(ctx: ServiceContext, agent: Agent) -> str:
    if agent.status == "uninstalled":
        return UNINSTALLED
    return ONLINE if is_online(ctx, agent) else OFFLINE


def label(agent: Agent) -> str:
    """How messages name an agent: its host and id."""
    host = agent.host_nickname or agent.host_name
    return f"{host} ({agent.id})" if host else agent.id


def offline_reason(agent: Agent) -> str:
    if not agent.cert_fingerprint:
        return f"agent {label(agent)} is not enrolled: run opencbr-agent register on its host"
    when = agent.last_active_time.strftime("%Y-%m-%d %H:%M:%S UTC") if agent.last_active_time else "never"
    why = f": {agent.last_error}" if agent.last_error else ""
    return f"agent {label(agent)} is offline (last answer: {when}){why}"


def error_status(rtype: str) -> str:
    """The status of a resource whose data cannot be reached (a server's is ``faulty``)."""
    return "faulty" if rtype == R.SERVER else "error"


def mark_resources(s: Session, agent_id: str, reason: str) -> None:
    """Every resource of the agent in error (faulty for its server) with ``reason``, except while a
    task has one (its status is the task's) and those a restore left unfinished (that reason is kept:
    it says the next restore must repair them)."""
    for rtype in R.RESOURCE_TYPES:
        s.execute(update(Resource).where(Resource.agent_id == agent_id, Resource.type == rtype,
                                         Resource.status.not_in(TASK_STATUSES),
                                         Resource.status_reason.not_like(R.UNFINISHED_RESTORE + "%"))
                  .values(status=error_status(rtype), status_reason=reason[:2000]))


def resources_of(s: Session, agent_id: str) -> list[Resource]:
    return list(s.scalars(select(Resource).where(Resource.agent_id == agent_id)))
