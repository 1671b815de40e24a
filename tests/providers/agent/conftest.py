"""Fixtures shared by the agent provider's tests: a real agent process serving a host directory."""

from __future__ import annotations

import pytest

from tests.providers.agent.agents import AgentProcess, Authority


@pytest.fixture(scope="module")
def auth():
    return Authority.new()


@pytest.fixture
def agent(auth, tmp_path):
    """An agent process whose root is ``agent.root`` (a fresh directory)."""
    root = tmp_path / "host"
    root.mkdir()
    a = AgentProcess(auth, tmp_path / "agent", [root])
    a.root = root
    yield a
    a.stop()
