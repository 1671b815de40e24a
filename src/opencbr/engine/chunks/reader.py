"""Bulk chunk reads for restore, export and verify: grouped by pack, coalesced into large range reads,
decoded (decrypt, decompress, verify digest) by a few threads.

Reading per chunk would cost one request (S3) or one syscall+seek per 64 KiB; sorting the wanted chunks
by (pack, offset) and reading spans of up to ``MAX_SPAN`` bytes turns a restore into mostly sequential
whole-pack reads. A chunk whose preferred copy fails falls back to :meth:`ChunkStore.get_chunk` (other
copies, then a fresh index: GC may have repacked it meanwhile).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

from ..errors import Damaged, Missing
from .codec import ChunkCodec
from .locations import ChunkIndex, Location
from .packs import pack_key
from .store import ChunkStore

MAX_SPAN = 16 << 20
MAX_GAP = 256 << 10

Span = tuple[str, int, int, list[tuple[bytes, Location]]]  # pack id, start, end, its (digest, location)s
Sink = Callable[[bytes, bytes], None]  # (digest, plaintext)
Decode = Callable[[bytes, memoryview], bytes | memoryview]  # (digest, record) -> plaintext
OnError = Callable[[bytes, Exception], None]


def spans_of(idx: ChunkIndex, digests: Iterable[bytes], on_missing: Callable[[bytes], None], *,
             max_span: int = MAX_SPAN, max_gap: int = MAX_GAP) -> list[Span]:
    """Group the chunks to read into ranged reads: per pack, runs of records at most ``max_gap`` apart
    and ``max_span`` long. ``on_missing(digest)`` for chunks the index does not know."""
    # (digest, Location) pairs with slotted Locations: ~100 bytes per chunk, the dominant memory of a
    # restore/verify of a large disk
    by_pack: dict[str, list[tuple[bytes, Location]]] = {}
    for d in digests:
        loc = idx.lookup(d)
        if loc is None:
            on_missing(d)
            continue
        by_pack.setdefault(loc.pack_id, []).append((d, loc))
    spans = []
    for pack_id, items in by_pack.items():
        items.sort(key=lambda x: x[1].offset)
        cur: list[tuple[bytes, Location]] = []
        start = end = 0
        for d, loc in items:
            if cur and (loc.offset - end > max_gap or loc.offset + loc.length - start > max_span):
                spans.append((pack_id, start, end, cur))
                cur = []
            if not cur:
                start = loc.offset
            cur.append((d, loc))
            end = max(end, loc.offset + loc.length)
        if cur:
            spans.append((pack_id, start, end, cur))
    return spans


def read_span(cs: ChunkStore, codec: ChunkCodec, span: Span, *, decode: Decode | None = None,
              hashes: bool = True) -> Iterator[tuple[bytes, bytes | memoryview | None, Exception | None]]:
    """Read one span (bytes ``[start, end)`` of pack ``pack_id``, see :func:`spans_of`) and yield
    ``(digest, plaintext, None)``
    for each of its chunks, or ``(digest, None, error)`` when no copy of the chunk can be read intact.
    A record that is short (pack gone or truncated) or fails its check falls back to the chunk's other
    copies (:meth:`ChunkStore.get_chunk`). ``decode(digest, record)`` replaces ``codec.decode``, e.g. to
    decode into a reused buffer; the plaintext is valid until the next item is asked for. A ``decode``
    that does not hash the plaintext (``hashes=False``: ``ChunkCodec.open_body``) is given ``check=True``
    for a pack an agent wrote unverified (chunks/unverified.py)."""
    pack_id, start, end, items = span
    if decode is not None and not hashes and not cs.trusted_pack(pack_id):
        unchecked = decode
        decode = lambda d, rec: unchecked(d, rec, check=True)  # noqa: E731
    try:
        mv = cs.store.read_view(cs.k(pack_key(pack_id)), start, end)
    except KeyError:
        mv = memoryview(b"")
    for d, loc in items:
        a = loc.offset - start
        rec = mv[a:a + loc.length]
        try:
            if len(rec) != loc.length:
                raise Missing(f"chunk {d.hex()}: pack {pack_id} is missing or short")
            data = decode(d, rec) if decode is not None else codec.decode(d, rec)
        except (Damaged, Missing):
            try:
                data = cs.get_chunk(d, codec)
            except (Damaged, Missing) as e:
                yield d, None, e
                continue
        yield d, data, None


def plan_spans(cs: ChunkStore, digests: Iterable[bytes], on_error: OnError) -> list[Span]:
    """:func:`spans_of` over a freshly loaded reader index; the chunks it does not know are looked for
    in the packs no index object lists (an index object was deleted? ChunkStore.unlisted_index), and
    those not there either are reported as Missing."""
    unknown: list[bytes] = []
    spans = spans_of(cs.reader_index(refresh=True), digests, unknown.append)
    if unknown:
        unlisted = spans_of(cs.unlisted_index(), unknown, lambda d: on_error(d, cs.missing_chunk(d)))
        cs.note_unlisted_read({s[0]: len(s[3]) for s in unlisted})
        spans += unlisted
    return spans


def fetch_chunks(
    cs: ChunkStore,
    digests: Iterable[bytes],
    sink: Sink,
    on_error: OnError,
    *,
    workers: int = 3,
    cancel: threading.Event | None = None,
    on_span_done: Callable[[int], None] | None = None,
    packs: set[str] | None = None,
) -> None:
    """Call ``sink(digest, plaintext)`` once per wanted digest (from worker threads), or
    ``on_error(digest, exc)`` if no copy of it can be read intact. ``packs``: the packs read are added."""
    spans = plan_spans(cs, digests, on_error)
    if packs is not None:
        packs.update(s[0] for s in spans)
    q: queue.Queue = queue.Queue()
    for s in spans:
        q.put(s)
    errors: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        codec = cs.codec.clone()
        try:
            while not stop.is_set():
                if cancel is not None and cancel.is_set():
                    return
                try:
                    span = q.get_nowait()
                except queue.Empty:
                    return
                for d, data, err in read_span(cs, codec, span):
                    if err is not None:
                        on_error(d, err)
                    else:
                        sink(d, data)
                if on_span_done is not None:
                    on_span_done(len(span[3]))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=work, name=f"chunk-fetch-{i}", daemon=True) for i in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@dataclass
class CheckTotals:
    """What :func:`check_chunks` read."""

    chunks_checked: int = 0
    bytes_checked: int = 0


@dataclass
class VerifyReport:
    """What the verify of one backup found, for either kind: ``damaged`` (a copy exists but fails its
    check) and ``missing`` (no copy found) hold the kind's own account of each bad chunk (a disk's: the
    blocks that use it; a tree's: the files). ``index_damaged``: the vault's damaged index objects the
    verify knows of (``{"object", "reason"}``): those listing the packs it read, and those the local
    index could not read, whether this backup needs them or not; the vault's damage, not the backup's
    (its chunks were found from the packs' trailers, or are in ``missing``)."""

    backup_id: str
    chunks_checked: int
    bytes_checked: int
    damaged: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    duration: float = 0.0
    index_damaged: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.missing and not self.index_damaged

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check_chunks(cs: ChunkStore, digests: list[bytes], on_bad: OnError, *,
                 progress: Callable[[int, int], None] | None = None, workers: int = 3,
                 packs: set[str] | None = None) -> CheckTotals:
    """Read and verify every chunk of ``digests`` (the verify of a backup of either kind):
    ``on_bad(digest, error)`` (called under a lock) for each of which no copy is intact -- Missing
    when it is missing, Damaged when damaged. ``progress(checked, total)`` every 256 chunks and
    at the end. ``packs``: the packs read are added (their index objects are checked after)."""
    totals = CheckTotals()
    lock = threading.Lock()
    total = len(digests)

    def sink(d: bytes, data: bytes) -> None:
        with lock:
            totals.chunks_checked += 1
            totals.bytes_checked += len(data)
            if progress is not None and totals.chunks_checked % 256 == 0:
                progress(totals.chunks_checked, total)

    def on_error(d: bytes, e: Exception) -> None:
        with lock:
            totals.chunks_checked += 1
            on_bad(d, e)

    fetch_chunks(cs, digests, sink, on_error, workers=workers, packs=packs)
    if progress is not None:
        progress(total, total)
    return totals
