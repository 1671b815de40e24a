"""The CLI's HTTP client (standard library, one kept-alive connection) against a plain HTTP/1.1 server:
connections are reused, reopened when the server closed them, and every network failure is a ClientError
that names the endpoint."""

from __future__ import annotations

import json
import select
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from opencbr.cli.client import ApiClient, ClientConfig, ClientError


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, dict(self.headers), self.client_address[1]))
        if self.path.endswith("/cut"):  # promises 100 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.endswith("/missing"):
            self._answer(404, {"error_code": "BackupService.6404", "error_msg": "no such thing"})
            return
        self._answer(200, {"path": self.path})
        if self.path.endswith("/bye"):
            self.close_connection = True

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.path, dict(self.headers), self.client_address[1]))
        self._answer(200, {"got": json.loads(body)})

    def _answer(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def http_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.seen = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client_of(url: str) -> ApiClient:
    return ApiClient(ClientConfig(url, "p1", "AK", "SK"))


def test_requests_share_one_connection_and_are_signed(http_server):
    c = client_of(f"http://127.0.0.1:{http_server.server_port}")
    assert c.get("/vaults", limit=5)["path"] == "/v3/p1/vaults?limit=5"
    assert c.post("/checkpoints", {"a": 1})["got"] == {"a": 1}
    assert c.get("/v3/other")["path"] == "/v3/other"
    ports = {port for _, _, port in http_server.seen}
    assert len(ports) == 1  # one connection for the three requests
    headers = http_server.seen[1][1]
    assert headers["Host"] == f"127.0.0.1:{http_server.server_port}" and headers["X-Project-Id"] == "p1"
    assert headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=AK")
    assert headers["Content-Type"] == "application/json;charset=utf-8"


def test_a_connection_the_server_closed_is_opened_again(http_server):
    c = client_of(f"http://127.0.0.1:{http_server.server_port}")
    c.get("/bye")  # answered, then the server hangs up, as when its keep-alive time ends
    assert select.select([c.http._conn.sock], [], [], 5)[0]  # the hang-up has arrived
    assert c.get("/b")["path"] == "/v3/p1/b"
    assert len({port for _, _, port in http_server.seen}) == 2


def test_threads_may_share_a_client(http_server):
    c = client_of(f"http://127.0.0.1:{http_server.server_port}")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(30):
                assert c.get(f"/t{n}-{i}")["path"] == f"/v3/p1/t{n}-{i}"
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_endpoint_path_prefix_is_kept(http_server):
    c = client_of(f"http://127.0.0.1:{http_server.server_port}/cbr/")
    assert c.get("/vaults")["path"] == "/cbr/v3/p1/vaults"


def test_error_answers_and_network_failures_are_client_errors(http_server):
    url = f"http://127.0.0.1:{http_server.server_port}"
    c = client_of(url)
    with pytest.raises(ClientError) as e:
        c.get("/missing")
    assert (e.value.message, e.value.code, e.value.status) == ("no such thing", "BackupService.6404", 404)
    with pytest.raises(ClientError) as e, c.stream("/cut") as resp:
        assert resp.headers.get("content-length") == "100"
        b"".join(resp.iter_bytes())
    assert e.value.message == (f"cannot reach {url}: peer closed connection without sending complete message body: "
                               "received 10 bytes, expected 100")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ClientError) as e:
            client_of(f"http://127.0.0.1:{closed}").get("/vaults")
    assert e.value.message == f"cannot reach http://127.0.0.1:{closed}: [Errno 111] Connection refused"


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
def test_https_verifies_the_server_certificate(tmp_path):
    """A self-signed certificate is refused, as httpx refused it: verification is on."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days",
                    "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.seen = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ClientError) as e:
            client_of(f"https://127.0.0.1:{srv.server_port}").get("/vaults")
        assert "CERTIFICATE_VERIFY_FAILED" in e.value.message and not srv.seen
    finally:
        srv.shutdown()
        srv.server_close()

