"""A vault list page reads its resources as columns (services/vaults.py ``_bound_by_vault``): what it shows
of each is what the resource's own view shows, on both catalogs."""

from __future__ import annotations

from sqlalchemy import update

from opencbr.catalog.models import VaultResource
from opencbr.services import resources, vaults


def test_a_vault_page_shows_each_resources_live_status_size_and_extra_info(ctx, tenant, tmp_path):
    disks = []
    for name in ("gone", "here"):
        path = tmp_path / f"{name}.img"
        path.write_bytes(b"\0" * 8192)
        with ctx.tx() as s:
            disks.append(resources.register_disk(s, ctx, tenant, name=name, path=str(path)))
    with ctx.tx() as s:
        view = vaults.create_vault(s, ctx, tenant, {"name": "v", "billing": {
            "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": d.id, "type": "OS::Cinder::Volume"} for d in disks]})
        s.execute(update(VaultResource).where(VaultResource.resource_id == disks[1].id)
                  .values(extra_info={"exclude_volumes": ["x"]}))
    (tmp_path / "gone.img").unlink()
    with ctx.read() as s:
        views, total = vaults.list_vaults(s, tenant, vaults.VaultFilter(), limit=20)
    assert total == 1 and views[0].vault.id == view.vault.id
    shown = {r.name: (r.status, r.size_bytes, r.extra_info) for r in views[0].resources}
    assert shown == {"gone": ("error", 8192, {}), "here": ("available", 8192, {"exclude_volumes": ["x"]})}


def test_a_vault_page_shows_a_server_as_its_disks_make_it(ctx, tenant, tmp_path):
    """A server's row on a vault page: the size of its disks together, faulty when one of them is gone."""
    disks = []
    for name, size in (("sys", 8192), ("data", 4096)):
        path = tmp_path / f"{name}.img"
        path.write_bytes(b"\0" * size)
        with ctx.tx() as s:
            disks.append(resources.register_disk(s, ctx, tenant, name=name, path=str(path)))
    with ctx.tx() as s:
        srv = resources.register_server(s, ctx, tenant, name="web", system_disk=disks[0].id,
                                        data_disks=[disks[1].id])
        vaults.create_vault(s, ctx, tenant, {"name": "v", "billing": {
            "object_type": "server", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": srv.id, "type": "OS::Nova::Server"}]})

    def shown():
        with ctx.read() as s:
            views, _total = vaults.list_vaults(s, tenant, vaults.VaultFilter(), limit=20)
        return [(r.name, r.status, r.size_bytes) for r in views[0].resources]

    assert shown() == [("web", "running", 12288)]
    (tmp_path / "data.img").unlink()
    assert shown() == [("web", "faulty", 12288)]
