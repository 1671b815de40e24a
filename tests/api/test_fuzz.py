"""Property-based fuzzing of every route from the app's own OpenAPI schema (schemathesis): whatever is
sent, correctly signed, the server answers with a 2xx or a 4xx carrying the CBR error body, never a 5xx.
One test per catalog backend fuzzes every route, so the guard on what the run reached needs no other test."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import requests
from hypothesis import HealthCheck, given, settings
from requests.auth import AuthBase

from opencbr.domain import signing


@functools.cache
def operations() -> list:
    """Every route of the app's own schema (building it needs no catalog). Built when the test runs, not
    when the module is imported: every xdist worker collects every module, and the build (the app's
    OpenAPI document, schemathesis's loader) cost each of them seconds of CPU for a test only one runs."""
    import schemathesis

    from opencbr.api.app import create_app

    schema = schemathesis.openapi.from_dict(create_app(None).openapi())  # type: ignore[arg-type]
    return [result.ok() for result in schema.get_all_operations()]


class SignedAuth(AuthBase):
    """Sign the final, prepared request exactly as the SDK would (CBR v3 API 2)."""

    def __init__(self, creds):
        self.creds = creds

    def __call__(self, r: requests.PreparedRequest):
        url = requests.utils.urlparse(r.url)
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {"Content-Type": r.headers.get("Content-Type", "application/json"), "Host": url.netloc,
                   "X-Project-Id": self.creds.project_id}
        signed = signing.sign_headers(r.method, requests.utils.unquote(url.path), url.query, headers, body,
                                      self.creds.ak, self.creds.sk)
        r.headers.update(signed)
        return r


def fuzz_operation(operation, server) -> set[int]:
    """Up to 15 generated requests to one route; every answer is checked as it comes; returns the statuses."""
    statuses: set[int] = set()

    @given(case=operation.as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def one_request(case):
        if "project_id" in (case.path_parameters or {}):
            case.path_parameters["project_id"] = server.admin.project_id
        response = case.call(base_url=server.url, auth=SignedAuth(server.admin), timeout=30)
        where = f"{case.method} {case.formatted_path}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error_code", "error_msg"}, (where, body)
        if "{project_id}" in case.path:  # signed routes (console sign-in answers 401 to wrong keys, rightly)
            assert response.status_code != 401, f"{where}: signed request rejected, the signing helper is broken"
            statuses.add(response.status_code)

    one_request()
    return statuses


def test_no_server_errors_and_the_fuzzing_reached_the_handlers(server):
    seen: set[int] = set()
    for operation in operations():
        seen |= fuzz_operation(operation, server)
    # guard against a run that proves nothing: signed requests got through to the handlers
    assert 200 in seen and 400 in seen and 404 in seen, seen


def test_collecting_this_module_builds_no_schema():
    """Importing the module (what collection does on every worker) neither loads schemathesis's OpenAPI
    loader nor builds the app's schema."""
    probe = ("import sys, tests.api.test_fuzz; "
             "print(sorted(m for m in ('schemathesis.specs.openapi.schemas', 'opencbr.api.app') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.strip() == "[]", out.stdout
