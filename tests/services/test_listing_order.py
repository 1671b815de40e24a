"""The backup list's default order (newest first, ties by id, both descending) and its paging, on both
catalogs: every backup appears exactly once and in that order, page after page, whether the pages follow
a ``marker`` or an ``offset``, and also when many backups share one ``created_at``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from opencbr.catalog.models import Backup
from opencbr.services import backups
from tests.support.services import protected_disk, statements_reading_backups


@pytest.fixture()
def listed(ctx, tenant, tmp_path) -> list[Backup]:
    """Ten backups: six created in one microsecond, the others one second apart around them; three in error."""
    disk, vault = protected_disk(ctx, tenant, tmp_path, seed=1, size=4096)
    at = ctx.now()
    times = [at - timedelta(seconds=2), at - timedelta(seconds=1)] + [at] * 6 + [at + timedelta(seconds=1)] * 2
    rows = [Backup(project_id=tenant.project_id, vault_id=vault.id, name=f"b{i % 3}", resource_id=disk.id,
                   resource_type="OS::Cinder::Volume", status="error" if i % 4 == 0 else "available", created_at=t)
            for i, t in enumerate(times)]
    with ctx.tx() as s:
        s.add_all(rows)
        s.flush()
        return [Backup(id=b.id, created_at=b.created_at, name=b.name) for b in rows]


def _ids(ctx, tenant, **page) -> list[str]:
    with ctx.read() as s:
        views, _ = backups.list_backups(s, tenant, backups.BackupFilter(), **page)
    return [v.backup.id for v in views]


def _by_marker(ctx, tenant, sort=None) -> list[str]:
    seen, marker = [], None
    while page := _ids(ctx, tenant, limit=3, marker=marker, sort=sort):
        seen += page
        marker = page[-1]
    return seen


def test_the_default_order_breaks_ties_by_id_newest_first(ctx, tenant, listed):
    expected = [b.id for b in sorted(listed, key=lambda b: (b.created_at, b.id), reverse=True)]
    assert _ids(ctx, tenant, limit=100) == expected


def test_marker_and_offset_pages_give_every_backup_once_in_order(ctx, tenant, listed):
    expected = _ids(ctx, tenant, limit=100)
    assert len(expected) == len(set(expected)) == len(listed)
    assert _by_marker(ctx, tenant) == expected
    assert [i for start in range(0, 10, 3) for i in _ids(ctx, tenant, limit=3, offset=start)] == expected


@pytest.mark.parametrize("sort", [[("name", False)], [("name", True)], [("name", False), ("created_at", True)],
                                  [("created_at", False)]])
def test_marker_pages_follow_a_requested_sort(ctx, tenant, listed, sort):
    """One direction (a row-value seek) or mixed (the OR of the keys), the pages end to end are the list."""
    expected = _ids(ctx, tenant, limit=100, sort=sort)
    assert len(set(expected)) == len(listed)
    assert _by_marker(ctx, tenant, sort) == expected


@pytest.mark.parametrize("desc", [False, True])
def test_a_requested_sort_breaks_ties_by_id_in_its_direction(ctx, tenant, listed, desc):
    expected = [b.id for b in sorted(listed, key=lambda b: (b.name, b.id), reverse=desc)]
    assert _ids(ctx, tenant, limit=100, sort=[("name", desc)]) == expected


def _sorts_in_postgresql_plans(ctx, run) -> list[str]:
    """The statements ``run`` sends that PostgreSQL answers with a Sort node even with sorting made as dear
    as it can be (no index gives their order): the planner's choice on a table of a few rows is no guide."""
    seen = statements_reading_backups(ctx, run)
    sorted_ = []
    with ctx.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_sort = off")
        for statement, params in seen:
            plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN (COSTS OFF) " + statement, params)]
            if any(line.strip().removeprefix("->").strip() == "Sort" for line in plan):
                sorted_.append("\n".join([statement, *plan]))
        conn.rollback()
    return sorted_


@pytest.mark.parametrize(("f", "sort"), [
    (backups.BackupFilter(), None), (backups.BackupFilter(statuses=["available"]), [("name", False)]),
    (backups.BackupFilter(statuses=["error"]), None), (backups.BackupFilter(), [("name", True)])])
def test_postgresql_walks_an_index_in_the_lists_order(ctx, tenant, listed, f, sort):
    """PostgreSQL does not take ``parent_id IS NULL`` as pinning parent_id: unless the order names it, no
    index on (project_id, parent_id, ...) gives the order, and a page sorted every matching backup
    (bench/README.md, catalog of millions: 2.3 s for a sort by name of one status)."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's plans: tests/services/test_listing.py")
    def pages():
        with ctx.read() as s:
            first, _ = backups.list_backups(s, tenant, f, limit=2, sort=sort)
            backups.list_backups(s, tenant, f, limit=2, sort=sort, marker=first[-1].backup.id)

    assert _sorts_in_postgresql_plans(ctx, pages) == []
