"""The bulk stream of a data connection: AES-256-GCM frames on the TCP connection, keyed inside its TLS.

A backup's records cross the link at a gigabyte or more per task, and TLS costs its two ends ~1.2-1.7
CPU seconds per GiB here (OpenSSL's 16 KiB records, each a Python call, and its memory buffers' copies):
on one machine's two shared cores that alone held the agent path to ~75 % of a local backup. Sealed
frames of up to 1 MiB cost ~0.7 s per GiB for both ends (``bench/agent_tls.py``): one AEAD call per
frame, with the ciphertext read and written by the kernel in place.

The connection is authenticated as before: mutual TLS 1.3 with the installation's certificates and the
pinned fingerprint (``tls``, ``client.connect``). Then, still inside TLS, the client offers to seal
(:func:`offer`, a ``seal`` message with 32 random bytes) and the server accepts (:func:`accept`, 32
random bytes of its own). Both derive one key per direction from the two secrets with HKDF-SHA256, and
from then on the connection carries only frames::

    length (4 bytes, big-endian, 1 .. FRAME_BYTES) | AES-256-GCM(plaintext) | tag (16 bytes)

with the length as associated data and a 96-bit nonce counting the frames of that direction from 0. A
frame altered, dropped, replayed or reordered fails its tag (its nonce is not the one expected), and the
connection ends (``ConnectionError``: the channel's ``LinkError``). A connection cut after a frame ends
as any broken connection does: what the peers do never rests on the end of the stream, only on the
answers of the conversation. Every ``REKEY_BYTES`` a direction moves to a new key derived from its last
one (as TLS 1.3's key update, far within AES-GCM's limits), its counter from 0 again. The secrets are never kept: only the keys, in this process's memory for the
life of the connection. TLS sends nothing after the exchange: the agent's context issues no session
tickets (``tls.agent_server_context``), and a byte TLS had buffered beyond the exchange is refused.

An older peer answers the offer with an error; the client then connects again without sealing
(``client.connect``).
"""

from __future__ import annotations

import secrets
import socket
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .channel import Channel, LinkError, RemoteError, error_answer
from .tls import OverSocket, TLSStream

OP = "seal"  # the offer's op, the first message of a connection that seals
SUITE = "aes-256-gcm+hkdf-sha256/1"  # what an offer asks for and an acceptance names
SECRET_BYTES = 32
FRAME_BYTES = 1 << 20  # plaintext per frame at most (a 4 MiB payload: 4 frames, each decrypted in place)
REKEY_BYTES = 1 << 36  # plaintext per key and direction (64 GiB; TLS 1.3 allows AES-GCM ~2^38.5 bytes)
_TAG = 16
_LEN = struct.Struct(">I")
_SALT = b"opencbr agentlink seal v1"


class SealError(ConnectionError):
    """A frame failed its check, or is not a frame: the connection is not to be trusted any more."""


def _derive(key_material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(key_material)


def session_keys(client_secret: bytes, server_secret: bytes) -> tuple[bytes, bytes]:
    """(client -> server key, server -> client key) of a connection."""
    ikm = client_secret + server_secret
    return _derive(ikm, b"client to server"), _derive(ikm, b"server to client")


class _Direction:
    """One direction's key and frame counter, the key renewed every ``rekey_bytes`` of plaintext."""

    def __init__(self, key: bytes, rekey_bytes: int):
        self.key = key
        self.aead = AESGCM(key)
        self.counter = 0
        self.moved = 0
        self.rekey_bytes = rekey_bytes

    def nonce(self, n: int) -> bytes:
        """The next frame's nonce (``n`` plaintext bytes): its number under this key."""
        nonce = self.counter.to_bytes(12, "big")
        self.counter += 1
        self.moved += n
        return nonce

    def after_frame(self) -> None:
        """The next key, once this one moved ``rekey_bytes``: both ends renew at the same frame."""
        if self.moved >= self.rekey_bytes:
            self.key = _derive(self.key, b"next key")
            self.aead = AESGCM(self.key)
            self.counter = self.moved = 0


class SealedStream(OverSocket):
    """The methods of a socket a :class:`~opencbr.agentlink.channel.Channel` uses, over sealed frames.

    ``recv_into`` decrypts a frame straight into the caller's buffer when the caller asks for all of it
    (the channel reads a payload a frame's size at a time); a frame larger than what is asked for is
    decrypted into a buffer of the stream's and handed out from there."""

    def __init__(self, sock: socket.socket, send_key: bytes, receive_key: bytes, *, received: bytes = b"",
                 peercert: bytes | None = None, rekey_bytes: int = REKEY_BYTES):
        self._sock = sock
        self._tx = _Direction(send_key, rekey_bytes)
        self._rx = _Direction(receive_key, rekey_bytes)
        self._out = bytearray(4 + FRAME_BYTES + _TAG)  # one sealed frame being sent
        self._in = bytearray(FRAME_BYTES + _TAG)  # one sealed frame being read
        self._early = memoryview(bytes(received))  # bytes read with the exchange that belong to frames
        # a frame's plaintext the caller has not taken yet: _plain[_plain_at:_plain_len] (one buffer,
        # reused: a fresh one per frame read in parts was zero-filled first, ~1 MiB per message)
        self._plain = bytearray(FRAME_BYTES)
        self._plain_at = self._plain_len = 0
        self._peercert = peercert

    # -- sending ------------------------------------------------------------------------------------
    def sendall(self, data) -> None:
        view = memoryview(data).cast("B")
        out = memoryview(self._out)
        for at in range(0, len(view), FRAME_BYTES):
            part = view[at:at + FRAME_BYTES]
            n = len(part)
            _LEN.pack_into(out, 0, n)
            self._tx.aead.encrypt_into(self._tx.nonce(n), part, out[:4], out[4:4 + n + _TAG])
            self._tx.after_frame()
            self._sock.sendall(out[:4 + n + _TAG])

    # -- receiving ----------------------------------------------------------------------------------
    def _fill(self, view: memoryview) -> bool:
        """``view`` filled from the connection; False at its end before the first byte."""
        got = 0
        if self._early:
            got = min(len(self._early), len(view))
            view[:got] = self._early[:got]
            self._early = self._early[got:]
        while got < len(view):
            k = self._sock.recv_into(view[got:])
            if not k:
                if got:
                    raise SealError("the connection ended inside a frame")
                return False
            got += k
        return True

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        """Up to ``nbytes`` bytes into ``buffer`` (0 at the end of the stream), one frame at most."""
        view = memoryview(buffer).cast("B")
        nbytes = min(nbytes or len(view), len(view))
        if self._plain_at < self._plain_len:
            k = min(nbytes, self._plain_len - self._plain_at)
            view[:k] = memoryview(self._plain)[self._plain_at:self._plain_at + k]
            self._plain_at += k
            return k
        head = bytearray(4)
        if not self._fill(memoryview(head)):
            return 0
        n = _LEN.unpack(head)[0]
        if not 0 < n <= FRAME_BYTES:
            raise SealError(f"not a sealed frame (length {n})")
        sealed = memoryview(self._in)[:n + _TAG]
        if not self._fill(sealed):
            raise SealError("the connection ended inside a frame")
        into = view[:n] if n <= nbytes else None
        try:
            self._rx.aead.decrypt_into(self._rx.nonce(n), sealed, head,
                                       into if into is not None else memoryview(self._plain)[:n])
        except InvalidTag:
            raise SealError("a frame failed its check: altered, replayed or out of order") from None
        self._rx.after_frame()
        if into is not None:
            return n
        view[:nbytes] = memoryview(self._plain)[:nbytes]
        self._plain_at, self._plain_len = nbytes, n
        return nbytes

    def pending(self) -> int:
        """Bytes that have arrived and are not read yet (a frame's plaintext, or bytes of the exchange's)."""
        return self._plain_len - self._plain_at + len(self._early)

    # -- the rest of a socket's methods: OverSocket's ---------------------------------------------------
    def getpeercert(self, binary_form: bool = False):
        return self._peercert if binary_form else None

    def cipher(self):
        return (SUITE, "TLSv1.3 then sealed frames", 256)

    def close(self) -> None:
        """The connection closed, and the frame buffers (3 MiB) let go at once: a channel that ends up in a
        reference cycle would otherwise hold them until Python's next full collection. (A thread still
        in ``sendall`` or ``recv_into`` keeps its own reference to the buffer it uses.)"""
        self._out, self._in, self._plain = bytearray(), bytearray(), bytearray()
        self._plain_at = self._plain_len = 0
        super().close()


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


# -- the exchange, inside TLS ---------------------------------------------------------------------------
def offer(channel: Channel, header: dict | None = None) -> bool:
    """The client's side: offer to seal ``channel`` (a TLS channel just authenticated; ``header``: fields
    the peer's request checks want, as a project). True when sealed; False when the peer declined (an
    older peer: it answered the offer as an unknown request, and may have closed the connection).
    :class:`RemoteError` ``busy`` when the peer answered that it serves as many connections as it may:
    that says nothing of sealing, and a connection without it would be answered the same."""
    mine = new_secret()
    channel.send({**(header or {}), "op": OP, "suite": SUITE}, mine)
    answer, theirs = channel.recv()
    if answer.get("error") == "busy":  # (the peer serves as many connections as it may: it read no offer)
        raise RemoteError("busy", str(answer.get("message") or "the peer is busy; retry"))
    if answer.get("ok") is not True or answer.get("suite") != SUITE:
        return False
    if len(theirs) != SECRET_BYTES:
        raise LinkError("the peer's answer to the seal offer is malformed")
    send_key, receive_key = session_keys(mine, bytes(theirs))
    _switch(channel, send_key, receive_key)
    return True


def accept(channel: Channel, header: dict, payload) -> bool:
    """The server's side: answer an offer (the connection's first message) and seal ``channel``; an offer
    of another suite, or over a connection that is not TLS, is declined (answered as an error)."""
    if header.get("suite") != SUITE or len(payload) != SECRET_BYTES or not isinstance(channel.sock, TLSStream):
        channel.send(error_answer("unsupported", f"this peer seals only with {SUITE}, over TLS"))
        return False
    mine = new_secret()
    channel.send({"ok": True, "suite": SUITE}, mine)
    receive_key, send_key = session_keys(bytes(payload), mine)
    _switch(channel, send_key, receive_key)
    return True


def _switch(channel: Channel, send_key: bytes, receive_key: bytes) -> None:
    tls_stream = channel.sock
    try:
        raw, early = tls_stream.detach()
    except OSError as e:
        raise LinkError(f"cannot seal the connection: {e}") from None
    channel.rewrap(SealedStream(raw, send_key, receive_key, received=early,
                                peercert=tls_stream.getpeercert(binary_form=True)))
