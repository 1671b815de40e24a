"""Vault locks (OpenCBR extension, docs/vault-lock.md; services/vault_locks.py). Every attempt to set,
change or lift a lock, allowed or refused, is in the audit trail."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Wire
from opencbr.services import audit, vault_locks
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class LockBody(Wire):
    lock: dict


class GovernorBody(Wire):
    granted: bool


def _answer(view: vault_locks.LockView) -> dict:
    lock = view.lock
    return {"lock": {"vault_id": view.vault_id, "active": view.active,
                     "mode": lock.mode if lock else None,
                     "retention_days": lock.retention_days if lock else None,
                     "until": wire.iso(lock.until) if lock else None,
                     "set_by": view.set_by, "updated_at": wire.iso(view.updated_at) if view.updated_at else None}}


@router.get("/vaults/{vault_id}/lock")
def show_vault_lock(vault_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """The vault's lock (``active`` false and the fields null when it has none)."""
    with ctx.read() as s:
        return _answer(vault_locks.show_lock(s, ctx, p, vault_id))


@router.put("/vaults/{vault_id}/lock")
def set_vault_lock(vault_id: str, body: LockBody, p: Principal = Depends(principal),
                   ctx: ServiceContext = Depends(get_ctx)):
    """Lock the vault or change its lock: ``{"lock": {"mode", "retention_days", "lock_days" | "until"}}``."""
    with audit.trace(ctx, p, "setVaultLock", body.lock, resource_id=vault_id), ctx.tx() as s:
        view = vault_locks.set_lock(s, ctx, p, vault_id, body.lock)
    return _answer(view)


@router.delete("/vaults/{vault_id}/lock", status_code=204)
def delete_vault_lock(vault_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "deleteVaultLock", resource_id=vault_id), ctx.tx() as s:
        vault_locks.lift_lock(s, ctx, p, vault_id)
    return Response(status_code=204)


@router.put("/admin/vault-lock-governors/{user_id}")
def set_vault_lock_governor(user_id: str, body: GovernorBody, p: Principal = Depends(principal),
                            ctx: ServiceContext = Depends(get_ctx)):
    """The operator grants (``granted: true``) or withdraws the vault lock governor permission."""
    with audit.trace(ctx, p, "grantVaultLockGovernor", {"user_id": user_id, "granted": body.granted},
                     resource_id=user_id), ctx.tx() as s:
        granted = vault_locks.grant_governor(s, ctx, p, user_id, body.granted)
    return {"governor": {"user_id": user_id, "granted": granted}}
