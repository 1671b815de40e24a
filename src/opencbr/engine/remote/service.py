"""The worker's end of the remote chunk service: answers an agent's chunk messages from a vault.

The agent is trusted with the data it reads, not with the vault. Its records go into packs marked as its
own unverified ones (``writer``; chunks/unverified.py): the agent deduplicates against them, every other
writer of the vault checks a copy against its digest before it relies on it, so a compromised agent can
spoil nothing but its own backups. (Checking every record here instead cost the worker about as much CPU
as the agent's hashing; with both on two shared cores, a quarter of the backup's speed: bench/README.md.)
A sample of its records is checked all the same (the first message's, then one in ``SPOT_CHECK``): an
agent whose records do not decode (a bug, another codec) fails its backup at once. A service without a
``writer`` (a replication's source) has every record checked. The agent may only read chunks the backups of its task reference,
and it may only publish the one manifest its task names, whose every chunk the vault holds and whose
header describes what its refs cover. What the service publishes of it is the worker's record
(``serve_backup``'s ``recorded``), not the agent's word.
"""

from __future__ import annotations

import random
import secrets
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ...system.heap import free_heap_kept, limit_heap_growth
from ..chunks.crypto import DIGEST_SIZE, ZERO_DIGEST
from ..chunks.manifests import Manifest
from ..chunks.packs import pack_key
from ..chunks.reader import spans_of
from ..chunks.session import WriteSession
from ..disk.fixed_index import FixedIndex, SpooledDigests
from ..errors import Conflict, Damaged, Missing
from ..tree.dynamic_index import DynamicIndex
from .allowed import AllowedRefs

IDLE_TIMEOUT = 120.0  # seconds without a message from the agent before the task fails
#: Seconds a task may go without moving (see :class:`_Stall`) before it fails, whatever the agent sends
#: meanwhile: the idle timeout above is per read, so an agent that sent a byte a minute, or a progress
#: message a minute that said nothing new, held its task and a worker thread without end.
STALL_TIMEOUT = 600.0
AGENT_META = ("consistency",)  # what the agent writes into a backup's meta (how it read the data)
SCRATCH = (4 << 20) + (64 << 10)  # a chunk's plaintext (tree chunks reach 4 MiB) and its compressed form
REFS_WINDOW = 8 << 20  # refs bytes per refs answer: 262,144 blocks, a restore's window (16 GiB of disk)
REFS_PUT = 8 << 20  # refs bytes per commit_refs message at most (protocol 2), the same window
FEED_BATCH = 1 << 16  # refs added to the allowed set at a time (~4.5 MB of 32-byte objects)
MAX_READ = 256  # chunks per read message (16 MiB of 64 KiB blocks; tree chunks reach 4 MiB)
CHECKERS = 2  # threads checking records
SPOT_CHECK = 64  # an unchecked writer's records: one in this many is checked (after its first message's)
CHECKING = 4  # records messages being checked while the next messages are read (their payloads held)
#: Chunks the vault asked for and has not received yet, at most: an agent sends what it was asked for
#: within its window (tens of MiB ahead); one that only asks held ~140 bytes of the worker per digest,
#: without end (3 M asked: +390 MB).
MAX_PENDING = 1 << 20
MAX_DIGESTS = 1 << 18  # digests in one need/known/read message (8 MiB): a list is built of each
MAX_DISK_BYTES = 1 << 50  # a disk backup's size at most (1 PiB)


class Refused(Exception):
    """The agent asked for something its task does not allow (or sent a record that fails its check)."""


@dataclass(frozen=True)
class BackupScope:
    """What one backup task may do: write manifest ``name`` of ``kind`` ("disk"/"tree"), read the
    backups ``readable`` (its parent), with ``meta`` recorded as the service says."""

    name: str
    kind: str
    readable: tuple[str, ...] = ()
    meta: dict | None = None
    full: bool = False


@dataclass(frozen=True)
class ReadScope:
    """What one restore task may read: the chunks of the backups ``readable``."""

    readable: tuple[str, ...] = field(default_factory=tuple)


def _error(code: str, message: str) -> dict:
    return {"ok": False, "error": code, "message": message}


class _Checks:
    """The records messages being checked, in ``CHECKERS`` pool threads, while the conversation reads
    on and answers the next messages (the agent's questions are not held up behind a check: an answer
    waiting for the check of the records before it capped how far ahead the agent could read). Each
    part of a message is checked, and only then packed, in its pool thread; a part whose check fails
    packs nothing. :meth:`wait` raises the first failure (``Refused``, or the packing's error), and the
    conversation calls it with ``keep=0`` before anything that must see every record checked (a
    commit, a read, the end)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(CHECKERS, thread_name_prefix="remote-verify")
        self.out: deque[list[Future]] = deque()  # per message, oldest first

    def add(self, futures: list[Future]) -> None:
        self.out.append(futures)

    def wait(self, keep: int = 0) -> None:
        """Drop the messages whose checks are done, waiting for the oldest while more than ``keep``
        are out; the first failure is raised (the messages after it stay out: the task ends)."""
        while self.out:
            futures = self.out[0]
            if len(self.out) <= keep and not all(f.done() for f in futures):
                return
            for f in futures:
                f.result()
            self.out.popleft()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.out.clear()


def _digests(payload: memoryview) -> list[bytes]:
    if len(payload) % DIGEST_SIZE:
        raise Refused("a digest list must be a multiple of 32 bytes")
    if len(payload) > MAX_DIGESTS * DIGEST_SIZE:
        raise Refused(f"a message names {MAX_DIGESTS} chunks at most")
    return [bytes(payload[i:i + DIGEST_SIZE]) for i in range(0, len(payload), DIGEST_SIZE)]


class _Reads:
    """Reads of the chunks and manifests a scope names (nothing else), in bounded memory whatever the
    size of the backups: the chunks a task may read are on disk (:class:`AllowedRefs`; a Python set of
    a 1 TiB disk's 16 M refs took GBs), fed with each window of refs the agent is sent, and a manifest's
    refs go to the agent a window at a time (``refs``)."""

    def __init__(self, cs, readable: tuple[str, ...], reader: str | None = None):
        self.cs = cs
        self.readable = set(readable)
        self.reader = reader  # the agent reading: its own unverified records are sent unchecked
        self._codec = None
        self._allowed: AllowedRefs | None = None
        self._fed: dict[str, int] = {}  # refs bytes of each readable manifest in the set, from its start
        self._heads: dict[str, object] = {}  # name -> Manifest of manifest_head (a header and a table)

    def close(self) -> None:
        if self._allowed is not None:
            self._allowed.close()

    def _head(self, name: str):
        if name not in self.readable:
            raise Refused(f"backup {name!r} is not one this task may read")
        m = self._heads.get(name)
        if m is None:
            m = self._heads[name] = self.cs.manifest_head(name)
        return m

    def _feed(self, name: str, at: int, refs: bytes) -> None:
        """Add refs ``at:at + len(refs)`` of ``name`` to the allowed set if they follow those added."""
        if self._fed.get(name, 0) != at or not refs:
            return
        view = memoryview(refs)
        for first in range(0, len(view), FEED_BATCH * DIGEST_SIZE):  # (a list of 32-byte objects each)
            part = view[first:first + FEED_BATCH * DIGEST_SIZE]
            self._set().add_many([d for i in range(0, len(part), DIGEST_SIZE)
                                    if (d := bytes(part[i:i + DIGEST_SIZE])) != ZERO_DIGEST])
        self._fed[name] = at + len(refs)

    def allowed(self) -> AllowedRefs:
        """Every ref of the readable backups: those the agent was not sent yet are read in now."""
        for name in sorted(self.readable):
            try:
                m = self._head(name)
                total = self.cs.refs_length(m)
                while (at := self._fed.get(name, 0)) < total:
                    self._feed(name, at, self.cs.refs_range(m, at, min(total, at + REFS_WINDOW)))
            except Missing:
                self._fed[name] = 0
                continue
        return self._set()

    def _set(self) -> AllowedRefs:
        """The allowed set, sized at its creation for every ref of the readable backups."""
        if self._allowed is None:
            total = 0
            for name in self.readable:
                try:
                    total += self.cs.refs_length(self._head(name)) // DIGEST_SIZE
                except Missing:
                    continue
            self._allowed = AllowedRefs(total, self.cs.spill_dir)
        return self._allowed

    def manifest(self, header: dict) -> tuple[dict, list]:
        """The whole manifest in one answer (protocol 1: agents that do not ask for windows)."""
        name = str(header.get("name", ""))
        m = self._head(name)
        refs = self.cs.refs_range(m, 0, self.cs.refs_length(m))
        self._feed(name, 0, refs)
        return {"ok": True, "header": m.header, "refs": len(refs)}, [refs, m.payload]

    def manifest_head(self, header: dict) -> tuple[dict, list]:
        """A manifest's header and payload, and the length of its refs (read with ``refs``)."""
        m = self._head(str(header.get("name", "")))
        return {"ok": True, "header": m.header, "refs": self.cs.refs_length(m)}, [m.payload]

    def refs(self, header: dict) -> tuple[dict, list]:
        """Refs ``at`` to ``at + length`` of a manifest, ``REFS_WINDOW`` bytes at most."""
        name = str(header.get("name", ""))
        m = self._head(name)
        try:
            at, length = int(header.get("at", -1)), int(header.get("length", -1))
        except (TypeError, ValueError):
            raise Refused("refs: bad window") from None
        if at < 0 or length < 0 or at % DIGEST_SIZE:
            raise Refused("refs: bad window")
        refs = self.cs.refs_range(m, at, min(self.cs.refs_length(m), at + min(length, REFS_WINDOW)))
        self._feed(name, at, refs)
        return {"ok": True, "at": at}, [refs]

    def read(self, payload: memoryview) -> tuple[dict, list]:
        wanted = _digests(payload)
        if len(wanted) > MAX_READ:
            raise Refused(f"at most {MAX_READ} chunks per read")
        allowed = self.allowed()
        for d in wanted:
            if d not in allowed:
                raise Refused(f"chunk {d.hex()} is not referenced by the backups this task may read")
        records: dict[bytes, memoryview] = {}
        index = self.cs.reader_index()
        for pack_id, start, end, items in spans_of(index, wanted, lambda d: None):
            try:
                # (get, not read_view: a view's buffer is reused by the next read, and the answer
                # holds the records of several spans)
                mv = memoryview(self.cs.store.get(self.cs.k(pack_key(pack_id)), start, end))
            except KeyError:
                continue
            trusted = self.cs.trusted_pack(pack_id, self.reader)
            for d, loc in items:
                rec = mv[loc.offset - start:loc.offset - start + loc.length]
                # Another writer's unverified record is checked only where another copy could stand in
                # for it: the agent checks every record it decodes, so a lone forged copy fails there
                # as it would here, and the check would cost the worker every record of a restore of
                # one host's backup onto another.
                if len(rec) == loc.length and (trusted or len(index.locations(d)) < 2 or self._intact(d, rec)):
                    records[d] = rec
        parts, sizes = [], []
        for d in wanted:
            rec = records.get(d)
            if rec is None:  # not where the index says: GC may have repacked it; one verified copy
                try:
                    rec = memoryview(self.cs.codec.encode(d, self.cs.get_chunk(d)))
                except (Missing, Damaged):
                    sizes.append(-1)
                    continue
            sizes.append(len(rec))
            parts.append(rec)
        return {"ok": True, "sizes": sizes}, [b"".join(parts)]  # (one part: see client.RemoteSink._put)

    def _intact(self, d: bytes, rec) -> bool:
        """Another writer's unverified record decodes to chunk ``d`` (else a checked copy is sent)."""
        if self._codec is None:  # (reads are answered by the conversation's thread alone)
            self._codec = self.cs.codec.clone()
        try:
            self._codec.decode(d, rec)
            return True
        except Damaged:
            return False


_READ_OPS = ("manifest", "manifest_head", "refs")  # (each a method of _Reads, taking the header)


class _BackupService:
    """The backups one task writes, in order (a server's disks: one write session each)."""

    def __init__(self, cs, scopes: list[BackupScope], keep_partial: bool = False, block_size: int = 0,
                 writer: str | None = None):
        self.cs, self.scopes, self.keep_partial, self.block_size = cs, list(scopes), keep_partial, block_size
        self.writer = writer  # the agent whose records these are (None: every record is checked)
        self._sampled = False  # (an unchecked writer's first records message was checked whole)
        self._sample = random.Random(secrets.randbits(128))
        #: What the worker itself recorded of each committed backup (not what the agent says it did):
        #: its logical size (a disk's, from the checked header) and what the vault added for it.
        self.recorded: dict[str, dict] = {}
        self.reads = _Reads(cs, tuple(n for sc in scopes for n in sc.readable), writer)
        self.session = None  # the current write session (opened by the first chunk message)
        self.pending: set[bytes] = set()  # claimed by the agent, record not received yet
        self.committed: list[str] = []
        self._tls = threading.local()
        self.checks = _Checks()
        self.pack_error: BaseException | None = None  # a checked record that could not be packed
        self.refs_spool: SpooledDigests | None = None  # the refs sent ahead of the commit (protocol 2)
        self.refs_received = 0

    @property
    def done(self) -> bool:
        return len(self.committed) == len(self.scopes)

    def _current(self):
        if self.done:
            raise Refused("every backup of this task is recorded already")
        if self.session is None:
            self.session = WriteSession(self.cs, force_new=self.scopes[len(self.committed)].full,
                                        keep_partial=self.keep_partial, writer=self.writer)
        return self.session

    def close(self) -> None:
        """The end: a session still open (the conversation ended before its commit) is aborted, or,
        ``keep_partial``, kept with every record that arrived and passed its check (a resumable transfer)."""
        self.checks.close()
        self.reads.close()
        self._drop_refs()
        if self.session is not None:
            if self.keep_partial and self.pack_error is None:
                self.session.keep()
            else:
                self.session.abort()
            self.session = None

    def handle(self, op: str, header: dict, payload: memoryview) -> tuple[dict, object]:
        if op == "need":
            session = self._current()
            digests = _digests(payload)
            if not self.scopes[len(self.committed)].full:
                session.check_foreign(digests)  # (other agents' copies: checked span by span)
            flags = bytearray(self._claim(session, d) for d in digests)
            return {"ok": True}, bytes(flags)
        if op == "known":
            session = self._current()
            digests = _digests(payload)
            session.check_foreign(digests)
            return {"ok": True}, bytes(bytearray(session.knows(d) for d in digests))
        if op == "records":
            self._records(header, payload)
            return {"ok": True}, b""
        if op == "read":
            return self.reads.read(payload)
        if op in _READ_OPS:
            return getattr(self.reads, op)(header)
        if op == "commit_refs":
            return self._commit_refs(header, payload), b""
        if op == "commit":
            return self._commit(header, payload), b""
        raise Refused(f"unknown message {op!r}")

    def _claim(self, session, d: bytes) -> int:
        if session.claim(d):
            if len(self.pending) >= MAX_PENDING:
                raise Refused(f"{MAX_PENDING} chunks asked for and not sent: send them before asking for more")
            self.pending.add(d)
            return 1
        return 0

    def _codec(self):
        c = getattr(self._tls, "codec", None)
        if c is None:
            c = self._tls.codec = self.cs.codec.clone()
        return c

    def _check(self, items: list[tuple[bytes, memoryview]]) -> None:
        scratch = getattr(self._tls, "scratch", None)
        if scratch is None:  # (decoding into reused buffers: half the time of fresh ones, measured)
            scratch = self._tls.scratch = (bytearray(SCRATCH), bytearray(SCRATCH))
        codec = self._codec()
        for d, rec in items:
            try:
                codec.decode_into(d, rec, scratch[0], 0, scratch[1])  # Damaged: not chunk d
            except Damaged as e:
                raise Refused(f"a record failed its check, nothing of it was stored: {e}") from None

    def _to_check(self, items: list[tuple[bytes, memoryview]]) -> list[tuple[bytes, memoryview]]:
        """The records of a message to check: all of them, unless the writer is an agent (its own
        unverified packs): then its first message's, and after that one in ``SPOT_CHECK`` at random."""
        if self.writer is None or not self._sampled:
            self._sampled = True
            return items
        pick = self._sample.random  # (seeded from the OS per task: the agent cannot tell which)
        return [it for it in items if pick() * SPOT_CHECK < 1]

    def _check_and_pack(self, session, items: list[tuple[bytes, memoryview]],
                        checked: list[tuple[bytes, memoryview]]) -> None:
        """(A pool thread.) Every record of ``checked`` (those of ``items`` to check) passed its check
        before any of ``items`` is packed; a full pack waits for an upload slot here, not in the
        conversation."""
        self._check(checked)
        try:
            for d, rec in items:
                session.put_record(d, (rec,))
        except BaseException as e:
            self.pack_error = self.pack_error or e
            raise

    def _records(self, header: dict, payload: memoryview) -> None:
        """The records are matched against what was claimed at once, then checked and packed in the
        pool (see :class:`_Checks`): the message is answered as soon as it is read."""
        session = self._current()
        sizes = header.get("sizes")
        if not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes) \
                or sum(DIGEST_SIZE + n for n in sizes) != len(payload):  # (not int(): Infinity, 1e400 overflowed)
            raise Refused("records: sizes do not match the payload")
        items, at = [], 0
        for n in sizes:
            n = int(n)
            d = bytes(payload[at:at + DIGEST_SIZE])
            if d not in self.pending:
                raise Refused(f"record for chunk {d.hex()}, which the vault did not ask for")
            self.pending.discard(d)
            items.append((d, payload[at + DIGEST_SIZE:at + DIGEST_SIZE + n]))
            at += DIGEST_SIZE + n
        checked = self._to_check(items)
        if self.writer is not None:  # (the check of a sample is cheap: one thread packs in order)
            self.checks.add([self.checks.pool.submit(self._check_and_pack, session, items, checked)])
            return
        parts = [items[i::CHECKERS] for i in range(CHECKERS)] if len(items) > 4 else [items]
        self.checks.add([self.checks.pool.submit(self._check_and_pack, session, part, part) for part in parts])

    def _commit(self, header: dict, payload: memoryview) -> dict:
        self.checks.wait()  # every record checked and packed (the conversation waited for it already)
        session = self._current()
        scope = self.scopes[len(self.committed)]
        if header.get("name") != scope.name:
            raise Refused(f"this task may only write backup {scope.name!r} now")
        mh = header.get("header")
        if not isinstance(mh, dict) or mh.get("type") != scope.kind:
            raise Refused(f"this task writes a {scope.kind} backup")
        if self.pending:
            raise Refused(f"{len(self.pending)} chunk(s) the vault asked for were never sent")
        nrefs = int(header.get("refs", -1))
        if nrefs < 0 or nrefs % DIGEST_SIZE or nrefs > len(payload):
            raise Refused("commit: bad refs length")
        if "refs_sent" in header:  # protocol 2: sent ahead by commit_refs, spooled and checked
            if nrefs or self.refs_spool is None or self.refs_received != len(self.refs_spool) \
                    or int(header["refs_sent"]) != self.refs_received:
                raise Refused("commit: the refs sent ahead are incomplete")
            refs = self.refs_spool
        else:
            refs = bytes(payload[:nrefs])
            for at in range(0, nrefs, REFS_PUT):
                _check_known(session, memoryview(refs)[at:at + REFS_PUT])
        refs_bytes = self.refs_received if "refs_sent" in header else nrefs
        logical = _checked_disk_header(mh, refs_bytes, self.block_size) if scope.kind == "disk" else None
        if scope.kind == "tree":
            _check_catalog_list(session, scope.name, mh, payload[nrefs:])
        mh = dict(mh, backup_id=scope.name, encrypted=self.cs.encrypted)
        if scope.meta is not None:  # the service's record; the agent says only how it read (consistency)
            told = mh.get("meta") if isinstance(mh.get("meta"), dict) else {}
            mh["meta"] = {**scope.meta, **{k: told[k] for k in AGENT_META if k in told}}
        self.session = None
        size = session.commit(scope.name, mh, refs, bytes(payload[nrefs:]))
        self._drop_refs()
        self.committed.append(scope.name)
        st = session.stats
        self.recorded[scope.name] = {"logical_bytes": logical, "added_bytes": st.added_bytes,
                                     "new_chunks": st.new_chunks}
        return {"ok": True, "manifest_bytes": size,
                "stats": {"new_chunks": st.new_chunks, "added_bytes": st.added_bytes,
                          "written_bytes": st.written_bytes}}


    def _commit_refs(self, header: dict, payload: memoryview) -> dict:
        """Protocol 2: a backup's refs ahead of its commit, in order, ``REFS_PUT`` bytes at most a message,
        each piece checked (every chunk held by the vault) and spooled to an unlinked local file, so
        that neither a message nor the worker's memory grows with the disk (a 1 TiB disk has 512 MB)."""
        session = self._current()
        if header.get("name") != self.scopes[len(self.committed)].name:
            raise Refused(f"this task may only write backup {self.scopes[len(self.committed)].name!r} now")
        at, total = header.get("at", -1), header.get("total", -1)
        if type(at) is not int or type(total) is not int or total > _MAX_REFS_BYTES:
            raise Refused("commit_refs: refs out of order, or of the wrong length")
        if self.refs_spool is None and at == 0 and total >= 0 and total % DIGEST_SIZE == 0:
            self.refs_spool = SpooledDigests(total // DIGEST_SIZE, getattr(self.cs, "spill_dir", None))
        if (self.refs_spool is None or total != len(self.refs_spool) or at != self.refs_received
                or len(payload) % DIGEST_SIZE or len(payload) > REFS_PUT or at + len(payload) > total):
            raise Refused("commit_refs: refs out of order, or of the wrong length")
        _check_known(session, payload)
        self.refs_spool.write_at(at, payload)
        self.refs_received += len(payload)
        return {"ok": True}

    def _drop_refs(self) -> None:
        if self.refs_spool is not None:
            self.refs_spool.close()
        self.refs_spool, self.refs_received = None, 0


#: A backup's refs at most: a disk of MAX_DISK_BYTES in the smallest blocks a vault has (4 KiB).
_MAX_REFS_BYTES = MAX_DISK_BYTES // 4096 * DIGEST_SIZE


def _checked_disk_header(mh: dict, refs_bytes: int, block_size: int) -> int:
    """A disk backup's header as the agent sends it, checked against what makes it restorable: the
    vault's block size, a size, and one ref per block of it (a header saying 1,000 times the disk, or
    another block size, was recorded, and the backup failed its first verify or restore). Its size."""
    size = mh.get("disk_size")
    if type(size) is not int or not 0 <= size <= MAX_DISK_BYTES:
        raise Refused("commit: disk_size must be the disk's size in bytes")
    bs = mh.get("block_size")
    if type(bs) is not int or bs <= 0 or (block_size and bs != block_size):
        raise Refused(f"commit: block_size must be the vault's ({block_size})")
    if mh.get("format", 1) != 1:
        raise Refused("commit: unknown disk backup format")
    if refs_bytes != FixedIndex.count_blocks(size, bs) * DIGEST_SIZE:
        raise Refused("commit: the refs do not cover disk_size, one per block")
    return size


def _check_catalog_list(session, name: str, mh: dict, payload: memoryview) -> None:
    """A tree backup's payload is the list of its catalog's chunks, each held by the vault: a garbage list
    was recorded, and the Available backup failed its first browse or restore ("bad catalog list")."""
    try:
        index = DynamicIndex.from_manifest(Manifest(name, mh, b"", bytes(payload)))
    except (Damaged, ValueError, TypeError) as e:  # (a "format" that is no number)
        raise Refused(f"commit: {e}") from None
    for chunk in index.catalog:
        if not session.knows(chunk.digest):
            raise Refused(f"commit: the catalog names chunk {chunk.digest.hex()}, which the vault does not hold")


def _check_known(session, refs: memoryview) -> None:
    """Every chunk a piece of refs names is held by the vault (or is the zero block)."""
    digests = {bytes(refs[i:i + DIGEST_SIZE]) for i in range(0, len(refs), DIGEST_SIZE)} - {ZERO_DIGEST}
    # (another writer's copies checked a batch at once: a parent's, by an agent enrolled again)
    for d in session.check_foreign(digests):
        if not session.knows(d):
            raise Refused(f"the backup references chunk {d.hex()}, which the vault does not hold")


STREAMED = frozenset({"need", "known", "records", "progress", "abort"})  # need not see the checks done
#: Messages that do not move a task by themselves: questions about chunks (a backup's progress says what
#: it read meanwhile), progress (moves it when its ``done`` grows) and abort.
NOT_MOVING = frozenset({"need", "known", "progress", "abort"})


class _Stall:
    """Ends a conversation whose task moves no further for ``seconds``: no records, commit, read or
    progress whose ``done`` grows (a disk's long run of zero blocks sends only progress, and it grows).
    The channel's timeout is per read and cannot see a message that arrives a byte at a time, or progress
    messages that say nothing new; this watch shuts the connection down, which ends the read at once.
    A message arrives whole within ``seconds``: at 14 KB/s the largest an agent sends (8 MiB) does. Only
    the time the conversation waits for the agent counts (:meth:`pause`: not a check or a pack's upload)."""

    def __init__(self, channel, seconds: float):
        self.channel, self.seconds = channel, seconds
        self.fired = False
        self.best = -1  # the highest progress ``done`` seen
        self._deadline = time.monotonic() + seconds
        self._paused_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="remote-stall", daemon=True)
        self._thread.start()

    def moved(self, op, header: dict) -> None:
        if op == "progress":
            try:
                done = int(header.get("done", 0))
            except (TypeError, ValueError):
                return
            if done <= self.best:
                return
            self.best = done
        elif op in NOT_MOVING:
            return
        self._deadline = time.monotonic() + self.seconds

    def pause(self) -> None:
        """The worker's own work begins (handling a message): it does not count against the agent."""
        self._paused_at = time.monotonic()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._deadline += time.monotonic() - self._paused_at
            self._paused_at = None

    def _watch(self) -> None:
        while not self._stop.wait(self.seconds if self._paused_at is not None
                                  else max(0.0, self._deadline - time.monotonic())):
            if self._paused_at is None and time.monotonic() >= self._deadline:
                self.fired = True
                try:  # (not close: the conversation's thread still uses the socket; its owner closes it)
                    self.channel.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _converse(channel, handle, timeout: float, progress=None, checks: _Checks | None = None,
              stall: float | None = None) -> dict:
    """Answer messages, in order, until the agent's final answer (returned). A refused message is
    answered with the refusal and ends the conversation (raised). Records are checked while the next
    messages are read and answered (``CHECKING`` messages at most, see :class:`_Checks`); every check
    is done before a message other than ``STREAMED`` ones is handled, and a failed one is answered as
    the refusal of the message read when it is found (the task ends). A task that moves no further for
    ``stall`` seconds (default ``STALL_TIMEOUT``, see :class:`_Stall`) ends with the channel's error (its
    ``LinkError``), saying so."""
    watch = _Stall(channel, STALL_TIMEOUT if stall is None else stall)
    try:
        return _answer(channel, handle, timeout, progress, checks, watch)
    except Exception as e:  # (the channel's LinkError, of a layer above the engine; or OSError)
        if watch.fired and not isinstance(e, Refused):
            raise type(e)(f"the agent moved the task no further in {watch.seconds:g} s "
                          "(no data, and no progress beyond what it had said)") from None
        raise
    finally:
        watch.close()


def _answer(channel, handle, timeout: float, progress, checks: _Checks | None, watch: _Stall) -> dict:
    while True:
        if checks is not None:
            _waiting(watch, channel, checks.wait, CHECKING - 1)
        header, payload = channel.recv(timeout)
        op = header.get("op")
        watch.moved(op, header)
        if checks is not None and op not in STREAMED:
            _waiting(watch, channel, checks.wait, 0)
        if op is None:
            return header
        if op in ("abort", "progress"):
            if op == "progress" and progress is not None:
                progress(int(header.get("done", 0)), int(header.get("total", 0)))
            channel.send({"ok": True})
            continue
        watch.pause()
        try:
            answer, data = handle(op, header, payload)
        except Refused as e:
            channel.send(_error("refused", str(e)))
            raise
        except (Missing, Damaged) as e:
            channel.send(_error(type(e).__name__.lower(), str(e)))
            continue
        finally:
            watch.resume()
        channel.send(answer, data)


def _waiting(watch: _Stall, channel, fn, *args) -> None:
    """``_refusing(channel, fn, *args)``, the time it takes not counted against the agent."""
    watch.pause()
    try:
        _refusing(channel, fn, *args)
    finally:
        watch.resume()


def _refusing(channel, fn, *args) -> None:
    """``fn(*args)``; a refusal it raises is told to the agent first."""
    try:
        fn(*args)
    except Refused as e:
        channel.send(_error("refused", str(e)))
        raise


#: Each records message arrives in a buffer of its own (~0.7 MB on the bench tree, 4 MiB at most), is
#: checked, and is copied into 8 MiB packs: kept in the heap between uses, they are not faulted in again
#: each time (~180k page faults -> ~20k per 1.1 GB received; system/heap.py). Both sizes must be below
#: the mmap threshold for that, which serve_backup fixes above a pack, as a local backup does.
RECEIVE_HEAP_TRIM = 16 << 20


def serve_backup(repo, channel, scopes: BackupScope | list[BackupScope], *, timeout: float = IDLE_TIMEOUT,
                 progress=None, keep_partial: bool = False, writer: str | None = None) -> dict:
    """Serve one backup task's chunk messages from ``repo`` until the agent's final answer, which is
    returned (``{"ok": True, "result": ...}`` once every scope's backup is recorded, else an error
    answer). ``scopes``: the backups the task writes, in order (a server's disks). Whatever ends the
    conversation before all are recorded (an error answer, a refusal, a broken or silent channel:
    raised) aborts the session and withdraws what was recorded, so no partial backup is published;
    ``keep_partial`` keeps the chunks that arrived (indexed, referenced by no manifest) for a retry to
    reuse (``WriteSession.keep``). ``writer``: the agent's id, whose records are stored as its own
    unverified ones (a sample checked); None: every record is checked before it is stored."""
    scopes = [scopes] if isinstance(scopes, BackupScope) else list(scopes)
    cs = repo.chunks
    for sc in scopes:
        if cs.has_manifest(sc.name):
            raise Conflict(f"backup {sc.name} already exists in the repository")
    srv = _BackupService(cs, scopes, keep_partial, block_size=getattr(repo, "block_size", 0), writer=writer)
    final: dict | None = None
    limit_heap_growth(above=cs.pack_size)
    try:
        with free_heap_kept(RECEIVE_HEAP_TRIM):
            final = _converse(channel, srv.handle, timeout, progress, srv.checks)
        if final.get("ok") and not srv.done:
            final = _error("not_committed", "the agent ended the backup without recording it")
        # what the worker recorded, whatever the agent's answer says (it names the backups and their sizes)
        return {**final, "recorded": dict(srv.recorded)}
    finally:
        srv.close()
        if final is None or not final.get("ok"):
            for name in srv.committed:
                cs.delete_manifest(name)


def serve_restore(repo, channel, scope: ReadScope, *, timeout: float = IDLE_TIMEOUT, progress=None,
                  reader: str | None = None) -> dict:
    """Serve one restore task's reads (only chunks and manifests of ``scope.readable``) until the
    agent's final answer, which is returned. ``reader``: the agent's id (its own unverified records are
    sent as they are; every other writer's are checked first)."""
    reads = _Reads(repo.chunks, scope.readable, reader)

    def handle(op: str, header: dict, payload: memoryview):
        if op == "read":
            return reads.read(payload)
        if op in _READ_OPS:
            return getattr(reads, op)(header)
        raise Refused(f"a restore may only read, not {op!r}")

    try:
        return _converse(channel, handle, timeout, progress)
    finally:
        reads.close()
