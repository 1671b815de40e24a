"""The agent provider (see the package's docstring)."""

from __future__ import annotations

import posixpath
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from opencbr.agentlink.channel import LinkError, RemoteError
from opencbr.domain import resource as R
from opencbr.engine.remote import BackupScope, ReadScope, serve_backup, serve_restore
from opencbr.engine.remote.vault import vault_request
from opencbr.providers.base import Capabilities, PathState, PathSwapped, Probe

Connect = Callable[[], object]  # () -> an open Channel to the agent (providers/agent/link.py)
RESHARE_SECONDS = 1.0  # how often a shared bandwidth limit is asked again while a task runs
BUSY_WAIT = 600.0  # seconds a task waits, in all, for a busy agent to take it
#: Seconds a task goes on asking an agent that refuses its connection or cannot be reached: an agent
#: restarting (an upgrade, systemd bringing it back) is away for seconds, and the heartbeat has not
#: called it offline yet; failing at once turned a scheduled backup in that moment into an error.
UNREACHABLE_WAIT = 60.0
BUSY_FIRST_PAUSE, BUSY_MAX_PAUSE = 0.5, 10.0  # between two asks (doubling)


class SharedBandwidth(Protocol):
    """A limit that changes while a task runs (one project's limit shared by its running tasks):
    ``agent_limit`` is the agent's own fixed limit (told to the agent), calling it gives the task's
    share now (bytes per second both ways, None for none)."""

    agent_limit: int | None

    def __call__(self) -> int | None: ...


Bandwidth = int | SharedBandwidth | None
TIMEOUT = 120.0  # seconds the agent may stay silent mid-task before the task fails


class AgentTaskFailed(Exception):
    """The agent could not do the task (its answer's code and message), or the link broke."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class HostDisk:
    """One disk of a backup task: the path on the agent's host and the backup it becomes."""

    path: str
    backup_id: str
    parent: str | None
    meta: dict


class AgentProvider:
    """Resources of agents' hosts. Paths are the hosts' own; nothing here opens them."""

    name = "agent"
    capabilities = Capabilities(resource_types=frozenset({R.DISK, R.SERVER, R.FILE_SYSTEM}), new_disks=True,
                                new_file_systems=True, power=False, freeze=True, reads_on_host=True)

    def __init__(self, *, timeout: float = TIMEOUT, busy_wait: float = BUSY_WAIT,
                 unreachable_wait: float = UNREACHABLE_WAIT):
        self.timeout = timeout
        self.busy_wait = busy_wait
        self.unreachable_wait = unreachable_wait

    # -------------------------------------------------------------------------------- inventory
    def normal_path(self, path: object) -> str:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise PathSwapped(f"{path!r} is not an absolute path on the agent's host")
        return posixpath.normpath(path).replace("//", "/")

    def check_allowed(self, path: str) -> None:
        """The agent's own roots decide (re-checked there on every open)."""

    def real_path(self, path: str) -> str:
        return path

    def ancestors(self, path: str) -> list[str]:
        out, p = [], path
        while p not in ("/", ""):
            p = posixpath.dirname(p)
            out.append(p)
        return out

    def path_state(self, path: str) -> PathState:
        return PathState(exists=False, is_directory=False, empty_directory=False, parent_is_directory=True)

    @staticmethod
    def present(rtype: str, path: str) -> bool:
        return True  # known on the agent's host only: the heartbeat says whether the agent is there

    def probe(self, rtype: str, path: str) -> Probe:
        raise PathSwapped("an agent's resource is probed by its agent (inventory)")

    def open(self, rtype: str, path: str, identity: dict | None = None, *, write: bool = False, create: bool = False):
        raise PathSwapped(f"{path} is on an agent's host: its data is read there, not opened here")

    def read_view(self, disks, *, server_running: bool):
        raise PathSwapped("an agent's disks are read on their host")

    def set_power(self, server_id: str, *, running: bool) -> None:
        """Agents' hosts run by themselves; the catalog keeps the state."""

    # -------------------------------------------------------------------------------- tasks
    def _run(self, connect: Connect, request: dict, serve, *, cancel: threading.Event | None = None,
             bandwidth: Bandwidth = None) -> dict:
        """One task; while the agent answers ``busy`` (it runs its ``max_tasks`` already, or serves as many
        connections as it may: said before any work), asked again after a pause, for ``busy_wait``
        seconds at most; while it cannot be reached (before any work), for ``unreachable_wait``."""
        started, pause = time.monotonic(), BUSY_FIRST_PAUSE
        waits = {"busy": self.busy_wait, "agent_unreachable": self.unreachable_wait}
        while True:
            try:
                return self._run_once(connect, request, serve, cancel=cancel, bandwidth=bandwidth)
            except AgentTaskFailed as e:
                if e.code not in waits or time.monotonic() + pause > started + waits[e.code]:
                    raise
            if cancel is not None and cancel.wait(pause):
                raise AgentTaskFailed("cancelled", "the task was cancelled")
            if cancel is None:
                time.sleep(pause)
            pause = min(pause * 2, BUSY_MAX_PAUSE)

    def _run_once(self, connect: Connect, request: dict, serve, *, cancel: threading.Event | None = None,
                  bandwidth: Bandwidth = None) -> dict:
        """One task: the request, the chunk conversation (``serve(channel)``), the agent's answer."""
        try:
            channel = connect()
        except RemoteError as e:  # busy: the agent serves as many connections as it may (``_run`` asks again)
            raise AgentTaskFailed(e.code, e.message) from None
        except Exception as e:  # noqa: BLE001 - the link's own errors, said as they are
            raise AgentTaskFailed("agent_unreachable", f"the agent cannot be reached: {e}") from None
        stop = threading.Event()
        shared = bandwidth if callable(bandwidth) else None
        fixed = shared.agent_limit if shared is not None else bandwidth
        channel.limit_bytes_per_second = shared() if shared is not None else fixed
        if fixed:
            request = {**request, "bandwidth_limit": fixed}

        def watch() -> None:  # a cancelled task closes the channel: the agent stops at its next message
            asked = time.monotonic()
            while not stop.wait(0.2):
                if cancel is not None and cancel.is_set():
                    channel.close()
                    return
                if shared is not None and time.monotonic() - asked >= RESHARE_SECONDS:
                    asked = time.monotonic()
                    try:
                        channel.limit_bytes_per_second = shared()
                    except Exception:  # noqa: BLE001 - the share could not be asked: keep the last one
                        pass

        watcher = threading.Thread(target=watch, name="agent-task-cancel", daemon=True)
        watcher.start()
        try:
            channel.send(request)
            final = serve(channel)
        except AgentTaskFailed:
            raise
        except Exception as e:  # noqa: BLE001
            if cancel is not None and cancel.is_set():
                raise AgentTaskFailed("cancelled", "the task was cancelled") from None
            if isinstance(e, LinkError):  # the agent died, was stopped or the network failed under the task
                raise AgentTaskFailed("agent_link", f"the connection to the agent was lost during the task ({e}): "
                                      "the agent stopped or the network failed") from None
            raise AgentTaskFailed(getattr(e, "code", "agent_link"),
                                  f"the agent's task failed: {e}") from None
        finally:
            stop.set()
            watcher.join()
            channel.close()
        if not final.get("ok"):
            raise AgentTaskFailed(str(final.get("error") or "agent_error"), str(final.get("message") or final))
        result = final.get("result") or {}
        if isinstance(result, dict):  # what the task moved over the network, both ways (kept in stats)
            result["wire_bytes"] = int(channel.sent_bytes + channel.received_bytes)
            # a backup's: what the worker recorded of each backup (serve_backup sets it over the agent's word)
            result["recorded"] = final.get("recorded") if isinstance(final.get("recorded"), dict) else {}
        return result

    def backup_disks(self, repo, connect: Connect, *, project_id: str, disks: list[HostDisk], server: bool = False,
                     full: bool = False, cancel=None, bandwidth: Bandwidth = None, progress=None,
                     app_consistent: bool = False, agent_id: str | None = None) -> dict:
        """Back up disks on the agent's host, one point in time for all (``server``: a server's disks);
        ``app_consistent``: its applications quiesced around that point (the result says if they were).
        ``agent_id``: whose records they are (stored as its unverified ones: engine/remote; None: every
        record is checked as it arrives)."""
        request = {"op": "backup_server" if server else "backup_disk", "project_id": project_id,
                   "vault": vault_request(repo), "full": full, "app_consistent": app_consistent,
                   "disks": [{"path": d.path, "backup_id": d.backup_id, "parent": d.parent, "meta": d.meta}
                             for d in disks]}
        scopes = [BackupScope(d.backup_id, "disk", readable=(d.parent,) if d.parent else (), meta=d.meta, full=full)
                  for d in disks]
        result = self._run(connect, request,
                           lambda ch: serve_backup(repo, ch, scopes, timeout=self.timeout, progress=progress,
                                                   writer=agent_id),
                           cancel=cancel, bandwidth=bandwidth)
        for d in result.get("disks") or []:  # (a server's disks share one channel)
            if isinstance(d, dict):
                d["task_wire_bytes"] = result["wire_bytes"]
        return result

    def backup_tree(self, repo, connect: Connect, *, project_id: str, path: str, backup_id: str, parent: str | None,
                    meta: dict, full: bool = False, exclude: list[str] | None = None, cancel=None,
                    bandwidth: Bandwidth = None, progress=None, app_consistent: bool = False,
                    agent_id: str | None = None) -> dict:
        """A directory on the agent's host, ``exclude`` (absolute paths below it) left out;
        ``app_consistent``: its applications quiesced across the read (the result's ``app`` says if);
        ``agent_id`` as for :meth:`backup_disks`."""
        request = {"op": "backup_tree", "project_id": project_id, "vault": vault_request(repo), "path": path,
                   "backup_id": backup_id, "parent": parent, "meta": meta, "full": full,
                   "app_consistent": app_consistent,
                   "exclude": list(exclude or [])}
        scope = BackupScope(backup_id, "tree", readable=(parent,) if parent else (), meta=meta, full=full)
        return self._run(connect, request,
                         lambda ch: serve_backup(repo, ch, [scope], timeout=self.timeout, progress=progress,
                                                 writer=agent_id),
                         cancel=cancel, bandwidth=bandwidth)

    def restore(self, repo, connect: Connect, *, project_id: str, backup_id: str, kind: str, target: str,
                create: bool = False, size: int = 0, subpath: str | None = None, cancel=None,
                bandwidth: Bandwidth = None, progress=None, app_consistency: dict | None = None,
                source_path: str | None = None, agent_id: str | None = None) -> dict:
        """A disk backup onto ``target`` (an existing disk, or a new image file of at least ``size``
        bytes: ``create``), or a tree
        backup (or its ``subpath``) into directory ``target``. A tree backed up app-consistent from
        ``source_path`` (for a disk: where it was mounted): its ``app_consistency`` record readies the
        restored data directories. ``agent_id``: the reading agent (other writers' unverified records
        are checked before they are sent to it)."""
        if kind == "tree":
            request = {"op": "restore_tree", "target": target, "subpath": subpath,
                       "app_consistency": app_consistency, "source_path": source_path}
        else:
            request = {"op": "restore_disk", "target": target, "create": create, "size": int(size),
                       "app_consistency": app_consistency, "source_path": source_path}
        request.update(project_id=project_id, vault=vault_request(repo), backup_id=backup_id)
        return self._run(connect, request, lambda ch: serve_restore(repo, ch, ReadScope((backup_id,)),
                                                                    timeout=self.timeout, progress=progress,
                                                                    reader=agent_id),
                         cancel=cancel, bandwidth=bandwidth)

    def restore_files(self, repo, connect: Connect, *, project_id: str, backup_id: str, paths: list[str],
                      target: str, cancel=None, bandwidth: Bandwidth = None, progress=None,
                      made_by: str | None = None, agent_id: str | None = None) -> dict:
        """Single files or directories of a backup into ``target`` on the host, never over what is there;
        ``made_by`` (the task's id): another attempt of that task may write over what the first wrote;
        ``agent_id`` as for :meth:`restore`."""
        request = {"op": "restore_files", "project_id": project_id, "vault": vault_request(repo),
                   "backup_id": backup_id, "paths": list(paths), "target": target, "made_by": made_by}
        return self._run(connect, request, lambda ch: serve_restore(repo, ch, ReadScope((backup_id,)),
                                                                    timeout=self.timeout, progress=progress,
                                                                    reader=agent_id),
                         cancel=cancel, bandwidth=bandwidth)

    def create_dir(self, connect: Connect, *, project_id: str, path: str, made_by: str | None = None) -> dict:
        """A new, empty directory on the host; ``made_by`` (a task's id) records it as made for that task
        (which may then fill it again, or have it removed with :meth:`remove_made`)."""
        def answer(ch) -> dict:
            return ch.recv(self.timeout)[0]

        return self._run(connect, {"op": "create_dir", "project_id": project_id, "path": path,
                                   "made_by": made_by}, answer)

    def remove_made(self, connect: Connect, *, project_id: str, path: str, made_by: str) -> dict:
        """Remove a directory :meth:`create_dir` made for task ``made_by``, and what was written in it
        (the agent refuses any other directory)."""
        def answer(ch) -> dict:
            return ch.recv(self.timeout)[0]

        return self._run(connect, {"op": "remove_made", "project_id": project_id, "path": path,
                                   "made_by": made_by}, answer)

    def remove_disk(self, connect: Connect, *, project_id: str, path: str) -> dict:
        """Remove a disk-image file the service made on the host (``restore(create=True)``)."""
        def answer(ch) -> dict:
            return ch.recv(self.timeout)[0]

        return self._run(connect, {"op": "remove_disk", "project_id": project_id, "path": path}, answer)

    def probe_on_host(self, connect: Connect, *, project_id: str, rtype: str, path: str) -> Probe:
        def answer(ch) -> dict:
            return ch.recv(self.timeout)[0]

        got = self._run(connect, {"op": "probe", "project_id": project_id, "path": path,
                                  "type": "dir" if rtype == R.FILE_SYSTEM else "disk"}, answer)
        return Probe(int(got.get("size", 0)), dict(got.get("identity") or {}))



