"""The host's inventory: block devices from the kernel's tables (size, mount point, file system type),
loop devices only when a device pattern names them, and the host's identity."""

from __future__ import annotations

import os

from opencbr.agent.confinement import Confinement
from opencbr.agent.inventory import host, inventory


def test_a_loop_device_is_listed_only_when_named_with_its_mount_and_file_system(mounted_loop):
    dev, mnt = mounted_loop
    named = {d["path"]: d for d in inventory(Confinement([], [dev]))["block_devices"]}
    assert named[dev]["kind"] == "disk" and named[dev]["size"] == 32 << 20
    assert named[dev]["mountpoint"] == mnt
    if os.geteuid() == 0:
        assert named[dev]["fstype"] == "ext4"
    catch_all = {d["path"] for d in inventory(Confinement([], ["/dev/*"]))["block_devices"]}
    assert dev not in catch_all


def test_the_host_says_who_it_is_and_what_the_agent_can_reach():
    h = host()
    assert h["host_name"] and h["host_os"] and h["host_ip"]
    assert len(h["machine_id"]) in (0, 32) and len(h["boot_id"]) == 36
    found = inventory(Confinement([], []))
    assert found["block_devices"] == [] and found["access"]["root"] == (os.geteuid() == 0)


def test_a_walk_that_began_before_the_walks_were_forgotten_is_not_kept(tmp_path, monkeypatch):
    """A task that made an image forgets the cached walks; an inventory walking at that moment must not
    put back its list without the new image for the next two minutes."""
    from opencbr.agent import inventory as inv

    inv.forget_walks()
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.img").write_bytes(b"\0" * 4096)
    confinement = Confinement([str(root)], [])
    real_images = inv.images

    def images_then_a_task_makes_one(*args, **kwargs):
        found = real_images(*args, **kwargs)  # the walk is done, its answer not yet cached ...
        (root / "new.img").write_bytes(b"\0" * 4096)  # ... when a task makes an image
        inv.forget_walks()
        return found

    monkeypatch.setattr(inv, "images", images_then_a_task_makes_one)
    first = inventory(confinement)
    assert [d["name"] for d in first["block_devices"] if d["kind"] == "image"] == ["old.img"]
    monkeypatch.setattr(inv, "images", real_images)
    again = inventory(confinement)
    assert sorted(d["name"] for d in again["block_devices"] if d["kind"] == "image") == ["new.img", "old.img"]
