"""A small stand-in for the service's enrolment routes (stdlib http.server), written from the protocol
of docs/agents.md: a protocol test of the agent's side. The real service is tested in
tests/agent/test_register_service.py once its routes exist."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from opencbr.agentlink import certs
from opencbr.domain import signing


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _proof(secret: bytes, obj: dict) -> str:
    return hmac.new(secret, _canonical({k: v for k, v in obj.items() if k != "proof"}), hashlib.sha256).hexdigest()


class EnrolService:
    def __init__(self, project_id: str = "p" * 32, ak: str = "AKTEST", sk: str = "SKTEST"):
        self.project_id, self.ak, self.sk = project_id, ak, sk
        self.ca, self.ca_key = certs.new_authority()
        self.tokens: dict[str, dict] = {}
        self.agents: dict[str, dict] = {}
        self.tamper_answer = False  # a man in the middle changing the answer
        self.other_ca = False       # a man in the middle presenting its own CA
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/health":
                    return self._answer(200, {"status": "ok", "version": "test"})
                self._answer(404, {"error_code": "NOT_FOUND", "error_msg": self.path})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                status, answer = svc.route(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                           raw, body)
                self._answer(status, answer)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def new_token(self, ttl: float = 3600) -> str:
        token_id, secret = secrets.token_hex(8), secrets.token_bytes(32)
        self.tokens[token_id] = {"secret": secret, "expires": time.time() + ttl, "used": False}
        b64 = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
        ca_hash = certs.fingerprint(self.ca).removeprefix("sha256:")
        return f"ocbr1.{self.project_id}.{token_id}.{b64}.{ca_hash}"

    def _issue(self, csr: str, agent: dict, endpoint: str) -> tuple[str, str]:
        ca, ca_key = (certs.new_authority() if self.other_ca else (self.ca, self.ca_key))
        cert = certs.sign_csr(ca, ca_key, csr, common_name=agent["agent_id"], server=True, client=False)
        self.agents[agent["agent_id"]] = {**agent, "endpoint": endpoint, "fingerprint": certs.fingerprint(cert)}
        return cert, ca

    def route(self, method: str, path: str, headers: dict, raw: bytes, body: dict) -> tuple[int, dict]:
        if path == f"/v3/{self.project_id}/agents/enrol":
            return self._enrol(body)
        if path == f"/v3/{self.project_id}/agents":
            return self._register(method, path, headers, raw, body)
        return 404, {"error_code": "NOT_FOUND", "error_msg": path}

    def _enrol(self, body: dict) -> tuple[int, dict]:
        tok = self.tokens.get(body.get("token_id", ""))
        if tok is None or tok["used"] or tok["expires"] < time.time():
            return 401, {"error_code": "CBR.AGENT_TOKEN", "error_msg": "the token is unknown, used or expired"}
        if not hmac.compare_digest(body.get("proof", ""), _proof(tok["secret"], body)):
            return 401, {"error_code": "CBR.AGENT_TOKEN", "error_msg": "wrong proof"}
        tok["used"] = True
        cert, ca = self._issue(body["csr"], body["agent"], body["endpoint"])
        answer = {"agent": {**body["agent"], "status": "online"}, "certificate": cert, "ca_certificate": ca}
        answer["proof"] = _proof(tok["secret"], answer)
        if self.tamper_answer:
            answer["agent"]["host_name"] = "mallory"
        return 200, answer

    def _register(self, method, path, headers, raw, body) -> tuple[int, dict]:
        auth = signing.parse_authorization(headers.get("authorization", ""))
        if auth is None or auth.access_key != self.ak:
            return 401, {"error_code": "APIGW.0301", "error_msg": "not signed"}
        canonical = signing.canonical_request(method, urlsplit(path).path, "", headers, auth.signed_headers,
                                              signing.body_hash(headers, raw))
        want = signing.signature(self.sk, signing.string_to_sign(headers.get("x-sdk-date", ""), canonical))
        if want != auth.signature:
            return 401, {"error_code": "APIGW.0301", "error_msg": "bad signature"}
        agent = dict(body["agent"])
        csr, endpoint = agent.pop("csr"), agent.pop("endpoint")
        cert, ca = self._issue(csr, agent, endpoint)
        return 200, {"agent": {**agent, "certificate": cert, "ca_certificate": ca}}
