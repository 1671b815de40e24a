"""The FastAPI application: CBR v3 routes, the inventory and IAM extensions, auth and error mapping."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request

from opencbr import __version__
from opencbr.api import errors
from opencbr.api.deps import MAX_BODY_BYTES, new_request_id
from opencbr.api.routes import agent_package as agent_package_routes
from opencbr.api.routes import agents as agent_routes
from opencbr.api.routes import alarms as alarm_routes
from opencbr.api.routes import backups as backup_routes
from opencbr.api.routes import iam as iam_routes
from opencbr.api.routes import images as image_routes
from opencbr.api.routes import members as member_routes
from opencbr.api.routes import metrics as metric_routes
from opencbr.api.routes import migration as migration_routes
from opencbr.api.routes import org_policies as org_policy_routes
from opencbr.api.routes import policies as policy_routes
from opencbr.api.routes import quotas as quota_routes
from opencbr.api.routes import replication as replication_routes
from opencbr.api.routes import resources as resource_routes
from opencbr.api.routes import tags as tag_routes
from opencbr.api.routes import tasks as task_routes
from opencbr.api.routes import vault_checks as vault_check_routes
from opencbr.api.routes import vault_locks as vault_lock_routes
from opencbr.api.routes import vaultops as vaultop_routes
from opencbr.api.routes import vaults as vault_routes
from opencbr.console import web as console_web
from opencbr.services.context import ServiceContext


class RequestIds:
    """Every request gets an id (``request.state.request_id``, the ``X-Request-Id`` header of the answer),
    and a body declared larger than ``MAX_BODY_BYTES`` is refused before it is read. A plain ASGI
    middleware: the ``@app.middleware`` kind costs an extra task and stream per request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            response = errors.error_response(413, "APIGW.0413", f"the request body is larger than {MAX_BODY_BYTES} "
                                             "bytes", Request(scope))
            return await response(scope, receive, send)

        started = time.perf_counter()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                # The API's own time for the request (W3C Server-Timing): what a client's latency is made
                # of besides the network and itself (bench/api.py reports both).
                headers.append((b"server-timing", b"app;dur=%.1f" % ((time.perf_counter() - started) * 1000)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(ctx: ServiceContext) -> FastAPI:
    # redirect_slashes off: an id the SDK's client leaves empty (``""``, or ``"."``, which it drops) makes
    # ``/agents/``, and a redirect there is a 3xx with no body, which the SDK takes for success (a delete
    # that deleted nothing); without it such a path is the 404 of an unknown route
    app = FastAPI(title="OpenCBR", version=__version__, redirect_slashes=False,
                  description="Cloud Backup and Recovery, wire-compatible with the CBR v3 API. Requests are "
                              "signed with SDK-HMAC-SHA256 (AK/SK).")
    app.state.ctx = ctx
    errors.install(app)

    app.add_middleware(RequestIds)

    @app.get("/health", include_in_schema=False)
    def health():
        return {"status": "ok", "version": __version__, "region": ctx.settings.region}

    app.include_router(iam_routes.auth_router)
    # first: their fixed paths (/vaults/batch-update, /backups/sync) would otherwise match the id routes
    app.include_router(vaultop_routes.router)
    app.include_router(vaultop_routes.domain_router)
    app.include_router(tag_routes.router)
    app.include_router(replication_routes.router)  # before the backup routes: /checkpoints/replicate
    for module in (vault_routes, backup_routes, resource_routes, task_routes, iam_routes, policy_routes,
                   agent_routes):
        app.include_router(module.router)
    app.include_router(agent_package_routes.router)  # the agent's installation (docs/agents.md)
    app.include_router(member_routes.router)  # sharing backups (guide 4.2)
    app.include_router(org_policy_routes.router)
    app.include_router(quota_routes.router)
    app.include_router(migration_routes.router)
    app.include_router(image_routes.router)  # images (docs/images.md)
    app.include_router(vault_lock_routes.router)  # vault locks (docs/vault-lock.md)
    app.include_router(metric_routes.router)  # vault metrics (docs/monitoring.md)
    app.include_router(alarm_routes.router)  # alarm targets (docs/monitoring.md)
    app.include_router(vault_check_routes.router)  # verify and restore-test policies (docs/verification.md)
    app.include_router(console_web.router)
    return app
