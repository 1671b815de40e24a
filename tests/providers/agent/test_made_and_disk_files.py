"""Two things an agent writes for the service, against a real agent process: the directory of a new file
system, which the agent takes away again (with what was written in it) for the task it was made for and
for no one else; and single files of a disk backup's file system restored onto the host."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from opencbr.engine import Repository
from opencbr.providers.agent import AgentProvider, AgentTaskFailed
from opencbr.providers.agent.provider import HostDisk
from opencbr.storage import open_store
from tests.providers.agent.agents import AgentProcess, Authority
from tests.support.trees import build_tree, snapshot


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    work = tmp_path_factory.mktemp("made")
    root = work / "host"
    root.mkdir()
    a = AgentProcess(Authority.new(), work / "agent", [root])
    a.root = root
    yield a
    a.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    store = tmp_path_factory.mktemp("made-store")
    return Repository.create(open_store(store.as_uri()), "v/", b"k" * 32, encrypted=True)


@pytest.fixture(scope="module")
def tree_backup(agent, repo):
    src = build_tree(agent.root / "src", seed=3)
    AgentProvider().backup_tree(repo, agent.connect, project_id="p1", path=str(src), backup_id="t1", parent=None,
                                meta={})
    return snapshot(src)


def test_a_made_directory_is_removed_with_what_was_written_for_its_task_only(agent, repo, tree_backup, tmp_path):
    p, root = AgentProvider(), agent.root
    target = root / "new" / "deep" / "fs"
    outside = tmp_path / "outside"  # a symlink in the made tree leads here: the link goes, not its target
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    assert p.create_dir(agent.connect, project_id="p1", path=str(target), made_by="task-1")["created"]
    p.restore(repo, agent.connect, project_id="p1", backup_id="t1", kind="tree", target=str(target))
    assert snapshot(target) == tree_backup
    (target / "escape").symlink_to(outside)
    # a retry of the same task may use its own directory again; another task may not
    p.create_dir(agent.connect, project_id="p1", path=str(target), made_by="task-1")
    with pytest.raises(AgentTaskFailed) as e:
        p.create_dir(agent.connect, project_id="p1", path=str(target), made_by="task-2")
    assert e.value.code == "not_empty"
    for who, path in (("task-2", target), ("task-1", root / "src"), ("task-1", root / "new")):
        with pytest.raises(AgentTaskFailed) as e:
            p.remove_made(agent.connect, project_id="p1", path=str(path), made_by=who)
        assert e.value.code == "refused", e.value
    assert snapshot(target) == {**tree_backup, "escape": snapshot(target)["escape"]}

    assert p.remove_made(agent.connect, project_id="p1", path=str(target), made_by="task-1")["removed"] > 0
    assert not (root / "new").exists()  # the directories it made, up to the first, are gone
    assert (outside / "keep.txt").read_text() == "keep" and (root / "src").is_dir()
    with pytest.raises(AgentTaskFailed):  # done once: the record is gone
        p.remove_made(agent.connect, project_id="p1", path=str(target), made_by="task-1")


def test_an_empty_directory_that_was_there_stays(agent, repo, tree_backup):
    p, there = AgentProvider(), agent.root / "empty"
    there.mkdir()
    assert not p.create_dir(agent.connect, project_id="p1", path=str(there), made_by="task-3")["created"]
    p.restore(repo, agent.connect, project_id="p1", backup_id="t1", kind="tree", target=str(there))
    p.remove_made(agent.connect, project_id="p1", path=str(there), made_by="task-3")
    assert there.is_dir() and not list(there.iterdir())


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 (e2fsprogs) is not installed")
def test_files_of_a_disk_backup_restored_onto_the_host(agent, repo, tmp_path):
    content = build_tree(tmp_path / "content", seed=5)
    image = agent.root / "ext4.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(image), "32M"], check=True,
                   capture_output=True)
    p = AgentProvider()
    p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(image), "d1", None, {})])
    out = p.restore_files(repo, agent.connect, project_id="p1", backup_id="d1", paths=["/docs"],
                          target=str(agent.root / "picked"))
    want = {k[len("docs/"):]: v for k, v in snapshot(content).items() if k.startswith("docs/")}
    for e in want.values():
        e.pop("links", None)  # (f1.txt's other name is outside /docs)
    assert snapshot(agent.root / "picked" / "docs") == want
    assert out["bytes_written"] > 0
    with pytest.raises(AgentTaskFailed) as e:  # never over what is there
        p.restore_files(repo, agent.connect, project_id="p1", backup_id="d1", paths=["/docs"],
                        target=str(agent.root / "picked"))
    assert e.value.code == "conflict", e.value


def test_files_of_a_tree_backup_never_replace_what_is_on_the_host(agent, repo, tree_backup):
    """restore-files of a file-system backup onto a host: a file, link or directory already at a restored
    name is a conflict, as for a disk backup and as the service's own restore-files says; it used to be
    replaced (a file, a link) or merged into (a directory, whose files were replaced) without a word."""
    p, target = AgentProvider(), agent.root / "picked-tree"
    target.mkdir()
    (target / "hardlink").write_text("mine")
    (target / "docs").mkdir()
    (target / "docs" / "f1.txt").write_text("mine too")
    os.symlink("elsewhere", target / "link-to-docs")
    for path in ("/hardlink", "/docs", "link-to-docs", "/"):
        with pytest.raises(AgentTaskFailed) as e:
            p.restore_files(repo, agent.connect, project_id="p1", backup_id="t1", paths=[path], target=str(target))
        assert e.value.code == "conflict", (path, e.value)
    # nothing of a refused request is written, not even its paths that were free
    with pytest.raises(AgentTaskFailed) as e:
        p.restore_files(repo, agent.connect, project_id="p1", backup_id="t1", paths=["/data", "/hardlink"],
                        target=str(target))
    assert e.value.code == "conflict"
    assert (target / "hardlink").read_text() == "mine" and (target / "docs" / "f1.txt").read_text() == "mine too"
    assert os.readlink(target / "link-to-docs") == "elsewhere"
    assert sorted(os.listdir(target)) == ["docs", "hardlink", "link-to-docs"]
    # a free name is restored as before
    p.restore_files(repo, agent.connect, project_id="p1", backup_id="t1", paths=["/data"], target=str(target))
    want = {k[len("data/"):]: dict(v) for k, v in tree_backup.items() if k.startswith("data/")}
    got = snapshot(target / "data")
    for e in (*want.values(), *got.values()):
        e.pop("links", None)  # (a hard link's other name may be outside /data)
    assert got == want


def test_a_disk_restored_where_a_directory_is_missing_says_which_path(agent, repo):
    """A new disk image in a directory that does not exist, or a restore onto an image that is gone, failed
    with the bare ``[Errno 2] No such file or directory: 'nodir/x.img'``: a path relative to a root the
    user never sees. The answer names the path the user gave."""
    image = agent.root / "small.img"
    image.write_bytes(os.urandom(1 << 20))
    p = AgentProvider()
    p.backup_disks(repo, agent.connect, project_id="p1", disks=[HostDisk(str(image), "d-small", None, {})])
    target = agent.root / "nodir" / "x.img"
    with pytest.raises(AgentTaskFailed) as e:
        p.restore(repo, agent.connect, project_id="p1", backup_id="d-small", kind="disk", target=str(target),
                  create=True)
    assert e.value.code == "not_found"
    assert e.value.message == f"the directory {agent.root / 'nodir'} does not exist on this host"
    with pytest.raises(AgentTaskFailed) as e:
        p.restore(repo, agent.connect, project_id="p1", backup_id="d-small", kind="disk",
                  target=str(agent.root / "gone.img"))
    assert e.value.code == "not_found" and e.value.message == f"{agent.root / 'gone.img'} does not exist on this host"
    assert not (agent.root / "nodir").exists() and not (agent.root / "gone.img").exists()


def test_a_device_in_use_is_refused_as_in_use_with_nothing_written(tmp_path, repo):
    """Restoring onto a block device that is mounted (or opened exclusively by another program): the
    agent's exclusive open fails with EBUSY, which was answered as ``internal``, ``OSError: [Errno 16]
    Device or resource busy``; it is ``in_use`` now, which tells the service that nothing was written."""
    from tests.agent.conftest import _run

    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    image = tmp_path / "loop.img"
    image.write_bytes(os.urandom(1 << 20))
    done = _run("losetup", "-f", "--show", str(image))
    if done.returncode != 0:
        pytest.skip(f"no loop device here: {done.stderr.strip()}")
    dev = done.stdout.strip()
    a = AgentProcess(Authority.new(), tmp_path / "agent", [tmp_path], devices=[dev])
    held = None
    try:
        p = AgentProvider()
        p.backup_disks(repo, a.connect, project_id="p1", disks=[HostDisk(dev, "d-dev", None, {})])
        with open(dev, "r+b") as f:
            f.write(b"\0" * 4096)  # changed after the backup: a restore would put the first block back
        before = image.read_bytes()
        held = os.open(dev, os.O_RDONLY | os.O_EXCL)  # as a mount holds it
        with pytest.raises(AgentTaskFailed) as e:
            p.restore(repo, a.connect, project_id="p1", backup_id="d-dev", kind="disk", target=dev)
        assert e.value.code == "in_use" and "nothing was written" in e.value.message, e.value
        assert image.read_bytes() == before
    finally:
        if held is not None:
            os.close(held)
        a.stop()
        _run("losetup", "-d", dev)


def test_an_image_attached_to_a_loop_device_is_refused_as_in_use(tmp_path, repo):
    """Restoring onto an image file that a loop device is attached to (mounted, perhaps): opening the
    file never fails with EBUSY, so the restore wrote under the loop device's file system. The agent
    finds the loop device by the file's device and inode and refuses (``in_use``), nothing written;
    detached, the same restore goes through."""
    from tests.agent.conftest import _run

    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    a = AgentProcess(Authority.new(), tmp_path / "agent", [tmp_path])
    dev = None
    try:
        p = AgentProvider()
        p.backup_disks(repo, a.connect, project_id="p1", disks=[HostDisk(str(image), "d-img", None, {})])
        backed_up = image.read_bytes()
        with open(image, "r+b") as f:
            f.write(b"\0" * 4096)
        done = _run("losetup", "-f", "--show", str(image))
        if done.returncode != 0:
            pytest.skip(f"no loop device here: {done.stderr.strip()}")
        dev = done.stdout.strip()
        moved = tmp_path / "moved.img"
        image.rename(moved)  # (matched by inode, not by the name it was attached under)
        before = moved.read_bytes()
        with pytest.raises(AgentTaskFailed) as e:
            p.restore(repo, a.connect, project_id="p1", backup_id="d-img", kind="disk", target=str(moved))
        assert e.value.code == "in_use" and dev in e.value.message and "nothing was written" in e.value.message
        assert moved.read_bytes() == before
        _run("losetup", "-d", dev)
        dev = None
        p.restore(repo, a.connect, project_id="p1", backup_id="d-img", kind="disk", target=str(moved))
        assert moved.read_bytes() == backed_up
    finally:
        a.stop()
        if dev is not None:
            _run("losetup", "-d", dev)


def test_a_new_disk_image_cut_short_by_a_killed_agent_is_never_taken_for_a_disk(tmp_path, repo):
    """A new disk image (a disk made from a backup on an agent's host) whose agent was killed mid-restore
    stayed under the name asked for, full size and half written: the next inventory listed it as an
    available disk, and making the disk again was refused (the path was taken). It is written under a
    hidden partial name now, which no inventory lists, linked to its name only once whole; the agent's
    next start removes the partial file, and restoring again makes the disk."""
    import threading
    import time

    root = tmp_path / "host"
    root.mkdir()
    image = root / "src.img"
    image.write_bytes(os.urandom(8 << 20) + b"text " * (1 << 20))
    auth = Authority.new()
    a = AgentProcess(auth, tmp_path / "agent", [root])
    try:
        p = AgentProvider()
        p.backup_disks(repo, a.connect, project_id="p1", disks=[HostDisk(str(image), "d-new", None, {})])
        target, partial = root / "made.img", root / ".made.img.opencbr-partial"
        failed: list[BaseException] = []

        def restore() -> None:
            try:
                p.restore(repo, a.connect, project_id="p1", backup_id="d-new", kind="disk", target=str(target),
                          create=True, bandwidth=1 << 20)  # (13 MiB at 1 MiB/s: killed well before its end)
            except BaseException as e:  # noqa: BLE001
                failed.append(e)

        t = threading.Thread(target=restore)
        t.start()
        deadline = time.monotonic() + 20
        while not partial.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        a.kill()
        t.join(60)
        assert failed and partial.exists() and not target.exists(), (failed, sorted(os.listdir(root)))
        assert all(not n.endswith((".img", ".raw")) or n == "src.img" for n in os.listdir(root))
        a = AgentProcess(auth, tmp_path / "agent", [root])  # (its state directory: the same)
        assert not partial.exists(), "the next start of the agent removes what a killed one was writing"
        p.restore(repo, a.connect, project_id="p1", backup_id="d-new", kind="disk", target=str(target), create=True)
        assert target.read_bytes() == image.read_bytes() and not partial.exists()
        with pytest.raises(AgentTaskFailed) as e:  # (the name taken: refused, nothing written over it)
            p.restore(repo, a.connect, project_id="p1", backup_id="d-new", kind="disk", target=str(target),
                      create=True)
        assert e.value.code == "conflict" and target.read_bytes() == image.read_bytes()
    finally:
        a.stop()


def test_a_made_directory_replaced_by_another_is_not_emptied(agent, repo, tree_backup):
    """Whoever may rename in the made directory's parent could move it away and put another directory (of
    someone else's, from that parent) at its name before the failed task's clean-up: the agent, as root,
    emptied that one."""
    p, root = AgentProvider(), agent.root
    target, precious = root / "shared" / "newfs", root / "shared" / "bob"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    assert p.create_dir(agent.connect, project_id="p1", path=str(target), made_by="task-9")["created"]
    target.rename(root / "shared" / "newfs.moved")
    precious.rename(target)
    with pytest.raises(AgentTaskFailed) as e:
        p.remove_made(agent.connect, project_id="p1", path=str(target), made_by="task-9")
    assert e.value.code == "refused" and "replaced" in e.value.message
    assert (target / "thesis.tex").read_text() == "years of work"


def test_another_attempt_of_a_restore_files_task_may_write_over_its_own_names(agent, repo, tree_backup):
    """A restore-files task whose worker was lost runs again (task_max_attempts): with names refused once
    taken, its new attempt met what the first had written and failed with conflict. The names are
    recorded for the task (made_by) before they are written: its next attempt may write over them, no
    other task may; and two paths of one request with the same name are refused before anything is
    written. (Helper 86 found the retry; its fix, ported.)"""
    p, there = AgentProvider(), agent.root / "picked-retry"
    p.restore_files(repo, agent.connect, project_id="p1", backup_id="t1", paths=["/docs"], target=str(there),
                    made_by="task-9")
    (there / "docs" / "half").write_bytes(b"left by the lost attempt")
    p.restore_files(repo, agent.connect, project_id="p1", backup_id="t1", paths=["/docs"], target=str(there),
                    made_by="task-9")
    for who in ("task-10", None):
        with pytest.raises(AgentTaskFailed) as e:
            p.restore_files(repo, agent.connect, project_id="p1", backup_id="t1", paths=["/docs"],
                            target=str(there), made_by=who)
        assert e.value.code == "conflict", e.value
    with pytest.raises(AgentTaskFailed) as e:
        p.restore_files(repo, agent.connect, project_id="p1", backup_id="t1", paths=["/docs", "/docs/"],
                        target=str(agent.root / "picked-twice"), made_by="task-11")
    assert e.value.code == "conflict" and "two of the paths" in e.value.message
    assert not (agent.root / "picked-twice" / "docs").exists()
