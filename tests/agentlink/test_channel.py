"""Receive buffers the channel reuses (agentlink/channel.py ``_Payloads``): a payload, or any view of it
a consumer keeps, is never written over by the next message; one nothing holds any more is reused."""

from __future__ import annotations

import os
import threading

from opencbr.agentlink import channel as ch_mod
from opencbr.agentlink.channel import channel_pair


def _send_all(ch, messages):
    t = threading.Thread(target=lambda: [ch.send({"n": i}, m) for i, m in enumerate(messages)])
    t.start()
    return t


def test_a_payload_kept_across_the_next_messages_is_not_written_over():
    a, b = channel_pair(timeout=10)
    msgs = [os.urandom(ch_mod.POOLED + 4096) for _ in range(ch_mod.POOL_BUFFERS + 3)]
    t = _send_all(a, msgs)
    _h, first = b.recv()
    _h, second = b.recv()
    tail = second[len(second) // 2:]  # only a slice of the second is kept
    del second
    for m in msgs[2:]:
        _h, p = b.recv()
        assert p == m
        del p  # (this one is not kept: its buffer goes back to the pool)
    t.join()
    assert first == msgs[0] and tail == msgs[1][len(msgs[1]) // 2:]
    a.close()
    b.close()


def test_a_payload_held_by_another_thread_while_the_next_is_read_is_not_written_over():
    """As the remote chunk service does: a records message's payload is checked and packed in a pool
    thread while the conversation reads the next messages (views of it, held in the work item)."""
    a, b = channel_pair(timeout=10)
    msgs = [os.urandom(2 * ch_mod.POOLED) for _ in range(6)]
    t = _send_all(a, msgs)
    held = []
    go = threading.Event()

    def check(items):
        go.wait(10)
        held.append([bytes(v) for v in items])

    workers = []
    for _ in msgs:
        _h, p = b.recv()
        items = [p[i:i + 4096] for i in range(0, len(p), 1 << 18)]  # records: views of the payload
        del p
        workers.append(threading.Thread(target=check, args=(items,)))
        workers[-1].start()
        del items
    go.set()
    for w in workers:
        w.join()
    t.join()
    want = sorted([bytes(m[i:i + 4096]) for i in range(0, len(m), 1 << 18)] for m in msgs)
    assert sorted(held) == want
    a.close()
    b.close()


def test_a_buffer_nothing_holds_is_reused():
    pool = ch_mod._Payloads()
    v = pool.take(ch_mod.POOLED)
    buf = v.obj
    del v
    w = pool.take(ch_mod.POOLED)
    assert w.obj is buf
    assert pool.take(ch_mod.POOLED).obj is not buf  # (w still holds it)


def test_a_payload_larger_than_pooled_buffers_is_not_kept_after_it_is_read():
    """The pool keeps its buffers for the channel's life: one sized by a peer's largest payload (up to
    256 MiB, eight of them) would stay held by an idle connection."""
    pool = ch_mod._Payloads()
    for _ in range(ch_mod.POOL_BUFFERS + 1):
        v = pool.take(ch_mod.POOL_MAX + 1)
        del v
    assert sum(len(b) for b in pool._bufs) <= ch_mod.POOL_BUFFERS * ch_mod.POOL_MAX
    assert all(len(b) <= ch_mod.POOL_MAX for b in pool._bufs)
