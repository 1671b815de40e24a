"""One Repository for both kinds of backup: the same calls restore, verify, browse and look up a disk
backup and a tree backup (the manifest says which kind it is; callers never switch on it)."""

from __future__ import annotations

import os

import pytest

from opencbr.engine.errors import InvalidArgument, Missing
from tests.support.engine import BS, make_image, new_repo, sha256_file


def _tree(root):
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "data.bin").write_bytes(os.urandom(200_000))
    return root


def test_tree_backup_through_the_repository(local_store, tmp_path):
    repo = new_repo(local_store)
    src = _tree(tmp_path / "src")
    res = repo.backup_tree(str(src), backup_id="t1", meta={"who": "test"})
    assert res.total_bytes >= 200_000 and repo.kind("t1") == "tree"
    assert sorted(e.name for e in repo.list_dir("t1", "/")) == ["data.bin", "etc"]
    repo.lookup("t1", "/etc/hosts", "/data.bin")
    with pytest.raises(Missing):
        repo.lookup("t1", "/etc/passwd")
    assert repo.verify("t1").ok
    repo.restore("t1", str(tmp_path / "whole"))
    assert (tmp_path / "whole" / "data.bin").read_bytes() == (src / "data.bin").read_bytes()
    (tmp_path / "one").mkdir()
    r = repo.restore_path("t1", "/etc/hosts", str(tmp_path / "one"))
    assert r.bytes_written == len("127.0.0.1 localhost\n")
    assert (tmp_path / "one" / "hosts").read_text() == "127.0.0.1 localhost\n"
    with pytest.raises(InvalidArgument):
        repo.disk_image("t1")


def test_disk_backup_through_the_same_calls(local_store, tmp_path):
    repo = new_repo(local_store)
    img = tmp_path / "disk.img"
    make_image(img, 64, seed=3)
    repo.backup_disk(str(img), backup_id="d1", meta={})
    assert repo.kind("d1") == "disk"
    assert repo.verify("d1").ok
    out = tmp_path / "restored.img"
    repo.restore("d1", str(out))
    assert sha256_file(out) == sha256_file(img)
    image = repo.disk_image("d1")
    assert image.disk_size == 64 * BS and image.unreadable_chunks() == []
    assert b"".join(image.blocks()) == img.read_bytes()
    with pytest.raises(InvalidArgument):  # a bare image of random blocks holds no file system
        repo.list_dir("d1", "/")
    with pytest.raises(Missing):
        repo.kind("nope")
