"""The agent's channel thread (``engine/remote/client.py``, ``_Pump``) sends a question that is asked
while it waits for an earlier answer, instead of holding it until that answer is in."""

from __future__ import annotations

import threading

import pytest

from opencbr.agentlink.channel import LinkError, channel_pair
from opencbr.engine import Repository
from opencbr.engine.chunks.crypto import DIGEST_SIZE
from opencbr.engine.remote.client import RemoteChunks

MASTER = b"p" * 32
PATIENCE = 5.0  # seconds the vault waits for the second question before it answers the first


@pytest.fixture
def repo(local_store):
    return Repository.create(local_store, "v/", MASTER, encrypted=True)


def test_a_question_goes_out_while_an_earlier_answer_is_awaited(repo):
    """The vault answers the first question only once the second has arrived (or after PATIENCE).
    Before, the pump sat in its receive for the first answer and sent nothing meanwhile: the second
    question reached the vault only after that answer, and the vault's end idled in between."""
    svc, agent = channel_pair(timeout=10)
    first_in = threading.Event()
    arrived_before_first_answer: list[bool] = []

    def vault() -> None:
        _h, first = svc.recv(10)
        first_in.set()
        try:
            _h, second = svc.recv(PATIENCE)
            arrived_before_first_answer.append(True)
        except LinkError:
            second = None
            arrived_before_first_answer.append(False)
        svc.send({"ok": True}, b"\0" * (len(first) // DIGEST_SIZE))  # held everything: no records
        if second is None:
            _h, second = svc.recv(10)
        svc.send({"ok": True}, b"\0" * (len(second) // DIGEST_SIZE))

    thread = threading.Thread(target=vault, daemon=True)
    thread.start()
    chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk)
    sink = chunks.open_session()
    for i, wait in ((1, first_in), (2, None)):
        block = bytes([i]) * 30000
        sink.put_chunks([(block, chunks.codec.digest(block))])
        if wait is not None:
            assert wait.wait(10)  # (the first question is out: the second is a message of its own)
    sink.stats  # noqa: B018 - every answer in
    chunks.close()
    thread.join(10)
    assert arrived_before_first_answer == [True]
