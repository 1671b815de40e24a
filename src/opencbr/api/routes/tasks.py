"""Operation logs (tasks; cbr_v3.md section 6.5, guide chapter 9)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes.common import page, parse_time
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}")


@router.get("/operation-logs")
def list_op_logs(limit: int | None = None, offset: int | None = None, operation_type: str | None = None,
                 status: str | None = None, vault_id: str | None = None, vault_name: str | None = None,
                 resource_id: str | None = None, resource_name: str | None = None, provider_id: str | None = None,
                 start_time: str | None = None, end_time: str | None = None, enterprise_project_id: str | None = None,
                 task_id: str | None = None, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    limit, offset = page(limit, offset)
    f = tasks.TaskFilter(operation_type=operation_type, status=status, vault_id=vault_id, vault_name=vault_name,
                         resource_id=resource_id, resource_name=resource_name, provider_id=provider_id,
                         start_time=parse_time(start_time, "start_time"), end_time=parse_time(end_time, "end_time"),
                         task_id=task_id)
    rows, total = tasks.list_tasks(ctx, p, f, limit, offset)
    return {"operation_logs": [wire.oplog_resp(t) for t in rows], "count": total, "limit": limit, "offset": offset}


@router.get("/operation-logs/{operation_log_id}")
def show_op_log(operation_log_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    return {"operation_log": wire.oplog_resp(tasks.show_task(ctx, p, operation_log_id))}


@router.post("/operation-logs/{operation_log_id}/cancel")
def cancel_task(operation_log_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """OpenCBR extension: ask a running task to stop (guide 13.2.12 says CBR cannot)."""
    return {"operation_log": wire.oplog_resp(tasks.request_cancel(ctx, p, operation_log_id))}
