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

import socket
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Project, Resource, User
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, InvalidParameter
from opencbr.providers.base import PathSwapped
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
    return host_is_here(res.host)


def host_is_here(host: str | None) -> bool:
    """``is_here`` of a resource's ``host`` column."""
    return not host or host == _local_group


def check_group_name(host: str) -> str:
    if not isinstance(host, str) or not host.strip() or len(host) > 255 or any(c in host for c in "\x00/ "):
        raise InvalidParameter("host must be a host name or host group name (no spaces or slashes)")
    return host.strip()


def register_elsewhere(s: Session, ctx: ServiceContext, p: Principal, *, rtype: str, name: str, path: str,
                       host: str, az: str, check_free: Callable[[str], None], encrypted: bool = False,
                       description: str = "") -> Resource:
    """A disk or file system of another host group: recorded ``creating``, probed there by a task.
    ``check_free(path)`` refuses a path at, above or below another project's resource there."""
    path = ctx.providers.default.normal_path(path)
    now = ctx.now()
    check_free(path)
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


def run_probe(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """On a worker of the resource's host group: is the path there, allowed, and what is its size?"""
    with ctx.tx() as s:
        res = s.get(Resource, run.params["resource_id"])
        if res is None:
            return
        rtype, path, project_id = res.type, res.path, res.project_id
        provider = ctx.providers.for_resource(res)
        operator = s.scalar(select(User.id).join(Project, Project.account_id == User.account_id)
                            .where(Project.id == project_id, User.is_operator.is_(True)).limit(1))
    try:
        if ctx.settings.resource_roots:
            provider.check_allowed(path)  # before anything is looked up (no existence oracle)
        elif operator is None:
            raise InvalidParameter(f"host {local_group()} lets tenants use no paths: set resource_roots there")
        try:
            probe = provider.probe(rtype, path)
        except PathSwapped as e:
            raise InvalidParameter(str(e)) from None
        except OSError as e:
            raise InvalidParameter(f"cannot open {path} on host {local_group()}: {e.strerror}") from None
    except CBRError as e:
        _set(ctx, run.params["resource_id"], status="error", status_reason=e.message)
        raise
    _set(ctx, run.params["resource_id"], status="available", status_reason="", size_bytes=probe.size,
         identity=probe.identity)
    if rtype == R.FILE_SYSTEM:  # its size is counted in the background, where its data is
        with ctx.tx() as s:
            tasks.new_task(s, project_id=project_id, operation_type="measure", now=ctx.now(),
                           resource_id=run.params["resource_id"], resource_type=rtype,
                           provider_id=R.PROVIDER_ID[rtype], params={"resource_id": run.params["resource_id"]})


def _set(ctx: ServiceContext, resource_id: str, **values: object) -> None:
    with ctx.tx() as s:
        res = s.get(Resource, resource_id)
        if res is not None:
            for k, v in values.items():
                setattr(res, k, v)
