"""A vault's scheduled checks (OpenCBR extension; docs/verification.md): its verify policy and its
restore-test policy, their last outcome, and running one now (services/verification.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Int, Text, Wire, iso
from opencbr.domain.errors import InvalidParameter
from opencbr.services import audit, verification
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class CheckSpec(Wire):
    enabled: bool | None = None
    interval_days: Int | None = None
    start_at: Text | None = None
    share_percent: Int | None = None
    backup_rule: Id | None = None
    resource_id: Id | None = None
    check_command: Annotated[list[Text], Field(max_length=64)] | None = None
    check_timeout_seconds: Int | None = None


class CheckBody(Wire):
    check: CheckSpec


def _kind(kind: str) -> str:
    if kind not in verification.KINDS:
        raise InvalidParameter(f"the check kind must be one of {', '.join(verification.KINDS)}",
                               code=verification.BAD_POLICY)
    return kind


def check_resp(c) -> dict:
    """A vault check and its last outcome (``last.recovery_seconds``: the restore test's measured time)."""
    return {"id": c.id, "vault_id": c.vault_id, "kind": c.kind, "enabled": c.enabled,
            "interval_days": c.interval_days, "next_run_at": iso(c.next_run_at),
            "share_percent": c.share_percent if c.kind == verification.VERIFY else None,
            "backup_rule": c.backup_rule if c.kind == verification.RESTORE_TEST else None,
            "resource_id": (c.resource_id or None) if c.kind == verification.RESTORE_TEST else None,
            "check_command": c.check_command or [], "check_timeout_seconds": c.check_timeout_seconds,
            "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
            "last": {"task_id": c.last_task_id or None, "status": c.last_status or None,
                     "started_at": iso(c.last_started_at), "finished_at": iso(c.last_finished_at),
                     "message": c.last_message, "backup_ids": c.last_backup_ids or [],
                     "backups_checked": c.last_backups_checked, "damaged_backups": c.last_damaged_backups,
                     "damaged_chunks": c.last_damaged_chunks, "recovery_seconds": c.last_recovery_seconds,
                     "check_seconds": c.last_check_seconds}}


@router.get("/vaults/{vault_id}/checks")
def list_checks(vault_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"checks": [check_resp(c) for c in verification.list_checks(s, p, vault_id)]}


@router.get("/vaults/{vault_id}/checks/{kind}")
def show_check(vault_id: str, kind: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"check": check_resp(verification.get_check(s, p, vault_id, _kind(kind)))}


@router.put("/vaults/{vault_id}/checks/{kind}")
def set_check(vault_id: str, kind: str, body: CheckBody, p: Principal = Depends(principal),
              ctx: ServiceContext = Depends(get_ctx)):
    spec = body.check.model_dump(exclude_unset=True)
    with audit.trace(ctx, p, "setVaultCheck", {"kind": kind, **spec}, resource_id=vault_id), ctx.tx() as s:
        return {"check": check_resp(verification.set_check(s, ctx, p, vault_id, _kind(kind), spec))}


@router.delete("/vaults/{vault_id}/checks/{kind}", status_code=204)
def delete_check(vault_id: str, kind: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "deleteVaultCheck", {"kind": kind}, resource_id=vault_id), ctx.tx() as s:
        verification.delete_check(s, p, vault_id, _kind(kind))
    return Response(status_code=204)


@router.post("/vaults/{vault_id}/checks/{kind}/run", status_code=202)
def run_check(vault_id: str, kind: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Queue the check now, outside its schedule: ``task_id`` (null, with ``reason``, when there is no
    backup to check)."""
    with audit.trace(ctx, p, "runVaultCheck", {"kind": kind}, resource_id=vault_id), ctx.tx() as s:
        task = verification.run_check_now(s, ctx, p, vault_id, _kind(kind))
        return {"task_id": task.id if task else None, "reason": "" if task else "the vault has no backup to check"}
