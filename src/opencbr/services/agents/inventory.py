"""An agent's inventory as protectable resources of its project (provider ``agent``): the host as a
server, its whole disks and LVM logical volumes as the server's disks (the one holding ``/`` is the
system disk), image files under its roots as disks of their own, each added path as a file system.

Resources are matched by (agent, type, path) from one inventory to the next. A device that vanished
turns ``error`` with the reason (it is never deleted: it may have backups); one that comes back is
available again.
"""

from __future__ import annotations

import posixpath
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Agent, AgentPath, Resource
from opencbr.domain import resource as R
from opencbr.services.agents.state import TASK_STATUSES, label, resources_of
from opencbr.services.context import ServiceContext

PROVIDER = "agent"
#: Kinds of block device that become disks (partitions are read as part of their disk).
DISK_KINDS = ("disk", "lvm", "image")
#: Kinds that are the host server's disks (an image file is a disk of its own).
SERVER_DISK_KINDS = ("disk", "lvm")
#: No inventory is taken beyond this many block devices (an agent is not trusted with our memory).
MAX_DEVICES = 1024


#: How deep an agent's answer may nest before the rest of it is left out (its inventory is a few levels).
MAX_ANSWER_DEPTH = 16


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate: a name that was not UTF-8 on the host (surrogateescape)
        return False


def _storable(value: Any, depth: int = 0) -> bool:
    if depth > MAX_ANSWER_DEPTH:
        return False
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, list):
        return all(_storable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _utf8(k) and _storable(v, depth + 1) for k, v in value.items())
    return True


def storable_answer(answer: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The agent's answer without what the catalog cannot keep as text, and how many entries that left out.

    A file below a root named in bytes that are not UTF-8 (``\\xff.img``) comes as a string with lone
    surrogates; writing it failed the whole inventory's transaction, every heartbeat, and the agent
    looked offline until the file went. Such an entry of a list (a device, a path) is left out: the catalog
    names resources by text. Any other such string keeps what it can say (``?`` for the rest)."""
    dropped = [0]

    def clean(value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return value if _utf8(value) else value.encode("utf-8", "replace").decode("utf-8")
        if isinstance(value, list):
            kept = [v for v in value if _storable(v, depth + 1)]
            dropped[0] += len(value) - len(kept)
            return [clean(v, depth + 1) for v in kept]
        if isinstance(value, dict):
            return {k: clean(v, depth + 1) for k, v in value.items() if isinstance(k, str) and _utf8(k)}
        return value

    return clean(answer, 0), dropped[0]


def _name(text: str) -> str:
    """A resource name (no slash, 1 to 255 characters) from host and device names."""
    clean = "".join(c for c in text.replace("/", "-") if c >= " ").strip() or "resource"
    return clean[:255]


def _new(ctx: ServiceContext, agent: Agent, rtype: str, path: str, name: str, status: str) -> Resource:
    return Resource(project_id=agent.project_id, type=rtype, provider=PROVIDER, agent_id=agent.id, name=_name(name),
                    path=path, size_bytes=0, region=ctx.settings.region,
                    availability_zone=ctx.settings.availability_zones[0], status=status, host="", identity={})


def _set(res: Resource, status: str, reason: str = "") -> None:
    # a task's status is the task's; a restore that did not finish stays in error until a restore
    # repairs it (a poll that finds the device again must not make a half-written disk look healthy)
    if res.status in TASK_STATUSES or R.repairable_by_restore(res.status, res.status_reason):
        return
    if res.status != status or res.status_reason != reason:
        res.status, res.status_reason = status, reason


def host_name(agent: Agent) -> str:
    return agent.host_nickname or agent.host_name or agent.id[:8]


#: In a removed path's kept file system (``identity``): the agent it was a path of (registry._retire).
RETIRED_FROM = "retired_from_agent"


def file_system(s: Session, ctx: ServiceContext, agent: Agent, dir_path: str) -> Resource:
    """The file-system resource of an added path: the agent's, or the one this path had before it was
    removed (kept for its vault and backups: the user who adds the path again means that one), made now
    if there is neither; available again."""
    for res in resources_of(s, agent.id):
        if res.type == R.FILE_SYSTEM and res.path == dir_path:
            _set(res, "available")
            return res
    for res in s.scalars(select(Resource).where(Resource.project_id == agent.project_id, Resource.agent_id.is_(None),
                                                Resource.type == R.FILE_SYSTEM, Resource.path == dir_path,
                                                Resource.provider == PROVIDER)):
        if (res.identity or {}).get(RETIRED_FROM) == agent.id:
            res.agent_id = agent.id
            res.identity = {k: v for k, v in res.identity.items() if k != RETIRED_FROM}
            res.status, res.status_reason = "available", ""
            return res
    res = _new(ctx, agent, R.FILE_SYSTEM, dir_path, f"{host_name(agent)} {dir_path.strip('/') or 'root'}",
               "available")
    s.add(res)
    s.flush()
    return res


def _device_key(d: dict) -> set[str]:
    return {str(d.get("name") or ""), str(d.get("path") or "")} - {""}


def _system_device(devices: list[dict]) -> str | None:
    """The path of the disk or logical volume holding ``/``: the LV itself, or the whole disk above the
    partition mounted there."""
    by_key = {k: d for d in devices for k in _device_key(d)}
    current = next((d for d in devices if d.get("mountpoint") == "/"), None)
    for _ in range(8):  # partition -> disk (or a device-mapper stack), never a loop
        if current is None:
            return None
        if current.get("kind") in SERVER_DISK_KINDS:
            return current.get("path")
        current = by_key.get(str(current.get("parent") or ""))
    return None


def apply(s: Session, ctx: ServiceContext, agent: Agent, answer: dict[str, Any], *,
          asked_at: datetime | None = None) -> None:
    """Bring the agent's resources in line with its ``inventory`` answer, asked for at ``asked_at`` (the
    catalog's clock, as rows' ``updated_at``)."""
    devices = [d for d in (answer.get("block_devices") or [])[:MAX_DEVICES]
               if isinstance(d, dict) and d.get("kind") in DISK_KINDS and isinstance(d.get("path"), str)]
    rows = resources_of(s, agent.id)
    # Servers made from images on this host (services/images.py; their path is their system disk's): the
    # host's inventory does not describe them, it only says whether their disk files are still there.
    made = {r.id: r for r in rows if r.type == R.SERVER and r.path}
    existing = {(r.type, r.path): r for r in rows if r.id not in made}
    host = host_name(agent)
    server = existing.get((R.SERVER, ""))
    if server is None:
        server = _new(ctx, agent, R.SERVER, "", host, "running")
        s.add(server)
        s.flush()
    server.name = _name(host)
    seen = {(R.SERVER, "")}
    system = _system_device(devices)
    attached = sorted((d for d in devices if d["kind"] in SERVER_DISK_KINDS), key=lambda d: d["path"] != system)
    index = {d["path"]: i for i, d in enumerate(attached)}
    for d in devices:
        path = d["path"]
        seen.add((R.DISK, path))
        res = existing.get((R.DISK, path))
        if res is None:
            res = _new(ctx, agent, R.DISK, path, f"{host} {d.get('name') or posixpath.basename(path)}", "available")
            s.add(res)
        res.size_bytes = max(0, int(d.get("size") or 0))
        res.identity = {k: d.get(k) for k in ("kind", "name", "fstype", "mountpoint", "vg", "lv") if d.get(k)}
        if res.server_id in made:
            _set(res, "in-use")
        elif path in index:
            res.server_id, res.device_index = server.id, index[path]
            res.disk_role = "system" if path == system else "data"
            _set(res, "in-use")
        else:
            res.server_id, res.device_index, res.disk_role = None, None, None
            _set(res, "available")
    paths = {str(p.get("dir_path")): p for p in (answer.get("paths") or [])[:MAX_DEVICES] if isinstance(p, dict)}
    for ap in s.query(AgentPath).filter(AgentPath.agent_id == agent.id, AgentPath.status == "available"):
        seen.add((R.FILE_SYSTEM, ap.dir_path))
        res = existing.get((R.FILE_SYSTEM, ap.dir_path)) or file_system(s, ctx, agent, ap.dir_path)
        reported = paths.get(ap.dir_path)
        if reported is not None and not reported.get("exists", True):
            # the agent's refusal (outside its roots, a symbolic link on the way), else it is missing
            refused = reported.get("error")
            _set(res, "error", f"refused by host {host}: {str(refused)[:300]}" if refused and isinstance(refused, str)
                 else f"{ap.dir_path} does not exist on host {host}")
        else:
            if reported is not None and isinstance(reported.get("size_estimate"), int):
                res.size_bytes = max(0, reported["size_estimate"])
            _set(res, "available")
    walked = answer.get("images_complete") is not False  # the agent's walk for image files finished
    for key, res in existing.items():
        if key not in seen:
            if not walked and res.type == R.DISK and (res.identity or {}).get("kind") == "image":
                continue  # an image the walk did not reach in its time budget is not gone
            if asked_at is not None and res.updated_at is not None and res.updated_at >= asked_at:
                # changed while the agent answered (a task made this disk and ended): an answer the
                # agent may have put together before the file existed proves nothing about it
                continue
            if res.server_id in made:
                # A made server's disk file that is not in this answer may simply be newer than the agent's
                # list of image files (redone every few minutes): its absence proves nothing; a task that
                # opens it says if it is gone.
                continue
            what = "path" if res.type == R.FILE_SYSTEM else "device"
            if res.type == R.DISK:  # the host as it is now has no such disk
                res.server_id, res.device_index, res.disk_role = None, None, None
            # (a block device the agent stops listing may still be there: its --device patterns changed)
            why = " or not allowed by the agent's --device patterns any more" \
                if res.type == R.DISK and res.path.startswith("/dev/") else ""
            _set(res, "error", f"{what} {res.path} is no longer on host {host}{why} (agent {label(agent)})")
    s.flush()
    disks = [r for r in resources_of(s, agent.id) if r.server_id == server.id]
    server.size_bytes = sum(d.size_bytes for d in disks)
    broken = [d for d in disks if d.status == "error"]
    _set(server, "faulty" if broken else "running", f"disk {broken[0].path}: {broken[0].status_reason}" if broken else "")
    for m in made.values():
        broken = [d for d in rows if d.server_id == m.id and d.status == "error"]
        if broken:
            _set(m, "faulty", f"disk {broken[0].path}: {broken[0].status_reason}")
        elif m.status == "faulty":
            _set(m, "stopped")
