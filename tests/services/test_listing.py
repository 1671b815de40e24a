"""The vault and backup lists read what grows with the catalog (the backups) from indexes alone, and their
counts from the counts the database keeps (``backup_usage``): no request reads every backup row of the
project (SQLite's query plans, on a real catalog; the same at 2 M backups on both catalogs in
bench/catalog.py)."""

from __future__ import annotations

import pytest

from opencbr.catalog.models import Backup
from opencbr.services import backups, resources, vaults
from tests.support.services import statements_reading_backups


@pytest.fixture()
def catalog_url(tmp_path):
    return f"sqlite:///{tmp_path}/catalog.db"  # the plans checked are SQLite's


def _plans(ctx, run, *, table: str = "backups") -> list[tuple[str, list[str]]]:
    """Each statement ``run`` sends that reads the backups table (or ``table``), with SQLite's plan for it."""
    seen = statements_reading_backups(ctx, run, table=table)
    with ctx.engine.connect() as conn:
        return [(st, [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + st, params)])
                for st, params in seen]


def _read(ctx, list_fn, tenant, f):
    with ctx.read() as s:
        return list_fn(s, tenant, f, limit=20, offset=0)


def _vault_with_disk(ctx, tenant, tmp_path):
    path = tmp_path / "d.img"
    path.write_bytes(b"\0" * 4096)
    with ctx.tx() as s:
        disk = resources.register_disk(s, ctx, tenant, name="d", path=str(path))
    with ctx.tx() as s:
        view = vaults.create_vault(s, ctx, tenant, {"name": "v", "billing": {
            "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": disk.id, "type": "OS::Cinder::Volume"}]})
    return view, disk


def test_lists_count_backups_from_an_index(ctx, tenant, tmp_path):
    view, disk = _vault_with_disk(ctx, tenant, tmp_path)
    with ctx.tx() as s:
        s.add_all(Backup(project_id=tenant.project_id, vault_id=view.vault.id, name=f"b{i}", resource_id=disk.id,
                         resource_type="OS::Cinder::Volume", status="available", added_bytes=i,
                         created_at=ctx.now()) for i in range(50))

    listed = _plans(ctx, lambda: _read(ctx, vaults.list_vaults, tenant, vaults.VaultFilter()))
    assert listed == [], listed  # the per-resource figures come from backup_usage
    listed = _plans(ctx, lambda: _read(ctx, backups.list_backups, tenant, backups.BackupFilter()))
    assert not [st for st, _ in listed if "count(" in st], listed  # the total too
    for statement, plan in listed:
        assert not any(step.startswith("SCAN backups") for step in plan), (statement, plan)
    views, total = _read(ctx, vaults.list_vaults, tenant, vaults.VaultFilter())
    assert total == 1 and (views[0].resources[0].backup_count, views[0].resources[0].backup_bytes) == (50, 1225)
    assert _read(ctx, backups.list_backups, tenant, backups.BackupFilter())[1] == 50


def test_filtered_and_sorted_backup_lists_seek_an_index(ctx, tenant):
    """Each list the API offers walks an index in its order and stops at the page's end: no scan of the
    project's backups, no sort of all of them."""
    for f, sort in [(backups.BackupFilter(), None), (backups.BackupFilter(vault_id="v"), None),
                    (backups.BackupFilter(resource_id="r"), None), (backups.BackupFilter(statuses=["error"]), None),
                    (backups.BackupFilter(), [("name", False)])]:
        def page(f=f, sort=sort):
            with ctx.read() as s:
                backups.list_backups(s, tenant, f, limit=20, sort=sort)

        for statement, plan in _plans(ctx, page):
            assert not any(step.startswith("SCAN backups") or "TEMP B-TREE FOR ORDER BY" in step for step in plan), \
                (f, sort, statement, plan)


def test_the_default_order_walks_an_index_with_statistics_too(ctx, tenant, tmp_path):
    """With ANALYZE's statistics (a project whose backups are all top-level makes (project_id, parent_id)
    useless as a filter) SQLite's planner scanned the table and sorted it for the default order; the
    page, the next page by marker and a deep offset each walk ix_backups_project_parent_created_id."""
    view, disk = _vault_with_disk(ctx, tenant, tmp_path)
    with ctx.tx() as s:
        s.add_all(Backup(project_id=tenant.project_id, vault_id=view.vault.id, name=f"b{i}", resource_id=disk.id,
                         resource_type="OS::Cinder::Volume", status="available", created_at=ctx.now())
                  for i in range(200))
    with ctx.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    with ctx.read() as s:
        marker = backups.list_backups(s, tenant, backups.BackupFilter(), limit=20)[0][-1].backup.id
    for page in ({"limit": 20}, {"limit": 20, "marker": marker}, {"limit": 20, "offset": 150}):
        def run(page=page):
            with ctx.read() as s:
                backups.list_backups(s, tenant, backups.BackupFilter(), **page)

        for statement, plan in _plans(ctx, run):
            assert not any(step.startswith("SCAN backups") for step in plan), (page, statement, plan)
            # A deep offset reads the page's ids from the index, then those rows by id and sorts only them.
            by_id = plan[0].endswith("(id=?)")
            assert by_id or not any("TEMP B-TREE FOR ORDER BY" in step for step in plan), (page, statement, plan)


def test_a_vault_page_reads_only_its_vaults_associations(ctx, tenant, tmp_path):
    """The resources of a page of vaults come through the vault_id index, in its order. Ordered by the
    association's id alone, SQLite scanned every association of the project (and of the catalog) to
    avoid sorting the page's: a vault list's cost grew with the catalog, not with the page (without
    statistics, as SQLite plans a catalog nobody has run ANALYZE on; with them, it scans only tiny tables)."""
    view, _disk = _vault_with_disk(ctx, tenant, tmp_path)
    with ctx.tx() as s:
        for i in range(3):
            vaults.create_vault(s, ctx, tenant, {"name": f"empty{i}", "billing": {
                "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"}})
    for f in (vaults.VaultFilter(), vaults.VaultFilter(ids=[view.vault.id])):
        listed = _plans(ctx, lambda f=f: _read(ctx, vaults.list_vaults, tenant, f), table="vault_resources")
        assert listed, "the page's resources were not read"
        for statement, plan in listed:
            assert not any(step.startswith("SCAN vault_resources") for step in plan), (statement, plan)
            assert not any("TEMP B-TREE" in step for step in plan), (statement, plan)
    views, _total = _read(ctx, vaults.list_vaults, tenant, vaults.VaultFilter(ids=[view.vault.id]))
    assert [r.name for r in views[0].resources] == ["d"]
