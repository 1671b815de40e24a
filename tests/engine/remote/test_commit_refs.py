"""A disk backup's refs reach the service ahead of its commit in bounded pieces (protocol 2,
``commit_refs``): no message holds them whole (one message of a 512 GiB disk's refs passed the channel's
256 MiB limit, so such a backup through an agent failed), the worker spools them to disk, every piece is
checked, and an agent of protocol 1 still sends them in the commit."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from opencbr.agentlink.channel import RemoteError, channel_pair
from opencbr.engine.disk.backup import backup_disk
from opencbr.engine.disk.fixed_index import SpooledDigests
from opencbr.engine.remote import BackupScope, serve_backup
from opencbr.engine.remote import client as remote_client
from opencbr.engine.remote import service as remote_service
from opencbr.engine.remote.client import RemoteChunks
from tests.support.engine import BS, make_image, new_repo
from tests.support.remote import converse_raw

PIECE = 10 * 32  # refs bytes per commit_refs message in these tests: 10 blocks


@pytest.fixture
def repo(local_store, monkeypatch):
    monkeypatch.setattr(remote_client, "REFS_PUT", PIECE)
    monkeypatch.setattr(remote_service, "REFS_PUT", PIECE)
    return new_repo(local_store)


def _backup(repo, img, name, protocol, parent=None, result=None):
    """A disk backup run as an agent of ``protocol`` (its result into ``result``); the messages the agent
    sent (op, payload bytes)."""
    svc, agent = channel_pair(timeout=30)
    sent: list[tuple[str, int]] = []
    send = agent.send

    def counted(header, payload=b""):
        parts = payload if isinstance(payload, list) else [payload]
        sent.append((header.get("op", ""), sum(len(p) for p in parts)))
        send(header, payload)

    agent.send = counted
    out: dict = {}

    def run():
        chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk, protocol=protocol)
        try:
            out["result"] = backup_disk(chunks, str(img), backup_id=name, meta={}, block_size=repo.block_size,
                                        parent_backup_id=parent)
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        chunks.close()
        send({"ok": "error" not in out, "result": {}})

    t = threading.Thread(target=run, daemon=True)
    t.start()
    final = serve_backup(repo, svc, BackupScope(name, "disk", readable=(parent,) if parent else ()))
    t.join()
    assert final["ok"] and "error" not in out, out
    if result is not None:
        result.update(out["result"].to_dict())
    return sent


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_disk_backups_refs_travel_in_pieces_and_restore_bit_exact(repo, tmp_path, protocol):
    img = make_image(tmp_path / "d.img", 95, seed=7, extra=100)  # 96 blocks: 3,072 bytes of refs
    sent = _backup(repo, img, "b1", protocol)
    commits = [size for op, size in sent if op == "commit"]
    pieces = [size for op, size in sent if op == "commit_refs"]
    if protocol == 2:
        assert len(pieces) == 10 and max(pieces) == PIECE and sum(pieces) == 96 * 32
        assert commits[0] < PIECE  # the header's payload only
    else:
        assert pieces == [] and commits[0] >= 96 * 32
    assert repo.verify("b1").ok
    out = tmp_path / "out.img"
    repo.restore_disk("b1", str(out))
    assert _sha(out) == _sha(img)
    assert os.path.getsize(out) == 96 * BS - BS + 100


@pytest.mark.parametrize("protocol", [1, 2])
def test_an_incrementals_changed_blocks_through_parent_refs_in_pieces(repo, tmp_path, monkeypatch, protocol):
    """The parent's refs come in windows (protocol 2) or whole (1), and are compared a piece at a time
    whatever their size: windows and pieces that straddle each other, a changed block in each."""
    monkeypatch.setattr(remote_service, "REFS_WINDOW", 7 * 32)
    monkeypatch.setattr(SpooledDigests, "PIECE", 3 * 32)
    img = make_image(tmp_path / "d.img", 95, seed=7, extra=100)
    _backup(repo, img, "b1", protocol)
    with open(img, "r+b") as f:
        for block in (0, 6, 7, 50, 95):  # (95: the short last block)
            f.seek(block * BS)
            f.write(os.urandom(100 if block == 95 else BS))
    got: dict = {}
    _backup(repo, img, "b2", protocol, parent="b1", result=got)
    assert got["changed_blocks"] == 5
    out = tmp_path / "out.img"
    repo.restore_disk("b2", str(out))
    assert _sha(out) == _sha(img)


HEADER = {"type": "disk", "disk_size": 2 * BS, "block_size": BS}


def test_refs_out_of_order_unknown_or_short_are_refused(repo):
    known = bytes(32)  # the zero block: held by every vault
    unknown = os.urandom(32)
    cases = [
        [({"op": "commit_refs", "name": "r1", "at": 32, "total": 64}, known)],  # not from the start
        [({"op": "commit_refs", "name": "r1", "at": 0, "total": 64}, known),
         ({"op": "commit_refs", "name": "r1", "at": 0, "total": 64}, known)],  # the same piece again
        [({"op": "commit_refs", "name": "r1", "at": 0, "total": 64}, known + unknown)],  # not held
        [({"op": "commit_refs", "name": "other", "at": 0, "total": 32}, known)],  # another backup
        [({"op": "commit_refs", "name": "r1", "at": 0, "total": 64}, known),  # one of two pieces sent
         ({"op": "commit", "name": "r1", "header": HEADER, "refs": 0, "refs_sent": 64}, b"")],
    ]
    for messages in cases:
        answers, _ = converse_raw(repo, BackupScope("r1", "disk"), messages)
        assert isinstance(answers[-1], RemoteError) and answers[-1].code == "refused", messages
    assert repo.list_manifests() == []
