"""``cbr vault tag``, ``cbr vault auto-bind`` and ``cbr resource-tags`` against a real server."""

from __future__ import annotations

import pytest

from tests.support.clients import cli


# One catalog is enough here: each command is a process start; tests/api/test_tags_sdk.py covers both.
@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_vault_and_resource_tags(server, tmp_path):
    img = tmp_path / "tagged.img"
    img.write_bytes(b"\0" * (1 << 20))
    assert cli(server, "disk", "register", "--name", "tagged-disk", "--path", str(img)).code == 0
    assert cli(server, "vault", "create", "--name", "tagged-vault", "--type", "disk", "--size", "10").code == 0

    out = cli(server, "vault", "tag", "add", "tagged-vault", "env=prod", "owner=", "--json")
    assert out.code == 0, out.err
    assert out.json()["tags"] == [{"key": "env", "value": "prod"}, {"key": "owner", "value": ""}]
    assert cli(server, "vault", "tag", "remove", "tagged-vault", "owner", "--json").json()["tags"] == [
        {"key": "env", "value": "prod"}]
    found = cli(server, "vault", "tag", "find", "env=prod", "--json").json()
    assert [f["resource_name"] for f in found] == ["tagged-vault"]
    bad = cli(server, "vault", "tag", "add", "tagged-vault", "a/b=1")
    assert bad.code != 0 and "tag key" in bad.err

    out = cli(server, "resource-tags", "set", "tagged-disk", "app=web", "--json")
    assert out.code == 0, out.err
    assert cli(server, "resource-tags", "show", "tagged-disk", "--json").json()["tags"] == [
        {"key": "app", "value": "web"}]
    out = cli(server, "vault", "auto-bind", "tagged-vault", "app=web", "--json")
    assert out.code == 0, out.err
    assert out.json()["auto_bind"] is True and out.json()["bind_rules"] == {"tags": [{"key": "app", "value": "web"}]}
    assert "off" in cli(server, "vault", "auto-bind", "tagged-vault", "--off").out
