"""Fixtures for the tree engine tests: repositories on a local store, encrypted and plain."""

from __future__ import annotations

import pytest

from opencbr.engine import Repository
from tests.support.engine_tree import new_repo


@pytest.fixture(params=[True, False], ids=["encrypted", "plain"])
def repo(request, tmp_path) -> Repository:
    return new_repo(tmp_path, request.param)


@pytest.fixture
def enc_repo(tmp_path) -> Repository:
    return new_repo(tmp_path, True)
