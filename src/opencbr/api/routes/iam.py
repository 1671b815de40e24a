"""Tenant administration and the audit trail (OpenCBR extension; guide 1.5 and chapter 11)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routes.common import page
from opencbr.api.routing import JSONRoute
from opencbr.services import audit, iam
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}/iam", route_class=JSONRoute)


def _project(pr) -> dict:
    return {"id": pr.id, "name": pr.name, "account_id": pr.account_id, "region": pr.region,
            "created_at": wire.iso(pr.created_at)}


def _cred(c: iam.NewCredential) -> dict:
    return {"access_key": c.access_key, "secret_key": c.secret_key, "user_id": c.user_id, "user_name": c.user_name}


@router.get("/whoami")
def whoami(p: Principal = Depends(principal)):
    return {"account_id": p.account_id, "project_id": p.project_id, "user_id": p.user_id, "user_name": p.user_name,
            "role": p.role, "is_operator": p.is_operator, "access_key": p.access_key}


@router.post("/accounts")
def create_account(body: wire.AccountCreate, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "createAccount", {"name": body.name}) as t:
        p.require_operator()
        account, project, user, cred = iam.create_account(ctx, body.name, admin_name=body.admin_name)
        t.resource(account.id, account.name)
    return {"account": {"id": account.id, "name": account.name}, "project": _project(project),
            "user": {"id": user.id, "name": user.name, "role": user.role}, "credential": _cred(cred)}


@router.post("/projects")
def create_project(body: wire.ProjectCreate, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "createProject", {"name": body.name}) as t:
        pr = iam.create_project(ctx, p, body.name, body.account_id)
        t.resource(pr.id, pr.name)
    return {"project": _project(pr)}


@router.get("/projects")
def list_projects(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    return {"projects": [_project(pr) for pr in iam.list_projects(ctx, p)]}


@router.post("/users")
def create_user(body: wire.UserCreate, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "createUser", {"name": body.name, "role": body.role}) as t:
        u = iam.create_user(ctx, p, body.name, body.role)
        t.resource(u.id, u.name)
    return {"user": {"id": u.id, "name": u.name, "role": u.role, "created_at": wire.iso(u.created_at)}}


@router.get("/users")
def list_users(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    return {"users": [{"id": u.id, "name": u.name, "role": u.role, "enabled": u.enabled,
                       "created_at": wire.iso(u.created_at)} for u in iam.list_users(ctx, p)]}


@router.post("/credentials")
def create_credential(body: wire.CredentialCreate, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "createCredential", {"user_name": body.user_name}) as t:
        c = iam.create_credential(ctx, p, body.user_name, body.description or "")
        t.resource(c.access_key, c.user_name)
    return {"credential": _cred(c)}


@router.delete("/credentials/{access_key}")
def delete_credential(access_key: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "deleteCredential", resource_id=access_key):
        iam.delete_credential(ctx, p, access_key)
    return Response(status_code=204)


@router.get("/audit-events")
def list_audit(limit: int | None = None, offset: int | None = None, trace_name: str | None = None,
               resource_type: str | None = None, resource_id: str | None = None, user_name: str | None = None,
               outcome: str | None = None, start_time: str | None = None, end_time: str | None = None,
               account_id: str | None = None, sort: str | None = None, p: Principal = Depends(principal),
               ctx: ServiceContext = Depends(get_ctx)):
    """The list parameters follow the same rules as on every list (routes/common.py)."""
    limit, offset = page(limit, offset, default=100)
    start, end = L.time_window(start_time, end_time)
    f = audit.AuditFilter(trace_name=L.choice(trace_name, "trace_name", audit.TRACES),
                          resource_type=L.text(resource_type, "resource_type"),
                          resource_id=L.text(resource_id, "resource_id"), user_name=L.text(user_name, "user_name"),
                          outcome=L.choice(outcome, "outcome", audit.OUTCOMES), start_time=start, end_time=end,
                          account_id=L.text(account_id, "account_id"))
    order = L.parse_sort(sort, audit.SORT_KEYS)
    with ctx.read() as s:
        rows, total = audit.list_events(s, p, f, limit=limit, offset=offset, sort=order)
    return {"events": [wire.audit_resp(e) for e in rows], "count": total, "limit": limit, "offset": offset}


@router.put("/tracker")
def update_tracker(body: wire.TrackerUpdate, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "updateTracker", {"enabled": body.enabled}), ctx.tx() as s:
        audit.set_tracker(s, p, body.enabled)
    return {"tracker": {"enabled": body.enabled}}


auth_router = APIRouter(prefix="/v3/auth", route_class=JSONRoute)


@auth_router.post("/console-tokens")
def console_login(body: wire.ConsoleLogin, request: Request, ctx: ServiceContext = Depends(get_ctx)):
    """Sign in to the web console with an AK/SK pair; answers a token for ``X-Auth-Token`` (8 hours)."""
    token, p, expires = iam.issue_token(ctx, body.access_key, body.secret_key, body.project_id,
                                        request.client.host if request.client else "")
    return {"token": token, "expires_at": wire.iso(expires), "project_id": p.project_id, "user_name": p.user_name,
            "role": p.role, "account_id": p.account_id, "is_operator": p.is_operator}
