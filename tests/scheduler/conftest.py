"""Scheduler tests reuse the service fixtures: a ServiceContext with a fake clock on SQLite and
PostgreSQL, and a tenant."""

from tests.services.conftest import FakeClock, clock, ctx, tenant  # noqa: F401
