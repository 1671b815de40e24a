"""Enrolment: the agent gets its certificate from the service and pins the service's CA.

Two ways (docs/agents.md):

- **token** (``cbr agent token`` prints ``ocbr1.<project_id>.<token_id>.<secret>.<ca sha256>``, valid one
  hour, usable once): the agent sends its certificate request to the unsigned route
  ``POST /v3/{project_id}/agents/enrol`` with ``proof`` = HMAC-SHA256(secret, canonical JSON of the
  body without ``proof``); the answer carries a proof made the same way, which the agent checks, and the
  CA, whose SHA-256 must be the token's. The secret itself never crosses the wire, and a man in the middle
  can neither enrol with a token it saw nor slip in its own CA.
- **AK/SK**: ``POST /v3/{project_id}/agents`` (the SDK's register_agent) signed like the SDK signs, with
  the extension fields ``csr`` and ``endpoint`` beside ``agent``. The CA in the answer is checked against
  ``--ca-fingerprint`` when given, else trusted on first use.

*Canonical JSON*: ``json.dumps(obj, sort_keys=True, separators=(",", ":"))`` (ASCII: other characters
escaped), as bytes. *The HMAC key*: the token's fourth field (``<secret>``, base64url text) as ASCII bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from opencbr.agent import VERSION, inventory
from opencbr.agent.config import AgentConfig
from opencbr.agentlink import certs
from opencbr.domain import signing


class EnrolError(Exception):
    """Enrolment failed; the message says why (nothing was written)."""


@dataclass(frozen=True)
class Token:
    project_id: str
    token_id: str
    secret: bytes   # the HMAC key: the token's secret field, as it is written (ASCII)
    ca_sha256: str  # hex


def parse_token(text: str) -> Token:
    parts = text.strip().split(".")
    if len(parts) != 5 or parts[0] != "ocbr1" or not all(parts[1:]):
        raise EnrolError("not an enrolment token (expected ocbr1.<project>.<id>.<secret>.<ca hash>)")
    try:
        base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))
        secret = parts[3].encode("ascii")
    except ValueError:
        raise EnrolError("the token's secret is not base64url") from None
    return Token(parts[1], parts[2], secret, parts[4].lower().removeprefix("sha256:"))


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii")


def proof(secret: bytes, obj: dict) -> str:
    return hmac.new(secret, canonical({k: v for k, v in obj.items() if k != "proof"}), hashlib.sha256).hexdigest()


def http_json(method: str, url: str, body: dict | None, headers: dict | None = None, timeout: float = 30.0,
              data: bytes | None = None) -> dict:
    """One JSON request (no proxy from the environment: the API is the operator's own service).
    ``data``: the exact body bytes (when they were signed), else ``body`` as JSON."""
    if data is None:
        data = b"" if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data or None, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")
        try:
            err = json.loads(text)
            text = f"{err.get('error_code', '')} {err.get('error_msg', '')}".strip() or text
        except ValueError:
            pass
        raise EnrolError(f"the service refused ({e.code}): {text}") from None
    except (urllib.error.URLError, OSError) as e:
        raise EnrolError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise EnrolError(f"{url} answered something that is not JSON") from None


def agent_fields(agent_id: str, api_host: str | None, nickname: str = "") -> dict:
    """The SDK's register_agent fields describing this host."""
    h = inventory.host(api_host)
    fields = {"agent_id": agent_id, "host_name": h["host_name"], "host_ip": h["host_ip"], "host_os": h["host_os"],
              "agent_version": VERSION, "agent_type": "native"}
    if nickname:
        fields["host_nickname"] = nickname
    return fields


def _check_certificate(cert_pem: str, ca_pem: str, key_pem: str, agent_id: str) -> None:
    """The certificate is ours (our key, our agent_id) and issued by the CA we pin."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        if hasattr(cert, "verify_directly_issued_by"):
            cert.verify_directly_issued_by(ca)
        else:  # cryptography < 40 (a distribution's python3-cryptography): the CA is EC P-256 (agentlink.certs)
            from cryptography.hazmat.primitives.asymmetric import ec

            if cert.issuer != ca.subject:
                raise ValueError("the issuer is not the CA")
            ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                   ec.ECDSA(cert.signature_hash_algorithm))
    except Exception as e:  # noqa: BLE001 - cryptography raises several kinds (InvalidSignature, ValueError, ...)
        raise EnrolError(f"the certificate the service sent is not issued by its CA: {e}") from None
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise EnrolError("the certificate the service sent is not for this agent's key")
    if certs.common_name(cert_pem) != agent_id:
        raise EnrolError(f"the certificate names {certs.common_name(cert_pem)!r}, not this agent ({agent_id})")


def _ca_hash(ca_pem: str) -> str:
    return certs.fingerprint(ca_pem).removeprefix("sha256:")


def _base(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EnrolError(f"--endpoint must be the API's URL (http(s)://host:port), not {endpoint!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def with_token(endpoint: str, token_text: str, *, advertise: str, nickname: str = "") -> AgentConfig:
    """Enrol with a token; the configuration to save (not saved here)."""
    base, token = _base(endpoint), parse_token(token_text)
    agent_id = str(uuid.uuid4())
    key_pem, csr_pem = certs.new_key_and_csr(agent_id)
    body = {"token_id": token.token_id, "agent": agent_fields(agent_id, urlsplit(base).hostname, nickname),
            "endpoint": advertise, "csr": csr_pem}
    body["proof"] = proof(token.secret, body)
    answer = http_json("POST", f"{base}/v3/{token.project_id}/agents/enrol", body)
    if not hmac.compare_digest(str(answer.get("proof", "")), proof(token.secret, answer)):
        raise EnrolError("the answer's proof is wrong: it does not come from the service that made the token")
    cert_pem, ca_pem = answer.get("certificate") or "", answer.get("ca_certificate") or ""
    if not cert_pem or not ca_pem:
        raise EnrolError("the service's answer has no certificate")
    if not hmac.compare_digest(_ca_hash(ca_pem), token.ca_sha256):
        raise EnrolError("the service's CA is not the one the token names: refused")
    agent_id = (answer.get("agent") or {}).get("agent_id") or agent_id
    _check_certificate(cert_pem, ca_pem, key_pem, agent_id)
    return AgentConfig(agent_id=agent_id, project_id=token.project_id, api_endpoint=base, advertise=advertise,
                       key_pem=key_pem, cert_pem=cert_pem, ca_pem=ca_pem)


def with_keys(endpoint: str, project_id: str, ak: str, sk: str, *, advertise: str, ca_fingerprint: str = "",
              nickname: str = "", agent_id: str = "") -> AgentConfig:
    """Enrol with the project's AK/SK (register_agent with a CSR). ``agent_id``: enrol an agent
    registered before without a certificate."""
    base = _base(endpoint)
    registered_before, agent_id = bool(agent_id), agent_id or str(uuid.uuid4())
    key_pem, csr_pem = certs.new_key_and_csr(agent_id)
    body = {"agent": agent_fields(agent_id, urlsplit(base).hostname, nickname), "csr": csr_pem, "endpoint": advertise}
    path = f"/v3/{project_id}/agents"

    def signed(method: str, route: str, data: bytes) -> dict:
        headers = {"Content-Type": "application/json;charset=utf-8", "Host": urlsplit(base).netloc,
                   "X-Project-Id": project_id}
        return signing.sign_headers(method, urlsplit(base).path + route, "", headers, data, ak, sk)

    data = json.dumps(body).encode()
    answer = (http_json("POST", base + path, body, signed("POST", path, data), data=data) or {}).get("agent") or {}
    agent_id = answer.get("agent_id") or agent_id
    try:
        cert_pem, ca_pem = answer.get("certificate") or "", answer.get("ca_certificate") or ""
        if not cert_pem or not ca_pem:
            raise EnrolError("the service registered the agent but sent no certificate (does it know agents' CSRs?)")
        want = ca_fingerprint.lower().removeprefix("sha256:")
        if want and not hmac.compare_digest(_ca_hash(ca_pem), want):
            raise EnrolError(f"the service's CA is sha256:{_ca_hash(ca_pem)}, not the --ca-fingerprint given: refused")
        _check_certificate(cert_pem, ca_pem, key_pem, agent_id)
    except EnrolError as e:
        # register_agent created the agent before its answer could be checked: remove it again (the
        # service would otherwise list an enrolled agent whose key is gone; unregister_agent, signed)
        if registered_before:  # (its record, paths included, is the user's: not removed from here)
            raise EnrolError(f"{e}; the agent {agent_id} now holds a certificate whose key this host dropped: "
                             "unregister it there (cbr agent unregister) and register it again") from None
        gone = f"{path}/{agent_id}"
        try:
            http_json("DELETE", base + gone, None, signed("DELETE", gone, b""), data=b"")
        except EnrolError as cleanup:
            raise EnrolError(f"{e}; the agent {agent_id} it registered could not be removed ({cleanup}): "
                             "unregister it there (cbr agent unregister)") from None
        raise EnrolError(f"{e} (the agent {agent_id} it registered was removed again)") from None
    return AgentConfig(agent_id=agent_id, project_id=project_id, api_endpoint=base, advertise=advertise,
                       key_pem=key_pem, cert_pem=cert_pem, ca_pem=ca_pem)
