"""services/regions.py: the link to another region's receiver (sealed for a replication's data)."""

from __future__ import annotations

from sqlalchemy import select

from opencbr.agentlink.seal import SealedStream
from opencbr.agentlink.tls import TLSStream
from opencbr.catalog.models import Region
from opencbr.services import regions


def _vaults_request(ctx, link: regions.Link, *, seal: bool) -> tuple[type, dict]:
    header = {"op": "vaults", "source_region": ctx.settings.region, "source_account": "admin", "project_id": ""}
    ch, signed = regions.open_link(link, header, ctx.now().timestamp(), seal=seal)
    with ch:
        ch.send(signed)
        answer, _ = ch.recv(timeout=10)
        return type(ch.sock), answer


def test_a_replications_link_is_sealed_after_tls_and_carries_signed_requests(ctx, linked):
    """The receiver takes the source's offer (agentlink/seal.py) and answers the signed request that
    follows in sealed frames; a link opened without it (a check, the vault list) stays on TLS."""
    dest, proxy = linked
    with ctx.read() as s:
        link = regions.link_of(ctx, s.scalar(select(Region).where(Region.name == "region-b")))
    stream, answer = _vaults_request(ctx, link, seal=True)
    assert stream is SealedStream and answer.get("ok") is True and "vaults" in answer
    stream, answer = _vaults_request(ctx, link, seal=False)
    assert stream is TLSStream and answer.get("ok") is True
