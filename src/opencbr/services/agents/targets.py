"""New resources made from a backup on an agent's host (guide 6.4 a new disk, 6.5 a new file system;
13.4.8 restoring data to a new server on the same or another host): the catalog rows only. The API
never talks to agents, so what is at the path is checked by the agent when the task runs (an image
file is created exclusively, a directory must be empty); here: the agent is this project's, enrolled
and online, and the path is not already one of its resources.

The new resource must survive the agent's next inventory, which matches resources by path: a new disk is
a raw image file (``.img`` or ``.raw``, the suffixes the agent lists below its roots), a new file system
becomes one of the agent's paths (as ``add_agent_path`` makes them).
"""

from __future__ import annotations

from sqlalchemy import select

import opencbr.services.agents.inventory as inventory
import opencbr.services.agents.registry as registry
import opencbr.services.agents.state as state
from opencbr.catalog.models import Agent, AgentPath, Resource
from opencbr.domain import resource as R
from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

#: What the agent's inventory finds as disk images below its roots (agent/inventory.py IMAGE_SUFFIXES).
IMAGE_SUFFIXES = (".img", ".raw")


def _usable_agent(s, ctx: ServiceContext, p: Principal, agent_id: str) -> Agent:
    agent = registry.get_agent(s, p.project_id, agent_id)  # another project's agent: 404, as unknown
    if not state.is_enrolled(agent):
        raise StateConflict(f"agent {state.label(agent)} is not enrolled", code="BackupService.6462")
    if not state.is_online(ctx, agent):
        raise StateConflict(f"agent {state.label(agent)}: {state.offline_reason(agent)}", code="BackupService.6463")
    return agent


def _check_free(s, agent: Agent, path: str) -> None:
    for res in state.resources_of(s, agent.id):
        if res.path == path:
            raise StateConflict(f"{path} is already resource {res.name} of agent {state.label(agent)}; choose a "
                                f"new path", code="BackupService.6432")


def new_disk(s, ctx: ServiceContext, p: Principal, agent_id: str, path: object, *, name: str, size: int,
             zone: str, encrypted: bool, description: str) -> Resource:
    """The row of a disk image to be created at ``path`` on ``agent_id``'s host (status ``restoring``)."""
    agent = _usable_agent(s, ctx, p, agent_id)
    path = registry.normal_path(path)
    if not path.endswith(IMAGE_SUFFIXES):
        raise InvalidParameter("a new disk on an agent's host is a raw image file: its name ends with .img or "
                               ".raw (the agent's inventory lists those)")
    registry.check_below_roots(agent, path)
    _check_free(s, agent, path)
    disk = Resource(project_id=p.project_id, type=R.DISK, provider=inventory.PROVIDER, agent_id=agent.id, name=name,
                    path=path, size_bytes=size, region=ctx.settings.region, availability_zone=zone,
                    encrypted=encrypted, status="restoring", description=description, host="", identity={})
    s.add(disk)
    s.flush()
    return disk


def new_file_system(s, ctx: ServiceContext, p: Principal, agent_id: str, path: object, *, name: str,
                    size: int, zone: str, description: str) -> Resource:
    """The row of a file system to be created at directory ``path`` on ``agent_id``'s host (status
    ``restoring``), and the agent path that keeps it in the agent's inventory."""
    agent = _usable_agent(s, ctx, p, agent_id)
    path = registry.normal_path(path)
    if path == "/":
        raise InvalidParameter("a new file system needs a directory of its own, not /", code="BackupService.6501")
    registry.check_below_roots(agent, path)
    _check_free(s, agent, path)
    paths = list(s.scalars(select(AgentPath).where(AgentPath.agent_id == agent.id)))
    if sum(ap.status == "available" for ap in paths) >= registry.MAX_PATHS_PER_AGENT:
        raise QuotaExceeded(f"an agent has at most {registry.MAX_PATHS_PER_AGENT} paths")
    ap = next((ap for ap in paths if ap.dir_path == path), None)
    if ap is None:
        ap = AgentPath(agent_id=agent.id, dir_path=path, exclude_paths=[], created_at=ctx.now())
        s.add(ap)
    ap.status = "available"
    s.flush()
    fs = inventory.file_system(s, ctx, agent, path)
    fs.name, fs.size_bytes, fs.availability_zone, fs.description = name, size, zone, description
    fs.status, fs.status_reason = "restoring", ""
    return fs


def forget_path(s, agent_id: str | None, path: str) -> None:
    """The agent path of a new file system that was not made (its row is gone already; the directory
    stays on the host: the agent never deletes a tree)."""
    for ap in s.scalars(select(AgentPath).where(AgentPath.agent_id == agent_id, AgentPath.dir_path == path)):
        s.delete(ap)


def check_destination(s, resource_id: str, path: str) -> None:
    """A restore target on the host of ``resource_id`` (an agent's resource) outside that agent's roots is
    a 400 now, not a task that fails on the host."""
    res = s.get(Resource, resource_id)
    agent = s.get(Agent, res.agent_id) if res is not None and res.agent_id else None
    if agent is not None:
        registry.check_below_roots(agent, registry.normal_path(path))


#: The first agent version that restores a file-system backup's single files beside what the destination
#: holds, never over it (restore-files: a name taken is a conflict). Older agents replaced a file of the
#: same name without a word, and the service cannot see the host to check for them.
FILES_NEVER_OVER = "0.2.0"
AGENT_TOO_OLD = "BackupService.6466"


def check_files_never_over(s, resource_id: str) -> None:
    """restore-files of a file-system backup onto the host of ``resource_id`` only through an agent that
    never writes over what is there (``FILES_NEVER_OVER``); an older one: refused, saying to upgrade it."""
    res = s.get(Resource, resource_id)
    agent = s.get(Agent, res.agent_id) if res is not None and res.agent_id else None
    if agent is not None and registry.version_key(agent.agent_version) < registry.version_key(FILES_NEVER_OVER):
        raise StateConflict(f"agent {state.label(agent)} runs version {agent.agent_version or 'unknown'}, which would "
                            "restore files over those of the same name in the destination; upgrade it to "
                            f"{FILES_NEVER_OVER} or later (cbr agent install-command), or restore the whole "
                            "backup to a new file system", code=AGENT_TOO_OLD)


def host_resource(s, ctx: ServiceContext, p: Principal, agent_id: str) -> str:
    """The id of ``agent_id``'s host (its server resource): what a task restoring files onto that host
    reaches the agent through."""
    agent = _usable_agent(s, ctx, p, agent_id)
    for res in state.resources_of(s, agent.id):
        if res.type == R.SERVER:
            return res.id
    raise StateConflict(f"agent {state.label(agent)} has not reported its host yet; retry in a moment",
                        code="BackupService.6463")
