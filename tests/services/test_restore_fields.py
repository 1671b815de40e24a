"""A restore's target fields must be those of the backup's type (services/restore.py): a server backup given
``volume_id`` was restored onto its whole server (stopped, every disk overwritten), and a disk backup given
``server_id`` onto its own disk, the field silently ignored."""

from __future__ import annotations

import pytest

from opencbr.domain.errors import InvalidParameter
from opencbr.services import resources, restore
from tests.services.test_images import _backed_up
from tests.support.disks import MiB, registered_disks
from tests.support.scheduler import read_task


@pytest.fixture()
def backed_up(rctx, owner, roots):
    sd, od = registered_disks(rctx, owner, roots, {"sys": (2 * MiB, 91), "other": (1 * MiB, 92)})
    with rctx.tx() as s:
        srv = resources.register_server(s, rctx, owner, name="web", system_disk=sd.id)
    _, server_backup = _backed_up(rctx, owner, srv, "server", "OS::Nova::Server")
    _, disk_backup = _backed_up(rctx, owner, od, "disk", "OS::Cinder::Volume")
    return srv.id, od.id, server_backup, disk_backup


@pytest.mark.parametrize("which, body, named", [
    ("server", lambda srv, disk: {"volume_id": disk}, "volume_id"),
    ("server", lambda srv, disk: {"server_id": srv, "resource_id": disk}, "resource_id"),
    ("disk", lambda srv, disk: {"server_id": srv}, "server_id"),
    ("disk", lambda srv, disk: {"volume_id": disk, "mappings": [{"backup_id": "x", "volume_id": disk}]}, "mappings"),
    ("disk", lambda srv, disk: {"resource_id": disk}, "resource_id"),
])
def test_a_target_field_of_another_type_is_refused(rctx, owner, backed_up, which, body, named):
    srv, disk, server_backup, disk_backup = backed_up
    with rctx.tx() as s, pytest.raises(InvalidParameter) as e:
        restore.restore_backup(s, rctx, owner, server_backup if which == "server" else disk_backup, body(srv, disk))
    assert named in str(e.value)


def test_the_fields_of_the_type_and_power_on_are_taken(rctx, owner, backed_up):
    """``power_on`` (which cbr backup restore always sends) and empty mappings stay accepted."""
    srv, disk, server_backup, disk_backup = backed_up
    with rctx.tx() as s:
        assert restore.restore_backup(s, rctx, owner, disk_backup, {"volume_id": disk, "power_on": True,
                                                                    "mappings": []})
    with rctx.tx() as s:
        assert restore.restore_backup(s, rctx, owner, server_backup, {"server_id": srv, "power_on": False})


def test_the_task_names_the_target_it_restores_into(rctx, owner, roots):
    """``extra_info.restore.target_resource_name`` was the backup's resource name, also when the target was
    another resource: always, for a file-system backup, which is restored into a new file system."""
    (roots / "share").mkdir()
    (roots / "share" / "f.txt").write_text("data")
    (roots / "new").mkdir()
    with rctx.tx() as s:
        share = resources.register_file_system(s, rctx, owner, name="share", path=str(roots / "share"))
    with rctx.tx() as s:
        new = resources.register_file_system(s, rctx, owner, name="new-share", path=str(roots / "new"))
    new_id = new.id
    _, backup_id = _backed_up(rctx, owner, share, "turbo", "OS::Sfs::Turbo")
    with rctx.tx() as s:
        task_id = restore.restore_backup(s, rctx, owner, backup_id, {"resource_id": new_id})
    info = read_task(rctx, task_id).extra_info["restore"]
    assert info["target_resource_id"] == new_id and info["target_resource_name"] == "new-share"
