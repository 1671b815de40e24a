"""The agent's chunk sink compresses a full backup's chunks while their ``need`` question travels
(``engine/remote/client.py``, ``_compress_ahead``), sends records only of the chunks the vault
answered it needs, and stops compressing ahead once the vault answers that it holds most chunks."""

from __future__ import annotations

import random
import threading

import pytest

from opencbr.agentlink.channel import channel_pair
from opencbr.engine import Repository
from opencbr.engine.chunks import codec as codec_module
from opencbr.engine.chunks.crypto import DIGEST_SIZE
from opencbr.engine.remote.client import RemoteChunks

MASTER = b"s" * 32
PATIENCE = 10.0  # seconds the vault waits for a compression before answering anyway


@pytest.fixture
def repo(local_store):
    return Repository.create(local_store, "v/", MASTER, encrypted=True)


@pytest.fixture
def compressions(monkeypatch):
    """Set each time the sink's codec compresses a chunk (any thread)."""
    event = threading.Event()
    compress = codec_module.ChunkCodec.compress

    def counted(self, data):
        event.set()
        return compress(self, data)

    monkeypatch.setattr(codec_module.ChunkCodec, "compress", counted)
    return event


def _records(header: dict, payload: memoryview) -> dict[bytes, memoryview]:
    out, at = {}, 0
    for n in header["sizes"]:
        out[bytes(payload[at:at + DIGEST_SIZE])] = payload[at + DIGEST_SIZE:at + DIGEST_SIZE + n]
        at += DIGEST_SIZE + n
    return out


class _Vault:
    """The worker's end, by hand: each ``need`` is answered with the next of ``answers``; those
    ``watched`` only once a chunk was compressed (or after ``PATIENCE``), noting whether one was.
    Records are collected."""

    def __init__(self, channel, answers: list[bytes], compressions: threading.Event, watched: set[int],
                 patience: float = PATIENCE):
        self.channel, self.answers, self.compressions = channel, list(answers), compressions
        self.patience = patience
        self.watched, self.asked = watched, 0
        self.compressed_before_answer: list[bool] = []
        self.records: dict[bytes, memoryview] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            header, payload = self.channel.recv(10)
            if header.get("op") == "need":
                if self.asked in self.watched:
                    self.compressed_before_answer.append(self.compressions.wait(self.patience))
                self.asked += 1
                self.channel.send({"ok": True}, self.answers.pop(0))
            elif header.get("op") == "records":
                self.records.update(_records(header, payload))
                self.channel.send({"ok": True})
            else:
                return  # the test's end


def _ask(sink, chunks_codec, blocks: list[bytes]) -> list[bytes]:
    digests = [chunks_codec.digest(b) for b in blocks]
    sink.put_chunks(list(zip(blocks, digests, strict=True)))
    return digests


def _end(vault: _Vault, agent_end, chunks) -> None:
    chunks.close()
    agent_end.send({"op": None})
    vault.thread.join(10)


def test_a_full_backups_chunks_are_compressed_before_the_answer(repo, compressions):
    """The first question (nothing known yet: a full backup) is compressed while it is unanswered
    (before: only after the answer, the round trip on the encoders' path); only the needed chunks'
    records are sent, and each is the chunk it names."""
    svc, agent = channel_pair(timeout=10)
    vault = _Vault(svc, [b"\x01\x00\x01"], compressions, watched={0})
    chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk)
    sink = chunks.open_session()
    blocks = [bytes([i]) * 40000 for i in range(3)]
    digests = _ask(sink, chunks.codec, blocks)
    stats = sink.stats  # waits until every record is on its way
    _end(vault, agent, chunks)
    assert vault.compressed_before_answer == [True]
    assert set(vault.records) == {digests[0], digests[2]} and stats.new_chunks == 2
    for i in (0, 2):
        assert repo.chunks.codec.decode(digests[i], vault.records[digests[i]]) == blocks[i]


def test_no_compression_ahead_once_the_vault_holds_most_chunks(repo, compressions):
    """An incremental's chunks are mostly held already: after such answers the sink waits for the
    answer before compressing (no CPU spent on chunks that are not sent)."""
    svc, agent = channel_pair(timeout=10)
    rounds = 8
    # (a short patience: a compression slower than it would only let broken code pass)
    vault = _Vault(svc, [b"\x00" * 4] * rounds + [b"\x01" * 4], compressions, watched={rounds}, patience=1.0)
    chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk)
    sink = chunks.open_session()
    for r in range(rounds):
        _ask(sink, chunks.codec, [bytes([r, i]) * 20000 for i in range(4)])
        sink.stats  # noqa: B018 - (answered, its records on their way) before the next question
    compressions.clear()
    last = [bytes([99, i]) * 20000 for i in range(4)]
    digests = _ask(sink, chunks.codec, last)
    sink.stats  # noqa: B018
    _end(vault, agent, chunks)
    assert vault.compressed_before_answer == [False]
    assert set(vault.records) == set(digests)


def test_a_reused_buffers_chunks_are_compressed_before_put_returns(repo, monkeypatch):
    """A tree reader's chunk is a view of a buffer it reuses: in a full backup the calling thread
    compresses it before ``put_chunk`` returns (before, it was copied and an encoder compressed the
    copy: a copy, fresh pages and a hand-off per chunk); its record is the chunk as it was then."""
    compressing: list[threading.Thread] = []
    compress = codec_module.ChunkCodec.compress

    def noted(self, data):
        compressing.append(threading.current_thread())
        return compress(self, data)

    monkeypatch.setattr(codec_module.ChunkCodec, "compress", noted)
    svc, agent = channel_pair(timeout=10)
    reused = threading.Event()  # the vault answers once the buffer holds something else
    # (each answer long enough for questions merged into one message while the vault waits)
    vault = _Vault(svc, [b"\x01" * 3] * 3, reused, watched={0, 1, 2})
    chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk)
    sink = chunks.open_session()
    buf, blocks = bytearray(40000), {}
    # (the reader's next chunk, in the same buffer; the last does not compress: its record is sealed
    # from the chunk itself, after the buffer was reused)
    for i, content in enumerate([b"\x01" * len(buf), b"\x02" * len(buf), random.randbytes(len(buf))]):
        buf[:] = content
        d = chunks.codec.digest(buf)
        sink.put_chunk(memoryview(buf), d)
        assert compressing == [threading.current_thread()] * (i + 1)
        blocks[d] = bytes(buf)
    buf[:] = bytes(len(buf))
    reused.set()
    stats = sink.stats
    _end(vault, agent, chunks)
    assert set(vault.records) == set(blocks) and stats.new_chunks == 3
    for d, block in blocks.items():
        assert repo.chunks.codec.decode(d, vault.records[d]) == block
