"""Alarm targets (OpenCBR extension): where a project's alarms go (its admins), or every project's (the
operator, under /admin), and the deliveries made (services/alarms.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Text, Wire
from opencbr.catalog.models import AlarmDelivery, AlarmEvent, AlarmTarget
from opencbr.services import alarms, audit
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class TargetCreate(Wire):
    kind: Id
    address: Text
    description: Text = ""


class TargetBody(Wire):
    alarm_target: TargetCreate


def _target(t: AlarmTarget, secret: str = "") -> dict:
    out = {"id": t.id, "kind": t.kind, "address": t.address, "description": t.description,
           "scope": "project" if t.project_id else "all_projects", "created_at": t.created_at.isoformat() + "Z"}
    if secret:
        out["secret"] = secret  # shown once: the key of the webhook's signatures
    return out


def _delivery(d: AlarmDelivery, e: AlarmEvent) -> dict:
    return {"id": d.id, "target_id": d.target_id, "status": d.status, "attempts": d.attempts,
            "last_error": d.last_error, "event": e.kind, "event_key": e.key, "vault_id": e.vault_id,
            "payload": e.payload, "created_at": d.created_at.isoformat() + "Z",
            "delivered_at": d.delivered_at.isoformat() + "Z" if d.delivered_at else None}


def _create(ctx: ServiceContext, p: Principal, body: TargetBody, operator: bool) -> dict:
    spec = body.alarm_target
    with audit.trace(ctx, p, "createAlarmTarget", {"kind": spec.kind, "address": spec.address}) as t, ctx.tx() as s:
        new = alarms.create_target(s, ctx, p, kind=spec.kind, address=spec.address, description=spec.description,
                                   operator=operator)
        t.resource(new.target.id, spec.address)
        return {"alarm_target": _target(new.target, new.secret)}


def _delete(ctx: ServiceContext, p: Principal, target_id: str, operator: bool) -> None:
    with audit.trace(ctx, p, "deleteAlarmTarget", resource_id=target_id), ctx.tx() as s:
        alarms.delete_target(s, p, target_id, operator=operator)


@router.get("/alarm-targets")
def list_alarm_targets(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"alarm_targets": [_target(t) for t in alarms.list_targets(s, p)]}


@router.post("/alarm-targets")
def create_alarm_target(body: TargetBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    return _create(ctx, p, body, operator=False)


@router.delete("/alarm-targets/{target_id}")
def delete_alarm_target(target_id: Id, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    _delete(ctx, p, target_id, operator=False)
    return Response(status_code=204)


@router.get("/alarm-deliveries")
def list_alarm_deliveries(limit: int = Query(100, ge=1, le=1000), p: Principal = Depends(principal),
                          ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"alarm_deliveries": [_delivery(d, e) for d, e in alarms.list_deliveries(s, p, limit=limit)]}


@router.get("/admin/alarm-targets")
def admin_list_alarm_targets(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"alarm_targets": [_target(t) for t in alarms.list_targets(s, p, operator=True)]}


@router.post("/admin/alarm-targets")
def admin_create_alarm_target(body: TargetBody, p: Principal = Depends(principal),
                              ctx: ServiceContext = Depends(get_ctx)):
    return _create(ctx, p, body, operator=True)


@router.delete("/admin/alarm-targets/{target_id}")
def admin_delete_alarm_target(target_id: Id, p: Principal = Depends(principal),
                              ctx: ServiceContext = Depends(get_ctx)):
    _delete(ctx, p, target_id, operator=True)
    return Response(status_code=204)
