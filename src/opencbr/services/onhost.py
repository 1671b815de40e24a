"""Tasks on resources whose data lives on an agent's host (``capabilities.reads_on_host``): the link to
the agent (the enrolled agent's address, the installation's client identity, its bandwidth limit) and
what a failed agent task means for the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from opencbr.catalog.models import Resource
from opencbr.domain.errors import CBRError, NotFound
from opencbr.services.context import ServiceContext

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class HostLink:
    """How a worker reaches the agent holding a resource."""

    connect: Callable[[], object]  # () -> an open channel (mutual TLS, the agent's pinned certificate)
    project_id: str
    bandwidth: int | None  # bytes per second (the agent's limit), None for none


def on_host(ctx: ServiceContext, resource: Resource) -> bool:
    return ctx.providers.for_resource(resource).capabilities.reads_on_host


def link_to(ctx: ServiceContext, resource_id: str) -> HostLink:
    """The link to the agent of ``resource_id``; an offline or unknown agent fails here, with its reason,
    rather than a task hanging on it."""
    from opencbr.providers.agent.link import open_channel
    from opencbr.services import agents

    with ctx.tx() as s:
        res = s.get(Resource, resource_id)
        if res is None:
            raise NotFound(f"resource {resource_id} is no longer in the inventory", code="BackupService.6423")
        agents.require_online(s, ctx, res)
        address = agents.address_of(s, res)
        identity = agents.authority(s, ctx)
        project_id = res.project_id
    return HostLink(lambda: open_channel(identity, address, CONNECT_TIMEOUT), project_id,
                    int(getattr(address, "bandwidth_limit", 0) or 0) or None)


def agent_error(e: Exception) -> CBRError:
    """An agent task's failure (its code and message) as the task's error."""
    return CBRError(f"the agent could not do it: {getattr(e, 'message', e)}", code="BackupService.6424")
