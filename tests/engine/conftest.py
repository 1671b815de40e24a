"""Fixtures for the engine tests: a local store, and a store on each backend (local directory, and S3 on
the session's moto server)."""

from __future__ import annotations

import pytest

from opencbr.storage import open_store
from tests.support.s3 import s3_store_url


@pytest.fixture
def local_store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    if request.param == "local":
        return open_store((tmp_path / "store").as_uri())
    return open_store(s3_store_url(request.getfixturevalue("moto_url")))
