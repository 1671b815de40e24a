"""A file system's first backup takes its progress total from the size the catalog knows (the
registration's measure) instead of scanning the whole tree beside the backup; with no size known, from
what its own walk has listed. The registration's measure leaves the count to a backup asked before or while it counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Resource
from opencbr.services import backups, resources, vaults
from tests.support.engine_tree import record_tree_scans
from tests.support.scheduler import drain, read_task


@pytest.fixture()
def scans(monkeypatch) -> list[bytes]:
    """The roots every TreeScanner started on, in this process."""
    return record_tree_scans(monkeypatch)


def _tree(roots: Path) -> Path:
    tree = roots / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        (tree / "sub" / f"f{i}.txt").write_bytes(b"x" * (1000 + i))
    (tree / "big.bin").write_bytes(bytes(range(256)) * 400)
    return tree


def _register(ctx, p, tree: Path):
    with ctx.tx() as s:
        fs = resources.register_file_system(s, ctx, p, name="tree", path=str(tree))
    drain(ctx)  # the registration's measure
    return fs


def _first_backup(ctx, p, fs) -> tuple[str, str]:
    with ctx.tx() as s:
        view = vaults.create_vault(s, ctx, p, {"name": "v", "billing": {
            "object_type": "turbo", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": fs.id, "type": "OS::Sfs::Turbo"}]})
    with ctx.tx() as s:
        cp = backups.create_checkpoint(s, ctx, p, view.vault.id)
    drain(ctx)
    return cp.backups[0].id, cp.task_ids[0]


def _size_of(ctx, resource_id: str) -> int:
    with ctx.read() as s:
        return s.scalar(select(Resource.size_bytes).where(Resource.id == resource_id))


def test_a_first_backup_of_a_measured_file_system_scans_nothing_beside_it(rctx, owner, roots, scans):
    tree = _tree(roots)
    fs = _register(rctx, owner, tree)
    size = _size_of(rctx, fs.id)
    assert size == 20 * 1000 + sum(range(20)) + 256 * 400
    backup_id, task_id = _first_backup(rctx, owner, fs)
    assert scans == []
    task = read_task(rctx, task_id)
    assert task.status == "success" and task.progress == 100
    with rctx.read() as s:
        b = backups.show_backup(s, owner, backup_id).backup
    assert b.status == "available" and b.logical_bytes == size
    assert b.details["stats"]["files"] == 21


def test_with_no_size_known_the_first_backup_sizes_the_tree_from_its_own_listings(rctx, owner, roots, scans):
    """No second walk of the tree beside the backup: its listings give the progress total (ListingTally)."""
    tree = _tree(roots)
    fs = _register(rctx, owner, tree)
    with rctx.tx() as s:
        s.get(Resource, fs.id).size_bytes = 0  # e.g. its measure has not run yet
    backup_id, task_id = _first_backup(rctx, owner, fs)
    assert scans == []
    task = read_task(rctx, task_id)
    assert task.status == "success" and task.progress == 100
    assert _size_of(rctx, fs.id) == 20 * 1000 + sum(range(20)) + 256 * 400  # the backup's own count


def test_a_backup_asked_before_the_measure_ran_leaves_the_count_to_the_backup(rctx, owner, roots, monkeypatch):
    from opencbr.providers.local import opened

    walked: list[str] = []
    real = opened.tree_size
    monkeypatch.setattr(opened, "tree_size", lambda root, **kw: walked.append(root) or real(root, **kw))
    tree = _tree(roots)
    with rctx.tx() as s:
        fs = resources.register_file_system(s, rctx, owner, name="tree", path=str(tree))
    backup_id, task_id = _first_backup(rctx, owner, fs)  # (the measure, queued first, runs first)
    assert walked == []
    with rctx.read() as s:
        b = backups.show_backup(s, owner, backup_id).backup
    assert b.status == "available" and _size_of(rctx, fs.id) == b.logical_bytes == 20 * 1000 + sum(range(20)) + 256 * 400
    assert b.resource_size_bytes == b.logical_bytes  # not the 0 known when it was asked
    with rctx.tx() as s:
        verify_id = backups.verify_backup(s, rctx, owner, backup_id)
    drain(rctx)
    assert read_task(rctx, verify_id).status == "success"  # the row still matches its stored manifest


def test_the_count_stops_when_asked_and_says_it_is_not_complete(tmp_path, monkeypatch):
    from opencbr.providers.local import opened

    for d in range(30):
        (tmp_path / f"d{d}").mkdir()
        (tmp_path / f"d{d}" / "f").write_bytes(b"y" * 10)
    clock = [0.0]

    def tick():
        clock[0] += 0.1  # each directory looked at takes a tenth of a second
        return clock[0]

    monkeypatch.setattr(opened.time, "monotonic", tick)
    asked: list[float] = []
    total, complete = opened.tree_size(str(tmp_path), stop=lambda: asked.append(clock[0]) or len(asked) >= 2)
    assert not complete and 0 < total < 300
    assert len(asked) == 2 and asked[1] - asked[0] >= opened.STOP_CHECK_SECONDS
    assert opened.tree_size(str(tmp_path), stop=lambda: False) == (300, True)
