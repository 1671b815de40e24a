"""Helpers for scheduler tests: tiny disks, vaults, policies, and a driver that moves the fake clock, ticks
the scheduler, runs the worker and sweeps retention, as the service does in real time."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlalchemy import select

from opencbr.catalog.models import Backup, PolicyExecution, Task
from opencbr.scheduler import Scheduler
from opencbr.services import backups, policies, resources, vaults
from opencbr.worker.runner import Worker

MONDAY = datetime(2026, 1, 5)  # the FakeClock starts on Monday 2026-01-05 10:00
DAILY_0200 = "FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"


def disk(ctx, p, tmp_path, name: str, size: int = 1 << 20):
    path = tmp_path / f"{name}.img"
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 14))
        f.truncate(size)
    with ctx.tx() as s:
        return resources.register_disk(s, ctx, p, name=name, path=str(path))


def vault(ctx, p, name: str, resource_ids=(), object_type: str = "disk", rtype: str = "OS::Cinder::Volume",
          size: int = 10, protect_type: str = "backup"):
    with ctx.tx() as s:
        return vaults.create_vault(s, ctx, p, {
            "name": name, "billing": {"object_type": object_type, "protect_type": protect_type, "size": size},
            "resources": [{"id": r, "type": rtype} for r in resource_ids]}).vault


def policy(ctx, p, name: str = "daily", patterns=(DAILY_0200,), op: str = "backup", enabled: bool = True,
           start_window: int | None = None, **definition):
    props: dict = {"pattern": list(patterns)}
    if start_window is not None:
        props["start_window_minutes"] = start_window
    with ctx.tx() as s:
        return policies.create_policy(s, ctx, p, {"name": name, "operation_type": op, "enabled": enabled,
                                                  "operation_definition": definition,
                                                  "trigger": {"properties": props}}).policy


def associate(ctx, p, vault_id: str, policy_id: str, **kw) -> None:
    with ctx.tx() as s:
        policies.associate(s, ctx, p, vault_id, policy_id, **kw)


def dissociate(ctx, p, vault_id: str, policy_id: str) -> None:
    with ctx.tx() as s:
        policies.dissociate(s, ctx, p, vault_id, policy_id)


def update_policy(ctx, p, policy_id: str, body: dict) -> None:
    with ctx.tx() as s:
        policies.update_policy(s, ctx, p, policy_id, body)


def backup_now(ctx, p, vault_id: str, params: dict | None = None):
    """A manual backup (the API's create_checkpoint)."""
    with ctx.tx() as s:
        return backups.create_checkpoint(s, ctx, p, vault_id, params)


def top_backups(ctx, vault_id: str, *, statuses=("available", "protecting", "error")) -> list[Backup]:
    with ctx.tx() as s:
        return list(s.scalars(select(Backup).where(Backup.vault_id == vault_id, Backup.parent_id.is_(None),
                                                   Backup.status.in_(statuses)).order_by(Backup.created_at)))


def executions(ctx, policy_id: str) -> list[PolicyExecution]:
    with ctx.tx() as s:
        return list(s.scalars(select(PolicyExecution).where(PolicyExecution.policy_id == policy_id)
                              .order_by(PolicyExecution.scheduled_at)))


def task_rows(ctx, **filters) -> list[Task]:
    with ctx.tx() as s:
        q = select(Task)
        for k, v in filters.items():
            q = q.where(getattr(Task, k) == v)
        return list(s.scalars(q.order_by(Task.created_at, Task.id)))


class Driver:
    """Time moves in steps; at each step the scheduler ticks, the worker runs what was queued (backups,
    then the deletions retention queues) and, like the backup task will, retention is applied."""

    def __init__(self, ctx, clock, *, scheduler_id: str = "sched-1", run_worker: bool = True):
        self.ctx, self.clock = ctx, clock
        self.scheduler = Scheduler(ctx, scheduler_id)
        self.worker = Worker(ctx, "worker-1")
        self.run_worker = run_worker
        self.reports = []

    def drain(self) -> int:
        n = 0
        while self.worker.run_once():
            n += 1
        return n

    def step(self) -> None:
        self.reports.append(self.scheduler.tick())
        if self.run_worker:
            self.drain()
            self.scheduler.sweep()
            self.drain()

    def run_until(self, until: datetime, every: timedelta = timedelta(hours=1)) -> None:
        while self.clock.now + every <= until:
            self.clock.now += every
            self.step()
        if self.clock.now < until:
            self.clock.now = until
            self.step()


def drain(ctx, worker_id: str = "worker-1") -> int:
    """Run every queued task of ``ctx`` on one in-process worker until none is left; how many ran."""
    worker, n = Worker(ctx, worker_id), 0
    while worker.run_once():
        n += 1
    return n


def read_task(ctx, task_id: str) -> Task:
    """The task row as it is now, detached from its session."""
    with ctx.read() as s:
        task = s.get(Task, task_id)
        s.expunge(task)
        return task
