"""A server backup's disk backups are found through an index however many top-level backups (parent_id
NULL) the catalog has: on SQLite the statistics of a full index of parent_id counted all those NULLs as
one value, and the planner then scanned every backup once per backup deleted (bench/README.md)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup
from opencbr.services import vaults


def test_children_of_a_backup_are_found_by_an_index_after_analyze(ctx, tenant, catalog_url):
    if not catalog_url.startswith("sqlite"):
        pytest.skip("the statistics in question are SQLite's (PostgreSQL counts NULLs apart)")
    with ctx.tx() as s:
        vault = vaults.create_vault(s, ctx, tenant, {"name": "v", "billing": {
            "object_type": "disk", "protect_type": "backup", "size": 100}}).vault
        for i in range(200):
            s.add(Backup(project_id=tenant.project_id, vault_id=vault.id, name=f"b{i}", resource_id=f"r{i % 20}",
                         resource_type="OS::Cinder::Volume", status="available"))
    with ctx.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    query = select(Backup.id).where(Backup.parent_id == "some-server-backup")
    sql = str(query.compile(ctx.engine, compile_kwargs={"literal_binds": True}))
    with ctx.engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "USING INDEX ix_backups_parent" in plan, plan
