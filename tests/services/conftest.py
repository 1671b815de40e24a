"""Fixtures of the service tests that work with tenants' paths: a service context whose tenants may use
paths below ``roots`` only (``resource_roots``), with a directory ``outside`` beside it, and the
bootstrap administrator's principal; and a linked second region for the replication tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from opencbr.catalog.models import User
from opencbr.config import load_settings
from opencbr.services import iam, regions
from opencbr.services.context import open_context
from tests.support.regions import LinkProxy, start_destination


@pytest.fixture()
def roots(tmp_path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "roots").mkdir()
    return tmp_path / "roots"


@pytest.fixture()
def rctx(catalog_url, tmp_path, roots, clock):
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"), catalog_url=catalog_url,
                             task_lease_seconds=30, resource_roots=(str(roots),))
    c = open_context(settings, clock=clock)
    yield c
    c.close()


@pytest.fixture()
def owner(rctx):
    info = iam.bootstrap(rctx)
    with rctx.tx() as s:
        user = s.scalar(select(User).where(User.account_id == info.account_id))
    return iam.principal_for_user(rctx, user.id, info.project_id)


@pytest.fixture()
def stranger(rctx, owner):
    """The admin of another account: for the tests that another tenant sees and touches nothing."""
    _account, project, user, _cred = iam.create_account(rctx, "stranger")
    return iam.principal_for_user(rctx, user.id, project.id)


@pytest.fixture()
def linked(ctx, tmp_path, clock):
    """A second installation ("region-b", in this process) linked as a destination through a TCP relay
    the test can cut: (the destination, the relay)."""
    dest, server = start_destination(tmp_path, clock)
    proxy = LinkProxy(dest.listen)
    with dest.ctx.tx() as s:
        token = regions.issue_credential(s, dest.ctx, "local-1").token
    with ctx.tx() as s:
        regions.add_region(s, ctx, "region-b", proxy.endpoint, token)
    yield dest, proxy
    proxy.close()
    server.stop()
    dest.ctx.close()
