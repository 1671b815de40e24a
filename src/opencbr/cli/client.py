"""The CLI's API client: configuration, request signing, errors.

Requests go through the standard library's ``http.client`` on a kept-alive connection, not httpx:
importing httpx costs ~0.1 s (more with a cold page cache; its package also imports its own command
line, with click, rich and pygments), a fixed cost of every ``cbr`` command. The behaviour is httpx's
as the CLI used it: a 60 s timeout on connecting and on each read, TLS verified against certifi's CA
bundle, no proxies or other settings from the environment.

Configuration comes from ``OPENCBR_ENDPOINT``, ``OPENCBR_PROJECT_ID``, ``OPENCBR_AK`` and ``OPENCBR_SK``,
else from the TOML file ``$OPENCBR_CLIENT_CONFIG`` or ``~/.config/opencbr/config.toml`` (keys
``endpoint``, ``project_id``, ``ak``, ``sk``), which ``make run`` writes on first start.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


class Response:
    """An answer: status, headers (case-insensitive ``get``) and, once read, the body."""

    def __init__(self, raw: http.client.HTTPResponse, endpoint: str):
        self.status_code, self.headers, self._raw, self._endpoint = raw.status, raw.headers, raw, endpoint
        self.content = b""

    def read(self) -> bytes:
        self.content = b"".join(self.iter_bytes())
        return self.content

    def iter_bytes(self, size: int = 1 << 16) -> Iterator[bytes]:
        """The body as it arrives. A body cut short (the server stopped, the connection broke) raises
        ClientError, as it did through httpx."""
        got = 0
        try:
            while chunk := self._raw.read1(size):
                got += len(chunk)
                yield chunk
            if self._raw.length:  # read1 ends quietly where read() would raise
                raise ClientError(f"cannot reach {self._endpoint}: peer closed connection without sending complete "
                                  f"message body: received {got} bytes, expected {got + self._raw.length}")
        except http.client.IncompleteRead:
            raise ClientError(f"cannot reach {self._endpoint}: peer closed connection without sending complete "
                              "message body") from None
        except (OSError, http.client.HTTPException) as e:
            raise ClientError(f"cannot reach {self._endpoint}: {e}") from None
        finally:
            self._raw.close()  # the connection takes the next request only once this answer is closed

    @property
    def text(self) -> str:
        return self.content.decode(self.headers.get_content_charset() or "utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _readable(sock) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class Connection:
    """One kept-alive HTTP/1.1 connection to the endpoint per thread (an ApiClient may be shared by
    threads, as an httpx client could), opened again when the server closed it."""

    def __init__(self, endpoint: str, timeout: float):
        url = urlsplit(endpoint)
        self.endpoint, self.timeout = endpoint, timeout
        self.https, self.host, self.port, self.prefix = url.scheme == "https", url.hostname, url.port, url.path.rstrip("/")
        self._local = threading.local()

    @property
    def _conn(self) -> http.client.HTTPConnection | None:
        return getattr(self._local, "conn", None)

    @_conn.setter
    def _conn(self, conn: http.client.HTTPConnection | None) -> None:
        self._local.conn = conn

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None and _readable(conn.sock):
            conn.close()  # readable while idle: the server closed it (its keep-alive ended)
            conn = None
        if conn is None:
            if self.https:
                import ssl

                import certifi

                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=ssl.create_default_context(cafile=certifi.where()))
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._conn = conn
        conn.timeout = self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)
        return conn

    def open(self, method: str, url: str, headers: dict[str, str], data: bytes | None) -> Response:
        """Send a request; the answer with its body still to read."""
        conn = self._connection()
        try:
            conn.request(method, self.prefix + url, body=data, headers=headers)
            return Response(conn.getresponse(), self.endpoint)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise ClientError(f"cannot reach {self.endpoint}: {e}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ApiClient:
    """Signs every request as the official SDK does and turns error bodies into ClientError."""

    def __init__(self, cfg: ClientConfig, timeout: float = 60):
        self.cfg = cfg
        self.http = Connection(cfg.endpoint, timeout)

    @property
    def timeout(self) -> float:
        return self.http.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.http.timeout = seconds

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

    def send(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Response:
        """One signed request and its whole answer, whatever its status."""
        url, headers, data = self._prepare(method, path, params, body)
        resp = self.http.open(method, url, headers, data or None)
        resp.read()
        return resp

    @staticmethod
    def _raise_for(resp: Response) -> None:
        if resp.status_code < 400:
            return
        try:
            err = resp.json()
        except ValueError:
            raise ClientError(resp.text or f"HTTP {resp.status_code}", status=resp.status_code) from None
        raise ClientError(err.get("error_msg") or resp.text, code=err.get("error_code", ""), status=resp.status_code)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        resp = self.send(method, path, params=params, body=body)
        self._raise_for(resp)
        if not resp.content:
            return None
        return resp.json()

    @contextmanager
    def stream(self, route: str, /, **params: Any) -> Iterator[Response]:
        """A signed GET whose body is read as a stream (downloads)."""
        url, headers, _ = self._prepare("GET", route, params, None)
        resp = self.http.open("GET", url, headers, None)
        try:
            if resp.status_code >= 400:
                resp.read()
            self._raise_for(resp)
            yield resp
        finally:
            self.http.close()  # a body left unread would be read as the next answer

    # The route is positional-only so that a query parameter may be called ``path``.
    def get(self, route: str, /, **params: Any) -> Any:
        return self.request("GET", route, params=params)

    def post(self, route: str, body: Any = None, /, **params: Any) -> Any:
        return self.request("POST", route, params=params, body=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
