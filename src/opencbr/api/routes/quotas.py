"""Quotas (OpenCBR extension; guide ch. 12): a project's quotas for its tenants, and the operator's
routes that set a project's own limits (services/quotas.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Wire
from opencbr.services import audit, quotas
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class QuotaLimits(Wire):
    vault: int | None = None
    backup: int | None = None
    capacity: int | None = None
    policy: int | None = None


class QuotasBody(Wire):
    quotas: QuotaLimits


def _answer(project_id: str, rows: list[quotas.Quota]) -> dict:
    return {"quotas": {"project_id": project_id, "resources": [q.wire() for q in rows]}}


@router.get("/quotas")
def show_quotas(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """The caller's project: used and limit (-1: none) of each quota."""
    with ctx.read() as s:
        return _answer(p.project_id, quotas.show_quotas(s, ctx, p))


@router.get("/admin/quotas/{target_project_id}")
def admin_show_quotas(target_project_id: str, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return _answer(target_project_id, quotas.admin_show(s, ctx, p, target_project_id))


@router.put("/admin/quotas/{target_project_id}")
def admin_set_quotas(target_project_id: str, body: QuotasBody, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    limits = body.quotas.model_dump(exclude_none=True)
    with audit.trace(ctx, p, "setProjectQuotas", {"project_id": target_project_id, **limits},
                     resource_id=target_project_id), ctx.tx() as s:
        rows = quotas.admin_set(s, ctx, p, target_project_id, limits)
    return _answer(target_project_id, rows)


@router.delete("/admin/quotas/{target_project_id}")
def admin_reset_quotas(target_project_id: str, type: list[Id] | None = Query(None, max_length=4),  # noqa: A002
                       p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Back to the installation's defaults: the quotas named by ``type`` (repeatable), or all."""
    with audit.trace(ctx, p, "resetProjectQuotas", {"project_id": target_project_id, "types": type or []},
                     resource_id=target_project_id), ctx.tx() as s:
        rows = quotas.admin_reset(s, ctx, p, target_project_id, type)
    return _answer(target_project_id, rows)
