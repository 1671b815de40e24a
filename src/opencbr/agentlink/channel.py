"""A framed, bidirectional message channel over one connection (TLS in production, a socketpair in
tests).

A frame is ``4-byte big-endian header length | header (JSON, UTF-8, <= 1 MiB) | 8-byte big-endian
payload length | payload (<= 256 MiB)``. Headers say what a message is; payloads carry bytes (chunk
records, digests) without encoding them. The conventions on top: the first message of a connection is
a request with an ``op``; an answer ``{"ok": false, "error": code, "message": text}`` is an error
(:class:`RemoteError` from :meth:`Channel.request`).

A channel is used by one thread at a time (an SSL socket must not be read and written concurrently).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time

MAX_HEADER = 1 << 20
MAX_PAYLOAD = 256 << 20
_HLEN = struct.Struct(">I")
_PLEN = struct.Struct(">Q")


#: Payloads at least this big are read into buffers the channel reuses, up to ``POOL_BUFFERS`` of them:
#: a fresh ``bytearray`` per message is zero-filled (and faulted in) before it is read into, which was a
#: tenth of the worker's CPU in an agent's backup (memset and page clearing, ``perf``: bench/README.md).
POOLED = 1 << 20
POOL_BUFFERS = 8
#: ... and at most this big: a buffer is kept for the channel's life, so a larger payload (up to
#: MAX_PAYLOAD, which a peer chooses) would be held by each of its buffers (8 x 256 MiB) after it was
#: used. Messages of the data path are smaller (records merged up to 4 MiB, reads of 16 MiB).
POOL_MAX = 32 << 20


class _Payloads:
    """Reused receive buffers. A buffer is handed out again only once nothing holds a view of the last
    payload read into it (the consumer may keep a message's payload while it works on it: records
    being checked and packed), which is what a ``bytearray`` with exported views refuses to resize."""

    def __init__(self) -> None:
        self._bufs: list[bytearray] = []

    def take(self, n: int) -> memoryview:
        if n < POOLED or n > POOL_MAX:
            return memoryview(bytearray(n))
        spare = None
        for i, b in enumerate(self._bufs):
            if not _exported(b):
                if len(b) >= n:
                    return memoryview(b)[:n]
                spare = i
        b = bytearray(n)
        if len(self._bufs) < POOL_BUFFERS:
            self._bufs.append(b)
        elif spare is not None:  # (a free buffer too small for this one: replaced by it)
            self._bufs[spare] = b
        return memoryview(b)


def _exported(b: bytearray) -> bool:
    """A view of ``b`` exists (it cannot be resized then)."""
    try:
        b.append(0)
    except BufferError:
        return True
    b.pop()
    return False


class LinkError(Exception):
    """The connection broke, timed out, or carried something that is not a frame."""


class RemoteError(Exception):
    """The peer answered with an error."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _TokenBucket:
    """Bytes per second with a one-second burst: ``take(n)`` waits as long as moving n needs. Both
    directions of a channel draw on it (two threads); its rate can change while it is used. A wait
    ends early when ``stop`` is set (the channel closed: a cancelled task stops at once, not after
    the bytes it had started to move at the limit)."""

    def __init__(self, rate: float, stop: threading.Event):
        self.rate = float(rate)
        self.tokens = self.rate
        self.t = time.monotonic()
        self.stop = stop
        self._lock = threading.Lock()

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self.rate = float(rate)
            self.tokens = min(self.tokens, self.rate)  # a lower rate applies at once, no new burst

    def slice(self) -> int:
        """How many bytes to move between two ``take``s: a quarter second's worth (16 KiB at least),
        so no single wait is long and a new rate applies within a quarter second."""
        return max(16 << 10, int(self.rate / 4))

    def take(self, n: int) -> bool:
        """False when the wait was cut short by ``stop``."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.t) * self.rate)
            self.t = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        return not (wait and self.stop.wait(wait))


class Channel:
    def __init__(self, sock: socket.socket, *, timeout: float | None = 60.0):
        self.sock = sock
        self.timeout = timeout
        self.sent_bytes = 0
        self.received_bytes = 0
        self._bucket: _TokenBucket | None = None
        self._closed = False
        self._closing = threading.Event()  # set by close(): ends a bandwidth wait at once
        self._lock = threading.Lock()  # guards misuse: two threads sending at once corrupt frames
        self._payloads = _Payloads()  # (one receiving thread at a time, as for any socket)
        sock.settimeout(timeout)

    def rewrap(self, stream) -> None:
        """Go on over ``stream`` (the same connection, read and written another way: ``seal.py``)."""
        stream.settimeout(self.timeout)
        self.sock = stream

    # -- limits -------------------------------------------------------------------------------------
    @property
    def limit_bytes_per_second(self) -> float | None:
        return None if self._bucket is None else self._bucket.rate

    @limit_bytes_per_second.setter
    def limit_bytes_per_second(self, rate: float | None) -> None:
        """Bytes per second sent and received together (None or 0: no limit); may change mid-transfer."""
        if not rate or rate <= 0:
            self._bucket = None
        elif self._bucket is None:
            self._bucket = _TokenBucket(rate, self._closing)
        else:
            self._bucket.set_rate(rate)

    # -- frames -------------------------------------------------------------------------------------
    def send(self, header: dict, payload=b"") -> None:
        parts = payload if isinstance(payload, list) else [payload]
        head = json.dumps(header, separators=(",", ":")).encode()
        if len(head) > MAX_HEADER:
            raise LinkError(f"message header too large ({len(head)} bytes)")
        size = sum(len(p) for p in parts)
        if size > MAX_PAYLOAD:
            raise LinkError(f"message payload too large ({size} bytes)")
        frame = [_HLEN.pack(len(head)), head, _PLEN.pack(size), *parts]
        total = 12 + len(head) + size
        with self._lock:
            try:
                if self._bucket is not None:
                    self._send_paced([b"".join(frame[:3]), *parts])
                elif size < (256 << 10):
                    self.sock.sendall(b"".join(frame))
                else:
                    self.sock.sendall(b"".join(frame[:3]))
                    for p in parts:
                        self.sock.sendall(p)
            except (OSError, ValueError) as e:
                raise LinkError(f"connection lost while sending: {e}") from None
        self.sent_bytes += total

    def _send_paced(self, frame: list) -> None:  # (the header in one piece: over TLS each is a record)
        """The frame in slices of a quarter second's worth each, the limit's wait before each: a
        cancelled task's close ends the wait, and a lower rate applies, within a quarter second
        whatever the frame's size (waiting for a whole 4 MiB frame at 64 KiB/s took a minute)."""
        for part in frame:
            view = memoryview(part).cast("B")
            at = 0
            while at < len(view):
                bucket = self._bucket
                step = bucket.slice() if bucket is not None else len(view)
                if bucket is not None and not bucket.take(min(step, len(view) - at)):
                    raise LinkError("the channel was closed")
                self.sock.sendall(view[at:at + step])
                at += step

    def _read_exact(self, n: int) -> memoryview:
        view = self._payloads.take(n)
        got = 0
        while got < n:
            bucket = self._bucket
            try:
                k = self.sock.recv_into(view[got:], min(n - got, bucket.slice() if bucket is not None else 1 << 20))
            except socket.timeout:
                raise LinkError("the peer did not answer in time") from None
            except (OSError, ValueError) as e:
                raise LinkError(f"connection lost while receiving: {e}") from None
            if k == 0:
                raise LinkError("the peer closed the connection")
            got += k
            if bucket is not None and not bucket.take(k):  # reading slower slows the sender (TCP's backpressure)
                raise LinkError("the channel was closed")
        return view

    def recv(self, timeout: float | None = -1) -> tuple[dict, memoryview]:
        """The next message. ``timeout`` (seconds, None = wait forever) overrides the channel's for
        this call."""
        if timeout != -1:
            self.sock.settimeout(timeout)
        try:
            hl = _HLEN.unpack(self._read_exact(4))[0]
            if hl > MAX_HEADER:
                raise LinkError(f"message header too large ({hl} bytes): not an OpenCBR peer?")
            try:
                header = json.loads(bytes(self._read_exact(hl)))
            except (ValueError, RecursionError):  # (RecursionError: nested thousands deep)
                raise LinkError("message header is not JSON") from None
            if not isinstance(header, dict):
                raise LinkError("message header is not an object")
            pl = _PLEN.unpack(self._read_exact(8))[0]
            if pl > MAX_PAYLOAD:
                raise LinkError(f"message payload too large ({pl} bytes)")
            payload = self._read_exact(pl) if pl else memoryview(b"")
        finally:
            if timeout != -1:
                self.sock.settimeout(self.timeout)
        self.received_bytes += 12 + hl + pl
        return header, payload

    def readable(self) -> bool:
        """Something has arrived: reading now does not wait for the peer (TLS: decrypted bytes kept,
        or bytes on the socket)."""
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending() > 0:
            return True
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True  # closed: the read says how

    def wait_readable(self, other: socket.socket, timeout: float | None) -> bool:
        """Wait until a message can be read (True) or, before that, ``other`` can (False): a reader
        that also has something to send learns of it while it waits. Nothing from the peer for
        ``timeout`` seconds (None: no limit) is :class:`LinkError`, as in :meth:`recv`."""
        if self.readable():
            return True
        poll = select.poll()
        try:
            poll.register(self.sock, select.POLLIN)
            poll.register(other, select.POLLIN)
            ready = {fd for fd, _ev in poll.poll(None if timeout is None else timeout * 1000)}
            mine = self.sock.fileno()
        except (OSError, ValueError):
            return True  # closed: the read says how
        if not ready:
            raise LinkError("the peer did not answer in time")
        return mine in ready

    def request(self, header: dict, payload=b"", timeout: float | None = -1) -> tuple[dict, memoryview]:
        """Send a message and wait for the answer; an error answer raises :class:`RemoteError`."""
        self.send(header, payload)
        answer, data = self.recv(timeout)
        raise_for_error(answer)
        return answer, data

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`close` was called, ``timeout`` seconds at most: whether it was."""
        return self._closing.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raise_for_error(answer: dict) -> None:
    if answer.get("ok") is False:
        raise RemoteError(str(answer.get("error") or "error"), str(answer.get("message") or ""))


def error_answer(code: str, message: str) -> dict:
    return {"ok": False, "error": code, "message": message}


def channel_pair(timeout: float | None = 60.0) -> tuple[Channel, Channel]:
    """Two connected channels without TLS (tests, and an in-process agent)."""
    a, b = socket.socketpair()
    return Channel(a, timeout=timeout), Channel(b, timeout=timeout)
