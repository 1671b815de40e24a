"""The agent's peak RSS during a tree backup of a generated tree stays under a bound (issue 14: an
agent stays under 150 MB; docs/agents.md, "Memory", says where its memory goes)."""

from __future__ import annotations

import subprocess
import sys

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider
from opencbr.storage import open_store
from tests.providers.agent.agents import REPO

#: What the agent may peak at for this tree: 150 MB is the issue's limit for the 30k-file bench tree;
#: measured on the 2-core bench VM at 112-117 MB now, 129 MB before its memory was cut (docs/agents.md,
#: "Memory").
PEAK_RSS = 116 << 20


def test_an_agents_tree_backup_peaks_under_the_bound(agent, tmp_path):
    tree = agent.root / "tree"
    subprocess.run([sys.executable, str(REPO / "bench" / "make_dataset.py"), "tree", str(tree), "--files", "3000",
                    "--total", "400M", "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    repo = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32, encrypted=True)
    agent.reset_peak_rss()
    r = AgentProvider().backup_tree(repo, agent.connect, project_id="p1", path=str(tree), backup_id="f",
                                    parent=None, meta={})
    peak = agent.peak_rss()
    print(f"agent peak RSS {peak / 1e6:.1f} MB for {r['total_bytes'] / 1e6:.0f} MB")
    assert r["total_bytes"] > 300e6
    assert peak < PEAK_RSS, f"the agent peaked at {peak / 1e6:.1f} MB (bound {PEAK_RSS / 1e6:.1f} MB)"
