"""Fixtures for the engine tests: a local store, and an S3 store on a moto_server this session starts
on a loopback port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_helpers import s3_store_url  # noqa: E402
from s3server import start_moto_server  # noqa: E402

from opencbr.storage import open_store  # noqa: E402


@pytest.fixture(scope="session")
def moto_url():
    url, stop = start_moto_server()
    yield url
    stop()


@pytest.fixture
def local_store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    if request.param == "local":
        return open_store((tmp_path / "store").as_uri())
    return open_store(s3_store_url(request.getfixturevalue("moto_url")))
