"""TLS contexts for both ends of an agent connection: TLS 1.3 only, each side presents a certificate
from the installation's CA and requires one from the other (mutual authentication). Host names are not
checked: peers are identified by the certificate's common name and, on the service side, by the
fingerprint pinned at enrolment (``client.connect``)."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import time

#: The common name of the service's client certificate; an agent serves no other.
SERVICE_CN = "opencbr-service"


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # ssl reads a key only from a file: a private directory (in memory where /dev/shm exists) that is
    # gone again before this returns.
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="opencbr-tls-", dir=base)
    path = os.path.join(d, "chain.pem")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cert_pem.strip() + "\n" + key_pem.strip() + "\n")
        ctx.load_cert_chain(path)
    finally:
        try:
            os.unlink(path)
        finally:
            os.rmdir(d)


def _base(purpose: int, cert_pem: str, key_pem: str, ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem)
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def agent_server_context(cert_pem: str, key_pem: str, ca_pem: str) -> ssl.SSLContext:
    """The agent's side: serves with its certificate, requires a client certificate from ``ca_pem``
    (the server checks the client's common name is :data:`SERVICE_CN`)."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH, cert_pem, key_pem, ca_pem)
    ctx.num_tickets = 0  # no session is resumed; and after a seal exchange TLS must send nothing (seal.py)
    return ctx


def service_client_context(cert_pem: str, key_pem: str, ca_pem: str) -> ssl.SSLContext:
    """The service's side: presents its client certificate, requires the agent's from ``ca_pem``."""
    return _base(ssl.Purpose.SERVER_AUTH, cert_pem, key_pem, ca_pem)


class OverSocket:
    """The methods of a socket a channel uses besides reading and writing, of a stream over ``_sock``."""

    _sock: socket.socket

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


class TLSStream(OverSocket):
    """A TLS connection over a connected socket, with the records buffered in memory: the methods of
    ``ssl.SSLSocket`` a :class:`~opencbr.agentlink.channel.Channel` uses, in far fewer system calls.

    ``SSLSocket`` writes each TLS record (16 KiB of data at most) with a system call of its own, and
    over ``TCP_NODELAY`` each became a TCP segment; it reads each record in two calls (header, body).
    A backup moves gigabytes this way. Here the records are encrypted into a memory buffer and sent
    ``IO_BYTES`` at a time, and read the same way (``ssl.MemoryBIO``, as asyncio's TLS does): the
    sending end's CPU per GiB 0.78 -> 0.68 s, the receiving end's unchanged (``bench/agent_tls.py``)."""

    IO_BYTES = 256 << 10

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool):
        self._sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=server_side)
        self._scratch = bytearray(self.IO_BYTES)  # (reused: a fresh buffer per read cost its page faults)
        self._scratch_view = memoryview(self._scratch)

    def do_handshake(self, deadline: float | None = None) -> None:
        """The handshake, within the socket's timeout per read (``socket.timeout``, ``ssl.SSLError``,
        ``OSError`` as ``wrap_socket``); with ``deadline`` (``time.monotonic()``), all of it by then
        (a peer that sends a byte now and then cannot stretch it: ``socket.timeout``). The socket's
        timeout is left as it was found."""
        timeout = self._sock.gettimeout()
        try:
            while True:
                try:
                    self._ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._until(deadline, timeout)
                    self._flush()
                    self._until(deadline, timeout)
                    if not self._fill():
                        raise ConnectionResetError("the peer closed the connection during the TLS handshake") from None
            self._until(deadline, timeout)
            self._flush()
        finally:
            if deadline is not None:
                self._sock.settimeout(timeout)

    def _until(self, deadline: float | None, timeout: float | None) -> None:
        """The socket's timeout for the next step of a handshake due by ``deadline``."""
        if deadline is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the TLS handshake took too long")
        self._sock.settimeout(left if timeout is None else min(left, timeout))

    def _flush(self) -> None:
        if self._out.pending:
            self._sock.sendall(self._out.read())

    def _fill(self) -> bool:
        """Read what has arrived (waiting for it): False at the end of the stream."""
        n = self._sock.recv_into(self._scratch)
        if not n:
            return False
        self._in.write(self._scratch_view[:n])
        return True

    def sendall(self, data) -> None:
        view = memoryview(data).cast("B")
        for at in range(0, len(view), self.IO_BYTES):
            self._ssl.write(view[at:at + self.IO_BYTES])
            self._flush()

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        """Up to ``nbytes`` of data into ``buffer``, waiting only for the first byte: what has arrived
        besides (the records read ahead) is taken too; 0 at the end of the stream."""
        view = memoryview(buffer).cast("B")
        nbytes = min(nbytes or len(view), len(view))
        got = 0
        while got < nbytes:
            try:
                got += self._ssl.read(nbytes - got, view[got:])
            except ssl.SSLWantReadError:
                if got or not self._fill():
                    break
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                break
        self._flush()  # (what reading made TLS answer: a key update)
        return got

    def pending(self) -> int:
        """Bytes that have arrived and are not read yet (decrypted, or still encrypted in the buffer)."""
        return self._ssl.pending() + self._in.pending

    def detach(self) -> tuple[socket.socket, bytes]:
        """The connection, for the sealed frames that follow a seal exchange (``seal.py``), and the bytes
        read from it beyond the last TLS record (the frames' first). Data TLS decrypted and nobody read
        would be lost: that is refused."""
        if self._ssl.pending():
            raise ssl.SSLError("TLS data is pending where the sealed frames begin")
        self._flush()
        return self._sock, self._in.read()

    def getpeercert(self, binary_form: bool = False):
        return self._ssl.getpeercert(binary_form)

    def cipher(self):
        return self._ssl.cipher()


def wrap(sock: socket.socket, context: ssl.SSLContext, *, server_side: bool,
         deadline: float | None = None) -> TLSStream:
    """``sock`` after a completed TLS handshake (its timeout applies to each of the handshake's reads;
    ``deadline``, a ``time.monotonic()`` time, to the whole handshake)."""
    stream = TLSStream(sock, context, server_side=server_side)
    stream.do_handshake(deadline)
    return stream
