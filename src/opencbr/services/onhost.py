"""Tasks on resources whose data lives on an agent's host (``capabilities.reads_on_host``): the link to
the agent (the enrolled agent's address, the installation's client identity, its bandwidth limit) and
what a failed agent task means for the caller."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from opencbr.catalog.models import Agent, Resource
from opencbr.domain.errors import CBRError, NotFound
from opencbr.services.context import ServiceContext

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class HostLink:
    """How a worker reaches the agent holding a resource."""

    connect: Callable[[], object]  # () -> an open channel (mutual TLS, the agent's pinned certificate)
    project_id: str
    bandwidth: object  # the agent's limit (bytes per second, None for none), or a ProjectShare of the project's
    agent_id: str = ""
    fingerprint: str = ""  # the certificate pinned when the link was made (a new enrolment has another)

    def refuse_if_revoked(self, ctx: ServiceContext) -> None:
        """The task's agent was unregistered, uninstalled or enrolled again while it ran: say so, as the
        task's error (what it sent must not become a backup)."""
        from opencbr.services.agents.poll import NO_AGENT

        reason = revoked(ctx, self.agent_id, self.fingerprint) if self.agent_id else None
        if reason:
            raise CBRError(f"{reason} while the task ran: nothing it sent is kept", code=NO_AGENT)


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
        address = agents.require_online(s, ctx, res)
        identity = agents.authority(s, ctx)
        agent = s.get(Agent, address.agent_id)
        bandwidth = (int(agent.bandwidth_limit or 0) if agent is not None else 0) or None
    if ctx.settings.agent_project_bandwidth > 0:
        bandwidth = ProjectShare(ctx, address.project_id, bandwidth)

    def connect():
        _refuse_if_offline(ctx, address.agent_id)  # (a task asks an unreachable agent again, until this says)
        return _watched(ctx, address, open_channel(identity, address, CONNECT_TIMEOUT, seal=True))

    return HostLink(connect, address.project_id, bandwidth, address.agent_id, address.fingerprint)


def _refuse_if_offline(ctx: ServiceContext, agent_id: str) -> None:
    """A task asks an agent that cannot be reached again for a while (providers/agent UNREACHABLE_WAIT: it
    may be restarting); once the heartbeat calls it offline, the next ask ends the task with that reason."""
    from opencbr.agentlink.channel import RemoteError
    from opencbr.services.agents import state

    with ctx.read() as s:
        agent = s.get(Agent, agent_id)
        if agent is None:
            raise RemoteError("agent_unregistered", f"agent {agent_id} was unregistered")
        if not state.is_online(ctx, agent):
            raise RemoteError("agent_offline", state.offline_reason(agent))


#: How often a running agent task asks the catalog whether its agent was revoked meanwhile.
REVOCATION_CHECK_SECONDS = 2.0


def revoked(ctx: ServiceContext, agent_id: str, fingerprint: str) -> str | None:
    """Why the agent enrolled with the certificate ``fingerprint`` may no longer be used (unregistered,
    uninstalled, or enrolled again with another certificate), or None while it may."""
    from opencbr.services.agents import state

    with ctx.read() as s:
        agent = s.get(Agent, agent_id)
        if agent is None:
            return f"agent {agent_id} was unregistered"
        if agent.status != "active" or agent.cert_fingerprint != fingerprint:
            return f"agent {state.label(agent)} was uninstalled or enrolled again"
    return None


def _watched(ctx: ServiceContext, address, channel):
    """The task's channel, closed within ``REVOCATION_CHECK_SECONDS`` of its agent being revoked. The API
    revokes in the catalog and tells the agent best effort (it may be unreachable, or paused): the worker
    moving the data must stop by itself, or the task would go on, and publish, after "unregistered" was
    answered. The caller says why (:func:`revoked`) and keeps nothing of it."""
    def watch() -> None:
        while not channel.wait_closed(REVOCATION_CHECK_SECONDS):
            try:
                if revoked(ctx, address.agent_id, address.fingerprint):
                    channel.close()
                    return
            except Exception:  # noqa: BLE001 - the catalog unreachable for a moment: ask again later
                continue

    threading.Thread(target=watch, name="agent-revocation", daemon=True).start()
    return channel


class ProjectShare:
    """Setting ``agent_project_bandwidth``: what one project's agent tasks move together, per second, is
    shared equally by those running now (on any worker: counted in the catalog), and never more than the
    agent's own limit. Asked again every second by the running task (providers/agent)."""

    def __init__(self, ctx: ServiceContext, project_id: str, agent_limit: int | None):
        self.ctx, self.project_id, self.agent_limit = ctx, project_id, agent_limit

    def __call__(self) -> int:
        with self.ctx.read() as s:
            running = running_agent_tasks(s, self.project_id)
        share = max(1, self.ctx.settings.agent_project_bandwidth // max(1, running))
        return min(share, self.agent_limit) if self.agent_limit else share


def running_agent_tasks(s, project_id: str) -> int:
    """The project's running tasks on resources of agents' hosts (each moves data over one channel)."""
    from sqlalchemy import func, select

    from opencbr.catalog.models import Task
    from opencbr.services.tasks import RUNNING

    return int(s.scalar(select(func.count()).select_from(Task).join(Resource, Resource.id == Task.resource_id)
                        .where(Task.project_id == project_id, Task.status == RUNNING,
                               Resource.agent_id.is_not(None))) or 0)


def agent_error(e: Exception) -> CBRError:
    """An agent task's failure (its code and message) as the task's error."""
    return CBRError(f"the agent could not do it: {getattr(e, 'message', e)}", code="BackupService.6424")


# ------------------------------------------------------------------------------------ new resources
def _agent_task(ctx: ServiceContext, resource_id: str, cancel, call: Callable[[object, HostLink], dict]) -> dict:
    """``call(provider, link)`` on the agent of ``resource_id``; its failure as the task's error."""
    from opencbr.engine import OperationCancelled
    from opencbr.providers.agent import AgentTaskFailed

    link = link_to(ctx, resource_id)
    with ctx.tx() as s:
        provider = ctx.providers.for_resource(s.get(Resource, resource_id))
    try:
        return call(provider, link)
    except AgentTaskFailed as e:
        if cancel.is_set():
            raise OperationCancelled("the task was cancelled") from None
        link.refuse_if_revoked(ctx)
        raise agent_error(e) from None


def fill_new_disk(ctx: ServiceContext, run, repo, backup_id: str, disk_id: str, size: int) -> None:
    """Guide 6.4 on an agent's host: the agent creates the image (exclusively, at least ``size`` bytes)
    and writes the backup into it; a failed or cancelled one is removed there and here."""
    from opencbr.services import resources as res_svc
    from opencbr.services.progress import TaskProgress

    progress = TaskProgress(run)
    with ctx.tx() as s:
        path = s.get(Resource, disk_id).path
    made: dict = {}
    with res_svc.made_from_backup(ctx, run, disk_id, size=lambda: int(made.get("size") or size),
                                  remove=lambda: None):  # (the agent removes an image it did not finish)
        made.update(_agent_task(ctx, disk_id, progress.cancel, lambda provider, link: provider.restore(
            repo, link.connect, project_id=link.project_id, backup_id=backup_id, kind="disk", target=path,
            create=True, size=size, cancel=progress.cancel, bandwidth=link.bandwidth, progress=progress,
            agent_id=link.agent_id)))


def fill_new_file_system(ctx: ServiceContext, run, repo, backup_id: str, fs_id: str) -> None:
    """Guide 6.5 on an agent's host: the agent makes the directory (it must be new or empty) and restores
    the tree into it. One that fails goes from the catalog with its agent path, and the agent removes
    what the task wrote (the directory was recorded there as made for this task)."""
    from opencbr.services import resources as res_svc
    from opencbr.services.agents import targets
    from opencbr.services.progress import TaskProgress

    progress = TaskProgress(run)
    with ctx.tx() as s:
        fs = s.get(Resource, fs_id)
        path, logical, agent_id = fs.path, int(fs.size_bytes or 0), fs.agent_id
    done: dict = {}

    made: list = []  # (provider, link) once the agent made the directory for this task

    def forget() -> None:
        with ctx.tx() as s:
            targets.forget_path(s, agent_id, path)
        for provider, link in made:
            _remove_made(ctx, run, provider, link, path)

    def fill(provider, link) -> dict:
        _clear_left_on_host(ctx, run, provider, link, path)
        provider.create_dir(link.connect, project_id=link.project_id, path=path, made_by=run.task_id)
        made.append((provider, link))
        return provider.restore(repo, link.connect, project_id=link.project_id, backup_id=backup_id, kind="tree",
                                target=path, cancel=progress.cancel, bandwidth=link.bandwidth, progress=progress,
                                agent_id=link.agent_id)

    with res_svc.made_from_backup(ctx, run, fs_id, size=lambda: int(done.get("bytes_written") or logical),
                                  remove=forget):
        done.update(_agent_task(ctx, fs_id, progress.cancel, fill))
    run.set_extra(restore_result={k: done.get(k) for k in ("files", "dirs", "bytes_written") if k in done})


def _remove_made(ctx: ServiceContext, run, provider, link: HostLink, path: str) -> None:
    """What a failed new file system wrote on the host, removed by the agent; when the agent cannot
    (it is the failure), the task says what is left where."""
    import logging

    try:
        provider.remove_made(link.connect, project_id=link.project_id, path=path, made_by=run.task_id)
    except Exception as e:  # noqa: BLE001 - the task's own error is the one to report; this is said beside it
        logging.getLogger("opencbr.agents").warning("task %s: %s was not removed: %s", run.task_id, path, e)
        run.set_extra(left_on_host={"path": path, "agent_id": link.agent_id,
                                    "reason": str(getattr(e, "message", e))[:500]})


#: How far back a new file system looks for a failed one's directory left at its path (the agent keeps
#: its record of a made directory this long: agent/made.py KEEP_SECONDS).
LEFT_ON_HOST_DAYS = 7


def _clear_left_on_host(ctx: ServiceContext, run, provider, link: HostLink, path: str) -> None:
    """A new file system at a path where an earlier one failed while its agent was unreachable (killed,
    cut off: ``left_on_host``): the agent is asked, now that it answers, to remove what that task made
    there (it removes only a directory it recorded as made for that very task, agent/made.py), so that
    restoring again repairs it. Without this the directory stayed, half filled, and every later
    restore to that path was refused as "not empty" until someone removed it by hand."""
    import logging
    from datetime import timedelta

    from sqlalchemy import select

    from opencbr.catalog.models import Task

    since = ctx.now() - timedelta(days=LEFT_ON_HOST_DAYS)
    with ctx.read() as s:
        failed = [(t.id, t.extra_info) for t in s.scalars(select(Task).where(
            Task.project_id == run.project_id, Task.operation_type == "create_fs", Task.status == "failed",
            Task.id != run.task_id, Task.created_at >= since))]
    for task_id, extra in failed:
        left = (extra or {}).get("left_on_host") or {}
        # (a record written before the service named the agent in it -- a failure before an upgrade in
        # place -- has no ``agent_id``: the agent is asked all the same; it removes only a directory it
        # recorded as made for that very task, and refuses any other)
        if left.get("path") != path or left.get("removed_by") or \
                left.get("agent_id", link.agent_id) != link.agent_id:
            continue
        try:
            provider.remove_made(link.connect, project_id=link.project_id, path=path, made_by=task_id)
        except Exception as e:  # noqa: BLE001 - not that task's any more (removed by hand, reused): create_dir says
            logging.getLogger("opencbr.agents").info("task %s: %s left by task %s not removed: %s",
                                                     run.task_id, path, task_id, e)
            continue
        with ctx.tx() as s:
            task = s.get(Task, task_id)
            if task is not None:
                info = dict(task.extra_info or {})
                info["left_on_host"] = {**info.get("left_on_host", {}), "removed_by": run.task_id}
                task.extra_info = info
