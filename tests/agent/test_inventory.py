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
