"""An agent's first tree backup takes its progress total from its own walk's listings, as the service's
local tree backups do (``services/tree_source.py``): no ``TreeScanner`` walking the tree a second time
beside it, on a host whose CPU the agent path is short of."""

from __future__ import annotations

import pytest

from opencbr.agent.config import AgentConfig
from opencbr.agent.serve import Agent
from opencbr.agentlink import certs, tls
from opencbr.agentlink.client import connect
from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider
from opencbr.storage import open_store
from tests.support.engine_tree import record_tree_scans

PROJECT = "p" * 32


@pytest.fixture()
def scans(monkeypatch) -> list[bytes]:
    """The roots every TreeScanner started on, in this process (the agent runs in it here)."""
    return record_tree_scans(monkeypatch)


@pytest.fixture()
def agent_at(tmp_path):
    """An agent in this process (its real data operations) over mutual TLS; yields (root, connect)."""
    ca, ca_key = certs.new_authority()
    svc_cert, svc_key = certs.issue(ca, ca_key, tls.SERVICE_CN, server=False, client=True)
    cert, key = certs.issue(ca, ca_key, "agent-1", server=True, client=False)
    root = tmp_path / "root"
    root.mkdir()
    cfg = AgentConfig(agent_id="agent-1", project_id=PROJECT, api_endpoint="http://127.0.0.1:9", listen="127.0.0.1:0",
                      roots=[str(root)], key_pem=key, cert_pem=cert, ca_pem=ca, state_dir=str(tmp_path / "state"))
    agent = Agent(cfg, str(tmp_path / "agent.json"))
    agent.start()
    context = tls.service_client_context(svc_cert, svc_key, ca)
    try:
        yield root, lambda: connect(f"127.0.0.1:{agent.server.address[1]}", context, expect_common_name="agent-1",
                                    expect_fingerprint=None, timeout=10)
    finally:
        agent.server.stop()


def test_a_first_tree_backup_is_sized_from_its_own_listings(tmp_path, agent_at, scans):
    root, link = agent_at
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(30):
        (tree / "sub" / f"f{i}.txt").write_bytes(bytes([i]) * (3000 + i))
    size = sum(3000 + i for i in range(30))
    repo = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32, encrypted=True)
    told: list[tuple[int, int]] = []
    r = AgentProvider().backup_tree(repo, link, project_id=PROJECT, path=str(tree), backup_id="b1", parent=None,
                                    meta={}, progress=lambda done, total: told.append((done, total)))
    assert scans == []
    assert r["total_bytes"] == size and told[-1] == (size, size)
