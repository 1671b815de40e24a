"""The CLI's API client: configuration, request signing, errors.

Configuration comes from ``OPENCBR_ENDPOINT``, ``OPENCBR_PROJECT_ID``, ``OPENCBR_AK`` and ``OPENCBR_SK``,
else from the TOML file ``$OPENCBR_CLIENT_CONFIG`` or ``~/.config/opencbr/config.toml`` (keys
``endpoint``, ``project_id``, ``ak``, ``sk``), which ``make run`` writes on first start.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import tomli_w

from opencbr.domain import signing


class ClientError(Exception):
    """An error to print and exit non-zero with: the server's error body or a local problem."""

    def __init__(self, message: str, *, code: str = "", status: int = 0):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def client_config_path() -> Path:
    env = os.environ.get("OPENCBR_CLIENT_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "opencbr" / "config.toml"


def write_client_config(endpoint: str, project_id: str, ak: str, sk: str, path: Path | None = None) -> Path:
    """Write the CLI configuration with mode 0600 (it holds a secret key)."""
    path = path or client_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tomli_w.dumps({"endpoint": endpoint, "project_id": project_id, "ak": ak, "sk": sk}).encode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


@dataclass
class ClientConfig:
    endpoint: str
    project_id: str
    ak: str
    sk: str

    @classmethod
    def load(cls) -> ClientConfig:
        values: dict[str, str] = {}
        path = client_config_path()
        if path.exists():
            try:
                with open(path, "rb") as f:
                    values.update({k: str(v) for k, v in tomllib.load(f).items()})
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ClientError(f"cannot read {path}: {e}") from None
        for key, var in (("endpoint", "OPENCBR_ENDPOINT"), ("project_id", "OPENCBR_PROJECT_ID"),
                         ("ak", "OPENCBR_AK"), ("sk", "OPENCBR_SK")):
            if os.environ.get(var):
                values[key] = os.environ[var]
        missing = [k for k in ("endpoint", "project_id", "ak", "sk") if not values.get(k)]
        if missing:
            raise ClientError(f"not configured: {', '.join(missing)} missing; run `make run` (it writes {path}) "
                              "or set OPENCBR_ENDPOINT, OPENCBR_PROJECT_ID, OPENCBR_AK and OPENCBR_SK")
        return cls(values["endpoint"].rstrip("/"), values["project_id"], values["ak"], values["sk"])


class ApiClient:
    """Signs every request as the official SDK does and turns error bodies into ClientError."""

    def __init__(self, cfg: ClientConfig, timeout: float = 60):
        self.cfg = cfg
        self.http = httpx.Client(base_url=cfg.endpoint, timeout=timeout, trust_env=False)

    def _prepare(self, method: str, path: str, params: dict[str, Any] | None, body: Any) -> tuple[str, dict, bytes]:
        """The URL, signed headers and body bytes of a request. ``path`` is relative to
        ``/v3/{project_id}`` unless it starts with ``/v3/``."""
        full = path if path.startswith("/v3/") else f"/v3/{self.cfg.project_id}{path}"
        pairs: list[tuple[str, str]] = []
        for k, v in (params or {}).items():
            if v is None:
                continue
            for item in v if isinstance(v, (list, tuple)) else [v]:
                pairs.append((k, str(item).lower() if isinstance(item, bool) else str(item)))
        query = signing.query_string(pairs)
        data = b"" if body is None else json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json;charset=utf-8" if body is not None else "application/json",
            "Host": urlsplit(self.cfg.endpoint).netloc,
            "X-Project-Id": self.cfg.project_id,
            "User-Agent": "opencbr-cli",
        }
        headers = signing.sign_headers(method, full, query, headers, data, self.cfg.ak, self.cfg.sk)
        return full + (f"?{query}" if query else ""), headers, data

    @staticmethod
    def _raise_for(resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        try:
            err = resp.json()
        except ValueError:
            raise ClientError(resp.text or f"HTTP {resp.status_code}", status=resp.status_code) from None
        raise ClientError(err.get("error_msg") or resp.text, code=err.get("error_code", ""), status=resp.status_code)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        url, headers, data = self._prepare(method, path, params, body)
        try:
            resp = self.http.request(method, url, content=data or None, headers=headers)
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach {self.cfg.endpoint}: {e}") from None
        self._raise_for(resp)
        if not resp.content:
            return None
        return resp.json()

    @contextmanager
    def stream(self, route: str, /, **params: Any) -> Iterator[httpx.Response]:
        """A signed GET whose body is read as a stream (downloads)."""
        url, headers, _ = self._prepare("GET", route, params, None)
        try:
            with self.http.stream("GET", url, headers=headers) as resp:
                if resp.status_code >= 400:
                    resp.read()
                self._raise_for(resp)
                yield resp
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach {self.cfg.endpoint}: {e}") from None

    # The route is positional-only so that a query parameter may be called ``path``.
    def get(self, route: str, /, **params: Any) -> Any:
        return self.request("GET", route, params=params)

    def post(self, route: str, body: Any = None, /, **params: Any) -> Any:
        return self.request("POST", route, params=params, body=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
