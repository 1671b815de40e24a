"""Regions: other OpenCBR installations this one replicates into (source side), and the link credentials
this one issued to installations that replicate into it (destination side).

The link (docs/replication.md): the destination's operator runs ``cbr admin region credential NAME``,
which prints a token ``ocbr-region1.<credential id>.<secret>.<receiver certificate sha256>``; the source's
operator runs ``cbr admin region add NAME --endpoint HOST:PORT --credential TOKEN``. The source then
connects to the destination's replication receiver over TLS 1.3, pins the receiver's certificate (the
hash in the token), and proves it holds the secret with an HMAC over each request (the secret itself
never crosses the wire). A credential allows replication traffic only, into projects of the account of
the same name (or the one its ``account_map`` names).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencbr.agentlink import certs, client, tls
from opencbr.agentlink.channel import Channel
from opencbr.catalog.models import ReceiverIdentity, Region, RegionCredential
from opencbr.domain.errors import InvalidParameter, NotFound, StateConflict, Unauthorized
from opencbr.services.context import ServiceContext
from opencbr.services.iam import seal_secret, unseal_secret

TOKEN_PREFIX = "ocbr-region1"
RECEIVER_NAME = "OpenCBR replication receiver"
_IDENTITY_ROW = 1
#: How far a request's clock may be from the receiver's (seconds): requests are also inside TLS.
MAX_SKEW = 900


# ------------------------------------------------------------------------------------ receiver identity
def receiver_identity(s: Session, ctx: ServiceContext) -> tuple[str, str]:
    """The receiver's (certificate PEM, key PEM), made on first use (a self-signed certificate: the
    source pins its hash, no CA is involved)."""
    row = s.get(ReceiverIdentity, _IDENTITY_ROW)
    if row is None:
        cert, key = certs.new_authority(RECEIVER_NAME)
        row = ReceiverIdentity(id=_IDENTITY_ROW, cert=cert, key_sealed=seal_secret(ctx.master_key, key),
                               created_at=ctx.now())
        try:
            with s.begin_nested():
                s.add(row)
        except IntegrityError:
            row = s.get(ReceiverIdentity, _IDENTITY_ROW, populate_existing=True)
    return row.cert, unseal_secret(ctx.master_key, row.key_sealed)


def receiver_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """TLS 1.3; the peer is authenticated by its HMAC proof (a region credential), not a certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_NONE
    ctx.num_tickets = 0  # no session is resumed; after a seal exchange TLS sends nothing (agentlink/seal.py)
    tls._load_chain(ctx, cert_pem, key_pem)
    return ctx


def _client_context() -> ssl.SSLContext:
    """The receiver's certificate is pinned by hash after the handshake (``client.connect``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ------------------------------------------------------------------------------------ credentials (destination)
@dataclass(frozen=True)
class IssuedCredential:
    id: str
    token: str
    fingerprint: str


def issue_credential(s: Session, ctx: ServiceContext, name: str, account_map: dict | None = None) -> IssuedCredential:
    """A new link credential for the source region ``name`` (shown once: the secret is kept sealed)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise InvalidParameter("a region credential needs the source region's name (1-64 characters)")
    amap = {str(k): str(v) for k, v in (account_map or {}).items()}
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    row = RegionCredential(name=name.strip(), secret_sealed=seal_secret(ctx.master_key, secret), account_map=amap,
                           created_at=ctx.now())
    s.add(row)
    s.flush()
    cert, _key = receiver_identity(s, ctx)
    fp = certs.fingerprint(cert).split(":", 1)[1]
    return IssuedCredential(row.id, f"{TOKEN_PREFIX}.{row.id}.{secret}.{fp}", "sha256:" + fp)


def list_credentials(s: Session) -> list[RegionCredential]:
    return list(s.scalars(select(RegionCredential).order_by(RegionCredential.created_at)))


def revoke_credential(s: Session, ctx: ServiceContext, credential_id: str) -> None:
    row = s.get(RegionCredential, credential_id)
    if row is None:
        raise NotFound(f"region credential {credential_id[:64]} does not exist")
    row.revoked_at = row.revoked_at or ctx.now()


def check_request(s: Session, ctx: ServiceContext, header: dict) -> RegionCredential:
    """The credential a request proves it holds; Unauthorized when unknown, revoked, stale or forged."""
    cred = s.get(RegionCredential, str(header.get("credential_id", ""))[:36])
    if cred is None or cred.revoked_at is not None:
        raise Unauthorized("the region link credential is unknown or was revoked on the destination",
                           code="OpenCBR.RegionLink")
    when = header.get("time")
    if not isinstance(when, (int, float)) or abs(ctx.now().timestamp() - when) > MAX_SKEW:
        raise Unauthorized("the replication request's time is too far from the destination's clock",
                           code="OpenCBR.RegionLink")
    want = proof(unseal_secret(ctx.master_key, cred.secret_sealed), header)
    if not hmac.compare_digest(want, str(header.get("proof", ""))):
        raise Unauthorized("the replication request's proof does not match the link credential",
                           code="OpenCBR.RegionLink")
    return cred


def proof(secret: str, header: dict) -> str:
    body = {k: v for k, v in header.items() if k != "proof"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(secret.encode(), canon, hashlib.sha256).hexdigest()


def mapped_account(cred: RegionCredential, source_account: str) -> str:
    """The account here that a source account's tenants replicate into."""
    return (cred.account_map or {}).get(source_account, source_account)


# ------------------------------------------------------------------------------------ links (source)
def add_region(s: Session, ctx: ServiceContext, name: object, endpoint: object, token: object) -> Region:
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise InvalidParameter("a region needs a name (1-64 characters)")
    if not isinstance(endpoint, str):
        raise InvalidParameter("the destination's replication endpoint (host:port) is required")
    try:
        client.split_endpoint(endpoint)
    except Exception:
        raise InvalidParameter(f"not a host:port endpoint: {endpoint[:100]!r}") from None
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX or len(parts[3]) != 64:
        raise InvalidParameter(f"not a region link credential (expected {TOKEN_PREFIX}.<id>.<secret>.<sha256>)")
    if name == ctx.settings.region:
        raise InvalidParameter(f"{name} is this installation's own region")
    if s.scalar(select(Region.id).where(Region.name == name)) is not None:
        raise StateConflict(f"region {name} is linked already; remove it first", code="OpenCBR.RegionExists")
    row = Region(name=name.strip(), endpoint=endpoint, credential_id=parts[1],
                 secret_sealed=seal_secret(ctx.master_key, parts[2]), fingerprint="sha256:" + parts[3],
                 created_at=ctx.now())
    s.add(row)
    s.flush()
    return row


def list_regions(s: Session) -> list[Region]:
    return list(s.scalars(select(Region).order_by(Region.name)))


def remove_region(s: Session, name: str) -> None:
    row = s.scalar(select(Region).where(Region.name == name))
    if row is None:
        raise NotFound(f"region {name[:64]} is not linked")
    s.delete(row)


def region(s: Session, name: object) -> Region:
    row = s.scalar(select(Region).where(Region.name == str(name)[:64]))
    if row is None:
        raise InvalidParameter(f"destination_region {str(name)[:64]!r} is not a linked region; the linked regions "
                               f"are listed by show_replication_capabilities", code="BackupService.6952")
    return row


@dataclass(frozen=True)
class Link:
    name: str
    endpoint: str
    credential_id: str
    secret: str
    fingerprint: str


def link_of(ctx: ServiceContext, row: Region) -> Link:
    return Link(row.name, row.endpoint, row.credential_id, unseal_secret(ctx.master_key, row.secret_sealed),
                row.fingerprint)


def open_link(link: Link, header: dict, now: float, timeout: float = 10.0, *,
              seal: bool = False) -> tuple[Channel, dict]:
    """Connect to the destination's receiver, send the signed request; (channel, the signed header).
    ``seal``: a replication's channel, carried on in sealed frames once the receiver is authenticated
    (agentlink/seal.py; a receiver too old to seal is connected to again, over TLS)."""
    ch = client.connect(link.endpoint, _client_context(), expect_common_name=None,
                        expect_fingerprint=link.fingerprint, timeout=timeout, seal={} if seal else None)
    signed = dict(header, credential_id=link.credential_id, time=now, nonce=secrets.token_hex(16))
    signed["proof"] = proof(link.secret, signed)
    return ch, signed


# ------------------------------------------------------------------------------------ the receiver's server
def receiver_server(ctx: ServiceContext, handle) -> "object":
    """The replication receiver's TLS server on ``replication_listen`` (bound, not started); OSError when
    the address is taken (another worker process of this machine serves it)."""
    from opencbr.agentlink.server import Server

    host, port = client.split_endpoint(ctx.settings.replication_listen)
    with ctx.tx() as s:
        cert, key = receiver_identity(s, ctx)
    return Server((host, port), receiver_context(cert, key),
                  lambda ch, request, _payload, _peer: handle(ctx, ch, request), max_connections=8)
