"""The agent's end of the remote chunk service: the engine's chunk-sink and chunk-reader seams over a
channel, so that ``backup_disk``, ``backup_tree``, ``restore_disk`` and ``restore_tree`` run unchanged on
the agent's host (:class:`RemoteChunks` stands where they take a chunk store).

One thread (:class:`_Pump`) owns the channel; the engine's threads queue their calls to it, and it
merges what is queued together (several workers' ``need`` questions, several batches of records) into
one message each. The engine's worker threads hash, and encode (zstd, AES-GCM with the task's keys) only
the chunks the vault answers it needs, in parallel; every call waits for its answer, so what is in
flight is bounded by the engine's own queues (a segment per worker).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ..chunks.codec import ChunkCodec
from ..chunks.crypto import DIGEST_SIZE
from ..chunks.manifests import Manifest
from ..chunks.session import PutResult, SessionStats
from ..errors import Damaged, Missing

READ_GROUP = 64  # chunks per read message (4 MiB of 64 KiB blocks)
MERGE_BYTES = 16 << 20  # records merged into one message up to this size
LOCAL_SEEN_MAX = 1 << 20  # digests remembered to skip a question (then forgotten: the vault still dedups)


class RemoteFailure(Exception):
    """The vault refused a message, or the channel broke."""


@dataclass
class _Call:
    op: str
    header: dict
    parts: list
    count: int = 0  # digests (need/known) or records, for merging
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict | None = None
    data: memoryview | None = None
    error: BaseException | None = None


class _Pump:
    """The thread that uses the channel (a channel is for one thread at a time)."""

    def __init__(self, channel, timeout: float | None):
        self.channel = channel
        self.timeout = timeout
        self.q: queue.Queue[_Call | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="remote-chunks", daemon=True)
        self.thread.start()

    def call(self, header: dict, parts: list | None = None, count: int = 0) -> tuple[dict, memoryview]:
        if self.error is not None:
            raise RemoteFailure(str(self.error)) from self.error
        c = _Call(header["op"], header, parts or [], count)
        self.q.put(c)
        c.done.wait()
        if c.error is not None:
            raise RemoteFailure(str(c.error)) from c.error
        return c.answer, c.data

    def post(self, header: dict) -> None:
        """Queue a message whose answer nobody waits for (progress)."""
        if self.error is None:
            self.q.put(_Call(header["op"], header, []))

    def stop(self) -> None:
        self.q.put(None)
        self.thread.join()

    def _run(self) -> None:
        backlog: deque[_Call] = deque()
        while True:
            first = backlog.popleft() if backlog else self.q.get()
            if first is None:
                return
            batch = [first]
            if first.op in ("need", "known", "records"):
                size = sum(len(p) for p in first.parts)
                while size < MERGE_BYTES:
                    try:
                        nxt = backlog.popleft() if backlog else self.q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None or nxt.op != first.op:
                        backlog.append(nxt)  # (None too: stop after this batch)
                        break
                    batch.append(nxt)
                    size += sum(len(p) for p in nxt.parts)
            self._send(batch)

    def _send(self, batch: list[_Call]) -> None:
        first = batch[0]
        header = dict(first.header)
        if first.op == "records" and len(batch) > 1:
            header["sizes"] = [n for c in batch for n in c.header["sizes"]]
        parts = [p for c in batch for p in c.parts]
        try:
            if self.error is not None:
                raise self.error
            answer, data = self.channel.request(header, parts, timeout=self.timeout)
        except BaseException as e:  # noqa: BLE001 - handed to the callers
            if not hasattr(e, "code"):  # not an error answer: the channel is broken for good
                self.error = self.error or e
            for c in batch:
                c.error = e
                c.done.set()
            return
        at = 0
        for c in batch:
            c.answer = answer
            if first.op in ("need", "known"):
                c.data = data[at:at + c.count]
                at += c.count
            else:
                c.data = data
            c.done.set()


class RemoteSink:
    """A write session's interface (``knows``, ``put_chunk``, ``put_chunks``, ``stats``, ``commit``,
    ``abort``) over the channel: the vault is asked which chunks it needs, only those are encoded and
    sent, and it checks and stores them in its own session."""

    def __init__(self, chunks: "RemoteChunks"):
        self.chunks = chunks
        self.pump = chunks.pump
        self.stats = SessionStats()
        self._lock = threading.Lock()
        self._seen: dict[bytes, object] = {}  # asked (or being asked) this session
        self._known: set[bytes] | None = None

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

    def _put(self, pairs, codec: ChunkCodec) -> int:
        ask = []
        seen, tok = self._seen, object()
        for data, d in pairs:
            # setdefault is atomic under the GIL: one thread asks about a digest, the others skip it
            if d in seen or seen.setdefault(d, tok) is not tok:
                continue
            ask.append((data, d))
        if len(seen) > LOCAL_SEEN_MAX:
            seen.clear()
        if not ask:
            return 0
        _a, flags = self.pump.call({"op": "need"}, [b"".join(d for _, d in ask)], len(ask))
        parts, sizes, total = [], [], 0
        for (data, d), f in zip(ask, bytes(flags), strict=True):
            if not f:
                continue
            rec = codec.encode_parts(d, data)
            n = sum(len(p) for p in rec)
            parts.append(d)
            parts.extend(rec)
            sizes.append(n)
            total += n
        if sizes:
            self.pump.call({"op": "records", "sizes": sizes}, parts, len(sizes))
            with self._lock:
                self.stats.new_chunks += len(sizes)
                self.stats.written_bytes += total
                self.stats.added_bytes += total
        return total

    def commit(self, name: str, header: dict, refs: bytes = b"", payload: bytes = b"") -> int:
        answer, _ = self.pump.call({"op": "commit", "name": name, "header": header, "refs": len(refs)},
                                   [refs, payload])
        return int(answer["manifest_bytes"])

    def abort(self) -> None:
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

    def __init__(self, channel, keys, *, max_chunk: int, pack_size: int = 8 << 20, timeout: float | None = 120.0):
        self.keys = keys
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
    def read_manifest(self, name: str) -> Manifest:
        try:
            answer, data = self.pump.call({"op": "manifest", "name": name})
        except RemoteFailure as e:
            if getattr(e.__cause__, "code", "") == "missing":
                raise Missing(f"backup {name} is not in the repository") from None
            raise
        n = int(answer["refs"])
        refs = bytes(data[:n])
        if answer["header"].get("type") == "tree":
            self.refs_read.update(refs[i:i + DIGEST_SIZE] for i in range(0, n, DIGEST_SIZE))
        return Manifest(name, answer["header"], refs, bytes(data[n:]))

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
