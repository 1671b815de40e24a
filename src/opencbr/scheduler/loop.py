"""The scheduler loop: tick (fire due executions), sweep (retention, purges), in a thread or alone."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from opencbr.services import agents, alarms, executions, metrics, retention, tasks, verification
from opencbr.services.context import ServiceContext

log = logging.getLogger("opencbr.scheduler")

#: Seconds between two ticks. An execution fires within this much of its time.
TICK_SECONDS = 20.0
#: Seconds between two retention sweeps (guide 5.2: expired backups are deleted in batches; they need not
#: go the minute they expire). Retention also runs after every backup.
SWEEP_SECONDS = 900.0


@dataclass
class TickReport:
    now: datetime
    outcomes: list[executions.ExecutionOutcome] = field(default_factory=list)
    errors: int = 0
    checks: list[verification.FiredCheck] = field(default_factory=list)  # verify and restore-test policies

    @property
    def fired(self) -> list[executions.ExecutionOutcome]:
        return [o for o in self.outcomes if o.decision == executions.FIRE]

    @property
    def skipped(self) -> list[executions.ExecutionOutcome]:
        return [o for o in self.outcomes if o.decision == executions.SKIP]

    @property
    def failed(self) -> list[executions.ExecutionOutcome]:
        return [o for o in self.outcomes if o.decision == executions.FAIL]


@dataclass
class SweepReport:
    now: datetime
    pruned: list[retention.ResourceRetention] = field(default_factory=list)
    tasks_purged: int = 0
    executions_purged: int = 0
    #: (vault, resource) pairs the retention pass looked at, and whether it finished the round.
    pairs: int = 0
    round_done: bool = True

    @property
    def deleted_backup_ids(self) -> list[str]:
        return [bid for r in self.pruned for bid, _ in r.deleted]


def default_scheduler_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:scheduler"


class Scheduler:
    """Fires the due executions of every policy applied to a vault and sweeps retention.

    ``tick()`` and ``sweep()`` do one round each at the context's "now" (or the ``now`` given); tests
    call them directly while they move a fake clock. ``start()`` runs them in a daemon thread: a tick every
    ``tick_seconds``, a sweep every ``sweep_seconds`` (measured on the context's clock).
    """

    def __init__(self, ctx: ServiceContext, scheduler_id: str | None = None, *, tick_seconds: float = TICK_SECONDS,
                 sweep_seconds: float = SWEEP_SECONDS, sweep_pairs: int = retention.SWEEP_PAIRS):
        self.ctx = ctx
        self.scheduler_id = scheduler_id or default_scheduler_id()
        self.tick_seconds = tick_seconds
        self.sweep_seconds = sweep_seconds
        self.sweep_pairs = sweep_pairs
        self._last_sweep: datetime | None = None
        self._round_open = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._agent_thread: threading.Thread | None = None
        self._alarm_thread: threading.Thread | None = None
        self._metrics_server = None

    # ------------------------------------------------------------------------------------ rounds
    def tick(self, now: datetime | None = None) -> TickReport:
        """Decide and record every due execution of every applied policy, once."""
        now = now or self.ctx.now()
        report = TickReport(now)
        started = time.monotonic()
        with self.ctx.read() as s:
            bindings = executions.due_bindings(s, now)
        for policy_id, vault_id in bindings:
            try:
                report.outcomes += executions.run_due_executions(self.ctx, policy_id, vault_id, now=now,
                                                                 scheduler_id=self.scheduler_id)
                executions.remember_next_due(self.ctx, policy_id, vault_id, now)
            except Exception:  # one broken policy or vault must not stop the others
                report.errors += 1
                log.exception("scheduler: policy %s on vault %s failed; retried next tick", policy_id, vault_id)
        try:
            report.checks = verification.fire_due_checks(self.ctx, now)
        except Exception:
            report.errors += 1
            log.exception("scheduler: vault checks failed; retried next tick")
        for o in report.outcomes:
            log.info("policy %s on vault %s, execution %s: %s (%s)", o.policy_id, o.vault_id, o.execution_id,
                     o.decision, o.reason)
        if report.outcomes:  # how long a fleet's minute takes to queue (bench/fleet.py reads it)
            log.info("tick: %d executions decided (%d fired, %d tasks) in %.2f s", len(report.outcomes),
                     len(report.fired), sum(len(o.task_ids) for o in report.outcomes), time.monotonic() - started)
        return report

    def sweep(self, now: datetime | None = None) -> SweepReport:
        """One pass of the retention sweep: at most ``sweep_pairs`` (vault, resource) pairs, after where the
        previous pass stopped (``retention.sweep_pass``); ``run_once`` runs passes tick after tick until
        the round is done. A round's first pass also purges tasks and execution records older than 30 days
        (guide ch. 9: the task list shows the past 30 days)."""
        now = now or self.ctx.now()
        report = SweepReport(now)
        done = retention.sweep_pass(self.ctx, now=now, limit=self.sweep_pairs)
        report.pruned, report.pairs, report.round_done = done.pruned, done.pairs, done.round_done
        if not self._round_open:
            with self.ctx.tx() as s:
                report.tasks_purged = tasks.purge_old(s, self.ctx)
            with self.ctx.tx() as s:
                report.executions_purged = executions.purge_executions(s, self.ctx)
            self._last_sweep = now
        self._round_open = not done.round_done
        if report.pruned or report.tasks_purged:
            log.info("sweep: %d backups to delete by retention, %d old tasks purged",
                     len(report.deleted_backup_ids), report.tasks_purged)
        return report

    def run_once(self) -> TickReport:
        """One tick, and a sweep when one is due."""
        report = self.tick()
        now = self.ctx.now()
        if (self._round_open or self._last_sweep is None
                or (now - self._last_sweep).total_seconds() >= self.sweep_seconds):
            try:
                self.sweep(now)
            except Exception:
                log.exception("scheduler: sweep failed; retried later")
        try:
            self.monitor(now)
        except Exception:
            log.exception("scheduler: monitoring round failed; retried next tick")
        return report

    def monitor(self, now: datetime | None = None) -> int:
        """Vault usage sampled once per 15-minute period (guide 10.1) and compared with the thresholds,
        failed tasks turned into alarms, points past their resolution's history dropped. The alarms recorded."""
        now = now or self.ctx.now()
        samples = metrics.sample_vaults(self.ctx, now)
        fired = alarms.record_threshold_crossings(self.ctx, samples, now)
        fired += alarms.record_failed_tasks(self.ctx, now)
        if samples:  # once per period, by the scheduler that sampled it
            with self.ctx.tx() as s:
                metrics.prune(s, now)
                alarms.purge_old(s, now)
        return fired

    # ------------------------------------------------------------------------------------ thread
    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or self._stop
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # the catalog went away for a moment: wait and retry
                log.exception("scheduler %s: tick failed", self.scheduler_id)
            stop.wait(self.tick_seconds)

    def poll_agents_forever(self, stop: threading.Event) -> None:
        """The agents' heartbeat (services.agents.poll_agents), every ``agent_poll_seconds``, in its own
        thread: a slow agent never delays a policy's execution."""
        interval = self.ctx.settings.agent_poll_seconds
        while not stop.is_set():
            try:
                agents.poll_agents(self.ctx, timeout=agents.poll_timeout(self.ctx))
            except Exception:
                log.exception("scheduler %s: agent poll failed", self.scheduler_id)
            stop.wait(interval)

    def deliver_alarms_forever(self, stop: threading.Event) -> None:
        """Alarm deliveries (services.alarms.deliver_due) in their own thread: a slow webhook or mail
        server never delays a policy's execution."""
        while not stop.is_set():
            try:
                alarms.deliver_due(self.ctx)
            except Exception:
                log.exception("scheduler %s: alarm delivery failed", self.scheduler_id)
            stop.wait(min(self.tick_seconds, 5.0))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, args=(self._stop,), name="scheduler", daemon=True)
        self._thread.start()
        self._agent_thread = threading.Thread(target=self.poll_agents_forever, args=(self._stop,), name="agent-poll",
                                              daemon=True)
        self._agent_thread.start()
        self._alarm_thread = threading.Thread(target=self.deliver_alarms_forever, args=(self._stop,),
                                              name="alarm-delivery", daemon=True)
        self._alarm_thread.start()
        if self.ctx.settings.metrics_listen:
            from opencbr.services import prometheus

            try:
                self._metrics_server = prometheus.serve(self.ctx, self.ctx.settings.metrics_listen)
            except (OSError, ValueError) as e:  # a busy port or a bad address: the backups go on without it
                log.error("cannot serve Prometheus metrics on %s (setting metrics_listen): %s",
                          self.ctx.settings.metrics_listen, e)

    def shutdown(self, timeout: float = 10) -> None:
        self._stop.set()
        for thread in (self._thread, self._agent_thread, self._alarm_thread):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._agent_thread = self._alarm_thread = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

