"""TLS contexts for both ends of an agent connection: TLS 1.3 only, each side presents a certificate
from the installation's CA and requires one from the other (mutual authentication). Host names are not
checked: peers are identified by the certificate's common name and, on the service side, by the
fingerprint pinned at enrolment (``client.connect``)."""

from __future__ import annotations

import os
import ssl
import tempfile

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
    return _base(ssl.Purpose.CLIENT_AUTH, cert_pem, key_pem, ca_pem)


def service_client_context(cert_pem: str, key_pem: str, ca_pem: str) -> ssl.SSLContext:
    """The service's side: presents its client certificate, requires the agent's from ``ca_pem``."""
    return _base(ssl.Purpose.SERVER_AUTH, cert_pem, key_pem, ca_pem)
