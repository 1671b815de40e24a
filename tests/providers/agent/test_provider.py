"""The agent provider against real agent processes (TLS, their own roots): disk, server and directory
backups read on the agent's host, restores written there, and what the vault then holds."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider, AgentTaskFailed
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.support.engine_tree import assert_same_tree, build_tree


@pytest.fixture(params=["plain", "encrypted"])
def repo(request, tmp_path):
    enc = request.param == "encrypted"
    return Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"m" * 32 if enc else None,
                             encrypted=enc)


def make_disk(path, size=8 << 20, seed=1):
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 512 << 10):
            if rnd.random() < 0.6:
                f.seek(off)
                f.write(rnd.randbytes(128 << 10) + b"text " * 5000)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_disk_backup_and_restore_through_an_agent(agent, repo):
    disk = agent.root / "disk.img"
    make_disk(disk)
    p = AgentProvider()
    res = p.backup_disks(repo, agent.connect, project_id="p1",
                         disks=[HostDisk(str(disk), "b1", None, {"resource_id": "r1"})])
    d = res["disks"][0]
    assert d["new_chunks"] > 0 and res["consistency"]["method"] == "live"
    m = repo.read_manifest("b1")
    assert m["meta"]["resource_id"] == "r1" and m["meta"]["consistency"]["method"] == "live"
    res = p.backup_disks(repo, agent.connect, project_id="p1",
                         disks=[HostDisk(str(disk), "b2", "b1", {"resource_id": "r1"})])
    assert res["disks"][0]["new_chunks"] == 0 and res["disks"][0]["changed_blocks"] == 0
    want = sha(disk)
    with open(disk, "r+b") as f:  # damage the original: the restore repairs it in place
        f.seek(1 << 20)
        f.write(os.urandom(300 << 10))
    r = p.restore(repo, agent.connect, project_id="p1", backup_id="b2", kind="disk", target=str(disk))
    assert sha(disk) == want and 0 < r["blocks_written"] < 10
    new = agent.root / "new" / "copy.img"
    (agent.root / "new").mkdir()
    p.restore(repo, agent.connect, project_id="p1", backup_id="b2", kind="disk", target=str(new), create=True)
    assert sha(new) == want


def test_server_disks_in_one_task(agent, repo):
    a, b = agent.root / "sda.img", agent.root / "sdb.img"
    make_disk(a, seed=2)
    make_disk(b, 4 << 20, seed=3)
    res = AgentProvider().backup_disks(repo, agent.connect, project_id="p1", server=True,
                                       disks=[HostDisk(str(a), "s-a", None, {"n": "a"}),
                                              HostDisk(str(b), "s-b", None, {"n": "b"})])
    assert [d["backup_id"] for d in res["disks"]] == ["s-a", "s-b"]
    assert repo.read_manifest("s-b")["meta"] == {"n": "b", "consistency": res["consistency"]}
    assert repo.verify("s-a").ok and repo.verify("s-b").ok


def test_tree_backup_incremental_and_restores(agent, repo):
    src = agent.root / "www"
    (src / "sub").mkdir(parents=True)
    rnd = random.Random(5)
    for i in range(60):
        (src / ("sub" if i % 3 else "") / f"f{i}.txt").write_bytes(rnd.randbytes(50 + i * 1500))
    (src / "big.bin").write_bytes(rnd.randbytes(5 << 20))
    p = AgentProvider()
    r1 = p.backup_tree(repo, agent.connect, project_id="p1", path=str(src), backup_id="t1", parent=None, meta={})
    assert r1["files"] == 61
    (src / "f0.txt").write_bytes(b"new content")
    r2 = p.backup_tree(repo, agent.connect, project_id="p1", path=str(src), backup_id="t2", parent="t1", meta={})
    assert r2["reused_files"] == 60 and r2["bytes_read"] == len(b"new content")
    # restore to a new directory, then single files beside what a directory holds
    p.restore(repo, agent.connect, project_id="p1", backup_id="t2", kind="tree", target=str(agent.root / "copy"))
    for f in src.rglob("*"):
        if f.is_file():
            assert (agent.root / "copy" / f.relative_to(src)).read_bytes() == f.read_bytes()
    out = p.restore_files(repo, agent.connect, project_id="p1", backup_id="t2", paths=["/sub/f1.txt", "/big.bin"],
                          target=str(agent.root / "picked"))
    assert (agent.root / "picked" / "f1.txt").read_bytes() == (src / "sub" / "f1.txt").read_bytes()
    assert out["bytes_written"] == (src / "sub" / "f1.txt").stat().st_size + (5 << 20)
    # an agent path's exclude_path: left out with what it holds
    (src / "sub" / "cache").mkdir()
    (src / "sub" / "cache" / "junk").write_bytes(b"x" * 1000)
    r3 = p.backup_tree(repo, agent.connect, project_id="p1", path=str(src), backup_id="t3", parent="t2", meta={},
                       exclude=[str(src / "sub" / "cache"), str(src / "big.bin")])
    assert r3["files"] == 60 and r3["reused_files"] == 60
    assert {e.name for e in repo.list_dir("t3", "/sub")} == {e.name for e in repo.list_dir("t2", "/sub")}
    assert "big.bin" not in {e.name for e in repo.list_dir("t3", "/")}


def test_every_kind_of_entry_comes_back_through_the_agent(agent, repo):
    """Sparse files, hard links, symlinks (dangling, absolute), a fifo, a socket, xattrs, a name that is
    not UTF-8, odd modes and times (as root: other owners, setuid, a device node): backed up and restored
    on the agent's host as the local provider keeps them, after an incremental backup too."""
    src = build_tree(agent.root / "src")
    p = AgentProvider()
    p.backup_tree(repo, agent.connect, project_id="p1", path=str(src), backup_id="t1", parent=None, meta={})
    p.restore(repo, agent.connect, project_id="p1", backup_id="t1", kind="tree", target=str(agent.root / "copy"))
    assert_same_tree(src, agent.root / "copy")
    r2 = p.backup_tree(repo, agent.connect, project_id="p1", path=str(src), backup_id="t2", parent="t1", meta={})
    assert r2["bytes_read"] == 0
    p.restore(repo, agent.connect, project_id="p1", backup_id="t2", kind="tree", target=str(agent.root / "copy2"))
    assert_same_tree(src, agent.root / "copy2")
    latin1 = os.fsdecode(b"caf\xe9-latin1.txt")
    p.restore_files(repo, agent.connect, project_id="p1", backup_id="t2", paths=["/" + latin1, "/sparse.img"],
                    target=str(agent.root / "picked"))
    assert (agent.root / "picked" / latin1).read_bytes() == (src / latin1).read_bytes()
    picked = os.stat(agent.root / "picked" / "sparse.img")
    assert picked.st_size == 8 << 20 and picked.st_blocks * 512 < picked.st_size


def test_paths_outside_the_roots_and_other_projects_are_refused(agent, repo, tmp_path):
    outside = tmp_path / "outside.img"
    make_disk(outside, 1 << 20)
    p = AgentProvider()
    with pytest.raises(AgentTaskFailed) as e:
        p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(outside), "x1", None, {})])
    assert "outside" in e.value.message
    os.symlink(outside, agent.root / "link.img")
    with pytest.raises(AgentTaskFailed):
        p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(agent.root / "link.img"), "x2",
                                                                                  None, {})])
    make_disk(agent.root / "in.img", 1 << 20)
    with pytest.raises(AgentTaskFailed) as e:
        p.backup_disks(repo, agent.connect, project_id="p2", disks=[HostDisk(str(agent.root / "in.img"), "x3",
                                                                                  None, {})])
    assert e.value.code == "wrong_project"
    assert repo.list_manifests() == []
