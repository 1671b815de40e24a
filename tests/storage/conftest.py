"""Fixtures for the storage tests: a local store in tmp_path and an S3 store on a moto_server that
this session starts on a loopback port (one server per test session, a fresh bucket per test)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import start_moto_server  # noqa: E402

from opencbr.storage import open_store  # noqa: E402


@pytest.fixture(scope="session")
def moto_url():
    url, stop = start_moto_server()
    yield url
    stop()


def s3_url(moto_url: str, prefix: str = "p") -> str:
    bucket = "b-" + uuid.uuid4().hex[:12]
    return f"s3://{bucket}/{prefix}?endpoint_url={moto_url}&region=us-east-1&access_key=test&secret_key=test"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        s = open_store(tmp_path.joinpath("store").as_uri())
    else:
        s = open_store(s3_url(request.getfixturevalue("moto_url")))
    yield s
    s.close()
