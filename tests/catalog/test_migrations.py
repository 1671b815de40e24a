"""The catalog schema comes from Alembic migrations, and they match the models, on both backends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from opencbr.catalog.db import make_engine, upgrade
from opencbr.catalog.models import Base


def test_upgrade_head_matches_models(catalog_url):
    upgrade(catalog_url)
    upgrade(catalog_url)  # idempotent: a restart runs it again
    engine = make_engine(catalog_url)
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
