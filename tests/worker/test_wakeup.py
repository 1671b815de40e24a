"""Idle workers notice new tasks with a cheap read, not a write-locking claim (SQLite), and are woken
by the doorbell when one is queued."""

from __future__ import annotations

import os
import threading
import time

from opencbr.catalog.db import is_sqlite
from opencbr.services import doorbell, tasks
from opencbr.services.doorbell import DoorbellListener
from opencbr.worker import runner, wakeup
from opencbr.worker.runner import Worker
from opencbr.worker.wakeup import TaskPoller


def test_poller_sees_waiting_tasks_for_its_host_only(ctx, tenant, monkeypatch):  # noqa: F811
    poller = TaskPoller(ctx, "host-a")
    if not is_sqlite(ctx.settings.effective_catalog_url):
        assert poller.maybe_work()  # PostgreSQL: the claim itself is cheap, always try
        return
    monkeypatch.setattr(wakeup, "CLAIM_AT_LEAST_EVERY", 3600.0)
    poller._last_claim = time.monotonic()  # (the safety-net claim is not due)
    assert not poller.maybe_work()
    with ctx.tx() as s:
        tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now(), required_host="host-b")
    assert not poller.maybe_work()  # another host's task
    with ctx.tx() as s:
        tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now())
    assert poller.maybe_work()
    poller.close()


def test_queuing_a_task_rings_the_doorbell_at_commit_only(ctx, tenant):  # noqa: F811
    """An idle worker is woken by the commit that queues a task (both catalogs), not by a rolled-back
    one, and not without a task."""
    bell = DoorbellListener(ctx.settings.effective_catalog_url)
    try:
        assert bell._sock is not None or bell._pg is not None  # it listens (no silent fallback to polling)
        assert not bell.wait(0.05)
        try:
            with ctx.tx() as s:
                tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now())
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        assert not bell.wait(0.3)
        with ctx.tx() as s:
            tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now())
            assert not bell.wait(0.05)  # (not before the commit)
        t0 = time.monotonic()
        assert bell.wait(5)
        assert time.monotonic() - t0 < 1
        assert not bell.wait(0.05)  # one ring, consumed
    finally:
        bell.close()


def test_a_worker_gone_is_forgotten_by_the_doorbell(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    directory = doorbell.doorbell_dir(url)
    bell = DoorbellListener(url)
    assert len(os.listdir(directory)) == 1
    bell._sock.close()  # died without cleaning up: its marker stays until the next ring
    bell._sock = None
    doorbell.ring(directory)
    assert os.listdir(directory) == []
    bell.close()


def test_an_idle_worker_starts_a_queued_task_at_once(ctx, tenant):  # noqa: F811
    """With a long poll interval, only the doorbell can start the task quickly."""
    started = threading.Event()
    handlers = tasks.TaskHandlers()
    handlers.register("gc", lambda c, run: started.set())
    worker = Worker(ctx, "w:1:x:0", poll_interval=30, handlers=handlers)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # (idle, waiting on the doorbell)
        t0 = time.monotonic()
        with ctx.tx() as s:
            tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now(),
                           required_host=worker.host)
        assert started.wait(10)
        assert time.monotonic() - t0 < 10  # far below the 30 s poll; slack for a loaded machine
    finally:
        stop.set()
        worker.stop()
        thread.join(40)


def test_a_worker_whose_claim_failed_tries_again_soon(ctx, tenant, monkeypatch):  # noqa: F811
    """The doorbell rang for a task while the worker's claim failed (the catalog unreachable for a
    moment): the worker looks again within seconds, not at its next poll (here 30 s)."""
    failures = []
    real_claim = runner.tasks.claim_next

    def claim_failing_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OSError("the catalog went away for a moment")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(runner.tasks, "claim_next", claim_failing_once)
    started = threading.Event()
    handlers = tasks.TaskHandlers()
    handlers.register("gc", lambda c, run: started.set())
    worker = Worker(ctx, "w:1:x:0", poll_interval=30, handlers=handlers)
    with ctx.tx() as s:  # (queued before the worker listens: its ring reaches nobody)
        tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now(),
                       required_host=worker.host)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        assert started.wait(15)
        assert failures == [1]
    finally:
        stop.set()
        worker.stop()
        thread.join(40)


def test_a_listener_that_listens_again_says_a_ring_may_be_missed(catalog_url, monkeypatch):
    """PostgreSQL: while the listener's connection was down, a queued task's NOTIFY reached nobody; when
    it listens again, its wait returns at once so that the worker looks for that task."""
    if is_sqlite(catalog_url):
        return  # (the socket doorbell has no connection to lose)
    monkeypatch.setattr(doorbell, "PG_RELISTEN_SECONDS", 0.1)
    real_connect = doorbell.psycopg_connect

    def refused(url, timeout=10):
        raise OSError("connection refused")

    monkeypatch.setattr(doorbell, "psycopg_connect", refused)
    bell = DoorbellListener(catalog_url)
    try:
        assert bell._pg is None  # deaf: it polls
        assert not bell.wait(0.3)  # (retries fail: still deaf, nothing says a ring was missed)
        monkeypatch.setattr(doorbell, "psycopg_connect", real_connect)
        assert bell.wait(5)
        assert bell._pg is not None
        assert not bell.wait(0.3)  # listening: no ring, no wake-up
    finally:
        bell.close()


def test_a_task_ending_rings_the_task_ends_bell_and_not_the_workers(ctx, tenant):  # noqa: F811
    """The end of a task (both catalogs) wakes who waits for ends (the API's held answers), at commit;
    the workers' doorbell stays quiet, and queuing a task does not ring the ends' bell."""
    url = ctx.settings.effective_catalog_url
    ends, queued = DoorbellListener(url, doorbell.TASK_ENDS), DoorbellListener(url)
    try:
        assert ends.listening and queued.listening
        with ctx.tx() as s:
            tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now())
        assert queued.wait(5) and not ends.wait(0.3)
        run = tasks.claim_next(ctx, "w1")
        tasks.finish(ctx, run, tasks.SUCCESS)
        t0 = time.monotonic()
        assert ends.wait(5)
        assert time.monotonic() - t0 < 1
        assert not queued.wait(0.3)
    finally:
        ends.close()
        queued.close()
