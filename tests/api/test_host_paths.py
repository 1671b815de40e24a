"""Tenants cannot reach paths of the service's machine they were not given: without ``resource_roots``
only the operator's account names paths; with them, every tenant stays below them."""

from __future__ import annotations

import pytest

from opencbr.cli.client import ClientError
from tests.support.clients import api, new_tenant
from tests.support.server import ServerProcess


@pytest.fixture()
def no_roots(tmp_path):
    srv = ServerProcess(str(tmp_path / "srv"), f"sqlite:///{tmp_path}/srv/catalog.db",
                        extra_env={"OPENCBR_RESOURCE_ROOTS": ""}).start()
    yield srv
    srv.stop()


def test_without_roots_only_the_operator_names_paths(no_roots, tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(b"\0" * 65536)
    operator = api(no_roots)
    assert operator.post("/inventory/disks", {"name": "ok", "path": str(img)})["disk"]["id"]
    tenant = api(no_roots, new_tenant(no_roots, "outsider"))
    for body, route in (({"name": "x", "path": "/etc/shadow"}, "/inventory/disks"),
                        ({"name": "x", "path": str(tmp_path)}, "/inventory/file-systems")):
        with pytest.raises(ClientError) as e:
            tenant.post(route, body)
        assert e.value.status == 403 and "resource_roots" in e.value.message


def test_with_roots_everyone_stays_below_them(server, tmp_path):
    tenant = api(server, new_tenant(server, f"rooted-{server.backend}"))
    with pytest.raises(ClientError) as e:
        tenant.post("/inventory/disks", {"name": "x", "path": "/etc/passwd"})
    assert e.value.status == 400 and "outside" in e.value.message
    img = tmp_path / "ok.img"
    img.write_bytes(b"\0" * 65536)
    assert tenant.post("/inventory/disks", {"name": "ok", "path": str(img)})["disk"]["id"]
