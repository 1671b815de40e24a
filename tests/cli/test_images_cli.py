"""``cbr image`` against a real server: an image of a server backup, a server made from it (--wait),
its disk bit-exact, the image listed, shown and deleted."""

from __future__ import annotations

import pytest

from tests.support.clients import cli
from tests.support.disks import MiB, make_image, sha256


# One catalog is enough here: each command is a process start; tests/api/test_images.py covers both.
@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_image_commands(server, tmp_path):
    sys_img = make_image(tmp_path / "sys.img", MiB, seed=91)
    assert cli(server, "disk", "register", "--name", "cli-img-sys", "--path", sys_img).code == 0
    out = cli(server, "server", "register", "--name", "cli-img-srv", "--system-disk", "cli-img-sys")
    assert out.code == 0, out.err
    assert cli(server, "vault", "create", "--name", "cli-img-vault", "--type", "server", "--size", "10",
               "--resource", "cli-img-srv").code == 0
    out = cli(server, "backup", "create", "cli-img-vault", "--wait", "--json")
    assert out.code == 0, out.err
    backup_id = out.json()["backups"][0]["id"]

    out = cli(server, "image", "create", backup_id, "--name", "cli-golden", "--json")
    assert out.code == 0, out.err
    image = out.json()
    assert image["disks"][0]["disk_role"] == "system"
    again = cli(server, "image", "create", backup_id, "--name", "cli-twice")
    assert again.code != 0 and "one image per backup" in again.err

    (tmp_path / "vms").mkdir()
    out = cli(server, "image", "create-server", "cli-golden", "--name", "cli-copy", "--directory",
              str(tmp_path / "vms"), "--wait", "--json")
    assert out.code == 0, out.err
    assert sha256(tmp_path / "vms" / "cli-copy-1.img") == sha256(sys_img)
    assert "cli-golden" in cli(server, "image", "list").out
    assert cli(server, "image", "show", "cli-golden", "--json").json()["servers_created"] == 1
    out = cli(server, "image", "delete", "cli-golden", "--yes")
    assert out.code == 0, out.err
    assert cli(server, "image", "list", "--json").json()["images"] == []
