"""IAM: accounts, projects, users, roles and AK/SK credentials; request authentication.

Roles (guide 1.5): ``admin`` manages the account's projects, users and credentials and may do
everything in its projects; ``member`` may change resources, vaults, backups and policies;
``readonly`` may only list and show. The operator (the bootstrap user) may also create accounts.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select

from opencbr.catalog.models import Account, Credential, Project, User
from opencbr.domain import signing
from opencbr.domain.errors import Forbidden, InvalidParameter, NotFound, StateConflict, Unauthorized
from opencbr.services import org_policies
from opencbr.services.context import ServiceContext
from opencbr.services.principal import ROLES, Principal

log = logging.getLogger("opencbr.iam")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_AK_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_AK_ALPHABET = string.ascii_uppercase + string.digits
_SK_ALPHABET = string.ascii_letters + string.digits


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidParameter(f"{kind} name must be 1 to 64 characters of letters, digits, _ . @ -")
    return name


def new_project_id() -> str:
    # The public service's project ids are 32 lower-case hex digits.
    return secrets.token_hex(16)


# ------------------------------------------------------------------------------------ sealing
def _seal_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"opencbr/credential-seal/v1", hashlib.sha256).digest()


def seal_secret(master_key: bytes, secret: str) -> str:
    nonce = os.urandom(12)
    ct = AESGCM(_seal_key(master_key)).encrypt(nonce, secret.encode(), b"sk")
    return base64.b64encode(nonce + ct).decode()


def unseal_secret(master_key: bytes, sealed: str) -> str:
    raw = base64.b64decode(sealed)
    return AESGCM(_seal_key(master_key)).decrypt(raw[:12], raw[12:], b"sk").decode()


# ------------------------------------------------------------------------------------ dataclasses
@dataclass(frozen=True)
class NewCredential:
    access_key: str
    secret_key: str
    user_id: str
    user_name: str


@dataclass(frozen=True)
class BootstrapInfo:
    account_id: str
    project_id: str
    user_name: str
    access_key: str
    secret_key: str
    created: bool


# ------------------------------------------------------------------------------------ management
def create_account(ctx: ServiceContext, name: str, *, admin_name: str = "admin",
                   operator: bool = False) -> tuple[Account, Project, User, NewCredential]:
    """A new tenant: the account, its default project (named after the region), an admin user and
    that user's first AK/SK pair."""
    _check_name("account", name)
    with ctx.tx() as s:
        if s.scalar(select(Account).where(Account.name == name)) is not None:
            raise StateConflict(f"account {name!r} already exists")
        account = Account(id=secrets.token_hex(16), name=name)
        s.add(account)
        s.flush()
        project = Project(id=new_project_id(), account_id=account.id, name=ctx.settings.region,
                          region=ctx.settings.region)
        user = User(account_id=account.id, name=_check_name("user", admin_name), role="admin",
                    is_operator=operator)
        s.add_all([project, user])
        s.flush()
        org_policies.deploy_to_new_project(s, ctx, project)
        cred = _new_credential(ctx, s, user, "created with the account")
    return account, project, user, cred


def _new_credential(ctx: ServiceContext, s, user: User, description: str) -> NewCredential:
    ak = "".join(secrets.choice(_AK_ALPHABET) for _ in range(20))
    sk = "".join(secrets.choice(_SK_ALPHABET) for _ in range(40))
    s.add(Credential(access_key=ak, user_id=user.id, secret_sealed=seal_secret(ctx.master_key, sk),
                     description=description[:255]))
    return NewCredential(ak, sk, user.id, user.name)


def bootstrap(ctx: ServiceContext, account_name: str = "admin") -> BootstrapInfo:
    """On first start: an operator account with a project, an admin user and an AK/SK pair. Later
    starts find them and return the first credential again (the SK is kept sealed in the catalog)."""
    with ctx.tx() as s:
        user = s.scalar(select(User).where(User.is_operator.is_(True)).order_by(User.created_at))
        if user is not None:
            project = s.scalar(select(Project).where(Project.account_id == user.account_id)
                               .order_by(Project.created_at))
            cred = s.scalar(select(Credential).where(Credential.user_id == user.id,
                                                     Credential.status == "active")
                            .order_by(Credential.created_at))
            if project is not None and cred is not None:
                return BootstrapInfo(user.account_id, project.id, user.name, cred.access_key,
                                     unseal_secret(ctx.master_key, cred.secret_sealed), False)
    account, project, user, cred = create_account(ctx, account_name, operator=True)
    return BootstrapInfo(account.id, project.id, user.name, cred.access_key, cred.secret_key, True)


def create_project(ctx: ServiceContext, p: Principal, name: str, account_id: str | None = None) -> Project:
    """Admins add projects to their own account; the operator to any account. The new project receives
    the organization policies that cover its account."""
    p.require_admin()
    account_id = account_id or p.account_id
    if account_id != p.account_id:
        p.require_operator()
    _check_name("project", name)
    with ctx.tx() as s:
        if s.get(Account, account_id) is None:
            raise NotFound(f"account {account_id} not found")
        if s.scalar(select(Project).where(Project.account_id == account_id, Project.name == name)):
            raise StateConflict(f"project {name!r} already exists in this account")
        project = Project(id=new_project_id(), account_id=account_id, name=name, region=ctx.settings.region)
        s.add(project)
        s.flush()
        org_policies.deploy_to_new_project(s, ctx, project)
    return project


def list_projects(ctx: ServiceContext, p: Principal) -> list[Project]:
    with ctx.tx() as s:
        return list(s.scalars(select(Project).where(Project.account_id == p.account_id)
                              .order_by(Project.created_at)))


def create_user(ctx: ServiceContext, p: Principal, name: str, role: str = "member") -> User:
    p.require_admin()
    _check_name("user", name)
    if role not in ROLES:
        raise InvalidParameter(f"role must be one of {', '.join(ROLES)}")
    with ctx.tx() as s:
        if s.scalar(select(User).where(User.account_id == p.account_id, User.name == name)):
            raise StateConflict(f"user {name!r} already exists in this account")
        user = User(account_id=p.account_id, name=name, role=role)
        s.add(user)
    return user


def list_users(ctx: ServiceContext, p: Principal) -> list[User]:
    p.require_admin()
    with ctx.tx() as s:
        return list(s.scalars(select(User).where(User.account_id == p.account_id).order_by(User.created_at)))


def create_credential(ctx: ServiceContext, p: Principal, user_name: str | None = None,
                      description: str = "") -> NewCredential:
    """An AK/SK pair for a user of the caller's account (admins), or for the caller itself."""
    with ctx.tx() as s:
        if user_name is None or user_name == p.user_name:
            user = s.get(User, p.user_id)
        else:
            p.require_admin()
            user = s.scalar(select(User).where(User.account_id == p.account_id, User.name == user_name))
        if user is None:
            raise NotFound(f"user {user_name!r} not found")
        count = s.scalar(select(func.count()).select_from(Credential).where(Credential.user_id == user.id))
        if count >= 2 and user.id != p.user_id and not p.is_operator:
            # The public IAM allows two access keys per user; keep that limit.
            raise StateConflict(f"user {user.name} already has two access keys")
        return _new_credential(ctx, s, user, description)


def delete_credential(ctx: ServiceContext, p: Principal, access_key: str) -> None:
    with ctx.tx() as s:
        cred = s.get(Credential, access_key)
        user = s.get(User, cred.user_id) if cred else None
        if cred is None or user is None or user.account_id != p.account_id:
            raise NotFound(f"access key {access_key} not found")
        if user.id != p.user_id:
            p.require_admin()
        s.delete(cred)
    forget_key(ctx, access_key)


# ------------------------------------------------------------------------------------ authentication
#: How long the secret and owner of a verified access key are reused without asking the catalog. Every
#: request needs them; reading three rows and unsealing the SK each time was a third of a list's cost.
#: A key deleted through this process stops working at once; deleted through another process (a second
#: API process sharing the catalog), within this many seconds.
KEY_CACHE_SECONDS = 5.0
_KEY_CACHE_MAX = 10_000
#: ``last_used_at`` is recorded at this resolution: recording every use would make every read a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class _KeyOwner:
    """What authentication needs of an active access key: its secret and the user it belongs to."""

    access_key: str
    secret: str
    user_id: str
    user_name: str
    role: str
    account_id: str
    is_operator: bool
    last_used_at: datetime | None
    loaded: float


def _key_cache(ctx: ServiceContext) -> dict[str, _KeyOwner]:
    return ctx.caches.setdefault("access_keys", {})


def forget_key(ctx: ServiceContext, access_key: str) -> None:
    """Drop a key from the authentication cache (after it is deleted or its user changes)."""
    _key_cache(ctx).pop(access_key, None)


class CatalogNeeded(Exception):
    """``authenticate(..., cached_only=True)`` cannot decide without reading the catalog."""


def _key_owner(ctx: ServiceContext, access_key: str, cached_only: bool = False) -> _KeyOwner | None:
    """The active key and its enabled user, from the cache when fresh, else from the catalog."""
    cache = _key_cache(ctx)
    hit = cache.get(access_key)
    if hit is not None and time.monotonic() - hit.loaded < KEY_CACHE_SECONDS:
        return hit
    if cached_only:
        raise CatalogNeeded
    with ctx.read() as s:
        cred, user = _active_credential(s, access_key)
        if cred is None:
            cache.pop(access_key, None)
            return None
        owner = _KeyOwner(cred.access_key, unseal_secret(ctx.master_key, cred.secret_sealed), user.id, user.name,
                          user.role, user.account_id, user.is_operator, cred.last_used_at, time.monotonic())
    if len(cache) >= _KEY_CACHE_MAX:
        cache.clear()
    cache[access_key] = owner
    return owner


def _project_cache(ctx: ServiceContext) -> dict[tuple[str, str], str]:
    return ctx.caches.setdefault("projects", {})


def _scoped_project(ctx: ServiceContext, account_id: str, project_id: str | None, cached_only: bool = False) -> str:
    """The id of the project a request is scoped to: the one named, which must be of the key's account
    (403), or the account's first project. Projects never move between accounts, so a found pair is
    kept for the life of the process."""
    cache = _project_cache(ctx)
    key = (account_id, project_id or "")
    if key in cache:
        return cache[key]
    if cached_only:
        raise CatalogNeeded
    with ctx.read() as s:
        project = _project_of(s, account_id, project_id)
        found = project.id if project is not None else ""
    if found and len(cache) < _KEY_CACHE_MAX:
        cache[key] = found
    return found


def _record_use(ctx: ServiceContext, owner: _KeyOwner) -> None:
    """Note when the key was last used, at most once per ``LAST_USED_RESOLUTION`` per key, in a thread of
    its own: a request never waits for the catalog's write lock to say it happened."""
    now = ctx.now()
    if owner.last_used_at is not None and now - owner.last_used_at <= LAST_USED_RESOLUTION:
        return
    cache = _key_cache(ctx)
    if cache.get(owner.access_key) is owner:
        cache[owner.access_key] = dataclasses.replace(owner, last_used_at=now)
    threading.Thread(target=_write_last_used, args=(ctx, owner.access_key, now), name="key-last-used",
                     daemon=True).start()


def _write_last_used(ctx: ServiceContext, access_key: str, when: datetime) -> None:
    try:
        with ctx.tx() as s:
            cred = s.get(Credential, access_key)
            if cred is not None and (cred.last_used_at is None or cred.last_used_at < when):
                cred.last_used_at = when
    except Exception:  # bookkeeping only: the request it records has been answered
        log.warning("could not record the use of access key %s", access_key, exc_info=True)


def _active_credential(s, access_key: str) -> tuple[Credential, User] | tuple[None, None]:
    """The credential and its user, when both exist and are active."""
    cred = s.get(Credential, access_key)
    user = s.get(User, cred.user_id) if cred is not None else None
    if cred is None or user is None or cred.status != "active" or not user.enabled:
        return None, None
    return cred, user


def _project_of(s, account_id: str, project_id: str | None) -> Project | None:
    """The project a request is scoped to: the one named, which must be of the key's account (403),
    or the account's first project."""
    if project_id:
        project = s.get(Project, project_id)
        if project is None or project.account_id != account_id:
            raise Forbidden(f"the access key has no permission on project {project_id}", code="APIGW.0305")
        return project
    return s.scalar(select(Project).where(Project.account_id == account_id).order_by(Project.created_at))


def authenticate(ctx: ServiceContext, *, method: str, path: str, raw_query: str, headers: dict[str, str],
                 body: bytes, path_project_id: str | None, source_ip: str = "",
                 request_id: str = "", cached_only: bool = False) -> Principal:
    """Verify an SDK-HMAC-SHA256 signed request (CBR v3 API 2) and return who sent it.

    401 for a missing or malformed header, an unknown or inactive key, a bad signature, or a date more
    than ``max_clock_skew_seconds`` away from now; 403 when the project in the path or in
    ``X-Project-Id`` is not a project of the key's account. With ``cached_only`` it touches no catalog
    (the API calls it so on its event loop first) and raises ``CatalogNeeded`` when it would have to."""
    lower = {k.lower(): v for k, v in headers.items()}
    auth = signing.parse_authorization(lower.get("authorization", ""))
    if auth is None:
        raise Unauthorized("missing or malformed Authorization header; sign requests with SDK-HMAC-SHA256")
    sdk_date = lower.get("x-sdk-date", "")
    when = signing.parse_sdk_date(sdk_date)
    if when is None:
        raise Unauthorized("missing or malformed X-Sdk-Date header (expected YYYYMMDDTHHMMSSZ)")
    now = ctx.now().replace(tzinfo=UTC)
    skew = timedelta(seconds=ctx.settings.max_clock_skew_seconds)
    if abs(now - when) > skew:
        raise Unauthorized("the request date is more than 15 minutes away from the server time; "
                           "check the client's clock", code="APIGW.0304")
    if "x-sdk-date" not in auth.signed_headers or "host" not in auth.signed_headers:
        raise Unauthorized("the signature must cover the host and x-sdk-date headers")
    if not _AK_RE.match(auth.access_key):
        raise Unauthorized("unknown or inactive access key")
    owner = _key_owner(ctx, auth.access_key, cached_only)
    if owner is None:
        raise Unauthorized("unknown or inactive access key")
    canonical = signing.canonical_request(method, path, raw_query, headers, auth.signed_headers,
                                          signing.body_hash(headers, body))
    expected = signing.signature(owner.secret, signing.string_to_sign(sdk_date, canonical))
    if not hmac.compare_digest(expected, auth.signature.lower()):
        raise Unauthorized("the request signature does not match; check the SK and the signing of the "
                           "request")
    header_project = lower.get("x-project-id")
    if header_project and path_project_id and header_project != path_project_id:
        raise Forbidden("X-Project-Id does not match the project in the path", code="APIGW.0305")
    project_id = _scoped_project(ctx, owner.account_id, path_project_id or header_project or "", cached_only)
    _record_use(ctx, owner)
    return Principal(account_id=owner.account_id, project_id=project_id, user_id=owner.user_id,
                     user_name=owner.user_name, role=owner.role, is_operator=owner.is_operator,
                     access_key=owner.access_key, source_ip=source_ip, request_id=request_id)


def principal_for_user(ctx: ServiceContext, user_id: str, project_id: str) -> Principal:
    """A principal for internal callers (the scheduler, local admin commands)."""
    with ctx.tx() as s:
        user = s.get(User, user_id)
        project = s.get(Project, project_id)
        if user is None or project is None or project.account_id != user.account_id:
            raise NotFound("no such user in that project")
        return Principal(user.account_id, project.id, user.id, user.name, user.role, user.is_operator)


# ------------------------------------------------------------------------------------ console tokens
TOKEN_TTL = timedelta(hours=8)


def _token_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"opencbr/console-token/v1", hashlib.sha256).digest()


def issue_token(ctx: ServiceContext, access_key: str, secret_key: str, project_id: str | None = None,
                source_ip: str = "") -> tuple[str, Principal, datetime]:
    """The web console signs in with an AK/SK pair and then sends ``X-Auth-Token`` (docs/design.md:
    tokens for the console). The token is stateless (HMAC with a key derived from the master key) and
    names the access key, which must still be active on every use."""
    if not isinstance(access_key, str) or not _AK_RE.match(access_key):
        raise Unauthorized("wrong access key or secret key")
    with ctx.tx() as s:
        cred, user = _active_credential(s, access_key)
        if cred is None or not isinstance(secret_key, str) or not hmac.compare_digest(
                unseal_secret(ctx.master_key, cred.secret_sealed), secret_key):
            raise Unauthorized("wrong access key or secret key")
        project = _project_of(s, user.account_id, project_id)
        expires = ctx.now() + TOKEN_TTL
        claims = {"ak": cred.access_key, "pid": project.id, "exp": int(expires.replace(tzinfo=UTC).timestamp())}
        body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode().rstrip("=")
        sig = hmac.new(_token_key(ctx.master_key), body.encode(), hashlib.sha256).hexdigest()
        principal = Principal(user.account_id, project.id, user.id, user.name, user.role, user.is_operator,
                              cred.access_key, source_ip)
    return f"{body}.{sig}", principal, expires


def authenticate_token(ctx: ServiceContext, token: str, path_project_id: str | None, source_ip: str = "",
                       request_id: str = "") -> Principal:
    """Check an ``X-Auth-Token`` and scope it to the project in the path (which must be the token's)."""
    body, _, sig = (token or "").partition(".")
    expected = hmac.new(_token_key(ctx.master_key), body.encode(), hashlib.sha256).hexdigest()
    if not body or not hmac.compare_digest(expected, sig):
        raise Unauthorized("invalid token; sign in again")
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        raise Unauthorized("invalid token; sign in again") from None
    if claims.get("exp", 0) < ctx.now().replace(tzinfo=UTC).timestamp():
        raise Unauthorized("the session has expired; sign in again", code="APIGW.0307")
    if path_project_id and path_project_id != claims.get("pid"):
        raise Forbidden(f"the token has no permission on project {path_project_id}", code="APIGW.0305")
    owner = _key_owner(ctx, str(claims.get("ak", "")))
    if owner is None:
        raise Unauthorized("the access key of this session was revoked; sign in again")
    return Principal(owner.account_id, claims["pid"], owner.user_id, owner.user_name, owner.role, owner.is_operator,
                     owner.access_key, source_ip, request_id)
