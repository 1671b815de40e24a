"""Application-consistent backups through a real agent process: a real PostgreSQL cluster whose data
directory lies below the agent's root, written to while it is backed up with ``app_consistent``.

A file-system vault cannot be app_consistent (domain/vault: server vaults only), so the directory is
backed up at the provider level with the flag the service sends for an app-consistent server vault.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.agent.hooks.servers import Postgres, Writer, log_text, numbered_postgres
from tests.providers.agent.agents import AgentProcess, Authority

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def pg():
    server = numbered_postgres()
    yield server
    server.stop()
    shutil.rmtree(server.socket_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def script_dir(tmp_path_factory) -> Path:
    """The agent's custom hooks: empty phases (a test adds a failing pre-freeze script)."""
    root = tmp_path_factory.mktemp("hooks")
    for phase in ("pre-freeze.d", "post-thaw.d"):
        (root / phase).mkdir(mode=0o755)
    os.chmod(root, 0o755)
    return root


@pytest.fixture(scope="module")
def agent(pg, script_dir, tmp_path_factory):
    hooks = {"discover": False, "postgresql": [pg.target()], "script_dir": str(script_dir)}
    a = AgentProcess(Authority.new(), tmp_path_factory.mktemp("agent"), [Path(pg.socket_dir)], hooks=hooks)
    yield a
    a.stop()


@pytest.fixture
def repo(tmp_path):
    return Repository.create(open_store((tmp_path / "store").as_uri()), "v/", None, encrypted=False)


def _rows(server: Postgres) -> tuple[int, int]:
    return server.sql("SELECT count(*), coalesce(max(id), 0) FROM numbered")[0]


def test_an_app_consistent_tree_backup_restores_a_cluster_that_starts_with_the_committed_rows(pg, agent, repo):
    p = AgentProvider()
    with Writer(pg, _rows(pg)[1] + 1) as writer:
        before = writer.committed
        r = p.backup_tree(repo, agent.connect, project_id="p1", path=pg.data_dir, backup_id="a1", parent=None,
                          meta={}, app_consistent=True)
        after = writer.committed
    assert r["app"]["achieved"] == "app_consistent", r["app"]
    assert "wal" not in r["app"]["hooks"][0]["details"]  # the short record; the restore material apart
    assert r["app_consistency"]["hooks"][0]["details"]["wal"]
    restored = os.path.join(pg.socket_dir, "restored")
    os.mkdir(restored)
    if pg.owner:  # the restored cluster's server writes its socket and log there
        os.chown(restored, pg.owner.pw_uid, pg.owner.pw_gid)
    out = p.restore(repo, agent.connect, project_id="p1", backup_id="a1", kind="tree",
                    target=os.path.join(restored, "data"), app_consistency=r["app_consistency"],
                    source_path=pg.data_dir)
    assert any(line.endswith("wrote backup_label") for line in out["prepared"]), out
    copy = Postgres(os.path.join(restored, "data"), pg.owner, 5441)
    copy.start()
    try:
        count, top = _rows(copy)
        log = log_text(copy.log)
    finally:
        copy.stop()
    # every row committed before the backup began is there; none the writer had not committed at its end
    assert before <= top <= after and count == top, (before, top, after, count)
    assert "starting backup recovery" in log and "completed backup recovery" in log, log


def test_a_failing_hook_gives_a_crash_consistent_backup_that_says_why(pg, agent, repo, script_dir):
    script = script_dir / "pre-freeze.d" / "10-refuse"
    script.write_text("#!/bin/sh\necho 'the application refuses to flush'\nexit 1\n")
    script.chmod(0o755)
    try:
        r = AgentProvider().backup_tree(repo, agent.connect, project_id="p1", path=pg.data_dir, backup_id="f1",
                                        parent=None, meta={}, app_consistent=True)
    finally:
        script.unlink()
    assert r["total_bytes"] > 0  # the backup is taken all the same
    assert r["app"]["achieved"] == "crash_consistent"
    assert "10-refuse" in r["app"]["reason"] and "exit status 1" in r["app"]["reason"], r["app"]
    # every application was released at once: no session of the agent's hooks is left on the cluster
    assert pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'opencbr-agent'") == [(0,)]


def test_a_disk_read_live_is_held_app_consistent_across_the_read(pg, agent, repo):
    image = Path(pg.socket_dir) / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    try:
        r = AgentProvider().backup_disks(repo, agent.connect, project_id="p1", app_consistent=True,
                                         disks=[HostDisk(str(image), "d1", None, {})])
    finally:
        image.unlink()
    assert r["consistency"]["method"] == "live"  # an image file: no snapshot, so held across the read
    assert r["consistency"]["app"]["achieved"] == "app_consistent", r["consistency"]["app"]
    assert r["app_consistency"]["hooks"][0]["details"]["backup_label"]  # kept by the service for a restore
