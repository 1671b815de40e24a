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
from typing import Callable, Iterable

from ..domain.errors import DataCorruption, NotFound
from .chunkstore import ChunkStore
from .index import Location
from .packs import pack_key

MAX_SPAN = 16 << 20
MAX_GAP = 256 << 10

Sink = Callable[[bytes, bytes], None]  # (digest, plaintext)
OnError = Callable[[bytes, Exception], None]


def plan_spans(cs: ChunkStore, digests: Iterable[bytes], on_error: OnError) -> list[tuple[str, int, int, list[tuple[bytes, Location]]]]:
    idx = cs.reader_index(refresh=True)
    # (digest, Location) pairs with slotted Locations: ~100 bytes per chunk, the dominant memory of a
    # restore/verify of a large disk
    by_pack: dict[str, list[tuple[bytes, Location]]] = {}
    for d in digests:
        loc = idx.lookup(d)
        if loc is None:
            on_error(d, NotFound(f"chunk {d.hex()} is not in the repository index"))
            continue
        by_pack.setdefault(loc.pack_id, []).append((d, loc))
    spans = []
    for pack_id, items in by_pack.items():
        items.sort(key=lambda x: x[1].offset)
        cur: list[tuple[bytes, Location]] = []
        start = end = 0
        for d, loc in items:
            if cur and (loc.offset - end > MAX_GAP or loc.offset + loc.length - start > MAX_SPAN):
                spans.append((pack_id, start, end, cur))
                cur = []
            if not cur:
                start = loc.offset
            cur.append((d, loc))
            end = max(end, loc.offset + loc.length)
        if cur:
            spans.append((pack_id, start, end, cur))
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
) -> None:
    """Call ``sink(digest, plaintext)`` once per wanted digest (from worker threads), or
    ``on_error(digest, exc)`` if no copy of it can be read intact."""
    spans = plan_spans(cs, digests, on_error)
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
                    pack_id, start, end, items = q.get_nowait()
                except queue.Empty:
                    return
                try:
                    blob = cs.store.get(cs.k(pack_key(pack_id)), start, end)
                except KeyError:
                    blob = b""
                mv = memoryview(blob)
                for d, loc in items:
                    a = loc.offset - start
                    rec = mv[a:a + loc.length]
                    try:
                        if len(rec) != loc.length:
                            raise NotFound(f"chunk {d.hex()}: pack {pack_id} is missing or short")
                        data = codec.decode(d, rec)
                    except (DataCorruption, NotFound):
                        try:
                            data = cs.get_chunk(d, codec)
                        except (DataCorruption, NotFound) as e2:
                            on_error(d, e2)
                            continue
                    sink(d, data)
                if on_span_done is not None:
                    on_span_done(len(items))
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
