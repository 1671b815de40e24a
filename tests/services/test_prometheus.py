"""The Prometheus exposition: computed from the catalog on each scrape, parsed with the official parser,
served by the scheduler on ``metrics_listen``."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from opencbr.catalog.models import Agent, Backup, Task, Vault
from opencbr.scheduler import Scheduler
from opencbr.services import prometheus
from tests.support import scheduler as S

GB = 1024**3


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for smp in family.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def test_scrape_reports_usage_backups_ages_tasks_workers_agents(ctx, tenant, clock, tmp_path):
    d = S.disk(ctx, tenant, tmp_path, "d1")
    v = S.vault(ctx, tenant, "v", [d.id], size=10)
    daily = S.policy(ctx, tenant)
    S.associate(ctx, tenant, v.id, daily.id)
    now = clock.now
    with ctx.tx() as s:
        s.get(Vault, v.id).used_bytes = 3 * GB
        for age_h, status in ((30, "available"), (5, "available"), (1, "error")):
            s.add(Backup(project_id=tenant.project_id, vault_id=v.id, name=f"b{age_h}", resource_id=d.id,
                         resource_name="d1", resource_type="OS::Cinder::Volume", status=status,
                         logical_bytes=100, added_bytes=30, created_at=now - timedelta(hours=age_h)))
        for kind, status, seconds in (("backup", "success", 60), ("backup", "success", 120),
                                      ("verify", "failed", 30), ("gc", "success", 10)):
            s.add(Task(project_id=tenant.project_id, operation_type=kind, status=status,
                       started_at=now - timedelta(seconds=seconds + 5), ended_at=now - timedelta(seconds=5)))
        s.add(Task(project_id=tenant.project_id, operation_type="backup", status="running", lease_owner="w1",
                   lease_expires_at=now + timedelta(seconds=30)))
        s.add(Task(project_id=tenant.project_id, operation_type="restore", status="waiting",
                   run_after=now - timedelta(minutes=2)))
        for agent_id, seen in (("a-up", now), ("a-down", now - timedelta(hours=1))):
            s.add(Agent(id=agent_id, project_id=tenant.project_id, host_name=agent_id, cert_fingerprint="f",
                        last_active_time=seen))
    got = samples(generate_latest(prometheus.registry(ctx)).decode())
    vault = (("project_id", tenant.project_id), ("vault_id", v.id), ("vault_name", "v"))
    assert got[("opencbr_vault_used_bytes", vault)] == 3 * GB
    assert got[("opencbr_vault_capacity_bytes", vault)] == 10 * GB
    assert got[("opencbr_vault_util_percent", vault)] == 30.0
    assert got[("opencbr_vault_threshold_percent", vault)] == 80
    assert got[("opencbr_backups", (("status", "available"), ("vault_id", v.id)))] == 2
    assert got[("opencbr_backups", (("status", "error"), ("vault_id", v.id)))] == 1
    assert got[("opencbr_backup_read_bytes", (("vault_id", v.id),))] == 200
    assert got[("opencbr_backup_stored_bytes", (("vault_id", v.id),))] == 60
    assert got[("opencbr_backup_deduplicated_bytes", (("vault_id", v.id),))] == 140
    resource = (("project_id", tenant.project_id), ("resource_id", d.id), ("resource_name", "d1"), ("vault_id", v.id))
    assert got[("opencbr_resource_last_available_backup_age_seconds", resource)] == 5 * 3600
    assert got[("opencbr_vault_backup_interval_seconds", (("policy_id", daily.id), ("vault_id", v.id)))] == 86400
    backup_ok = (("operation_type", "backup"), ("status", "success"))
    assert got[("opencbr_task_duration_seconds_count", backup_ok)] == 2
    assert abs(got[("opencbr_task_duration_seconds_sum", backup_ok)] - 180) < 0.01
    assert got[("opencbr_tasks", (("operation_type", "verify"), ("status", "failed")))] == 1
    verify_failed = (("operation_type", "verify"), ("status", "failed"))
    assert got[("opencbr_task_last_end_timestamp_seconds", verify_failed)] > 0
    assert got[("opencbr_worker_running_tasks", (("worker", "w1"),))] == 1
    assert got[("opencbr_tasks_waiting", ())] == 1 and got[("opencbr_tasks_oldest_waiting_seconds", ())] == 120
    up = {dict(k[1])["agent_id"]: value for k, value in got.items() if k[0] == "opencbr_agent_up"}
    assert up == {"a-up": 1.0, "a-down": 0.0}

    # served by the scheduler on its own listener (operator only: loopback)
    ctx.settings = replace(ctx.settings, metrics_listen="127.0.0.1:0")
    sched = Scheduler(ctx, "s1", tick_seconds=3600)
    sched.start()
    try:
        port = sched._metrics_server.server_port
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    finally:
        sched.shutdown()
    assert samples(text)[("opencbr_vault_used_bytes", vault)] == 3 * GB
