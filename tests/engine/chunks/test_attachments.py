"""A backup's attachments: sealed with the repository's keys, counted in its usage, tied to their backup
(another backup's name cannot pass for it), removed with the backup, listed from the backup id alone."""

from __future__ import annotations

import os

import pytest

from opencbr.engine import Repository
from opencbr.engine.chunks.attachments import ATTACHMENTS_DIR
from opencbr.engine.errors import Damaged, InvalidArgument, Missing
from tests.support.engine import make_image, new_repo


def _objects(store, repo: Repository) -> dict[str, bytes]:
    prefix = repo.prefix + ATTACHMENTS_DIR
    return {key[len(prefix):]: store.get(key) for key, _ in store.list(prefix)}


def test_an_attachment_is_sealed_counted_and_goes_with_its_backup(any_store, tmp_path):
    repo = new_repo(any_store)
    repo.backup_disk(make_image(tmp_path / "d.img", 16, seed=3), backup_id="b1", meta={})
    before = repo.usage()
    secret = b"START WAL LOCATION: 0/2000028 " + os.urandom(4096)
    stored = repo.put_attachment("b1", "app-consistency", secret)
    assert repo.get_attachment("b1", "app-consistency") == secret
    assert repo.attachment_names("b1") == ["app-consistency"] and repo.attachment_names("b2") == []
    assert repo.usage() == before + stored
    (blob,) = _objects(any_store, repo).values()
    assert b"START WAL" not in blob  # encrypted like a manifest
    # one backup's attachment cannot be passed off as another's (the name is sealed in)
    any_store.put(repo.prefix + ATTACHMENTS_DIR + "b2/app-consistency", blob)
    with pytest.raises(Damaged):
        repo.get_attachment("b2", "app-consistency")
    repo.delete_backup("b1")
    assert repo.attachment_names("b1") == [] and list(_objects(any_store, repo)) == ["b2/app-consistency"]
    with pytest.raises(Missing):
        repo.get_attachment("b1", "app-consistency")


def test_names_are_checked(local_store):
    repo = new_repo(local_store)
    for backup_id, name in (("../x", "a"), ("b1", "../a"), ("b1", "A/b"), ("b1", "")):
        with pytest.raises(InvalidArgument):
            repo.put_attachment(backup_id, name, b"x")
