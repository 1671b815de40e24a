"""Fixtures for the storage tests: a store on each backend, a local directory in tmp_path and a fresh
bucket on the session's moto server."""

from __future__ import annotations

import pytest

from opencbr.storage import open_store
from tests.support.s3 import s3_store_url


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        s = open_store(tmp_path.joinpath("store").as_uri())
    else:
        s = open_store(s3_store_url(request.getfixturevalue("moto_url"), prefix="p"))
    yield s
    s.close()
