"""An honest agent's records, stored as its own unverified ones (engine/chunks/unverified.py), through
real agent processes: a full backup stores every chunk again and GC keeps one copy of each; incrementals
send nothing; the service's own backup of the same data relies on the agent's copies after checking
them; restores, through the agent and on the service, give the data back."""

from __future__ import annotations

import hashlib

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.providers.agent.test_provider import make_disk


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_an_agents_full_backup_then_gc_keeps_one_copy_and_everything_restores(agent, tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    repo = Repository.create(store, "v/", b"m" * 32, encrypted=True)
    disk = agent.root / "disk.img"
    make_disk(disk, seed=7)
    want = _sha(disk)
    p = AgentProvider()

    def backup(bid, parent=None, full=False):
        res = p.backup_disks(repo, agent.connect, project_id="p1", full=full, agent_id=agent.agent_id,
                             disks=[HostDisk(str(disk), bid, parent, {})])
        return res["disks"][0]

    first = backup("b1")
    assert first["new_chunks"] > 0 and set(repo.chunks.unverified_packs().values()) == {agent.agent_id}
    assert backup("b2", "b1", full=True)["new_chunks"] == first["new_chunks"]  # every chunk again
    packs = len(list(store.list("v/data/")))
    local = repo.backup_disk(str(disk), backup_id="s1", meta={})  # the service's own: checks, relies
    assert local.new_chunks == 0
    repo.gc()
    repo.gc()
    assert len(list(store.list("v/data/"))) < packs  # one copy of each chunk left
    assert backup("b3", "b2")["new_chunks"] == 0
    for bid in ("b1", "b2", "b3", "s1"):
        assert repo.verify(bid).ok
        out = agent.root / f"{bid}.img"
        p.restore(repo, agent.connect, project_id="p1", backup_id=bid, kind="disk", target=str(out),
                  create=True, agent_id=agent.agent_id)
        assert _sha(out) == want
    repo.restore_disk("b1", str(tmp_path / "b1.local"))
    assert _sha(tmp_path / "b1.local") == want
