"""Our SDK-HMAC-SHA256 implementation against the official SDK's signer (the reference)."""

from __future__ import annotations

import json

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from opencbr.domain import signing


def sdk_sign(method, path, query, body: bytes, headers):
    req = SdkRequest(method=method, schema="http", host="127.0.0.1:18777", resource_path=path, uri=path,
                     query_params=query, header_params=dict(headers), body=body)
    Signer(BasicCredentials("AKTEST", "SKSECRET", "proj1")).sign(req)
    return req


CASES = [
    ("GET", "/v3/proj1/vaults", [("limit", 10), ("offset", 0), ("object_type", "disk"), ("id", "b"), ("id", "a")], b""),
    ("GET", "/v3/proj1/backups", [("name", "a b/c"), ("show_replication", "true"), ("status", "available")], b""),
    ("POST", "/v3/proj1/vaults", [], json.dumps({"vault": {"name": "v 1", "resources": []}}).encode()),
    ("DELETE", "/v3/proj1/vaults/abc", [], b""),
    ("GET", "/v3/proj1/protectables/OS%3A%3ACinder%3A%3AVolume/instances", [("limit", 5)], b""),
]


@pytest.mark.parametrize("method,path,query,body", CASES)
def test_verifier_accepts_sdk_signature(method, path, query, body):
    headers = {"Content-Type": "application/json", "X-Project-Id": "proj1", "User-Agent": "huaweicloud-usdk"}
    req = sdk_sign(method, path, query, body, headers)
    auth = signing.parse_authorization(req.header_params["Authorization"])
    assert auth and auth.access_key == "AKTEST"
    raw_query = req.uri.partition("?")[2]
    # The server sees the decoded path, as uvicorn passes it.
    from urllib.parse import unquote
    canonical = signing.canonical_request(method, unquote(path), raw_query, req.header_params, auth.signed_headers,
                                          signing.body_hash(req.header_params, body))
    expected = signing.signature("SKSECRET", signing.string_to_sign(req.header_params["X-Sdk-Date"], canonical))
    assert expected == auth.signature
    # ... and a wrong key or a changed body does not verify.
    assert signing.signature("SKWRONG", signing.string_to_sign(req.header_params["X-Sdk-Date"], canonical)) != expected
    tampered = signing.canonical_request(method, unquote(path), raw_query, req.header_params, auth.signed_headers,
                                         signing.body_hash(req.header_params, body + b" "))
    assert signing.signature("SKSECRET", signing.string_to_sign(req.header_params["X-Sdk-Date"], tampered)) != expected


def test_our_signer_matches_sdk():
    headers = {"Content-Type": "application/json", "Host": "127.0.0.1:18777", "X-Project-Id": "proj1",
               "User-Agent": "x"}
    query = signing.query_string([("id", "b"), ("id", "a"), ("name", "a b/c")])
    ours = signing.sign_headers("GET", "/v3/proj1/vaults", query, headers, b"", "AKTEST", "SKSECRET")
    req = sdk_sign("GET", "/v3/proj1/vaults", [("id", "b"), ("id", "a"), ("name", "a b/c")], b"",
                   {**headers, "X-Sdk-Date": ours["X-Sdk-Date"]})
    assert req.uri == "/v3/proj1/vaults?" + query
    assert ours["Authorization"] == req.header_params["Authorization"]


def test_canonical_forms_from_the_reference():
    assert signing.canonical_uri("/v3/proj1/vaults") == "/v3/proj1/vaults/"
    assert signing.canonical_query("id=b&id=a&limit=10") == "id=a&id=b&limit=10"
    assert signing.canonical_query("name=a%20b%2Fc&show_replication=true") == "name=a%20b%2Fc&show_replication=true"
    assert signing.parse_authorization("Bearer x") is None
    assert signing.parse_sdk_date("20240102T030405Z").year == 2024
    assert signing.parse_sdk_date("yesterday") is None


@pytest.mark.parametrize("value", ["a+b", "a b", "1+1=2 & more", "x%2By", "~_.-", "ü+ü"])
def test_canonical_query_is_the_sdk_form_of_what_the_server_decodes(value):
    """The canonical form is built from the values the web framework hands to the routes (``+`` is a
    space in a query, as in form encoding), encoded the way the official signer encodes the values it is
    given; so two raw queries share a canonical form (and a signature) only if they decode alike."""
    from urllib.parse import parse_qsl, quote, quote_plus

    req = sdk_sign("GET", "/v3/proj1/backups", [("name", value)], b"", {"Host": "h"})
    sdk_canonical = Signer._process_canonical_query_string(req)
    for raw in (req.uri.partition("?")[2], "name=" + quote_plus(value), "name=" + quote(value, safe="")):
        assert parse_qsl(raw, keep_blank_values=True) == [("name", value)]  # what the framework decodes
        assert signing.canonical_query(raw) == sdk_canonical, raw


def test_plus_and_encoded_plus_sign_differently():
    """``a+b`` (a space) and ``a%2Bb`` (a plus) decode differently, so they may not share a signature."""
    assert signing.canonical_query("name=a+b") == "name=a%20b"
    assert signing.canonical_query("name=a%2Bb") == "name=a%2Bb"
