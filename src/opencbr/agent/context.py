"""What a data operation on the agent is given: :class:`TaskContext` (the contract with ``agent.tasks``).

An operation of ``opencbr.agent.tasks.OPERATIONS`` is ``fn(ctx: TaskContext, channel, header, payload)
-> dict``: it runs the conversation it needs on ``channel`` (the remote chunk service) and returns the
result, which the agent sends as the final answer ``{"ok": true, "result": ...}``. To refuse, it raises
:class:`AgentError` (answered ``{"ok": false, "error": code, "message": ...}``); a
:class:`~opencbr.system.beneath.PathSwapped` is answered ``refused``, ``FileNotFoundError``
``not_found``, anything else ``internal`` (logged with its traceback on the agent, never sent).

Opening anything on the host goes through ``ctx.confinement`` (``open``, ``open_dir``,
``open_device``, ``makedirs``: see :mod:`opencbr.agent.confinement`), checked on every call. A
consistent read of several devices goes through ``ctx.point_in_time(devices)`` (see
:mod:`opencbr.agent.consistency`), which also lets ``ctx.confinement`` open the snapshots it made,
for the block's duration.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from opencbr.agent.config import AgentConfig
from opencbr.agent.confinement import Confinement, PathSwapped
from opencbr.agent.consistency import Consistency


class AgentError(Exception):
    """An operation's refusal with a code the service understands (``bad_request``, ``refused``, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class TaskContext:
    config: AgentConfig              # the agent's configuration (roots, devices, agent_id, project_id)
    confinement: Confinement         # opens paths below the roots / allowed devices only
    consistency: Consistency         # the agent's point-in-time maker
    log: logging.Logger              # the agent's log (journald under systemd)
    bandwidth_limit: float | None    # bytes/s the channel is limited to (already set on it), None = none
    request_id: str = ""             # the service's id for this request (for the logs)

    @contextlib.contextmanager
    def point_in_time(self, devices: list[str], *, freeze_mounts: bool = True):
        """``Consistency.point_in_time`` for devices this agent may open; the snapshots it makes may be
        opened through ``self.confinement`` while the block runs. Yields the :class:`View`."""
        for d in devices:
            if not self.confinement.device_allowed(d) and self.confinement.below_root(d) is None:
                raise PathSwapped(f"{d} is not a device or image this agent may open")
        with self.consistency.point_in_time(devices, freeze_mounts=freeze_mounts) as view:
            with self.confinement.granted([p for d, p in view.items() if d != "describe" and p != d]):
                yield view
