"""Service-level fixtures: a ServiceContext on a fresh catalog (SQLite and PostgreSQL) with a tenant."""

from __future__ import annotations

import pytest

from opencbr.config import load_settings
from opencbr.services import iam
from opencbr.services.context import open_context
from opencbr.services.principal import Principal


class FakeClock:
    def __init__(self):
        from datetime import datetime
        self.now = datetime(2026, 1, 5, 10, 0, 0)

    def __call__(self):
        return self.now

    def advance(self, **kw):
        from datetime import timedelta
        self.now += timedelta(**kw)


@pytest.fixture()
def clock():
    return FakeClock()


@pytest.fixture()
def ctx(catalog_url, tmp_path, clock):
    settings = load_settings(env={}, data_dir=str(tmp_path), catalog_url=catalog_url, task_lease_seconds=30)
    c = open_context(settings, clock=clock)
    yield c
    c.close()


@pytest.fixture()
def tenant(ctx) -> Principal:
    """The bootstrap admin of a fresh catalog, as a principal."""
    from sqlalchemy import select

    from opencbr.catalog.models import User
    info = iam.bootstrap(ctx)
    with ctx.tx() as s:
        user = s.scalar(select(User).where(User.account_id == info.account_id))
    return iam.principal_for_user(ctx, user.id, info.project_id)
