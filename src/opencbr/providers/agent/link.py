"""The service's side of the link to an agent: who the service is (:class:`ServiceIdentity`), where an
agent is and which certificate it must show (:class:`AgentAddress`), and one control call to it
(:func:`call`) over a mutually authenticated TLS channel (:func:`open_channel`).

The agent is authenticated twice: its certificate must chain to the installation's agent CA and carry
``CN = agent_id``, and its fingerprint must be the one pinned at enrolment (a certificate the CA issued
to another agent, or to a revoked one, is refused). ``agentlink``'s ``LinkError`` (transport broken,
timeout, wrong peer) and ``RemoteError`` (the agent answered ``ok: false``) reach the caller unchanged;
the services turn them into CBR errors that name the agent.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

from opencbr.agentlink import certs, client, tls
from opencbr.agentlink.channel import Channel, LinkError, RemoteError

__all__ = ["AgentAddress", "Channel", "LinkError", "RemoteError", "ServiceIdentity", "call", "ca_digest",
           "fingerprint", "new_authority", "open_channel", "sign_agent_csr"]


@dataclass(frozen=True)
class ServiceIdentity:
    """The installation's agent CA certificate and the service's client certificate and key (PEM)."""

    ca_cert: str
    service_cert: str
    service_key: str


@dataclass(frozen=True)
class AgentAddress:
    """An enrolled agent: ``endpoint`` is ``host:port``, ``fingerprint`` its pinned certificate's
    ``sha256:<hex>``; every request to it carries ``project_id`` (it serves that project only)."""

    agent_id: str
    project_id: str
    endpoint: str
    fingerprint: str


_contexts: dict[ServiceIdentity, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _client_context(identity: ServiceIdentity) -> ssl.SSLContext:
    """One SSL context per identity per process (building one parses keys; contexts are thread-safe)."""
    with _contexts_lock:
        context = _contexts.get(identity)
        if context is None:
            context = tls.service_client_context(identity.service_cert, identity.service_key, identity.ca_cert)
            _contexts.clear()  # a new identity replaces the old one: keep one
            _contexts[identity] = context
        return context


def open_channel(identity: ServiceIdentity, address: AgentAddress, timeout: float = 10, *,
                 seal: bool = False) -> Channel:
    """A TLS channel to the agent, its certificate checked (CA, CN = agent_id, pinned fingerprint).
    ``seal``: a data task's channel, carried on in sealed frames once authenticated (agentlink/seal.py:
    its bulk costs half the CPU of TLS); an agent too old to seal is connected to again, over TLS."""
    return client.connect(address.endpoint, _client_context(identity), expect_common_name=address.agent_id,
                          expect_fingerprint=address.fingerprint, timeout=timeout,
                          seal={"project_id": address.project_id} if seal else None)


#: A request of ``call`` (connection, TLS handshake, request and answer) ends this many times its
#: ``timeout`` after it began, whatever the agent does: the timeout is per read, and an agent answering
#: the heartbeat a byte at a time held its poll thread, and so the poll of every other agent (the next
#: round waits for the last answer), until they all showed offline. Twice the timeout keeps an agent that
#: answers every poll online (its answers are at most ``agent_poll_seconds`` + 2 x the wait apart, within
#: the three heartbeats of services/agents/state.py).
CALL_WITHIN = 2


def call(identity: ServiceIdentity, address: AgentAddress, op: str, *, timeout: float = 10, **args) -> dict:
    """One request (``op`` with ``args``, scoped to the agent's project) and its answer's header, within
    ``CALL_WITHIN * timeout`` seconds in all (else ``LinkError``)."""
    within = CALL_WITHIN * timeout
    channel = client.connect(address.endpoint, _client_context(identity), expect_common_name=address.agent_id,
                             expect_fingerprint=address.fingerprint, timeout=timeout, within=within)
    try:
        header, _ = channel.request({"op": op, "project_id": address.project_id, **args}, timeout=timeout)
        return header
    except LinkError:
        if channel.cutoff.fired:
            raise LinkError(f"the agent did not answer within {within:g} s") from None
        raise
    finally:
        channel.cutoff.cancel()
        channel.close()


# ------------------------------------------------------------------------------------ certificates
def new_authority() -> tuple[str, str, str, str]:
    """A new agent CA and the service's client certificate from it:
    ``(ca_cert, ca_key, service_cert, service_key)``, PEM."""
    ca_cert, ca_key = certs.new_authority()
    service_cert, service_key = certs.issue(ca_cert, ca_key, tls.SERVICE_CN, server=False, client=True)
    return ca_cert, ca_key, service_cert, service_key


def sign_agent_csr(ca_cert: str, ca_key: str, csr_pem: str, agent_id: str) -> str:
    """The agent's server certificate (``CN = agent_id``, whatever the CSR asked for)."""
    return certs.sign_csr(ca_cert, ca_key, csr_pem, common_name=agent_id, server=True, client=False)


def fingerprint(cert_pem: str) -> str:
    """``sha256:<hex>`` of the certificate's DER."""
    return certs.fingerprint(cert_pem)


def ca_digest(ca_cert: str) -> str:
    """The CA certificate's SHA-256 (hex, no prefix), as an enrolment token carries it."""
    return fingerprint(ca_cert).split(":", 1)[1]
