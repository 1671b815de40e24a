"""The installation's agent CA: created on first use, kept in the catalog with its keys sealed with the
master key, so that every API, worker and scheduler process on every machine shares it."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencbr.catalog.models import AgentAuthority
from opencbr.providers.agent import link
from opencbr.providers.agent.link import ServiceIdentity
from opencbr.services.context import ServiceContext
from opencbr.services.iam import seal_secret, unseal_secret

#: The one row of ``agent_authority``.
AUTHORITY_ROW = 1
_CACHE_KEY = "agents.identity"


def authority_row(s: Session, ctx: ServiceContext) -> AgentAuthority:
    """The CA row, created now if there is none. Two processes creating it at once both insert; the
    loser's insert fails on the primary key and it reads the winner's (insert, else read)."""
    row = s.get(AgentAuthority, AUTHORITY_ROW)
    if row is not None:
        return row
    ca_cert, ca_key, service_cert, service_key = link.new_authority()
    row = AgentAuthority(id=AUTHORITY_ROW, ca_cert=ca_cert, ca_key_sealed=seal_secret(ctx.master_key, ca_key),
                         service_cert=service_cert, service_key_sealed=seal_secret(ctx.master_key, service_key),
                         created_at=ctx.now())
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError:
        row = s.get(AgentAuthority, AUTHORITY_ROW, populate_existing=True)
    return row


def authority(s: Session, ctx: ServiceContext) -> ServiceIdentity:
    """Who the service is to agents: the CA certificate and the service's client certificate and key."""
    row = authority_row(s, ctx)
    return ServiceIdentity(row.ca_cert, row.service_cert, unseal_secret(ctx.master_key, row.service_key_sealed))


def ca_key(ctx: ServiceContext, row: AgentAuthority) -> str:
    return unseal_secret(ctx.master_key, row.ca_key_sealed)


def service_identity(ctx: ServiceContext) -> ServiceIdentity:
    """``authority`` for a task or the poll, read once per process (its own short transaction)."""
    identity = ctx.caches.get(_CACHE_KEY)
    if identity is None:
        with ctx.tx() as s:
            identity = authority(s, ctx)
        ctx.caches[_CACHE_KEY] = identity
    return identity
