"""An agent's records through the remote chunk service (``serve_backup(writer=...)``): stored as its own
unverified ones with a sample checked -- its first records message whole, then one in ``SPOT_CHECK`` --
and never relied on by another agent without a check, nor sent to one unchecked (``serve_restore``)."""

from __future__ import annotations

import pytest

from opencbr.agentlink.channel import RemoteError
from opencbr.engine import Repository
from opencbr.engine.chunks.gc import run_gc
from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.errors import Damaged
from opencbr.engine.remote import BackupScope, ReadScope, serve_backup, serve_restore
from opencbr.engine.remote import service as remote_service
from opencbr.engine.remote.service import Refused
from tests.support.remote import converse_raw

HEADER = {"type": "disk", "disk_size": 65536, "block_size": 65536}


@pytest.fixture
def repo(local_store):
    return Repository.create(local_store, "v/", b"k" * 32, encrypted=True)


def _as(writer):
    return lambda repo, ch, scope: serve_backup(repo, ch, scope, writer=writer)


def _blocks(repo, n):
    codec = repo.chunks.codec
    datas = [bytes([i]) * 3000 for i in range(n)]
    digests = [codec.digest(b) for b in datas]
    return codec, datas, digests, [codec.encode(d, b) for d, b in zip(digests, datas, strict=True)]


def _records(digests, records, which):
    return ({"op": "records", "sizes": [len(records[i]) for i in which]},
            [part for i in which for part in (digests[i], records[i])])


def _backup(repo, writer, name, digests, records, split):
    """need every digest, the records in the messages ``split`` names, commit: (answers, raised)."""
    msgs = [({"op": "need"}, b"".join(digests)), *(_records(digests, records, part) for part in split)]
    msgs.append(({"op": "commit", "name": name, "header": {**HEADER, "disk_size": 65536 * len(digests)},
                  "refs": 32 * len(digests)}, b"".join(digests)))
    return converse_raw(repo, BackupScope(name, "disk"), msgs, serve=_as(writer))


def test_a_forged_record_in_the_first_message_refuses_the_task(repo):
    codec, _datas, digests, records = _blocks(repo, 6)
    records[2] = codec.encode(digests[2], b"not the chunk")
    answers, raised = _backup(repo, "agent-a", "f1", digests, records, [range(6)])
    assert isinstance(raised.get("error"), Refused) and "failed its check" in str(raised["error"])
    assert repo.list_manifests() == []


@pytest.mark.parametrize("spot_check, refused", [(1, True), (10 ** 9, False)])
def test_later_records_are_checked_one_in_spot_check(repo, monkeypatch, spot_check, refused):
    """Past the first message, a sample: a forged record there is caught when drawn (every one with 1),
    or stored as the agent's own (never drawn); then another agent's backup asks for that chunk again
    rather than relying on it, while it relies on the genuine ones after checking them."""
    monkeypatch.setattr(remote_service, "SPOT_CHECK", spot_check)
    codec, _datas, digests, records = _blocks(repo, 8)
    forged = codec.encode(digests[6], b"not the chunk")
    answers, raised = _backup(repo, "agent-a", "f1", digests, records[:6] + [forged, records[7]],
                              [range(4), range(4, 8)])
    if refused:
        assert isinstance(raised.get("error"), Refused) and repo.list_manifests() == []
        return
    assert raised.get("final", {}).get("ok") and repo.list_manifests() == ["f1"]
    answers, _ = converse_raw(repo, BackupScope("g1", "disk"), [({"op": "need"}, b"".join(digests))],
                              serve=_as("agent-b"))
    assert bytes(answers[0]) == b"\x00" * 6 + b"\x01" + b"\x00"
    answers, _ = converse_raw(repo, BackupScope("f2", "disk"), [({"op": "need"}, b"".join(digests))],
                              serve=_as("agent-a"))
    assert bytes(answers[0]) == b"\x00" * 8  # its own records: its word


def test_a_restore_gets_a_checked_copy_of_another_agents_unverified_chunk(repo):
    codec, datas, digests, records = _blocks(repo, 1)
    d = digests[0]
    for writer, name, rec in (("agent-a", "a1", codec.encode(d, b"not the chunk")), ("agent-b", "b1", records[0])):
        s = WriteSession(repo.chunks, writer=writer)
        assert s.claim(d)
        s.put_record(d, (rec,))
        s.commit(name, HEADER, refs=d)

    def read(reader, name):
        answers, _ = converse_raw(repo, ReadScope((name,)), [({"op": "read"}, d)],
                                  serve=lambda r, ch, sc: serve_restore(r, ch, sc, reader=reader))
        assert not isinstance(answers[0], RemoteError)
        return bytes(answers[0])

    assert codec.decode(d, read("agent-b", "b1")) == datas[0]  # agent-a's copy is read first: checked
    assert codec.decode(d, read(None, "b1")) == datas[0]
    with pytest.raises(Damaged):  # agent-a's own record is sent to it as it is: its own word
        codec.decode(d, read("agent-a", "a1"))


def test_a_lone_copy_of_another_agents_chunk_is_sent_unchecked(repo, monkeypatch):
    """With no other copy to fall back on, the worker does not check it: the reading agent checks every
    record it decodes (a restore of one host's backup onto another would otherwise cost the worker a
    check of every record)."""
    codec, datas, digests, records = _blocks(repo, 1)
    d = digests[0]
    for writer, name in (("agent-a", "a1"), ("agent-b", "b1")):  # agent-b deduplicates against a's copy
        s = WriteSession(repo.chunks, writer=writer)
        if s.claim(d):
            s.put_record(d, (records[0],))
        s.commit(name, HEADER, refs=d)
    assert len(repo.chunks.reader_index(refresh=True).locations(d)) == 1
    checked = []
    real = remote_service._Reads._intact
    monkeypatch.setattr(remote_service._Reads, "_intact", lambda self, *a: checked.append(1) or real(self, *a))
    answers, _ = converse_raw(repo, ReadScope(("b1",)), [({"op": "read"}, d)],
                              serve=lambda r, ch, sc: serve_restore(r, ch, sc, reader="agent-b"))
    assert codec.decode(d, bytes(answers[0])) == datas[0] and checked == []


def test_a_forged_full_backup_does_not_make_gc_drop_the_services_copies(repo, monkeypatch):
    """A compromised agent's full backup (``force_new``) sends, past its checked first message, forged
    records of chunks the service's own backup holds: GC keeps the service's checked copies, not the
    agent's newer forged ones, and the service's backup restores."""
    monkeypatch.setattr(remote_service, "SPOT_CHECK", 10 ** 9)
    codec, datas, digests, records = _blocks(repo, 8)
    for name, which in (("s0", range(8)), ("s1", range(4))):  # (s0 goes: s1's pack is half dead)
        s = WriteSession(repo.chunks)
        for i in which:
            if s.claim(digests[i]):
                s.put_record(digests[i], (records[i],))
        s.commit(name, {**HEADER, "disk_size": 65536 * len(which)}, refs=b"".join(digests[i] for i in which))
    own = [bytes([200 + i]) * 3000 for i in range(2)]
    mine = [codec.digest(b) for b in own]
    wanted = mine + digests[:4]
    sent = [codec.encode(d, b) for d, b in zip(mine, own, strict=True)]
    sent += [codec.encode(d, b"not the chunk " * 9) for d in digests[:4]]
    msgs = [({"op": "need"}, b"".join(wanted)),
            ({"op": "records", "sizes": [len(sent[0])]}, mine[0] + sent[0]),  # (checked whole: genuine)
            ({"op": "records", "sizes": [len(r) for r in sent[1:]]},
             b"".join(part for d, r in zip(wanted[1:], sent[1:], strict=True) for part in (d, r))),
            ({"op": "commit", "name": "a1", "header": {**HEADER, "disk_size": 65536 * len(wanted)},
              "refs": 32 * len(wanted)}, b"".join(wanted))]
    answers, raised = converse_raw(repo, BackupScope("a1", "disk", full=True), msgs, serve=_as("agent-a"))
    assert raised.get("final", {}).get("ok") and bytes(answers[0]) == b"\x01" * 6
    repo.chunks.delete_manifest("s0")
    run_gc(repo.chunks)
    run_gc(repo.chunks)
    assert [repo.chunks.get_chunk(d) for d in digests[:4]] == datas[:4]
    answers, _ = converse_raw(repo, ReadScope(("s1",)), [({"op": "read"}, b"".join(digests[:4]))],
                              serve=lambda r, ch, sc: serve_restore(r, ch, sc, reader="agent-b"))
    assert not isinstance(answers[0], RemoteError)


@pytest.mark.parametrize("forged", [False, True])
def test_a_commit_may_name_another_agents_chunk_only_once_a_copy_passed_its_check(repo, forged):
    """The refs a commit names (those of a parent an agent read before it enrolled again, say) are held
    by the vault only through a copy that passes its check: a forged one is no copy."""
    codec, datas, digests, records = _blocks(repo, 3)
    s = WriteSession(repo.chunks, writer="agent-a")
    for i, d in enumerate(digests):
        assert s.claim(d)
        s.put_record(d, (codec.encode(d, b"not the chunk") if forged and i == 1 else records[i],))
    s.commit("a1", HEADER, refs=b"".join(digests))
    header = {**HEADER, "disk_size": 65536 * 3}
    answers, raised = converse_raw(repo, BackupScope("b1", "disk"), [
        ({"op": "commit", "name": "b1", "header": header, "refs": 32 * 3}, b"".join(digests))],
        serve=_as("agent-b"))
    if forged:
        assert isinstance(raised.get("error"), Refused) and digests[1].hex() in str(raised["error"])
    else:
        assert raised.get("final", {}).get("ok") and "b1" in repo.list_manifests()
