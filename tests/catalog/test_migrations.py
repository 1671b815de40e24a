"""The catalog schema comes from Alembic migrations, and they match the models, on both backends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from opencbr.catalog.db import make_engine, upgrade
from opencbr.catalog.models import Base


def test_upgrade_head_matches_models(empty_catalog_url):
    engine = make_engine(empty_catalog_url)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []  # the whole chain runs, from the first migration
    engine.dispose()
    upgrade(empty_catalog_url)
    upgrade(empty_catalog_url)  # idempotent: a restart runs it again
    engine = make_engine(empty_catalog_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"
    assert {"accounts", "projects", "users", "credentials", "resources", "vaults", "vault_resources", "tasks",
            "audit_events", "alembic_version"} <= tables


def test_sqlite_runs_in_wal_mode(tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_fresh_catalogs_are_at_head_without_rows_and_independent(tmp_path):
    """``make_catalog_url`` copies one migrated catalog: each copy is at the newest revision, holds no rows
    and is its own (a row written to one is in no other)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from opencbr.catalog.db import MIGRATIONS_DIR
    from tests.support.databases import BACKENDS, make_catalog_url, release_catalog_url

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    for backend in BACKENDS:
        urls = [make_catalog_url(backend, str(tmp_path / f"{backend}{i}")) for i in range(2)]
        try:
            engines = [make_engine(u) for u in urls]
            with engines[0].begin() as conn:
                assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
                assert conn.exec_driver_sql("SELECT count(*) FROM accounts").scalar() == 0
                conn.exec_driver_sql("DELETE FROM alembic_version")
            with engines[1].connect() as conn:
                assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
            for e in engines:
                e.dispose()
        finally:
            for u in urls:
                release_catalog_url(u)
