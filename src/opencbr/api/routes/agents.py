"""Agents (CBR v3 API: agents, and check_agent), with the OpenCBR extensions for enrolment: tokens
(``POST /agents/tokens``), the unsigned enrolment itself (``POST /agents/enrol``: the token's HMAC
proof authenticates it, see ``services.agents.enrolment``) and the install commands."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from opencbr.api import wire
from opencbr.api.deps import MAX_BODY_BYTES, PayloadTooLarge, get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Items, PathText, Text, Wire
from opencbr.domain.errors import InvalidParameter
from opencbr.services import agents
from opencbr.services.agents import state
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)

Pem = Annotated[str, StringConstraints(max_length=16384)]
Endpoint = Annotated[str, StringConstraints(max_length=300)]


# ------------------------------------------------------------------------------------ bodies
class AgentRegister(Wire):
    agent_id: Id
    host_name: Text
    host_ip: Text
    host_os: Text
    host_nickname: Text | None = None
    agent_version: Text | None = None
    agent_type: Text | None = None


class AgentRegisterBody(Wire):
    agent: AgentRegister
    # OpenCBR extension: an agent enrolling with AK/SK sends its CSR and where it listens.
    csr: Pem | None = None
    endpoint: Endpoint | None = None


class AgentUpdate(Wire):
    status: Text | None = None
    host_nickname: Text | None = None  # extension
    bandwidth_limit: Annotated[int, Field(ge=0, le=2**40)] | None = None  # extension, bytes/s


class AgentUpdateBody(Wire):
    agent: AgentUpdate


class ExcludePath(Wire):
    path_name: PathText
    exclude_path_name: Items(PathText, 64) = []


class AddPathBody(Wire):
    add_path: Items(PathText, 64)
    exclude_path: Items(ExcludePath, 64) | None = None


class RemovePathBody(Wire):
    remove_path: Items(PathText, 64)


class CheckItem(Wire):
    resource_id: Id
    resource_type: Text
    resource_name: Text | None = None


class CheckBody(Wire):
    agent_status: Items(CheckItem, 256)


class EnrolBody(Wire):
    token_id: Id
    agent: AgentRegister
    endpoint: Endpoint
    csr: Pem
    proof: Annotated[str, StringConstraints(max_length=128)]


# ------------------------------------------------------------------------------------ answers
def _path(ap, file_system: tuple[str, str] | None) -> dict[str, Any]:
    """A Path (``status``: the path's, available or removed, as CBR's), and the OpenCBR extensions: its file
    system's status and why (the agent refusing the path, outside its roots or through a link)."""
    fs_status, fs_reason = file_system or ("", "")
    return {"id": ap.id, "status": ap.status, "agent_id": ap.agent_id, "dir_path": ap.dir_path,
            "exclude_paths": ",".join(ap.exclude_paths or []), "file_system_status": fs_status,
            "file_system_status_reason": fs_reason}


def agent_resp(view: agents.AgentView) -> dict[str, Any]:
    """An Agent, and the OpenCBR extensions: where it listens, whether it is enrolled, its last error,
    whether its version is older than this service's agent (``is_old``, as check_agent answers)."""
    a = view.agent
    return {
        "agent_id": a.id, "agent_version": a.agent_version, "agent_type": a.agent_type, "host_name": a.host_name,
        "host_nickname": a.host_nickname, "host_ip": a.host_ip, "host_os": a.host_os, "status": view.status,
        "created_at": wire.iso(a.created_at), "updated_at": wire.iso(a.updated_at),
        "last_active_time": wire.iso(a.last_active_time),
        "paths": [_path(ap, view.file_systems.get(ap.dir_path)) for ap in view.paths],
        "endpoint": a.endpoint, "enrolled": bool(a.cert_fingerprint), "last_error": a.last_error,
        "bandwidth_limit": a.bandwidth_limit, "last_backup_time": wire.iso(view.last_backup_at),
        "is_old": bool(a.agent_version) and agents.is_old(a.agent_version),  # (as check_agent says it)
    }


# ------------------------------------------------------------------------------------ routes
@router.post("/agents")
def register_agent(body: AgentRegisterBody, request: Request, p: Principal = Depends(principal),
                   ctx: ServiceContext = Depends(get_ctx)):
    source_ip = request.client.host if request.client else ""
    with ctx.tx() as s:
        agent, certificate = agents.register_agent(s, ctx, p, wire.dump(body.agent), csr=body.csr,
                                                   endpoint=body.endpoint, source_ip=source_ip)
        out = agent_resp(agents.show_agent(s, ctx, p, agent.id))
        if certificate:
            out.update(certificate=certificate, ca_certificate=agents.ca_certificate(s, ctx))
    return {"agent": out}


@router.get("/agents")
def list_agent(limit: str | None = None, offset: int | None = None, status: str | None = None,
               agent_id: list[str] | None = Query(None), p: Principal = Depends(principal),
               ctx: ServiceContext = Depends(get_ctx)):
    """list_agent (``limit`` is a string in the SDK); the list rules of routes/common.py."""
    if limit is not None and not (limit.strip().isascii() and limit.strip().isdigit()):  # ('²' is a digit)
        raise InvalidParameter("limit must be a whole number")
    limit_n, offset = L.page(int(limit) if limit else None, offset)
    status = L.choice(status, "status", state.WIRE_STATUSES)
    with ctx.read() as s:
        views, total = agents.list_agents(s, ctx, p, status=status, ids=L.texts(agent_id, "agent_id"),
                                          limit=limit_n, offset=offset)
    return {"agents": [agent_resp(v) for v in views], "count": total, "limit": limit_n, "offset": offset}


@router.post("/agents/tokens")
def create_token(request: Request, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        t = agents.create_token(s, ctx, p)
        fingerprint = agents.ca_fingerprint(s, ctx)
    return {"token": t.token, "token_id": t.token_id, "expires_at": wire.iso(t.expires_at),
            "install_command": agents.install_commands(ctx, p, t.token, request_url=str(request.base_url),
                                                       ca_fingerprint=fingerprint)}


@router.get("/agents/install-command")
def install_command(request: Request, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:  # (the CA is created on first use, here too)
        fingerprint = agents.ca_fingerprint(s, ctx)
    return {"install_command": agents.install_commands(ctx, p, request_url=str(request.base_url),
                                                       ca_fingerprint=fingerprint)}


@router.post("/agents/enrol")
async def enrol(project_id: str, request: Request, ctx: ServiceContext = Depends(get_ctx)):
    """Unsigned: the token's proof authenticates the request (and the answer, for the agent)."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw)
        EnrolBody.model_validate(data)
    except (ValueError, ValidationError, RecursionError) as e:  # (RecursionError: JSON nested 5,000 deep)
        raise InvalidParameter(f"the enrolment request is malformed: {str(e)[:300]}") from None
    if not isinstance(data, dict):
        raise InvalidParameter("the enrolment request must be a JSON object")
    source_ip = request.client.host if request.client else ""
    return await run_in_threadpool(_enrol, ctx, project_id[:64], data, source_ip)


def _enrol(ctx: ServiceContext, project_id: str, data: dict, source_ip: str) -> dict:
    with ctx.tx() as s:
        e = agents.enrol(s, ctx, project_id, data, source_ip=source_ip)
        answer = {"agent": agent_resp(agents.view(s, ctx, e.agent)), "certificate": e.certificate, "ca_certificate": e.ca_certificate}
    answer["proof"] = agents.proof(e.secret, answer)
    return answer


@router.get("/agents/{agent_id}")
def show_agent(agent_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"agent": agent_resp(agents.show_agent(s, ctx, p, agent_id))}


@router.put("/agents/{agent_id}")
def update_agent(agent_id: str, body: AgentUpdateBody, p: Principal = Depends(principal),
                 ctx: ServiceContext = Depends(get_ctx)):
    a = body.agent
    with ctx.tx() as s:
        view, uninstalled_at = agents.update_agent(s, ctx, p, agent_id, status=a.status,
                                                   host_nickname=a.host_nickname, bandwidth_limit=a.bandwidth_limit)
    agents.notify_revoked(ctx, uninstalled_at)  # after the commit, as for unregister
    return {"agent": agent_resp(view)}


@router.delete("/agents/{agent_id}")
def unregister_agent(agent_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        address = agents.unregister_agent(s, ctx, p, agent_id)
    agents.notify_revoked(ctx, address)  # after the commit: refused by the service from now on anyway
    return Response(status_code=204)


@router.post("/agents/{agent_id}/add-path")
def add_agent_path(agent_id: str, body: AddPathBody, p: Principal = Depends(principal),
                   ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        added, existed = agents.add_agent_path(s, ctx, p, agent_id, body.add_path,
                                               [wire.dump(x) for x in body.exclude_path or []])
    return {"added": added, "existed": existed}


@router.post("/agents/{agent_id}/remove-path")
def remove_agent_path(agent_id: str, body: RemovePathBody, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        removed, not_existed = agents.remove_agent_path(s, ctx, p, agent_id, body.remove_path)
    return {"removed": removed, "not_existed": not_existed}


@router.post("/agent/check")
def check_agent(body: CheckBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:  # (it notes the hosts asked about: their heartbeat then checks their applications)
        return {"agent_status": agents.check_agent(s, ctx, p, [wire.dump(x) for x in body.agent_status])}
