"""Which machine holds a local resource's data (issue: a worker must never back up whatever it happens
to find at a path).

A disk or file system belongs to a *host group*: one machine, or several that share the storage (setting
``host_group``, default the machine's host name). It is recorded in ``Resource.host`` at registration;
every task that reads or writes the resource carries it as ``Task.required_host`` (see
``tasks.new_task``), and only workers of that group claim it.

Registration names the group in one of two ways:

- on a machine of the group (the API's own, usually): the path is checked there and then;
- on the API machine for another group (``host`` in the request, ``--host`` in the CLI): the API cannot
  see that machine's files, so the resource is ``creating`` until a *probe* task, run by a worker of
  that group, checks the path against that worker's ``resource_roots`` and records its real path and
  size (``available``), or the reason it cannot be used (``error``).
"""

from __future__ import annotations

import os
import socket

from sqlalchemy import select

from opencbr.catalog.models import Project, Resource, User
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, InvalidParameter
from opencbr.providers import local
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

#: The host group of this process (set at start from the settings; the host name until then).
_local_group = socket.gethostname()


def set_local_group(group: str) -> None:
    global _local_group
    _local_group = group


def local_group() -> str:
    return _local_group


def is_here(res: Resource) -> bool:
    """Whether this machine can see the resource's data (resources from before host groups: yes)."""
    return not res.host or res.host == _local_group


def check_group_name(host: str) -> str:
    if not isinstance(host, str) or not host.strip() or len(host) > 255 or any(c in host for c in "\x00/ "):
        raise InvalidParameter("host must be a host name or host group name (no spaces or slashes)")
    return host.strip()


def register_elsewhere(ctx: ServiceContext, p: Principal, *, rtype: str, name: str, path: str, host: str,
                       az: str, encrypted: bool = False, description: str = "") -> Resource:
    """A disk or file system of another host group: recorded ``creating``, probed there by a task."""
    if not isinstance(path, str) or not os.path.isabs(path) or "\x00" in path:
        raise InvalidParameter(f"path must be absolute: {path!r}")
    path = os.path.normpath(path)
    now = ctx.now()
    with ctx.tx() as s:
        if s.scalar(select(Resource.id).where(Resource.path == path, Resource.host == host)) is not None:
            raise CBRError(f"{path} on host {host} is already registered as a resource", code="BackupService.6105",
                           status=409)
        res = Resource(project_id=p.project_id, type=rtype, name=name, path=path, size_bytes=0, host=host,
                       region=ctx.settings.region, availability_zone=az, encrypted=bool(encrypted),
                       status="creating", description=description or "",
                       status_reason=f"waiting for a worker on host {host} to check the path")
        s.add(res)
        s.flush()
        tasks.new_task(s, project_id=p.project_id, operation_type="probe", now=now, resource_id=res.id,
                       resource_name=name, resource_type=rtype, request_id=p.request_id,
                       params={"resource_id": res.id}, max_attempts=3)
    return res


@tasks.handler("probe")
def run_probe(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """On a worker of the resource's host group: is the path there, allowed, and what is its size?"""
    with ctx.tx() as s:
        res = s.get(Resource, run.params["resource_id"])
        if res is None:
            return
        rtype, path, project_id = res.type, res.path, res.project_id
        operator = s.scalar(select(User.id).join(Project, Project.account_id == User.account_id)
                            .where(Project.id == project_id, User.is_operator.is_(True)).limit(1))
    try:
        if rtype == R.DISK:
            real, size = (lambda d: (d.path, d.size_bytes))(local.probe_disk(path))
        else:
            real, size = local.probe_directory(path)
        roots = ctx.settings.resource_roots
        if roots:
            local.check_allowed(real, roots)
        elif operator is None:
            raise InvalidParameter(f"host {local_group()} lets tenants use no paths: set resource_roots there")
    except CBRError as e:
        _set(ctx, run.params["resource_id"], status="error", status_reason=e.message)
        raise
    _set(ctx, run.params["resource_id"], status="available", status_reason="", path=real, size_bytes=size)


def _set(ctx: ServiceContext, resource_id: str, **values: object) -> None:
    with ctx.tx() as s:
        res = s.get(Resource, resource_id)
        if res is not None:
            for k, v in values.items():
                setattr(res, k, v)
