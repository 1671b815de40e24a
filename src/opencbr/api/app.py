"""The FastAPI application: CBR v3 routes, the inventory and IAM extensions, auth and error mapping."""

from __future__ import annotations

from fastapi import FastAPI, Request

from opencbr import __version__
from opencbr.api import errors
from opencbr.api.deps import MAX_BODY_BYTES, new_request_id
from opencbr.api.routes import backups as backup_routes
from opencbr.api.routes import iam as iam_routes
from opencbr.api.routes import policies as policy_routes
from opencbr.api.routes import resources as resource_routes
from opencbr.api.routes import tasks as task_routes
from opencbr.api.routes import vaults as vault_routes
from opencbr.console import web as console_web
from opencbr.services.context import ServiceContext


def create_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="OpenCBR", version=__version__,
                  description="Cloud Backup and Recovery, wire-compatible with the CBR v3 API. Requests are "
                              "signed with SDK-HMAC-SHA256 (AK/SK).")
    app.state.ctx = ctx
    errors.install(app)

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        request.state.request_id = new_request_id()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return errors.error_response(413, "APIGW.0413", f"the request body is larger than {MAX_BODY_BYTES} "
                                         "bytes", request)
        response = await call_next(request)
        response.headers["X-Request-Id"] = request.state.request_id
        return response

    @app.get("/health", include_in_schema=False)
    def health():
        return {"status": "ok", "version": __version__, "region": ctx.settings.region}

    app.include_router(iam_routes.auth_router)
    for module in (vault_routes, backup_routes, resource_routes, task_routes, iam_routes, policy_routes):
        app.include_router(module.router)
    app.include_router(console_web.router)
    return app
