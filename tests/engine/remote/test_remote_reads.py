"""Reads through the remote chunk service in bounded memory whatever the size of the disk: the refs of
a manifest go to the agent a window at a time (protocol 2), the chunks a task may read are checked
against an on-disk set fed as the windows go out, and what the service holds or sends does not grow
with the number of refs; restores stay bit-exact across many segments and windows, and an agent of
protocol 1 still gets the manifest whole."""

from __future__ import annotations

import os
import threading
import tracemalloc

import pytest

from opencbr.agentlink.channel import RemoteError, channel_pair
from opencbr.engine.chunks.crypto import DIGEST_SIZE
from opencbr.engine.chunks.manifests import Manifest
from opencbr.engine.disk.restore import restore_disk
from opencbr.engine.diskfs.view import DiskBackupView
from opencbr.engine.remote import ReadScope, serve_restore
from opencbr.engine.remote import service as remote_service
from opencbr.engine.remote.client import RemoteChunks
from opencbr.engine.remote.service import _Reads
from opencbr.engine.remote.vault import PROTOCOL, VaultAccess, vault_request
from opencbr.engine.tree import backup_tree, restore_tree
from tests.support.engine import BS, make_image, new_repo, sha256_file
from tests.support.remote import converse_raw

SEGMENT = 32 * 32  # refs bytes per segment: 32 blocks
WINDOW = 7 * 32  # refs bytes per answer: windows that straddle segments


@pytest.fixture
def repo(local_store, tmp_path):
    r = new_repo(local_store)
    r.chunks.refs_segment_size = SEGMENT
    r.chunks.memory_entries = 64  # the allowed set goes to disk past 64 digests
    r.chunks.spill_dir = str(tmp_path)
    return r


def _restore(repo, backup_id, fn, protocol=2):
    """Run ``fn(chunks)`` as an agent of ``protocol``; returns (its result, the service's answers as
    (header, payload bytes))."""
    svc, agent = channel_pair(timeout=30)
    sent: list[tuple[dict, int]] = []
    send = svc.send

    def counted(header, payload=b""):
        sent.append((header, sum(len(p) for p in (payload if isinstance(payload, list) else [payload]))))
        send(header, payload)

    svc.send = counted
    out: dict = {}

    def run():
        chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk, protocol=protocol)
        try:
            out["result"] = fn(chunks)
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        chunks.close()
        agent.send({"ok": "error" not in out, "result": {}})

    t = threading.Thread(target=run, daemon=True)
    t.start()
    final = serve_restore(repo, svc, ReadScope((backup_id,)))
    t.join()
    assert final["ok"] and "error" not in out, out
    return out["result"], sent


def test_a_disk_restore_reads_its_refs_in_windows_bit_exact(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(remote_service, "REFS_WINDOW", WINDOW)
    img = make_image(tmp_path / "d.img", 300, seed=5, extra=100)  # 301 blocks: 10 segments
    repo.backup_disk(img, backup_id="b1", meta={})
    assert len(list(repo.chunks.store.list(repo.prefix + "refs/b1/"))) == 10
    out = tmp_path / "out.img"
    _result, sent = _restore(repo, "b1", lambda cs: restore_disk(cs, "b1", str(out)))
    assert sha256_file(out) == sha256_file(img)
    # every answer is a window of refs, a manifest's head or the chunks of one read: none holds the refs
    windows = [n for h, n in sent if "at" in h]
    assert len(windows) == -(-301 * 32 // WINDOW) and max(windows) == WINDOW
    assert max(n for h, n in sent if "sizes" not in h) <= WINDOW < 301 * 32


def test_files_of_a_disk_and_a_tree_restore_through_windows(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(remote_service, "REFS_WINDOW", WINDOW)
    img = make_image(tmp_path / "d.img", 200, seed=6)
    repo.backup_disk(img, backup_id="b1", meta={})
    data = open(img, "rb").read()
    got, _ = _restore(repo, "b1", lambda cs: DiskBackupView(cs, "b1").pread(150 * BS + 9, 3 * BS))
    assert got == data[150 * BS + 9:153 * BS + 9]
    root = tmp_path / "tree"
    root.mkdir()
    for i in range(60):
        (root / f"f{i}").write_bytes(os.urandom(2000 + i * 500))
    backup_tree(repo, root, backup_id="t1", meta={})
    target = tmp_path / "restored"
    _, sent = _restore(repo, "t1", lambda cs: restore_tree(cs, "t1", str(target)))
    for p in root.iterdir():
        assert (target / p.name).read_bytes() == p.read_bytes()


def test_an_agent_of_protocol_1_gets_the_manifest_whole(repo, tmp_path):
    img = make_image(tmp_path / "d.img", 100, seed=7)
    repo.backup_disk(img, backup_id="b1", meta={})
    out = tmp_path / "out.img"
    _, sent = _restore(repo, "b1", lambda cs: restore_disk(cs, "b1", str(out)), protocol=1)
    assert sha256_file(out) == sha256_file(img)
    assert any(h.get("refs") == 100 * 32 for h, _n in sent) and not any("at" in h for h, _n in sent)


def _converse(repo, scope, messages):
    """The answers' payloads (or the RemoteError that ended them) of a raw conversation with the read service."""
    return converse_raw(repo, scope, messages, serve=serve_restore)[0]


def test_windows_of_another_backup_or_bad_windows_are_refused(repo, tmp_path):
    repo.backup_disk(make_image(tmp_path / "a.img", 40, seed=8, zero_frac=0.0), backup_id="b1", meta={})
    repo.backup_disk(make_image(tmp_path / "b.img", 40, seed=9, zero_frac=0.0), backup_id="b2", meta={})
    other = repo.chunks.read_manifest("b2").refs[:DIGEST_SIZE]
    scope = ReadScope(("b1",))
    answers = _converse(repo, scope, [({"op": "refs", "name": "b1", "at": 0, "length": 64}, b""),
                                      ({"op": "read"}, other)])
    assert answers[0] == repo.chunks.read_manifest("b1").refs[:64]
    assert isinstance(answers[1], RemoteError) and answers[1].code == "refused"
    for bad in ({"op": "refs", "name": "b2", "at": 0, "length": 64}, {"op": "manifest_head", "name": "b2"},
                {"op": "refs", "name": "b1", "at": 5, "length": 64}, {"op": "refs", "name": "b1", "at": "x"}):
        answers = _converse(repo, scope, [(bad, b"")])
        assert isinstance(answers[0], RemoteError) and answers[0].code == "refused", bad


def _allowed_peak(repo, refs: int) -> int:
    """Peak Python heap of a first read (which builds the allowed set) for a manifest of ``refs`` refs."""
    real = repo.chunks.read_manifest("small").refs[:DIGEST_SIZE]
    name = f"big{refs}"
    repo.chunks.put_manifest(Manifest(name, {"type": "disk", "disk_size": refs * BS, "block_size": BS},
                                      real + os.urandom(DIGEST_SIZE * (refs - 1))))
    reads = _Reads(repo.chunks, (name,))
    try:
        tracemalloc.start()
        answer, parts = reads.read(memoryview(real))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        reads.close()
    assert answer["sizes"][0] > 0 and len(parts[0]) == answer["sizes"][0]
    return peak


def test_the_allowed_set_does_not_grow_with_the_refs(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(remote_service, "REFS_WINDOW", 64 << 10)
    repo.chunks.refs_segment_size = 64 << 10
    repo.backup_disk(make_image(tmp_path / "s.img", 4, seed=10, zero_frac=0.0), backup_id="small", meta={})
    small, large = _allowed_peak(repo, 50_000), _allowed_peak(repo, 300_000)
    # a Python set of the refs: 7 MB at 50,000, 44 MB at 300,000; the on-disk set, sized for them at
    # once, and a window of refs: < 1 MB (what grows is the manifest's table of segments: a few bytes
    # per segment of 2,048 refs here, of 262,144 in a vault)
    assert large < 1 << 20 and large - small < 512 << 10, (small, large)


def test_the_task_request_says_which_protocol_the_service_speaks(repo):
    request = {"vault": vault_request(repo)}
    assert request["vault"]["protocol"] == PROTOCOL == 2 and VaultAccess.of(request).protocol == 2
    older = {"vault": {k: v for k, v in request["vault"].items() if k != "protocol"}}  # a worker before 2
    assert VaultAccess.of(older).protocol == 1
    newer = {"vault": {**request["vault"], "protocol": 3}}  # a newer worker: what this agent speaks
    assert VaultAccess.of(newer).protocol == 2
