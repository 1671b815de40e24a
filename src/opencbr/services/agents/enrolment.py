"""Enrolment with a short-lived token (``cbr agent token``), and the commands that install an agent.

A token is ``ocbr1.<project_id>.<token_id>.<secret>.<ca sha256 hex>``: valid for one hour, for one
enrolment. The agent proves it holds the secret without sending it: its request carries
``proof = HMAC-SHA256(secret, canonical JSON of the request without proof)``, and the answer carries
the same over the answer, so the agent knows the certificate it receives comes from the service that
issued the token (and checks the CA against the token's digest). Canonical JSON is
``json.dumps(value, sort_keys=True, separators=(",", ":"))`` (ASCII, no spaces), and the HMAC key is the
token's ``<secret>`` field as ASCII bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

import opencbr.services.agents.ca as A
import opencbr.services.agents.registry as registry
from opencbr.agentlink import package
from opencbr.catalog.models import Agent, AgentToken
from opencbr.domain.errors import QuotaExceeded, Unauthorized
from opencbr.providers.agent import link
from opencbr.services.context import ServiceContext
from opencbr.services.iam import seal_secret, unseal_secret
from opencbr.services.principal import Principal

TOKEN_PREFIX = "ocbr1"
TOKEN_LIFETIME = timedelta(hours=1)
#: Unused, unexpired tokens a project may hold at once.
MAX_OPEN_TOKENS = 100
#: The agent's default port.
AGENT_PORT = 7443
_BAD_TOKEN = "APIGW.0310"


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def proof(secret: str, value: dict) -> str:
    """HMAC-SHA256 (hex) of ``value`` without its ``proof`` field, keyed by the token's secret."""
    body = {k: v for k, v in value.items() if k != "proof"}
    return hmac.new(secret.encode(), canonical(body), hashlib.sha256).hexdigest()


@dataclass
class NewToken:
    token: str
    token_id: str
    expires_at: datetime


def create_token(s: Session, ctx: ServiceContext, p: Principal) -> NewToken:
    """A single-use enrolment token for the caller's project (member, admin or backup-only role: an
    agent enrolled with it can make backups, never delete them; docs/roles.md)."""
    p.require_backup()
    now = ctx.now()
    open_tokens = s.scalar(select(func.count()).select_from(AgentToken).where(
        AgentToken.project_id == p.project_id, AgentToken.used_at.is_(None), AgentToken.expires_at > now)) or 0
    if open_tokens >= MAX_OPEN_TOKENS:
        raise QuotaExceeded(f"a project has at most {MAX_OPEN_TOKENS} unused enrolment tokens at a time")
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    row = AgentToken(project_id=p.project_id, user_id=p.user_id, secret_sealed=seal_secret(ctx.master_key, secret),
                     expires_at=now + TOKEN_LIFETIME, created_at=now)
    s.add(row)
    s.flush()
    digest = link.ca_digest(A.authority_row(s, ctx).ca_cert)
    return NewToken(f"{TOKEN_PREFIX}.{p.project_id}.{row.id}.{secret}.{digest}", row.id, row.expires_at)


@dataclass
class Enrolment:
    agent: Agent
    certificate: str
    ca_certificate: str
    secret: str


def enrol(s: Session, ctx: ServiceContext, project_id: str, request: dict, *, source_ip: str = "") -> Enrolment:
    """An agent enrols with a token: the proof is checked first (a caller without the secret learns
    nothing of the token), then that the token is this project's, unused and unexpired; it is used up
    in the same transaction that creates the agent and signs its CSR."""
    token_id = request.get("token_id")
    token = s.get(AgentToken, token_id) if isinstance(token_id, str) and len(token_id) <= 64 else None
    if token is None or token.project_id != project_id:
        raise Unauthorized("unknown enrolment token; make one with cbr agent token", code=_BAD_TOKEN)
    secret = unseal_secret(ctx.master_key, token.secret_sealed)
    given = request.get("proof")
    if not isinstance(given, str) or not hmac.compare_digest(given, proof(secret, request)):
        raise Unauthorized("the enrolment request's proof does not match the token", code=_BAD_TOKEN)
    now = ctx.now()
    if token.used_at is not None:
        raise Unauthorized("this enrolment token was already used; make a new one with cbr agent token",
                           code=_BAD_TOKEN)
    if token.expires_at <= now:
        raise Unauthorized("this enrolment token has expired; make a new one with cbr agent token", code=_BAD_TOKEN)
    fields = request.get("agent") if isinstance(request.get("agent"), dict) else {}
    agent, certificate = registry.register(s, ctx, project_id, fields, csr=request.get("csr") or "",
                                           endpoint=request.get("endpoint") or "", source_ip=source_ip)
    taken = s.execute(update(AgentToken).where(AgentToken.id == token.id, AgentToken.used_at.is_(None))
                      .values(used_at=now, agent_id=agent.id))
    if taken.rowcount != 1:  # another enrolment used it meanwhile
        raise Unauthorized("this enrolment token was already used", code=_BAD_TOKEN)
    return Enrolment(agent, certificate or "", registry.ca_certificate(s, ctx), secret)


def install_commands(ctx: ServiceContext, p: Principal, token: str | None = None, *,
                     request_url: str = "", ca_fingerprint: str = "") -> dict:
    """The commands that install an agent on a Linux host and enrol it into the caller's project:
    ``install`` does it all (the service serves the script and the agent's package, docs/agents.md);
    ``package``, ``register`` and ``start`` are the same steps by hand. The API's address is the
    setting ``public_url``, else the one the caller reached it at (``request_url``);
    ``address_warning`` says when that address is this machine's loopback, which no host can use.
    ``ca_fingerprint``: the agents' CA (``ca_fingerprint``), for an enrolment with AK/SK."""
    url = ctx.settings.public_url.rstrip("/") or request_url.rstrip("/") or ctx.settings.url
    token_text = token or "<TOKEN>"
    # an agent without roots opens no directory and no image file (docs/agents.md, "Roots"): the user
    # chooses them; left unfilled, `<DIRECTORY>` ends the line, where the shell refuses it as a syntax
    # error before anything runs (the token is not used up)
    enrol_args = f"--token {token_text} --root {ROOT_PLACEHOLDER}"
    # By hand, the same as the script: a virtual environment in the script's prefix (a distribution's
    # Python refuses `pip install` into itself, PEP 668), the wheel under its own file name (pip refuses
    # any other), and the unit the script would write (its ExecStart is that prefix's opencbr-agent).
    agent = f"{package.PREFIX}/bin/opencbr-agent"
    return {
        "install": package.install_line(url, enrol_args),
        "package": f"sudo python3 -m venv {package.PREFIX} && "
                   f"sudo {package.PREFIX}/bin/pip install {url}/agent/{package.wheel_name()}",
        "register": f"sudo {agent} register --endpoint {url} --listen 0.0.0.0:{AGENT_PORT} {enrol_args}",
        "start": f"curl -fsSL {url}/agent/opencbr-agent.service | sudo tee /etc/systemd/system/opencbr-agent.service "
                 ">/dev/null && sudo systemctl daemon-reload && sudo systemctl enable --now opencbr-agent",
        "token_hint": "" if token else "replace <TOKEN> with a token from `cbr agent token`: valid for one hour, for one host",
        "root_hint": f"replace {ROOT_PLACEHOLDER} with a directory of the host to protect, and add --root DIR for "
                     "each other one; without any --root, only the host's disks and the host as a whole can be protected",
        "address_warning": address_warning(ctx, url),
        "project_id": p.project_id,
        # what `opencbr-agent register --ca-fingerprint` checks when enrolling with AK/SK
        "ca_fingerprint": ca_fingerprint,
    }


#: What the user replaces with a directory in the printed commands (shown like ``<TOKEN>``).
ROOT_PLACEHOLDER = "<DIRECTORY>"


def address_warning(ctx: ServiceContext, url: str) -> str:
    """Why the commands with ``url`` in them work on no other host, if its host is a loopback address
    (127.0.0.0/8, ::1, localhost): the service listens only there, or is reached there and has no
    ``public_url``. Empty otherwise."""
    if not _loopback(urlsplit(url).hostname or ""):
        return ""
    port = ctx.settings.port
    todo = (f'set listen = "0.0.0.0:{port}" (now it answers only on this machine) and '
            if _loopback(ctx.settings.host) else "set ")
    return (f"{url} is this machine's own loopback address: these commands do not work on another host. In the "
            f"service's configuration (opencbr.toml, or OPENCBR_* variables; docs/operations.md), {todo}"
            f'public_url = "http://HOST:{port}" (HOST: the name or address other hosts reach this machine at), '
            "restart the service, and print the commands again.")


def _loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")


def ca_fingerprint(s: Session, ctx: ServiceContext) -> str:
    """``sha256:<hex>`` of the agents' CA (created now if there is none yet), as agents pin it."""
    return "sha256:" + link.ca_digest(A.authority_row(s, ctx).ca_cert)
