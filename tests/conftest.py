"""Shared fixtures, one per shared thing. Catalog tests run on SQLite and on PostgreSQL
(``OPENCBR_TEST_PG_URL``); when PostgreSQL is unreachable those runs are skipped and the summary says so
loudly."""

from __future__ import annotations

import json
import os
import sys

import pytest
from sqlalchemy import select

from opencbr.catalog.models import User
from opencbr.config import load_settings
from opencbr.services import iam
from opencbr.services.context import open_context
from opencbr.services.principal import Principal
from tests.support.clock import FakeClock
from tests.support.databases import (
    BACKENDS,
    PG_URL,
    finish_releases,
    make_catalog_url,
    pg_unavailable_reason,
    release_catalog_url,
)
from tests.support.s3 import start_moto_server
from tests.support.server import BASETEMP_ENV, ServerProcess, stop_leftover_servers

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module", autouse=True)
def _no_server_outlives_its_module():
    """Servers a module started are stopped when it ends, even those a failed set-up or test left: a
    leaked server and its workers keep polling the catalog and made a loaded run slower and slower."""
    yield
    left = stop_leftover_servers()
    if left:
        import warnings
        warnings.warn(f"{left} server process(es) outlived the test module that started them; killed", stacklevel=1)


@pytest.fixture(params=BACKENDS)
def catalog_url(request, tmp_path):
    """A fresh catalog on each backend: the newest schema, no rows (a copy of one migrated catalog)."""
    url = make_catalog_url(request.param, str(tmp_path))
    yield url
    release_catalog_url(url)


@pytest.fixture(params=BACKENDS)
def empty_catalog_url(request, tmp_path):
    """A fresh catalog on each backend without any table: what a first start migrates."""
    url = make_catalog_url(request.param, str(tmp_path), migrated=False)
    yield url
    release_catalog_url(url)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    """A running server (SQLite or PostgreSQL catalog), shared by a test module."""
    d = str(tmp_path_factory.mktemp(f"srv-{request.param}"))
    url = make_catalog_url(request.param, d)
    srv = ServerProcess(d, url).start()
    srv.backend = request.param
    yield srv
    srv.stop()
    release_catalog_url(url)


@pytest.fixture(scope="session")
def moto_url():
    """The endpoint of the one S3 server (moto) of this test session; stores on it take a fresh bucket each
    (``tests.support.s3.s3_store_url``)."""
    url, stop = start_moto_server()
    yield url
    stop()


@pytest.fixture()
def clock():
    return FakeClock()


@pytest.fixture()
def ctx(catalog_url, tmp_path, clock):
    """A ServiceContext on a fresh catalog (both backends) whose clock the test moves."""
    settings = load_settings(env={}, data_dir=str(tmp_path), catalog_url=catalog_url, task_lease_seconds=30)
    c = open_context(settings, clock=clock)
    yield c
    c.close()


@pytest.fixture()
def tenant(ctx) -> Principal:
    """The bootstrap admin of a fresh catalog, as a principal."""
    info = iam.bootstrap(ctx)
    with ctx.tx() as s:
        user = s.scalar(select(User).where(User.account_id == info.account_id))
    return iam.principal_for_user(ctx, user.id, info.project_id)


def _file_weights() -> dict[str, float]:
    try:
        with open(os.path.join(os.path.dirname(__file__), "file_weights.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def pytest_collection_modifyitems(config, items):
    """On xdist workers (``make test``), the test files that took longest (``tests/file_weights.json``,
    written by ``tools/test_weights.py``) come first: xdist hands files out in this order, so the heaviest
    no longer start last and run alone at the end. A stable sort: each file's tests, and the files
    without a weight, stay in pytest-randomly's order."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    weights = _file_weights()
    items.sort(key=lambda item: -weights.get(item.nodeid.split("::", 1)[0], 0))


def pytest_sessionfinish(session, exitstatus):
    # the PostgreSQL databases released in the background, then the migrated catalogs fresh ones copied
    for failure in finish_releases():
        print(f"could not drop the test database {failure}", file=sys.stderr)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    seed = getattr(config.option, "randomly_seed", None)  # None with -p no:randomly
    if seed is not None:  # printed last, as the header that also shows it is hidden by -q
        terminalreporter.write_line(f"tests ran in random order, seed {seed}: --randomly-seed={seed} repeats it")
    reason = pg_unavailable_reason() if any("postgresql" in i.nodeid for i in terminalreporter.stats.get("skipped", [])) else None
    if reason:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"PostgreSQL at {PG_URL} is unreachable: {reason}", red=True, bold=True)
        terminalreporter.write_line("The catalog was tested on SQLite only.", red=True, bold=True)


def pytest_configure(config):
    """A --basetemp outside /tmp (make test PYTEST_ARGS=--basetemp=DIR) is a resource root of the test servers
    too: their tenants may use only paths below the roots, and /tmp alone made every test that registers a
    disk under tmp_path fail with "outside the directories this service may protect: /tmp"."""
    if config.option.basetemp:
        os.environ[BASETEMP_ENV] = os.path.abspath(str(config.option.basetemp))
