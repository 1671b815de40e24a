"""The agent's channel thread (``engine/remote/client.py``, ``_Pump``): a ``need`` question queued
behind records goes out before them (its answer is what the reading and encoding threads wait for)."""

from __future__ import annotations

import queue
import threading

from opencbr.engine.remote.client import _Pump


class _HeldChannel:
    """Records what is sent, in order, and answers each message at once; the first send waits until
    ``release`` is set (meanwhile the test queues more)."""

    def __init__(self):
        self.sent: list[tuple[str, int]] = []  # (op, digests or records in the message)
        self.release = threading.Event()
        self.sending = threading.Event()
        self._answers: queue.Queue = queue.Queue()

    def send(self, header: dict, parts=b"") -> None:
        self.sending.set()
        self.release.wait(10)
        size = sum(len(p) for p in parts)
        op = header["op"]
        count = size // 32 if op == "need" else len(header.get("sizes", ()))
        self.sent.append((op, count))
        self._answers.put(({"ok": True}, memoryview(b"\x01" * count if op == "need" else b"")))

    def recv(self, timeout=None):
        return self._answers.get(timeout=10)


def _records(pump: _Pump, n: int) -> None:
    pump.post({"op": "records", "sizes": [100] * n}, [b"r" * (132 * n)], n)


def test_a_need_question_goes_before_the_records_queued_ahead_of_it():
    channel = _HeldChannel()
    pump = _Pump(channel, timeout=10)
    answers = []
    _records(pump, 1)  # taken at once: its send is held
    assert channel.sending.wait(10)
    _records(pump, 2)
    _records(pump, 3)
    pump.post({"op": "need"}, [b"d" * 64], 2, on_answer=lambda data: answers.append(bytes(data)))
    channel.release.set()
    pump.stop()
    assert channel.sent == [("records", 1), ("need", 2), ("records", 5)]  # the two queued records merged
    assert answers == [b"\x01\x01"]


def test_other_messages_keep_their_order():
    """Only records are overtaken: a question does not go before a commit queued ahead of it."""
    channel = _HeldChannel()
    pump = _Pump(channel, timeout=10)
    _records(pump, 1)
    assert channel.sending.wait(10)
    done = threading.Thread(target=pump.call, args=({"op": "commit_refs"}, [b"x" * 32]))
    done.start()
    while pump.q.qsize() < 1:
        threading.Event().wait(0.01)
    pump.post({"op": "need"}, [b"d" * 32], 1)
    channel.release.set()
    done.join(10)
    pump.stop()
    assert [op for op, _n in channel.sent] == ["records", "commit_refs", "need"]
