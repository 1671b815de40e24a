"""What a host downloads to install the agent (docs/agents.md): public, unsigned, no secret in them.

- ``GET /agent/install.sh``: the installation script for this service (the enrolment token is an
  argument of the script, never part of a URL: ``package.install_line``);
- ``GET /agent/package.whl``, or under its own file name (``/agent/opencbr_agent-<version>-py3-none-any.whl``,
  which ``pip install URL`` needs): the agent's wheel (what the script installs; no build step on the host);
- ``GET /agent/opencbr-agent.service``: the systemd unit (for an installation by hand);
- ``GET /agent/package``, or under its own file name (``/agent/opencbr-agent-<version>.tar.gz``, which
  ``pip install URL`` needs to know it is an archive): the agent's source package (``pip install`` builds it
  with setuptools, and the C extensions for the host's own Python where it has a compiler and headers).

Both packages are built once per process from the service's own source (reproducibly).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request, Response

from opencbr.agentlink import package

router = APIRouter(include_in_schema=False)


@functools.cache
def _built(kind: str) -> tuple[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="opencbr-agent-pkg-") as d:
        path = Path(package.build_agent_wheel(d) if kind == "wheel" else package.build_agent_sdist(d))
        return path.name, path.read_bytes()


def _file(kind: str, media_type: str) -> Response:
    name, data = _built(kind)
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/agent/package.whl")
@router.get(f"/agent/{package.wheel_name()}")  # (pip installs a wheel from a URL only under its own name)
def agent_wheel():
    return _file("wheel", "application/zip")


@router.get("/agent/opencbr-agent.service")
def agent_unit():
    return Response(package.SYSTEMD_UNIT, media_type="text/plain")


@router.get("/agent/package")
@router.get(f"/agent/{package.sdist_name()}")
def agent_sdist():
    return _file("sdist", "application/gzip")


@router.get("/agent/install.sh")
def agent_install_script(request: Request):
    endpoint = str(request.base_url).rstrip("/")
    return Response(package.install_script(endpoint), media_type="text/x-shellscript")
