"""Listing the inventory (``resources.list_resources``, behind the inventory lists and the protectables):
a page costs the same number of catalog queries whatever the inventory's size, and a status filter sees
the live status (a disk whose file is gone is in error, a server with a missing disk is faulty). The same
for the servers on a page of vaults."""

from __future__ import annotations

import os
from contextlib import contextmanager

from sqlalchemy import event

from opencbr.domain import resource as R
from opencbr.services import resources, vaults


def _disks(ctx, tenant, tmp_path, n: int, first: int = 0) -> list[str]:
    ids = []
    for i in range(first, first + n):
        path = tmp_path / f"d{i:03d}.img"
        path.write_bytes(b"\0" * 4096)
        with ctx.tx() as s:
            disk = resources.register_disk(s, ctx, tenant, name=f"d{i:03d}", path=str(path))
        ids.append(disk.id)  # (given when the transaction is flushed)
    return ids


def _list(ctx, tenant, **kw):
    with ctx.read() as s:
        return resources.list_resources(s, tenant, **kw)


def _server(ctx, tenant, **kw):
    with ctx.tx() as s:
        return resources.register_server(s, ctx, tenant, **kw)


def _vault(ctx, tenant, spec: dict):
    with ctx.tx() as s:
        return vaults.create_vault(s, ctx, tenant, spec)


def _vaults(ctx, tenant):
    with ctx.read() as s:
        return vaults.list_vaults(s, tenant, vaults.VaultFilter(), limit=20, offset=0)


@contextmanager
def counted_statements(ctx):
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(ctx.engine, "before_cursor_execute", note)


def _queries(ctx, tenant, **kw) -> int:
    with counted_statements(ctx) as seen:
        _list(ctx, tenant, rtype=R.DISK, **kw)
    return len(seen)


def test_a_page_costs_the_same_queries_for_3_or_40_resources(ctx, tenant, tmp_path):
    _disks(ctx, tenant, tmp_path, 3)
    small = [_queries(ctx, tenant, limit=10), _queries(ctx, tenant, limit=10, status="available")]
    _disks(ctx, tenant, tmp_path, 37, first=3)
    assert [_queries(ctx, tenant, limit=10), _queries(ctx, tenant, limit=10, status="available")] == small
    views, total = _list(ctx, tenant, rtype=R.DISK, limit=10, offset=5)
    assert total == 40 and [v.resource.name for v in views] == [f"d{i:03d}" for i in range(5, 15)]


def test_status_filters_see_the_live_status(ctx, tenant, tmp_path):
    ids = _disks(ctx, tenant, tmp_path, 6)
    os.remove(tmp_path / "d002.img")
    views, total = _list(ctx, tenant, rtype=R.DISK, status="error")
    assert total == 1 and [v.resource.id for v in views] == [ids[2]] and views[0].status == "error"
    views, total = _list(ctx, tenant, rtype=R.DISK, status="available", limit=2, offset=1)
    assert total == 5 and [v.resource.id for v in views] == [ids[1], ids[3]]

    server = _server(ctx, tenant, name="s1", system_disk=ids[4], data_disks=[ids[5]])
    healthy = _server(ctx, tenant, name="s2", system_disk=ids[0])
    os.remove(tmp_path / "d005.img")
    for status in ("faulty", "ERROR"):
        views, total = _list(ctx, tenant, rtype=R.SERVER, status=status)
        assert (total, [v.resource.id for v in views]) == (1, [server.id]), status
    for status in ("running", "ACTIVE"):
        views, total = _list(ctx, tenant, rtype=R.SERVER, status=status)
        assert (total, [v.resource.id for v in views]) == (1, [healthy.id]), status
    views, _ = _list(ctx, tenant, rtype=R.SERVER, ids=[server.id])
    assert [d.id for d in views[0].disks] == [ids[4], ids[5]]  # the system disk first


def test_a_disk_of_a_protected_server_shows_the_server_vault(ctx, tenant, tmp_path):
    ids = _disks(ctx, tenant, tmp_path, 3)
    server = _server(ctx, tenant, name="s1", system_disk=ids[0], data_disks=[ids[1]])
    view = _vault(ctx, tenant, {"name": "v1", "billing": {
        "object_type": "server", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": server.id, "type": R.SERVER}]})
    listed = {v.resource.id: v for v in _list(ctx, tenant)[0]}
    assert listed[ids[0]].vault.id == listed[ids[1]].vault.id == listed[server.id].vault.id == view.vault.id
    assert listed[ids[2]].vault is None


def test_a_vault_page_of_servers_costs_the_same_queries_for_1_or_4(ctx, tenant, tmp_path):
    """A server's state (size, live status) needs its disks: loaded for the whole page at once."""
    def protect_servers(n: int, first: int) -> None:
        for i in range(first, first + n):
            ids = _disks(ctx, tenant, tmp_path, 2, first=2 * i)
            server = _server(ctx, tenant, name=f"s{i}", system_disk=ids[0], data_disks=ids[1:])
            _vault(ctx, tenant, {"name": f"v{i}", "billing": {
                "object_type": "server", "size": 10, "consistent_level": "crash_consistent",
                "protect_type": "backup"}, "resources": [{"id": server.id, "type": R.SERVER}]})

    def queries() -> int:
        with counted_statements(ctx) as seen:
            _vaults(ctx, tenant)
        return len(seen)

    protect_servers(1, 0)
    one = queries()
    protect_servers(3, 1)
    assert queries() == one
    os.remove(tmp_path / "d003.img")  # the data disk of s1
    views, total = _vaults(ctx, tenant)
    status = {v.vault.name: v.resources[0].status for v in views}
    assert total == 4 and status == {"v0": "running", "v1": "faulty", "v2": "running", "v3": "running"}
    assert {v.allocated_bytes for v in views} == {2 * 4096}
