"""Quiesce: the applications of a host held still around its consistency point.

    with Quiesce(plan, timeout=30, hold_timeout=60) as q:
        take_the_snapshot()          # LVM snapshots, fsfreeze, or a copy
    q.achieved, q.reason, q.outcomes  # read after the block: post-thaw can still fail

Fallback rule: a hook that fails or times out in pre-freeze releases *every* hook at once (post-thaw in
reverse order for all that began pre-freeze) and the snapshot goes on crash-consistent, saying which
hook and why. Holding the others would keep applications stalled for a backup that cannot be called
application-consistent anyway. The same downgrade happens if a post-thaw fails or the hold outlives
``hold_timeout`` (a watchdog ends the database sessions and the script guardian runs post-thaw).
"""

from __future__ import annotations

import logging
import threading
import time

from .mysql import MysqlHook
from .outcome import HookOutcome
from .plan import HookPlan, discover
from .postgres import PostgresHook
from .scripts import ScriptHook

APP_CONSISTENT = "app_consistent"
CRASH_CONSISTENT = "crash_consistent"


def build_hooks(plan: HookPlan, label: str = "opencbr") -> list:
    """The hooks in pre-freeze order: scripts first (an application may need to flush into its
    database), then the databases. Post-thaw runs in the reverse order."""
    hooks: list = [ScriptHook(plan.script_dir, label)] if plan.script_dir else []
    hooks += [PostgresHook(t, plan.psql, label) for t in plan.postgresql]
    hooks += [MysqlHook(t, plan.mariadb) for t in plan.mysql]
    return hooks


def _outcomes(hook) -> list[HookOutcome]:
    return hook.outcomes if isinstance(hook, ScriptHook) else [hook.outcome]


def _hook_name(hook) -> str:
    return hook.name if isinstance(hook, ScriptHook) else hook.outcome.name


class Quiesce:
    """Context manager: pre-freeze on enter, post-thaw on exit (always, once pre-freeze began)."""

    def __init__(self, plan: HookPlan, *, timeout: float = 30.0, hold_timeout: float | None = None,
                 log: logging.Logger | None = None, label: str = "opencbr"):
        self.hooks = build_hooks(plan, label)
        self._nothing_found = plan.nothing_found()
        self.timeout = timeout
        self.hold_timeout = hold_timeout if hold_timeout is not None else max(timeout, 60.0)
        self.log = log or logging.getLogger("opencbr.agent.hooks")
        self.achieved = CRASH_CONSISTENT
        self.reason = ""
        self.frozen_at: float | None = None  # wall clock of the consistency point (all hooks frozen)
        self.thawed_at: float | None = None
        self.expired = False
        self._begun: list = []  # hooks whose pre-freeze began: each gets exactly one post-thaw
        self._lock = threading.Lock()
        self._watchdog: threading.Timer | None = None

    @property
    def outcomes(self) -> list[HookOutcome]:
        return [o for hook in self.hooks for o in _outcomes(hook)]

    def record(self, *, restore_material: bool = False) -> dict:
        """What the backup keeps: the consistency achieved and why, when, and every hook's outcome.
        ``restore_material`` keeps the bulky details a restore needs (PostgreSQL's WAL); without it
        the record fits a task message or ``extend_info``."""
        return {"achieved": self.achieved, "reason": self.reason, "frozen_at": self.frozen_at,
                "thawed_at": self.thawed_at,
                "hooks": [o.as_dict() if restore_material else o.summary() for o in self.outcomes]}

    def __enter__(self) -> Quiesce:
        if not self.hooks:
            self.reason = self._nothing_found
            return self
        try:
            for hook in self.hooks:
                self._begun.append(hook)
                started = time.monotonic()
                if not hook.freeze(self.timeout, self.hold_timeout):
                    failed = [o for o in _outcomes(hook) if not o.ok]
                    why = f"{failed[-1].name}: {failed[-1].message}" if failed else f"{_hook_name(hook)}: failed"
                    self.reason = f"{why}; every application was released, crash-consistent"
                    self.log.warning("pre-freeze failed, falling back to crash-consistent: %s", self.reason)
                    self._release()
                    return self
                self.log.info("pre-freeze %s done in %.2f s", _hook_name(hook), time.monotonic() - started)
        except BaseException:
            self._release()
            raise
        for hook in self.hooks:
            if isinstance(hook, ScriptHook):
                hook.frozen()
        self.frozen_at = time.time()
        self.achieved = APP_CONSISTENT
        self._watchdog = threading.Timer(self.hold_timeout, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._release()
        if self.achieved == APP_CONSISTENT:
            failed = [o for o in self.outcomes if not o.ok]
            if self.expired:
                self.reason = f"held longer than the hold timeout ({self.hold_timeout:g} s); released by the watchdog"
            elif failed:
                self.reason = "; ".join(f"{o.name}: {o.message}" for o in failed)
            if self.expired or failed:
                self.achieved = CRASH_CONSISTENT
                self.log.warning("post-thaw: falling back to crash-consistent: %s", self.reason)
        return False

    def _release(self) -> None:
        """Post-thaw, in reverse order, for every hook whose pre-freeze began (once)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        with self._lock:
            while self._begun:
                hook = self._begun.pop()
                try:
                    hook.thaw(self.timeout)
                except Exception as e:  # a bug in one hook must not keep the others frozen
                    self.log.exception("post-thaw %s", _hook_name(hook))
                    for outcome in _outcomes(hook)[-1:]:
                        outcome.fail(f"post-thaw crashed: {e}")
            self.thawed_at = self.thawed_at or time.time()

    def _expire(self) -> None:
        with self._lock:
            if not self._begun:
                return
            self.expired = True
            self.log.warning("hold timeout (%g s): ending the database sessions", self.hold_timeout)
            for hook in reversed(self._begun):
                hook.expire()


def check(plan: HookPlan | dict | None = None, *, timeout: float = 10.0) -> list[dict]:
    """Whether each application of ``plan`` can be quiesced, with the privileges actually tested
    (a connection and the server's own privilege functions), never assumed. ``plan`` may also be an
    ``app_consistency`` configuration (or None): what :func:`discover` finds with it."""
    if not isinstance(plan, HookPlan):
        plan = discover(plan)
    results = [hook.check(timeout) for hook in build_hooks(plan)]
    notes = plan.notes if plan.discovered else ["discovery is off (hooks.discover is false)", *plan.notes]
    results += [{"name": "discovery", "kind": "note", "ok": True, "message": note} for note in notes]
    return results
