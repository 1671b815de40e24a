"""services/regions.py: the link to another region's receiver (sealed for a replication's data)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from opencbr.agentlink.channel import RemoteError
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


def test_a_busy_receiver_is_said_busy_not_taken_for_one_that_does_not_seal(ctx, linked, caplog):
    """A receiver serving as many connections as it may (8) answers ``busy`` before it reads the offer to
    seal: the replication is told so (RemoteError ``busy``), with no second connection over TLS alone."""
    with ctx.read() as s:
        link = regions.link_of(ctx, s.scalar(select(Region).where(Region.name == "region-b")))
    header = {"op": "vaults", "source_region": ctx.settings.region, "source_account": "admin", "project_id": ""}
    held = [regions.open_link(link, header, ctx.now().timestamp())[0] for _ in range(8)]  # (each waits for a request)
    try:
        time.sleep(0.5)  # (the receiver takes a slot once it has accepted a connection)
        with pytest.raises(RemoteError) as busy:
            regions.open_link(link, header, ctx.now().timestamp(), seal=True)
        assert busy.value.code == "busy" and "does not seal" not in caplog.text
    finally:
        for ch in held:
            ch.close()
    deadline = time.monotonic() + 10  # (the receiver lets the slots go once their connections ended)
    while True:
        try:
            stream, answer = _vaults_request(ctx, link, seal=True)
            break
        except RemoteError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert stream is SealedStream and answer.get("ok") is True
