"""Operation logs (tasks; CBR v3 API 6.5, guide chapter 9)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from opencbr.api import task_ends, wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routes.common import page
from opencbr.api.routing import JSONRoute, RenderedJSON
from opencbr.domain.errors import InvalidParameter
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


@router.get("/operation-logs")
def list_op_logs(limit: int | None = None, offset: int | None = None, operation_type: str | None = None,
                 status: str | None = None, vault_id: str | None = None, vault_name: str | None = None,
                 resource_id: str | None = None, resource_name: str | None = None, provider_id: str | None = None,
                 start_time: str | None = None, end_time: str | None = None, enterprise_project_id: str | None = None,
                 task_id: str | None = None, sort: str | None = None, p: Principal = Depends(principal),
                 ctx: ServiceContext = Depends(get_ctx)):
    """Guide chapter 9; the list parameters follow the same rules as on every list (routes/common.py)."""
    limit, offset = page(limit, offset)
    start, end = L.time_window(start_time, end_time)
    f = tasks.TaskFilter(operation_type=L.choice(operation_type, "operation_type", tasks.OPERATION_TYPES),
                         status=L.choice(status, "status", tasks.STATUSES), vault_id=L.text(vault_id, "vault_id"),
                         vault_name=L.text(vault_name, "vault_name"), resource_id=L.text(resource_id, "resource_id"),
                         resource_name=L.text(resource_name, "resource_name"),
                         provider_id=L.text(provider_id, "provider_id"), start_time=start, end_time=end,
                         task_id=L.text(task_id, "task_id"))
    order = L.parse_sort(sort, tasks.SORT_KEYS)
    with ctx.read() as s:
        rows, total = tasks.list_tasks(s, p, f, limit=limit, offset=offset, sort=order)
    return {"operation_logs": [wire.oplog_resp(t) for t in rows], "count": total, "limit": limit, "offset": offset}


#: The longest ``GET /operation-logs/{id}?wait=`` holds its answer (seconds).
MAX_WAIT_SECONDS = 10.0
#: Answers held at once in this process; past it a wait is answered at once (the client looks again on
#: its own pace), so that many held looks cannot fill the catalog's connections or the thread pool.
MAX_HELD_WAITS = 32
_held = 0


@router.get("/operation-logs/{operation_log_id}")
async def show_op_log(operation_log_id: str, wait: float | None = None, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    """``wait`` (extension, seconds, 0-10): answer as soon as the task has finished, or after ``wait``
    seconds with its state then. ``cbr ... --wait`` follows a task this way. The end of a task rings a bell
    that wakes the held answers (``api/task_ends.py``); they also look every ``task_ends.LOOK_SECONDS``
    (every 50 ms where the bell cannot be heard). The catalog is read in a worker thread each time and no
    thread is held in between."""
    if wait is not None and not 0 <= wait <= MAX_WAIT_SECONDS:
        raise InvalidParameter(f"wait must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
    global _held
    held = bool(wait) and _held < MAX_HELD_WAITS
    deadline = time.monotonic() + (wait if held else 0.0)
    ends = task_ends.task_ends(ctx.settings.effective_catalog_url) if ctx is not None and held else None
    _held += 1  # (one event loop: no lock)
    try:
        while True:
            rang = ends.event() if ends is not None else None  # (taken before the read: no ring is missed)
            status, answer = await run_in_threadpool(_show_op_log, ctx, p, operation_log_id)
            look = ends.look_seconds() if ends is not None else task_ends.LOOK_SECONDS_DEAF
            left = deadline - time.monotonic()
            if status in tasks.FINISHED or left <= 0:
                return RenderedJSON(answer)
            if rang is None:
                await asyncio.sleep(min(look, left))
                continue
            try:
                await asyncio.wait_for(rang.wait(), min(look, left))
            except asyncio.TimeoutError:
                pass
    finally:
        _held -= 1


def _show_op_log(ctx: ServiceContext, p: Principal, operation_log_id: str) -> tuple[str, dict]:
    with ctx.read() as s:
        task = tasks.show_task(s, p, operation_log_id)
        return task.status, {"operation_log": wire.oplog_resp(task)}


@router.post("/operation-logs/{operation_log_id}/cancel")
def cancel_task(operation_log_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """OpenCBR extension: ask a running task to stop (guide 13.2.12 says CBR cannot)."""
    with ctx.tx() as s:
        task = tasks.request_cancel(s, p, operation_log_id)
    return {"operation_log": wire.oplog_resp(task)}
