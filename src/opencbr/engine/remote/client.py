"""The agent's end of the remote chunk service: the engine's chunk-sink and chunk-reader seams over a
channel, so that ``backup_disk``, ``backup_tree``, ``restore_disk`` and ``restore_tree`` run unchanged on
the agent's host (:class:`RemoteChunks` stands where they take a chunk store).

One thread (:class:`_Pump`) owns the channel; the engine's threads queue their calls to it, and it
merges what is queued together (several workers' ``need`` questions, several batches of records) into
one message each. The engine's worker threads hash and ask; encoder threads compress (zstd) and a sender
thread encrypts (AES-GCM with the task's keys) only the chunks the vault answers it needs -- in a full
backup compressing them while the question travels (:meth:`RemoteSink._compress_ahead`; otherwise an
encoder also encrypts, after the answer). What is in flight is bounded (``PENDING_BYTES``,
``POSTED_BYTES``, ``WINDOW``).
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..chunks.codec import FLAG_ZSTD, ChunkCodec, Sealable
from ..chunks.crypto import DIGEST_SIZE
from ..chunks.manifests import Manifest
from ..chunks.session import PutResult, SessionStats
from ..errors import Damaged, Missing

READ_GROUP = 64  # chunks per read message (4 MiB of 64 KiB blocks)
MERGE_BYTES = 4 << 20  # records merged into one message up to this size
POSTED_BYTES = 8 << 20  # records sent on without waiting for the vault's answer, at most this much
WINDOW = 4  # messages sent before their answers come back (only those whose answers are small)
SERIAL = frozenset({"read", "manifest", "manifest_head", "refs", "commit_refs", "commit", "abort"})  # answered big, or must see all before them
MERGED = frozenset({"need", "known", "records"})
PENDING_BYTES = 12 << 20  # chunk data asked about and waiting for its answer, at most
ENCODERS = max(2, min(4, os.cpu_count() or 2))  # threads compressing and encrypting what the vault needs
REFS_WINDOW = 8 << 20  # refs bytes asked per message: 262,144 blocks, a restore's window
SPECULATE_SHARE = 0.9  # compress ahead of the vault's answer while at least this share of recent chunks was needed
LOCAL_SEEN_MAX = 1 << 20  # digests remembered to skip a question (then forgotten: the vault still dedups)


class RemoteFailure(Exception):
    """The vault refused a message, or the channel broke."""


class Refusal(Exception):
    """The vault's error answer to one message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class _Call:
    op: str
    header: dict
    parts: list
    count: int = 0  # digests (need/known) or records, for merging
    posted: int = 0  # bytes of a posted call (nobody waits for its answer)
    on_answer: object = None  # a posted call's: called with the answer's data (in the pump's thread)
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict | None = None
    data: memoryview | None = None
    error: BaseException | None = None

    def size(self) -> int:
        return sum(len(p) for p in self.parts)


class _Pump:
    """The thread that uses the channel (a channel is for one thread at a time).

    It keeps up to ``WINDOW`` messages in flight (their answers come back in order), except around
    ``SERIAL`` ones, whose answers may be large: while one is out nothing else is sent, so neither side
    ever blocks sending while the other does too. Records may be *posted*: the worker goes on hashing
    while they travel and are checked (``POSTED_BYTES`` at most); a refusal of posted records fails
    every call after it."""

    def __init__(self, channel, timeout: float | None):
        self.channel = channel
        self.timeout = timeout
        self.q: queue.Queue[_Call | None] = queue.Queue()
        self.error: BaseException | None = None
        self._posted = 0
        self._posted_cv = threading.Condition()
        # a call queued while the pump waits for an answer wakes it (see _answer_first)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._waiting = False
        self.thread = threading.Thread(target=self._run, name="remote-chunks", daemon=True)
        self.thread.start()

    def _check(self) -> None:
        if self.error is not None:
            raise RemoteFailure(str(self.error)) from self.error

    def call(self, header: dict, parts: list | None = None, count: int = 0) -> tuple[dict, memoryview]:
        self._check()
        c = _Call(header["op"], header, parts or [], count)
        self._queue(c)
        c.done.wait()
        if c.error is not None:
            raise RemoteFailure(str(c.error)) from c.error
        return c.answer, c.data

    def post(self, header: dict, parts: list | None = None, count: int = 0, on_answer=None) -> None:
        """Queue a message whose answer nobody waits for (records, progress; a question whose answer
        goes to ``on_answer``); blocks while ``POSTED_BYTES`` are on their way already."""
        self._check()
        c = _Call(header["op"], header, parts or [], count, on_answer=on_answer)
        c.posted = max(1, c.size())
        with self._posted_cv:
            while self._posted and self._posted + c.posted > POSTED_BYTES and self.error is None:
                self._posted_cv.wait(0.5)
            self._posted += c.posted
        self._check()
        self._queue(c)

    def _queue(self, c: _Call | None) -> None:
        self.q.put(c)
        if self._waiting:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # full: the pump has a wake-up waiting already

    def _settled(self, c: _Call) -> None:
        if c.posted:
            if c.error is not None:
                self.error = self.error or c.error
            elif c.on_answer is not None:
                try:
                    c.on_answer(c.data)
                except BaseException as e:  # noqa: BLE001 - fails the calls after it
                    self.error = self.error or e
            with self._posted_cv:
                self._posted -= c.posted
                self._posted_cv.notify_all()
        c.done.set()

    def stop(self) -> None:
        self._queue(None)
        self.thread.join()
        self._wake_r.close()
        self._wake_w.close()

    # -- the pump thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        self._backlog: deque[_Call] = deque()
        self._inflight: deque[list[_Call]] = deque()
        self._stop_seen = False
        while True:
            first = None
            if self._may_send():
                first = self._take(block=not self._inflight)
                if first is not None and first.op in SERIAL and self._inflight:
                    self._backlog.appendleft(first)  # the answers of what is out first
                    first = None
            if first is not None:
                self._send(self._merge(first))
            elif self._inflight:
                if self._may_send() and not self._backlog and not self._stop_seen and not self._answer_first():
                    continue  # a call came before the answer: it goes out first
                self._receive()
            elif self._stop_seen and not self._backlog:
                return

    def _answer_first(self) -> bool:
        """Wait for the next answer (True) or a call queued meanwhile (False), whichever comes first:
        blocked in a receive, the pump held back the questions and records that came while it waited
        (and the vault idled between messages); a channel that cannot be waited on so: True."""
        wait = getattr(self.channel, "wait_readable", None)
        if wait is None:
            return True
        self._waiting = True
        try:
            if not self.q.empty():
                return False
            return wait(self._wake_r, self.timeout)
        except BaseException as e:  # noqa: BLE001 - the receive fails with it
            self.error = self.error or e
            return True
        finally:
            self._waiting = False
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass  # (nothing left)

    def _may_send(self) -> bool:
        return len(self._inflight) < WINDOW and not (self._inflight and self._inflight[-1][0].op in SERIAL)

    def _take(self, block: bool) -> _Call | None:
        if self._backlog:
            return self._backlog.popleft()
        if self._stop_seen:
            return None
        try:
            c = self.q.get() if block else self.q.get_nowait()
        except queue.Empty:
            return None
        if c is None:
            self._stop_seen = True
        return c

    def _merge(self, first: _Call) -> list[_Call]:
        batch = [first]
        if first.op not in MERGED:
            return batch
        size = first.size()
        while size < MERGE_BYTES:
            nxt = self._take(block=False)
            if nxt is None:
                break
            if nxt.op != first.op:
                self._backlog.appendleft(nxt)
                break
            batch.append(nxt)
            size += nxt.size()
        return batch

    def _fail(self, batch: list[_Call], e: BaseException) -> None:
        for c in batch:
            c.error = e
            self._settled(c)

    def _send(self, batch: list[_Call]) -> None:
        first = batch[0]
        header = dict(first.header)
        if first.op == "records" and len(batch) > 1:
            header["sizes"] = [n for c in batch for n in c.header["sizes"]]
        try:
            if self.error is not None:
                raise self.error
            self.channel.send(header, [p for c in batch for p in c.parts])
        except BaseException as e:  # noqa: BLE001 - handed to the callers
            self.error = self.error or e
            self._fail(batch, e)
            return
        for c in batch:
            c.parts = []  # sent: nothing more of it is kept
        self._inflight.append(batch)

    def _receive(self) -> None:
        batch = self._inflight.popleft()
        try:
            if self.error is not None:
                raise self.error
            answer, data = self.channel.recv(self.timeout)
        except BaseException as e:  # noqa: BLE001 - the channel is broken for good
            self.error = self.error or e
            self._fail(batch, e)
            while self._inflight:
                self._fail(self._inflight.popleft(), e)
            return
        if answer.get("ok") is False:
            self._fail(batch, Refusal(str(answer.get("error") or "error"), str(answer.get("message") or "")))
            return
        at = 0
        for c in batch:
            c.answer = answer
            if c.op in ("need", "known"):
                c.data = data[at:at + c.count]
                at += c.count
            else:
                c.data = data
            self._settled(c)


REFS_PUT = 8 << 20  # refs bytes per commit_refs message (the service's limit: remote/service.py)


def refs_pieces(refs, size: int):
    """``refs`` (bytes, or a spool's ``pieces()``) in pieces of at most ``size`` bytes, whole digests."""
    if isinstance(refs, (bytes, bytearray, memoryview)):
        view = memoryview(refs)
        for at in range(0, len(view), size):
            yield view[at:at + size]
        return
    held = bytearray()
    for piece in refs.pieces():
        held += piece
        while len(held) >= size:
            yield bytes(held[:size])
            del held[:size]
    if held:
        yield bytes(held)


def _kept_as_is(data) -> bool:
    """Chunk data that cannot change until it is encoded: bytes, a Sealable, or a view of bytes (a disk
    segment's blocks); anything else (a reader's reused buffer) is copied when asked about."""
    return isinstance(data, (bytes, Sealable)) or (isinstance(data, memoryview) and isinstance(data.obj, bytes))


def _compress(codec: ChunkCodec, data) -> tuple[int, object]:
    """``codec.compress(data)``, whose body is ``data`` itself when it does not compress: then a copy
    of it unless it cannot change (a caller's reused buffer changes before the record is sealed)."""
    flags, body = codec.compress(data)
    return (flags, body) if flags or _kept_as_is(data) else (flags, bytes(body))


class _Asked:
    """One question's chunks, from the ``need`` question to their records. With speculation
    (``ahead``) the encoders compress them while the question travels; the answer's ``flags`` and
    the compressed ``bodies`` meet here, and the second to arrive has the records sent."""

    def __init__(self, ask: list, level: int, reserved: int):
        self.ask: list | None = ask  # (data, digest) pairs
        self.level = level
        self.reserved = reserved  # bytes of chunk data held against PENDING_BYTES until the records are posted
        self.flags: bytes | None = None
        self.bodies: list | None = None  # (digest, flags, body) of every chunk asked about
        self.ahead = False
        self._arrivals = 0
        self._lock = threading.Lock()

    def arrived(self) -> bool:
        """One of the two (the answer, the bodies) is in: True for the second."""
        with self._lock:
            self._arrivals += 1
            return self._arrivals == 2


class RemoteSink:
    """A write session's interface (``knows``, ``put_chunk``, ``put_chunks``, ``stats``, ``commit``,
    ``abort``) over the channel: the vault is asked which chunks it needs, only those are encoded and
    sent, and it checks and stores them in its own session."""

    def __init__(self, chunks: "RemoteChunks"):
        self.chunks = chunks
        self.pump = chunks.pump
        self._stats = SessionStats()
        self._lock = threading.Lock()
        self._seen: dict[bytes, object] = {}  # asked (or being asked) this session
        self._known: set[bytes] | None = None
        self._error: BaseException | None = None
        self._pending = 0  # bytes of chunk data asked about and not yet encoded
        self._cv = threading.Condition()
        self._tls = threading.local()
        self._encoders = ThreadPoolExecutor(ENCODERS, thread_name_prefix="remote-encode")
        # sends the records of chunks compressed ahead: the encoders go on compressing while it waits
        # for room among the records on their way
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="remote-send")
        self._needed_share = 1.0  # of the chunks recently asked about (see _compress_ahead)

    @property
    def stats(self) -> SessionStats:
        """What this backup sent (read at its end: every answer is waited for first)."""
        self._settle()
        return self._stats

    def knows(self, digest: bytes) -> bool:
        """The vault holds the chunk (asked once, for all the chunks of the backups read so far: the
        parent, whose unchanged files are reused)."""
        if self._known is None:
            self._known = self._load_known()
        return digest in self._known or digest in self._seen

    def _load_known(self) -> set[bytes]:
        refs = sorted(self.chunks.refs_read)
        known: set[bytes] = set()
        step = 1 << 20
        for i in range(0, len(refs), step):
            part = refs[i:i + step]
            _a, flags = self.pump.call({"op": "known"}, [b"".join(part)], len(part))
            known.update(d for d, f in zip(part, bytes(flags), strict=True) if f)
        return known

    def put_chunk(self, data, digest: bytes | None = None, codec: ChunkCodec | None = None) -> PutResult:
        codec = codec or self.chunks.codec
        d = digest if digest is not None else codec.digest(data)
        n = self._put([(data, d)], codec)
        return PutResult(d, n > 0, n)

    def put_chunks(self, pairs, codec: ChunkCodec | None = None) -> None:
        self._put(pairs, codec or self.chunks.codec)

    def put_sealable(self, items: list[tuple[Sealable, bytes]]) -> None:
        """``(Sealable, digest)`` pairs: stored like :meth:`put_chunks`, their bodies only encrypted."""
        self._put(items, self.chunks.codec)

    def _put(self, pairs, codec: ChunkCodec) -> int:
        """Ask about the chunks the vault may lack and return: the answer comes back to the encoders
        (:meth:`_encode`), so the engine's thread goes on reading and hashing while the question
        travels (a round trip per segment cost a third of the throughput over loopback)."""
        self._raise()
        ahead = self._needed_share >= SPECULATE_SHARE  # compress while the question travels
        ask, reused = [], False
        seen, tok = self._seen, object()
        for data, d in pairs:
            # setdefault is atomic under the GIL: one thread asks about a digest, the others skip it
            if d in seen or seen.setdefault(d, tok) is not tok:
                continue
            if not _kept_as_is(data):  # a caller's buffer, reused once this returns
                reused = True
                if not ahead:
                    data = bytes(data)
            ask.append((data, d))
        if len(seen) > LOCAL_SEEN_MAX:
            seen.clear()
        if not ask:
            return 0
        asked = _Asked(ask, codec.level, sum(len(data) for data, _ in ask))
        self._reserve(asked.reserved)
        if ahead:
            asked.ahead = True
            if reused:
                # compressed here, before the caller's buffer is reused, rather than copied for an
                # encoder: a tree's chunks (the reader's buffer) cost a copy and the page faults of a
                # fresh buffer each, and a hand-off, for work the reading thread can do as locally
                self._compress_ahead(asked)
            else:
                self._encoders.submit(self._compress_ahead, asked)

        def answered(flags: memoryview) -> None:  # (the pump's thread: it must not block here)
            asked.flags = bytes(flags)
            self._learn(asked.flags)
            if not asked.ahead:
                self._encoders.submit(self._encode, asked)
            elif asked.arrived():
                self._sender.submit(self._send_records, asked)

        try:
            self.pump.post({"op": "need"}, [b"".join(d for _, d in ask)], len(ask), on_answer=answered)
        except BaseException:
            self._release(asked.reserved)
            raise
        return 0

    def _learn(self, flags: bytes) -> None:
        """The share of recently asked chunks the vault needed (a moving average over the answers)."""
        if flags:
            share = sum(flags) / len(flags)
            self._needed_share += (share - self._needed_share) / 4

    def _raise(self) -> None:
        if self._error is not None:
            raise RemoteFailure(str(self._error)) from self._error
        self.pump._check()

    def _reserve(self, n: int) -> None:
        """Hold ``n`` bytes of chunk data until their answer is encoded (``PENDING_BYTES`` at most)."""
        with self._cv:
            while self._pending and self._pending + n > PENDING_BYTES:
                self._raise()
                self._cv.wait(0.5)
            self._pending += n

    def _release(self, n: int) -> None:
        with self._cv:
            self._pending -= n
            self._cv.notify_all()

    def _codec(self, level: int) -> ChunkCodec:
        codecs = getattr(self._tls, "codecs", None)
        if codecs is None:
            codecs = self._tls.codecs = {}
        c = codecs.get(level)
        if c is None:
            c = codecs[level] = ChunkCodec(self.chunks.keys, self.chunks.codec.max_chunk, level)
        return c

    def _compressed(self, asked: "_Asked", codec: ChunkCodec, flags: bytes | None) -> list:
        """``(digest, flags, body)`` of the chunks ``flags`` marks (None: all of them). A replica's
        records come in their stored form (Sealable: only sealed again), the others are compressed."""
        return [(d, data.flags & FLAG_ZSTD, data.body) if isinstance(data, Sealable) else (d, *_compress(codec, data))
                for i, (data, d) in enumerate(asked.ask) if flags is None or flags[i]]

    def _encode(self, asked: "_Asked") -> None:
        """Compress and encrypt the chunks the vault asked for, and send them on (checked there)."""
        try:
            if self._error is None:
                asked.bodies = self._compressed(asked, self._codec(asked.level), asked.flags)
                asked.flags = None  # the bodies are those of the needed chunks only
                self._seal_and_post(asked)
        except BaseException as e:  # noqa: BLE001 - raised in the engine's threads
            self._error = self._error or e
        finally:
            self._release(asked.reserved)

    def _compress_ahead(self, asked: "_Asked") -> None:
        """Speculative: compress every chunk asked about before the answer is in (a full backup's
        chunks are nearly all needed), so the answer's round trip is off the encoders' path; the
        records of the chunks the vault does not need are dropped unsent. The second of this and the
        answer to arrive sends the records."""
        try:
            if self._error is None:
                asked.bodies = self._compressed(asked, self._codec(asked.level), None)
        except BaseException as e:  # noqa: BLE001 - raised in the engine's threads
            self._error = self._error or e
        finally:
            asked.ask = None  # the chunk data (views of a segment or of a caller's buffer): not needed now
        if asked.arrived():
            self._sender.submit(self._send_records, asked)

    def _send_records(self, asked: "_Asked") -> None:
        try:
            if self._error is None:
                self._seal_and_post(asked)
        except BaseException as e:  # noqa: BLE001 - raised in the engine's threads
            self._error = self._error or e
        finally:
            self._release(asked.reserved)

    def _seal_and_post(self, asked: "_Asked") -> None:
        """Encrypt the needed bodies straight into one records message and post it."""
        codec = self._codec(asked.level)
        flags = asked.flags
        bodies = asked.bodies if flags is None else [b for b, f in zip(asked.bodies, flags, strict=True) if f]
        asked.bodies = asked.ask = None
        if not bodies:
            return
        # one buffer, each record encrypted straight into it: the channel sends a part at a time,
        # and over TLS each small part (a flag byte, a nonce) would be a record and a system call of
        # its own; joining parts cost a copy of all that is sent
        sizes = [codec.record_size(len(body)) for _d, _f, body in bodies]
        message = bytearray(DIGEST_SIZE * len(sizes) + sum(sizes))
        view, at = memoryview(message), 0
        for d, fl, body in bodies:
            view[at:at + DIGEST_SIZE] = d
            at += DIGEST_SIZE
            at += codec.seal_into(d, fl, body, view[at:])
        self.pump.post({"op": "records", "sizes": sizes}, [message], len(sizes))
        with self._lock:
            self._stats.new_chunks += len(sizes)
            self._stats.written_bytes += sum(sizes)
            self._stats.added_bytes += sum(sizes)

    def _settle(self) -> None:
        """Wait until every question is answered and its records are on their way."""
        with self._cv:
            while self._pending:
                self._raise()
                self._cv.wait(0.5)
        self._raise()

    def commit(self, name: str, header: dict, refs=b"", payload: bytes = b"") -> int:
        """Publish the manifest. ``refs``: bytes, or a spool with ``pieces()`` (a disk's digests). A
        service of protocol 2 takes the refs ahead of the commit in pieces of ``REFS_PUT`` bytes (no
        message, and nothing on either side, holds a multi-terabyte disk's refs whole); protocol 1 in
        the commit message itself."""
        self._settle()
        self._encoders.shutdown(wait=True)
        self._sender.shutdown(wait=True)
        if self.chunks.protocol >= 2 and len(refs):
            total = len(refs)
            at = 0
            for piece in refs_pieces(refs, REFS_PUT):
                self.pump.call({"op": "commit_refs", "name": name, "at": at, "total": total}, [piece])
                at += len(piece)
            answer, _ = self.pump.call({"op": "commit", "name": name, "header": header, "refs": 0,
                                        "refs_sent": total}, [b"", payload])
        else:
            whole = refs if isinstance(refs, (bytes, bytearray, memoryview)) else b"".join(refs.pieces())
            answer, _ = self.pump.call({"op": "commit", "name": name, "header": header, "refs": len(whole)},
                                       [whole, payload])
        return int(answer["manifest_bytes"])

    def abort(self) -> None:
        self._error = self._error or RemoteFailure("aborted")
        self._encoders.shutdown(wait=True, cancel_futures=True)
        self._sender.shutdown(wait=True, cancel_futures=True)
        try:
            self.pump.call({"op": "abort"})
        except RemoteFailure:
            pass  # the channel is gone: the service aborts on its own


class RemoteChunks:
    """What the engine's backup and restore code take as their chunk store, on the agent: the vault's
    codec (keys for the task only) and the seams (``open_session``, ``read_manifest``, ``get_chunk``,
    ``fetch_chunks``, ``plan_reads``/``read_planned``) over the channel. :meth:`close` before the
    channel is used for anything else."""

    remote = True
    fork_safe = False  # the channel's pump thread lives in this process only

    def __init__(self, channel, keys, *, max_chunk: int, pack_size: int = 0, timeout: float | None = 120.0,
                 protocol: int = 1):
        self.keys = keys
        self.protocol = protocol  # the service's (remote/__init__.py): 2 sends a manifest's refs in windows
        self.codec = ChunkCodec(keys, max_chunk=max_chunk)
        self.pack_size = pack_size
        self.pump = _Pump(channel, timeout)
        self.refs_read: set[bytes] = set()  # chunks of the backups read (a parent's)
        self._last_progress = 0.0

    @property
    def encrypted(self) -> bool:
        return self.keys is not None

    def progress(self, done: int, total: int) -> None:
        """The engine's progress callback: told to the service at most once a second."""
        now = time.monotonic()
        if now - self._last_progress >= 1.0 or done >= total:
            self._last_progress = now
            self.pump.post({"op": "progress", "done": int(done), "total": int(total)})

    def close(self) -> None:
        self.pump.stop()

    def __enter__(self) -> "RemoteChunks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------
    def open_session(self, *, force_new: bool = False) -> RemoteSink:
        return RemoteSink(self)  # (force_new is the service's: its session re-stores what it has)

    def has_manifest(self, name: str) -> bool:
        return False  # the service checked before the task started, and checks again at commit

    # -- reading ---------------------------------------------------------------------------------
    def _manifest_call(self, name: str, header: dict, parts: list | None = None) -> tuple[dict, memoryview]:
        try:
            return self.pump.call({**header, "name": name}, parts)
        except RemoteFailure as e:
            if getattr(e.__cause__, "code", "") == "missing":
                raise Missing(f"backup {name} is not in the repository") from None
            raise

    def _head(self, name: str) -> tuple[Manifest, int]:
        """(the manifest without refs, the length of its refs) (protocol 2)."""
        answer, data = self._manifest_call(name, {"op": "manifest_head"})
        return Manifest(name, answer["header"], b"", bytes(data)), int(answer["refs"])

    def manifest_head(self, name: str) -> Manifest:
        """A manifest's header and payload, its refs not read (protocol 1 sends them all the same)."""
        return self._head(name)[0] if self.protocol >= 2 else self.read_manifest(name)

    def manifest_header(self, name: str) -> dict:
        return self.manifest_head(name).header

    def manifest_refs_streamed(self, name: str):
        """``(header, refs pieces)`` as the chunk store's: a window of ``REFS_WINDOW`` bytes per
        message (a restore's window of blocks), never the whole refs of a large disk at once."""
        if self.protocol < 2:
            m = self.read_manifest(name)
            return m.header, iter((m.refs,))
        head, total = self._head(name)
        return head.header, self._refs_windows(name, total)

    def _refs_windows(self, name: str, total: int):
        at = 0
        while at < total:
            answer, data = self._manifest_call(name, {"op": "refs", "at": at, "length": min(REFS_WINDOW, total - at)})
            if not len(data) or len(data) % DIGEST_SIZE or int(answer.get("at", -1)) != at:
                raise Damaged(f"backup {name}: the vault sent a bad window of refs at {at}")
            at += len(data)
            yield bytes(data)

    def read_manifest(self, name: str) -> Manifest:
        if self.protocol < 2:
            answer, data = self._manifest_call(name, {"op": "manifest"})
            n = int(answer["refs"])
            header, refs, payload = answer["header"], bytes(data[:n]), bytes(data[n:])
        else:
            head, total = self._head(name)
            header, payload = head.header, head.payload
            refs = b"".join(self._refs_windows(name, total))
        if header.get("type") == "tree":
            self.refs_read.update(refs[i:i + DIGEST_SIZE] for i in range(0, len(refs), DIGEST_SIZE))
        return Manifest(name, header, refs, payload)

    def reader_index(self, refresh: bool = False):
        return None  # the vault's index stays with the vault

    def _read(self, digests: list[bytes]):
        """(digest, record or None) for each of ``digests``."""
        answer, data = self.pump.call({"op": "read"}, [b"".join(digests)])
        at = 0
        for d, n in zip(digests, answer["sizes"], strict=True):
            if n < 0:
                yield d, None
                continue
            yield d, data[at:at + n]
            at += n

    def get_chunk(self, digest: bytes, codec: ChunkCodec | None = None) -> bytes:
        for d, rec in self._read([digest]):
            if rec is None:
                raise Missing(f"chunk {d.hex()} is not in the repository")
            return (codec or self.codec).decode(d, rec)
        raise Missing(f"chunk {digest.hex()} is not in the repository")

    def plan_reads(self, index, digests, on_missing, **_limits) -> list[list[bytes]]:
        ds = list(digests)
        return [ds[i:i + READ_GROUP] for i in range(0, len(ds), READ_GROUP)]

    def read_planned(self, codec: ChunkCodec, group: list[bytes], *, decode=None):
        for d, rec in self._read(group):
            if rec is None:
                yield d, None, Missing(f"chunk {d.hex()} is not in the repository")
                continue
            try:
                yield d, (decode(d, rec) if decode is not None else codec.decode(d, rec)), None
            except Damaged as e:
                yield d, None, e

    def fetch_chunks(self, digests, sink, on_error, *, workers: int = 3, cancel=None, on_span_done=None) -> None:
        groups: queue.Queue = queue.Queue()
        for g in self.plan_reads(None, digests, None):
            groups.put(g)
        errors: list[BaseException] = []

        def work() -> None:
            codec = self.codec.clone()
            try:
                while not errors and not (cancel is not None and cancel.is_set()):
                    try:
                        g = groups.get_nowait()
                    except queue.Empty:
                        return
                    for d, data, err in self.read_planned(codec, g):
                        if err is not None:
                            on_error(d, err)
                        else:
                            sink(d, data)
                    if on_span_done is not None:
                        on_span_done(len(g))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, name=f"remote-fetch-{i}", daemon=True)
                   for i in range(max(1, workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
