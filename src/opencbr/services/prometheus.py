"""The Prometheus exposition: what the catalog says now, computed on each scrape.

A custom collector reads the catalog (never counters kept by one process: the workers and schedulers
are many processes on many machines, the catalog is what they share). Each scrape runs a fixed set of
aggregate queries (GROUP BY in the database); what it returns grows with the number of vaults,
resources, agents and task kinds, not with the number of backups or tasks. Served by the scheduler
process on ``metrics_listen`` (operator only: bind it to loopback; docs/monitoring.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, SummaryMetricFamily
from sqlalchemy import func, select

from opencbr.catalog.models import Agent, Backup, Policy, PolicyBinding, Task, Vault
from opencbr.services import memberships
from opencbr.services.agents import state as agent_state
from opencbr.services.context import ServiceContext
from opencbr.services.metrics import GB
from opencbr.services.policies import spec_of
from opencbr.services.utc import aware

log = logging.getLogger("opencbr.metrics")
_EPOCH = datetime(1970, 1, 1)
VAULT_LABELS = ["project_id", "vault_id", "vault_name"]


def _ts(at: datetime | None) -> float:
    return (at - _EPOCH).total_seconds() if at else 0.0


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class CatalogCollector:
    """A Prometheus collector over the catalog of ``ctx`` (one read transaction per scrape)."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    def collect(self) -> Iterator:
        started = time.monotonic()
        now = self.ctx.now()
        with self.ctx.read() as s:
            yield from self._vaults(s)
            yield from self._resources(s, now)
            yield from self._tasks(s, now)
            yield from self._agents(s, now)
        took = _gauge("opencbr_scrape_duration_seconds", "Time this scrape spent reading the catalog.", [])
        took.add_metric([], time.monotonic() - started)
        yield took

    # ----------------------------------------------------------------------------------- vaults
    def _vaults(self, s) -> Iterator:
        used = _gauge("opencbr_vault_used_bytes", "Stored bytes counted against the vault's capacity "
                      "(guide 10.1 used_vault_size, in bytes).", VAULT_LABELS)
        capacity = _gauge("opencbr_vault_capacity_bytes", "The vault's capacity.", VAULT_LABELS)
        util = _gauge("opencbr_vault_util_percent", "Share of the capacity used, 0-100 (guide 10.1 vault_util).",
                      VAULT_LABELS)
        threshold = _gauge("opencbr_vault_threshold_percent", "The vault's alarm threshold (0-100).", VAULT_LABELS)
        for v in s.scalars(select(Vault)):
            labels = [v.project_id, v.id, v.name]
            counted = memberships.counted_bytes(v)
            used.add_metric(labels, counted)
            capacity.add_metric(labels, v.size_gb * GB)
            util.add_metric(labels, min(100.0, counted * 100.0 / max(1, v.size_gb * GB)))
            threshold.add_metric(labels, v.threshold)
        yield from (used, capacity, util, threshold)
        backups = _gauge("opencbr_backups", "Backups (top level) by vault and status.", ["vault_id", "status"])
        read = _gauge("opencbr_backup_read_bytes", "Bytes of the sources the vault's available backups cover.",
                      ["vault_id"])
        stored = _gauge("opencbr_backup_stored_bytes", "Bytes the vault's available backups added to its store.",
                        ["vault_id"])
        dedup = _gauge("opencbr_backup_deduplicated_bytes", "Bytes read but not stored again (deduplicated or "
                       "unchanged).", ["vault_id"])
        for vault_id, status, count in s.execute(select(Backup.vault_id, Backup.status, func.count())
                                                 .where(Backup.parent_id.is_(None))
                                                 .group_by(Backup.vault_id, Backup.status)):
            backups.add_metric([vault_id, status], count)
        for vault_id, logical, added in s.execute(
                select(Backup.vault_id, func.coalesce(func.sum(Backup.logical_bytes), 0),
                       func.coalesce(func.sum(Backup.added_bytes), 0))
                .where(Backup.parent_id.is_(None), Backup.status == "available").group_by(Backup.vault_id)):
            read.add_metric([vault_id], logical)
            stored.add_metric([vault_id], added)
            dedup.add_metric([vault_id], max(0, int(logical) - int(added)))
        yield from (backups, read, stored, dedup)

    # -------------------------------------------------------------------------------- resources
    def _resources(self, s, now: datetime) -> Iterator:
        labels = ["project_id", "vault_id", "resource_id", "resource_name"]
        last = _gauge("opencbr_resource_last_available_backup_timestamp_seconds",
                      "When the resource's newest available backup was made (Unix time).", labels)
        age = _gauge("opencbr_resource_last_available_backup_age_seconds",
                     "Time since the resource's newest available backup.", labels)
        rows = s.execute(select(Backup.project_id, Backup.vault_id, Backup.resource_id,
                                func.max(Backup.resource_name), func.max(Backup.created_at))
                         .where(Backup.parent_id.is_(None), Backup.status == "available")
                         .group_by(Backup.project_id, Backup.vault_id, Backup.resource_id))
        for project_id, vault_id, resource_id, name, newest in rows:
            last.add_metric([project_id, vault_id, resource_id, name or ""], _ts(newest))
            age.add_metric([project_id, vault_id, resource_id, name or ""], (now - newest).total_seconds())
        yield from (last, age)
        interval = _gauge("opencbr_vault_backup_interval_seconds", "Time between two executions of the vault's "
                          "enabled backup policy (for 'no backup for two periods' alerts).", ["vault_id", "policy_id"])
        for vault_id, policy in s.execute(select(PolicyBinding.vault_id, Policy)
                                          .join(Policy, Policy.id == PolicyBinding.policy_id)
                                          .where(PolicyBinding.operation_type == "backup", Policy.enabled.is_(True))):
            try:
                runs = spec_of(policy).schedule(aware(policy.trigger_start)).next_runs(aware(now), 2)
            except Exception:  # a policy the scheduler cannot read either: nothing to say about it here
                log.exception("metrics: the schedule of policy %s cannot be read", policy.id)
                continue
            if len(runs) == 2:
                interval.add_metric([vault_id, policy.id],
                                    (runs[1].scheduled_at - runs[0].scheduled_at).total_seconds())
        yield interval

    # ------------------------------------------------------------------------------------ tasks
    def _tasks(self, s, now: datetime) -> Iterator:
        tasks = _gauge("opencbr_tasks", "Tasks the catalog holds (the past 30 days) by kind and status.",
                       ["operation_type", "status"])
        for kind, status, count in s.execute(select(Task.operation_type, Task.status, func.count())
                                             .group_by(Task.operation_type, Task.status)):
            tasks.add_metric([kind, status], count)
        duration = SummaryMetricFamily("opencbr_task_duration_seconds", "Run time of finished tasks (the past "
                                       "30 days) by kind and outcome.", labels=["operation_type", "status"])
        last = _gauge("opencbr_task_last_end_timestamp_seconds", "When the newest task of each kind and outcome "
                      "ended (GC and verify results among them).", ["operation_type", "status"])
        finished = (select(Task.operation_type, Task.status, Task.started_at, Task.ended_at)
                    .where(Task.ended_at.is_not(None), Task.started_at.is_not(None)).subquery())
        seconds = _seconds_between(s, finished.c.started_at, finished.c.ended_at)
        for kind, status, count, total, newest in s.execute(
                select(finished.c.operation_type, finished.c.status, func.count(), func.coalesce(func.sum(seconds), 0),
                       func.max(finished.c.ended_at)).group_by(finished.c.operation_type, finished.c.status)):
            duration.add_metric([kind, status], count_value=count, sum_value=float(total))
            last.add_metric([kind, status], _ts(newest))
        yield from (tasks, duration, last)
        running = _gauge("opencbr_worker_running_tasks", "Tasks each worker holds a live lease on.", ["worker"])
        for owner, count in s.execute(select(Task.lease_owner, func.count())
                                      .where(Task.status == "running", Task.lease_expires_at > now)
                                      .group_by(Task.lease_owner)):
            running.add_metric([owner], count)
        waiting = _gauge("opencbr_tasks_waiting", "Tasks due and not yet claimed by any worker.", [])
        oldest = _gauge("opencbr_tasks_oldest_waiting_seconds", "How long the oldest due task has waited for a "
                        "worker (0: none waits; a large value: no worker is taking tasks).", [])
        count, first = s.execute(select(func.count(), func.min(Task.run_after))
                                 .where(Task.status == "waiting", Task.run_after <= now)).one()
        waiting.add_metric([], count)
        oldest.add_metric([], (now - first).total_seconds() if first else 0.0)
        yield from (running, waiting, oldest)

    # ----------------------------------------------------------------------------------- agents
    def _agents(self, s, now: datetime) -> Iterator:
        up = _gauge("opencbr_agent_up", "1 when the agent answered the service's recent polls.",
                    ["project_id", "agent_id", "host_name"])
        for agent in s.scalars(select(Agent).where(Agent.status != "uninstalled")):
            up.add_metric([agent.project_id, agent.id, agent.host_nickname or agent.host_name],
                          1.0 if agent_state.is_online(self.ctx, agent, now) else 0.0)
        yield up


def _seconds_between(s, start, end):
    """``end - start`` in seconds, in the catalog's own SQL (SQLite or PostgreSQL)."""
    if s.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def registry(ctx: ServiceContext) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CatalogCollector(ctx))
    return reg


def serve(ctx: ServiceContext, listen: str):
    """Serve ``/metrics`` on ``listen`` ("host:port", port 0: any free one) in a daemon thread; returns
    the HTTP server (``server_port``; ``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry(ctx))
    log.info("Prometheus metrics on http://%s:%d/metrics", host or "127.0.0.1", server.server_port)
    return server
