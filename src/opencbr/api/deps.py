"""Request-scoped dependencies: the service context and the authenticated principal."""

from __future__ import annotations

import uuid

from fastapi import Path, Request
from starlette.concurrency import run_in_threadpool

from opencbr.services import iam
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


async def principal(request: Request, project_id: str = Path(description="The caller's project.")) -> Principal:
    """Verify the request's SDK-HMAC-SHA256 signature over the raw bytes received; scope it to the
    project in the path."""
    ctx: ServiceContext = request.app.state.ctx
    token = request.headers.get("x-auth-token")
    if token:  # the web console's session
        return await run_in_threadpool(iam.authenticate_token, ctx, token, project_id,
                                       request.client.host if request.client else "",
                                       getattr(request.state, "request_id", ""))
    body = await request.body()
    path_project = project_id
    return await run_in_threadpool(
        iam.authenticate, ctx, method=request.method, path=request.scope["path"],
        raw_query=request.scope.get("query_string", b"").decode("latin-1"), headers=dict(request.headers),
        body=body, path_project_id=path_project, source_ip=request.client.host if request.client else "",
        request_id=getattr(request.state, "request_id", ""))


def new_request_id() -> str:
    return uuid.uuid4().hex
