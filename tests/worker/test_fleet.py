"""A fleet at small scale (issue 18, item 4; bench/fleet.py runs 2,000 resources): policies of several
vaults fire at the same minute from two schedulers; every execution fires once, and real workers (threads,
each with its own claim loop) drain the queue with at most ``max_tasks_per_vault`` tasks running per vault,
``max_tasks_per_agent`` per agent and one per worker, the vaults taking turns. Both catalogs."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, defaultdict
from datetime import timedelta

from sqlalchemy import select, update

from opencbr.catalog.models import Agent, PolicyExecution, Resource, Task
from opencbr.scheduler import Scheduler
from opencbr.services import tasks
from opencbr.services.context import open_context
from opencbr.worker.runner import Worker
from tests.support.scheduler import MONDAY, associate, disk, policy, vault

VAULTS, DISKS_PER_VAULT, WORKERS, PER_VAULT = 3, 4, 4, 2


class Recorder:
    """The backup handler of these workers: notes who runs what, and how many run at once."""

    def __init__(self, ctx):
        self.lock = threading.Lock()
        self.vault_of = {}
        self.running = Counter()
        self.peak = Counter()
        self.starts: list[tuple[str, str, str]] = []  # (task, vault, worker) in start order
        with ctx.tx() as s:
            self.vault_of = {tid: vid for tid, vid in s.execute(select(Task.id, Task.vault_id).where(
                Task.operation_type == "backup"))}

    def __call__(self, ctx, run: tasks.TaskRun) -> None:
        vault_id = self.vault_of[run.task_id]
        with self.lock:
            self.starts.append((run.task_id, vault_id, run.worker_id))
            for key in (vault_id, run.worker_id):
                self.running[key] += 1
                self.peak[key] = max(self.peak[key], self.running[key])
        time.sleep(0.2)
        with self.lock:
            for key in (vault_id, run.worker_id):
                self.running[key] -= 1


def test_a_fleet_firing_at_one_minute_fires_once_and_drains_within_its_caps(ctx, tenant, clock, tmp_path):
    capped = open_context(dataclasses.replace(ctx.settings, max_tasks_per_vault=PER_VAULT), clock=clock)
    other = open_context(ctx.settings, clock=clock)  # a second scheduler "process"
    try:
        pol = policy(ctx, tenant, "fleet", max_backups=10)
        for i in range(VAULTS):
            disks = [disk(ctx, tenant, tmp_path, f"d{i}-{j}", size=1 << 16).id for j in range(DISKS_PER_VAULT)]
            associate(ctx, tenant, vault(ctx, tenant, f"v{i}", disks).id, pol.id)
        clock.now = MONDAY + timedelta(days=1, hours=2)  # every vault's 02:00 execution is due now
        scheds = [Scheduler(ctx, "A"), Scheduler(other, "B")]
        gate = threading.Barrier(2)
        ticks = [threading.Thread(target=lambda sc=sc: (gate.wait(10), sc.tick())) for sc in scheds]
        for t in ticks:
            t.start()
        for t in ticks:
            t.join(60)
        with ctx.tx() as s:
            fired = [e.vault_id for e in s.scalars(select(PolicyExecution).where(PolicyExecution.decision == "fire"))]
        assert sorted(Counter(fired).values()) == [1] * VAULTS  # each vault's execution, once

        record = Recorder(ctx)
        handlers = tasks.TaskHandlers()
        handlers.register("backup", record)
        workers = [Worker(capped, f"w{i}", handlers=handlers, poll_interval=0.01) for i in range(WORKERS)]
        stop = threading.Event()
        threads = [threading.Thread(target=w.run_forever, args=(stop,)) for w in workers]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(record.starts) < VAULTS * DISKS_PER_VAULT and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        capped.close()
        other.close()

    started = [task for task, _, _ in record.starts]
    assert len(started) == len(set(started)) == VAULTS * DISKS_PER_VAULT  # every backup ran, once
    assert max(record.peak[v] for v in record.vault_of.values()) <= PER_VAULT  # the cap held
    assert all(record.peak[w.worker_id] == 1 for w in workers)
    # the vaults take turns from the start (the exact order of turns: the test below, claim by claim; here
    # the handlers of concurrent claims may start in either order)
    assert {v for _, v, _ in record.starts[:VAULTS + 1]} == set(record.vault_of.values()), record.starts
    with ctx.tx() as s:
        assert {t.status for t in s.scalars(select(Task).where(Task.operation_type == "backup"))} == {"success"}


def test_an_agent_runs_at_most_its_cap_and_the_next_task_is_the_oldest_waiting(ctx, tenant, clock):
    ctx2 = open_context(dataclasses.replace(ctx.settings, max_tasks_per_agent=2, max_tasks_per_vault=0), clock=clock)
    try:
        with ctx.tx() as s:
            for agent in ("agent-a", "agent-b"):
                s.add(Agent(id=agent, project_id=tenant.project_id))
            s.flush()
            for i in range(4):
                s.add(Resource(id=f"ra{i}", project_id=tenant.project_id, type="OS::Nova::Server", provider="agent",
                               name=f"a{i}", region="local", status="running", agent_id="agent-a"))
            s.add(Resource(id="rb0", project_id=tenant.project_id, type="OS::Nova::Server", provider="agent",
                           name="b0", region="local", status="running", agent_id="agent-b"))
        queued = []
        for i, rid in enumerate(["ra0", "ra1", "ra2", "ra3", "rb0"]):
            with ctx.tx() as s:
                queued.append(tasks.new_task(s, project_id=tenant.project_id, operation_type="backup",
                                             now=clock.now + timedelta(seconds=i - 10), vault_id=f"v{i}",
                                             resource_id=rid).id)
        runs = [tasks.claim_next(ctx2, f"w{i}") for i in range(4)]
        # agent-a's two oldest, then agent-b's, then nothing: agent-a's others wait for room
        assert [r.task_id if r else None for r in runs] == [queued[0], queued[1], queued[4], None]
        tasks.finish(ctx2, runs[0], tasks.SUCCESS)
        assert tasks.claim_next(ctx2, "w5").task_id == queued[2]
        assert tasks.claim_next(ctx2, "w6") is None
        with ctx.tx() as s:
            per_agent = defaultdict(int)
            for t in s.scalars(select(Task).where(Task.status == tasks.RUNNING)):
                per_agent[s.get(Resource, t.resource_id).agent_id] += 1
        assert dict(per_agent) == {"agent-a": 2, "agent-b": 1}
    finally:
        ctx2.close()
    # the vault cap, exactly: one vault at its cap has its next task passed over, another vault's is taken
    one = open_context(dataclasses.replace(ctx.settings, max_tasks_per_vault=1, max_tasks_per_agent=0), clock=clock)
    try:
        with ctx.tx() as s:
            s.execute(update(Task).where(Task.status == tasks.WAITING).values(status=tasks.SKIPPED))  # the above
            # distinct creation times: with equal ones the order falls to the random task ids
            ids = [tasks.new_task(s, project_id=tenant.project_id, operation_type="backup",
                                  now=clock.now - timedelta(seconds=3 - i), vault_id=v).id
                   for i, v in enumerate(("vx", "vx", "vy"))]
        assert tasks.claim_next(one, "w7").task_id in ids[:2]
        assert tasks.claim_next(one, "w8").task_id == ids[2]
        assert tasks.claim_next(one, "w9") is None
        # turns: vault after vault, though each vault's tasks are older than the next vault's (fair queuing)
        with ctx.tx() as s:
            s.execute(update(Task).where(Task.status.in_((tasks.WAITING, tasks.RUNNING))).values(status=tasks.SKIPPED))
            vault_of = {tasks.new_task(s, project_id=tenant.project_id, operation_type="backup",
                                       now=clock.now - timedelta(seconds=10 - i), vault_id=f"t{i // 3}").id: f"t{i // 3}"
                        for i in range(9)}
        order = []
        while (run := tasks.claim_next(one, "w10")) is not None:
            order.append(vault_of[run.task_id])
            tasks.finish(one, run, tasks.SUCCESS)
        assert order == ["t0", "t1", "t2"] * 3
    finally:
        one.close()


def test_a_project_runs_at_most_its_cap_and_another_project_finds_a_worker(ctx, tenant, clock):
    """``max_tasks_per_project``: one project's tasks, older and on vaults of their own (so fair queuing by
    vault takes them first), held every worker while another project's waited; with the cap below the
    workers, the other project's task is taken at once. 0 (the default) caps nothing."""
    capped = open_context(dataclasses.replace(ctx.settings, max_tasks_per_project=2, max_tasks_per_vault=0,
                                              max_tasks_per_agent=0), clock=clock)
    try:
        with ctx.tx() as s:
            a = [tasks.new_task(s, project_id=tenant.project_id, operation_type="backup",
                                now=clock.now - timedelta(seconds=10 - i), vault_id=f"pa{i}").id for i in range(4)]
            b = tasks.new_task(s, project_id="other-project", operation_type="backup", now=clock.now,
                               vault_id="pb0").id
        runs = [tasks.claim_next(capped, f"w{i}") for i in range(4)]
        assert [r.task_id if r else None for r in runs] == [a[0], a[1], b, None]
        tasks.finish(capped, runs[0], tasks.SUCCESS)
        assert tasks.claim_next(capped, "w5").task_id == a[2]
        # not capped: the oldest, whatever its project
        with ctx.tx() as s:
            s.execute(update(Task).where(Task.status.in_((tasks.WAITING, tasks.RUNNING))).values(status=tasks.SKIPPED))
            a = [tasks.new_task(s, project_id=tenant.project_id, operation_type="backup",
                                now=clock.now - timedelta(seconds=10 - i), vault_id=f"qa{i}").id for i in range(3)]
            tasks.new_task(s, project_id="other-project", operation_type="backup", now=clock.now, vault_id="qb0")
        free = open_context(dataclasses.replace(capped.settings, max_tasks_per_project=0), clock=clock)
        try:
            assert [tasks.claim_next(free, f"x{i}").task_id for i in range(3)] == a
        finally:
            free.close()
    finally:
        capped.close()
