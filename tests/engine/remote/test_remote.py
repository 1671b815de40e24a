"""The remote chunk service over a channel pair: the engine's disk and tree backups and restores run
against :class:`RemoteChunks` (the agent's end) while :func:`serve_backup`/:func:`serve_restore` answer
from a real repository (the worker's end), in plain and encrypted vaults; and what the service refuses."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from opencbr.agentlink.channel import RemoteError, channel_pair
from opencbr.engine import Repository
from opencbr.engine.disk.backup import backup_disk
from opencbr.engine.disk.restore import restore_disk
from opencbr.engine.remote import BackupScope, ReadScope, serve_backup, serve_restore
from opencbr.engine.remote.client import RemoteChunks
from opencbr.engine.remote.service import Refused
from opencbr.engine.tree import backup_tree, restore_tree
from tests.support.remote import converse_raw

MASTER = b"k" * 32


@pytest.fixture(params=["plain", "encrypted"])
def repo(request, local_store):
    return Repository.create(local_store, "v/", MASTER if request.param == "encrypted" else None,
                             encrypted=request.param == "encrypted")


def _disk(path, size=6 << 20, seed=1):
    rnd = __import__("random").Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 1 << 20):
            if rnd.random() < 0.7:
                f.seek(off)
                f.write(rnd.randbytes(256 << 10) + bytes(64 << 10) + b"abc" * 1000)


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _agent(repo, fn):
    """Run ``fn(chunks)`` as the agent would, on one end of a channel pair; returns (service end, thread,
    outcome dict). The agent's final answer follows its chunk messages, as on a real agent."""
    svc, agent = channel_pair(timeout=30)
    out: dict = {}

    def run():
        chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk)
        try:
            out["result"] = fn(chunks)
            chunks.close()
            agent.send({"ok": True, "result": {}})
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
            chunks.close()
            agent.send({"ok": False, "error": "failed", "message": str(e)})

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return svc, t, out


def _remote_disk_backup(repo, src, name, parent=None):
    svc, t, out = _agent(repo, lambda cs: backup_disk(cs, src, backup_id=name, meta={"m": 1}, block_size=repo.block_size,
                                                      parent_backup_id=parent))
    final = serve_backup(repo, svc, BackupScope(name, "disk", readable=(parent,) if parent else (), meta={"m": 1}))
    t.join()
    return final, out


def test_disk_backup_and_restore_through_the_service(repo, tmp_path):
    src = tmp_path / "disk.img"
    _disk(src)
    final, out = _remote_disk_backup(repo, src, "b1")
    assert final["ok"], final
    first = out["result"]
    assert first.new_chunks > 0 and repo.read_manifest("b1")["type"] == "disk"
    # an unchanged second backup sends no record: every chunk is in the vault
    final, out = _remote_disk_backup(repo, src, "b2", parent="b1")
    assert final["ok"] and out["result"].new_chunks == 0 and out["result"].changed_blocks == 0
    assert repo.verify("b2").ok
    target = tmp_path / "restored.img"
    svc, t, out = _agent(repo, lambda cs: restore_disk(cs, "b2", str(target)))
    final = serve_restore(repo, svc, ReadScope(("b2",)))
    t.join()
    assert final["ok"] and "error" not in out, out
    assert _sha(target) == _sha(src)


def test_tree_backup_incremental_and_restore(repo, tmp_path):
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    for i in range(40):
        (root / "a" / f"f{i}").write_bytes(os.urandom(100 + i * 997))
    (root / "a" / "b" / "big").write_bytes(os.urandom(3 << 20))
    os.symlink("a/f1", root / "link")

    def backup(name, parent=None):
        svc, t, out = _agent(repo, lambda cs: backup_tree(cs, root, backup_id=name, meta={}, parent_backup_id=parent))
        final = serve_backup(repo, svc, BackupScope(name, "tree", readable=(parent,) if parent else ()))
        t.join()
        assert final["ok"], (final, out)
        return out["result"]

    first = backup("t1")
    assert first.files == 41 and first.new_chunks > 0
    (root / "a" / "f3").write_bytes(b"changed")
    second = backup("t2", parent="t1")
    assert second.reused_files == 40 and second.bytes_read == len(b"changed")
    target = tmp_path / "out"
    svc, t, out = _agent(repo, lambda cs: restore_tree(cs, "t2", str(target)))
    final = serve_restore(repo, svc, ReadScope(("t2",)))
    t.join()
    assert final["ok"] and "error" not in out, out
    for p in root.rglob("*"):
        q = target / p.relative_to(root)
        if p.is_symlink():
            assert os.readlink(q) == os.readlink(p)
        elif p.is_file():
            assert q.read_bytes() == p.read_bytes(), p


def test_a_forged_record_is_refused_and_nothing_is_stored(repo):
    """A records message is answered once it is read (its check runs while the next messages are read
    and answered); a record that fails its check refuses the task at the latest when the agent asks to
    commit, and nothing of the message -- nor anything after it -- is stored."""
    codec = repo.chunks.codec
    good, other = b"x" * 5000, b"y" * 5000
    d = codec.digest(good)
    forged = codec.encode(codec.digest(other), other)  # a real record, but of another chunk
    header = {"type": "disk", "disk_size": 65536, "block_size": 65536}
    answers, raised = converse_raw(repo, BackupScope("f1", "disk"), [
        ({"op": "need"}, d), ({"op": "records", "sizes": [len(forged)]}, [d, forged]),
        ({"op": "commit", "name": "f1", "header": header, "refs": 32}, d)])
    assert bytes(answers[0]) == b"\x01"
    assert not isinstance(answers[1], RemoteError)  # read, not yet checked
    assert isinstance(answers[2], RemoteError) and answers[2].code == "refused"
    assert "failed its check" in answers[2].message
    assert isinstance(raised.get("error"), Refused)
    assert repo.list_manifests() == [] and not repo.chunks.reader_index(refresh=True).has(d)


def test_a_forged_record_among_many_refuses_the_whole_task(repo):
    """Records split among the checking threads, the forged one in the middle of the first message,
    good ones in the next: the agent's final answer is refused and no record of either is kept."""
    codec = repo.chunks.codec
    blocks = [bytes([i]) * 3000 for i in range(12)]
    digests = [codec.digest(b) for b in blocks]
    records = [codec.encode(d, b) for d, b in zip(digests, blocks, strict=True)]
    records[3] = codec.encode(digests[3], b"not the chunk")  # sealed under the right name, wrong data
    first, second = range(0, 8), range(8, 12)
    answers, raised = converse_raw(repo, BackupScope("f2", "disk"), [
        ({"op": "need"}, b"".join(digests)),
        ({"op": "records", "sizes": [len(records[i]) for i in first]},
         [part for i in first for part in (digests[i], records[i])]),
        ({"op": "records", "sizes": [len(records[i]) for i in second]},
         [part for i in second for part in (digests[i], records[i])])])
    assert bytes(answers[0]) == b"\x01" * 12
    assert isinstance(raised.get("error"), Refused) and "failed its check" in str(raised["error"])
    index = repo.chunks.reader_index(refresh=True)
    assert repo.list_manifests() == [] and not any(index.has(d) for d in digests)


def test_a_commit_with_an_unknown_ref_or_another_name_is_refused(repo):
    unknown = os.urandom(32)
    header = {"type": "disk", "disk_size": 65536, "block_size": 65536}
    answers, raised = converse_raw(repo, BackupScope("c1", "disk"), [
        ({"op": "commit", "name": "c1", "header": header, "refs": 32}, unknown)])
    assert isinstance(answers[0], RemoteError) and "does not hold" in answers[0].message
    answers, raised = converse_raw(repo, BackupScope("c1", "disk"), [
        ({"op": "commit", "name": "other", "header": header, "refs": 0}, b"")])
    assert isinstance(answers[0], RemoteError) and "may only write backup 'c1'" in answers[0].message
    assert repo.list_manifests() == []


def test_a_read_outside_the_scope_is_refused(repo, tmp_path):
    src = tmp_path / "disk.img"
    _disk(src, seed=2)
    assert _remote_disk_backup(repo, src, "r1")[0]["ok"]
    _disk(tmp_path / "other.img", seed=3)
    assert _remote_disk_backup(repo, tmp_path / "other.img", "r2")[0]["ok"]
    refs = repo.manifest("r2").ref_set()
    outside = next(iter(refs - repo.manifest("r1").ref_set()))
    answers, _ = converse_raw(repo, ReadScope(("r1",)), [({"op": "read"}, outside)], serve=serve_restore)
    assert isinstance(answers[0], RemoteError) and answers[0].code == "refused"
    answers, _ = converse_raw(repo, ReadScope(("r1",)), [({"op": "manifest", "name": "r2"}, b"")],
                               serve=serve_restore)
    assert isinstance(answers[0], RemoteError) and answers[0].code == "refused"
    inside = next(iter(repo.manifest("r1").ref_set()))
    answers, _ = converse_raw(repo, ReadScope(("r1",)), [({"op": "read"}, inside)], serve=serve_restore)
    assert not isinstance(answers[0], RemoteError) and len(answers[0]) > 0


def test_a_broken_channel_aborts_the_session(repo, tmp_path):
    svc, agent = channel_pair(timeout=5)
    d = repo.chunks.codec.digest(b"z" * 100)
    agent.send({"op": "need"}, d)  # claims a chunk, then the agent is gone
    agent.close()
    with pytest.raises(Exception) as e:
        serve_backup(repo, svc, BackupScope("k1", "disk"))
    assert "closed" in str(e.value) or "lost" in str(e.value)
    assert repo.list_manifests() == []
    # the vault's lock is released: a new backup can start at once
    src = tmp_path / "disk.img"
    _disk(src, seed=4)
    assert _remote_disk_backup(repo, src, "k2")[0]["ok"]


def _one_block(repo):
    """A block the vault asked for and received, as a commit would name it."""
    codec = repo.chunks.codec
    data = b"q" * 7000
    d = codec.digest(data)
    return d, [({"op": "need"}, d), ({"op": "records", "sizes": [len(rec := codec.encode(d, data))]}, [d, rec])]


@pytest.mark.parametrize("lie, said", [
    ({"disk_size": 65536 * 1000}, "refs do not cover"),  # 1,000 times what the refs cover
    ({"block_size": 4096}, "block_size must be the vault's"),
    ({"disk_size": None}, "disk_size must be"),
    ({"disk_size": 65536.0}, "disk_size must be"),
    ({"format": 7}, "unknown disk backup format"),
], ids=["size", "block-size", "no-size", "float-size", "format"])
def test_a_disk_header_that_no_restore_could_use_is_refused(repo, lie, said):
    """A compromised agent's commit was recorded whatever its header said of the disk, and the backup
    failed its first verify or restore (an Available backup that cannot be restored)."""
    d, sent = _one_block(repo)
    header = {"type": "disk", "disk_size": 65536, "block_size": repo.block_size, **lie}
    answers, raised = converse_raw(repo, BackupScope("h1", "disk"), [
        *sent, ({"op": "commit", "name": "h1", "header": header, "refs": 32}, d)])
    assert isinstance(answers[-1], RemoteError) and said in answers[-1].message, answers[-1]
    assert repo.list_manifests() == []


def test_the_worker_records_what_it_committed_not_what_the_agent_says(repo):
    """serve_backup's answer carries the worker's own record of each backup (its checked size and what the
    vault added), over anything the agent's final answer says: the service publishes from it."""
    d, sent = _one_block(repo)
    header = {"type": "disk", "disk_size": 65536, "block_size": repo.block_size}
    svc, agent = channel_pair(timeout=10)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("final", serve_backup(repo, svc, BackupScope("w1", "disk"))))
    t.start()
    for h, payload in [*sent, ({"op": "commit", "name": "w1", "header": header, "refs": 32}, d)]:
        agent.request(h, payload)
    agent.send({"ok": True, "result": {"disks": [{"backup_id": "someone-elses", "disk_size": 1 << 50}]},
                "recorded": {"someone-elses": {"logical_bytes": 1 << 50}}})
    t.join(10)
    recorded = out["final"]["recorded"]
    assert set(recorded) == {"w1"} and recorded["w1"]["logical_bytes"] == 65536
    assert recorded["w1"]["added_bytes"] > 0 and recorded["w1"]["new_chunks"] == 1


def test_claims_past_the_bound_are_refused(repo, monkeypatch):
    """An agent that only asks (never sends) held ~140 bytes of the worker per digest, without end."""
    from opencbr.engine.remote import service

    monkeypatch.setattr(service, "MAX_PENDING", 3)
    digests = [os.urandom(32) for _ in range(5)]
    answers, raised = converse_raw(repo, BackupScope("p1", "disk"), [({"op": "need"}, b"".join(digests[:3])),
                                                                     ({"op": "need"}, b"".join(digests[3:]))])
    assert bytes(answers[0]) == b"\x01" * 3
    assert isinstance(answers[1], RemoteError) and "asked for and not sent" in answers[1].message
    monkeypatch.setattr(service, "MAX_DIGESTS", 2)
    answers, _ = converse_raw(repo, BackupScope("p2", "disk"), [({"op": "known"}, b"".join(digests[:3]))])
    assert isinstance(answers[0], RemoteError) and "chunks at most" in answers[0].message


@pytest.mark.parametrize("message", [
    ({"op": "records", "sizes": [float("inf")]}, b""),
    ({"op": "commit_refs", "name": "g1", "at": 0, "total": 1 << 62}, b""),
    ({"op": "commit_refs", "name": "g1", "at": "0", "total": "32"}, b""),
], ids=["infinity", "huge-total", "strings"])
def test_odd_numbers_are_a_refusal_not_a_crash(repo, message):
    """(OverflowError from int(inf); a 2^62-byte spool file: EFBIG; a 1 TiB sparse one was made at 2^40.)"""
    answers, raised = converse_raw(repo, BackupScope("g1", "disk"), [message])
    assert isinstance(answers[0], RemoteError) and answers[0].code == "refused", answers
    assert isinstance(raised.get("error"), Refused), raised


def test_a_tree_commit_whose_catalog_list_no_restore_could_use_is_refused(repo):
    """The payload of a tree backup lists its catalog's chunks: garbage there was recorded, and the
    Available backup failed its first browse ("bad catalog list")."""
    from opencbr.engine.tree.dynamic_index import CatalogChunk, DynamicIndex

    d, sent = _one_block(repo)
    header = {"type": "tree", "format": 1}
    unknown = DynamicIndex("t", header, [CatalogChunk(os.urandom(32), 1, 10, b"a")]).encode_payload()
    held = DynamicIndex("t", header, [CatalogChunk(d, 1, 7000, b"a")]).encode_payload()
    for payload, said in ((b"garbage!" * 4, "bad catalog list"), (unknown, "which the vault does not hold")):
        answers, _ = converse_raw(repo, BackupScope("t1", "tree"), [
            *sent, ({"op": "commit", "name": "t1", "header": header, "refs": 32}, [d, payload])])
        assert isinstance(answers[-1], RemoteError) and said in answers[-1].message, answers[-1]
    assert repo.list_manifests() == []
    answers, raised = converse_raw(repo, BackupScope("t2", "tree"), [
        *sent, ({"op": "commit", "name": "t2", "header": header, "refs": 32}, [d, held])])
    assert not isinstance(answers[-1], RemoteError) and repo.list_manifests() == ["t2"], answers
