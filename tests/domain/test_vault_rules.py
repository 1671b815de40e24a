"""Every vault rule of the guide, tested on the pure domain functions (guide 1.6, 2.2, 2.3, 3)."""

from __future__ import annotations

import random

import pytest

from opencbr.domain import vault as V
from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict
from opencbr.domain.resource import DISK, FILE_SYSTEM, SERVER, ResourceState

GB = 1024**3


@pytest.mark.parametrize("name", ["a", "vault-f61e", "A_b-9", "x" * 64])
def test_vault_name_accepts_guide_charset(name):
    assert V.check_vault_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "v 1", "vault.1", "vault/1", "名字", None, 5])
def test_vault_name_rejects_others(name):
    with pytest.raises(InvalidParameter):
        V.check_vault_name(name)


def test_default_vault_name_is_vault_and_four_digits():
    rng = random.Random(1)
    for _ in range(200):
        name = V.default_vault_name(rng)
        assert len(name) == 10 and name.startswith("vault_") and name[6:].isdigit()
        V.check_vault_name(name)


@pytest.mark.parametrize("size", [10, 11, 100, 10_485_760])
def test_capacity_in_range(size):
    assert V.check_capacity(size) == size


@pytest.mark.parametrize("size", [0, 9, -1, 10_485_761, 10.5, "100", True, None])
def test_capacity_out_of_range(size):
    with pytest.raises(InvalidParameter):
        V.check_capacity(size)


def test_capacity_change_rules():
    assert V.check_capacity_change(100, 101, 0, "available") == 101  # expand by 1 GB (3.4)
    with pytest.raises(StateConflict):
        V.check_capacity_change(100, 200, 0, "locked")  # not while locked (3.1 table 3-2)
    with pytest.raises(InvalidParameter):
        V.check_capacity_change(100, 20, 30 * GB, "available")  # not below what backups use
    assert V.check_capacity_change(100, 30, 30 * GB, "available") == 30
    with pytest.raises(InvalidParameter):
        V.check_capacity_change(100, 9, 0, "available")


def test_consistency_only_one_way_and_only_servers():
    assert V.check_consistency_change("server", "crash_consistent", "app_consistent", "available") == "app_consistent"
    with pytest.raises(InvalidParameter):
        V.check_consistency_change("server", "app_consistent", "crash_consistent", "available")
    with pytest.raises(InvalidParameter):
        V.check_consistency_change("disk", "crash_consistent", "app_consistent", "available")
    with pytest.raises(StateConflict):
        V.check_consistency_change("server", "crash_consistent", "app_consistent", "locked")
    with pytest.raises(InvalidParameter):
        V.check_consistency_for_type("turbo", "app_consistent")


def test_billing_enums():
    V.check_billing_enums("disk", "backup", "crash_consistent")
    for args in (("vm", "backup", "crash_consistent"), ("disk", "copy", "crash_consistent"),
                 ("disk", "backup", "eventual")):
        with pytest.raises(InvalidParameter):
            V.check_billing_enums(*args)


def test_tags_and_threshold():
    assert V.check_tags([{"key": "a", "value": "b"}]) == [{"key": "a", "value": "b"}]
    with pytest.raises(InvalidParameter):
        V.check_tags([])
    with pytest.raises(InvalidParameter):
        V.check_tags([{"key": "a"}, {"key": "a"}])
    with pytest.raises(InvalidParameter):
        V.check_tags([{"key": f"k{i}"} for i in range(11)])
    assert V.check_threshold(1) == 1 and V.check_threshold(100) == 100
    for bad in (0, 101, "80"):
        with pytest.raises(InvalidParameter):
            V.check_threshold(bad)


def test_spec_codes():
    assert V.spec_code("server", "backup", "crash_consistent") == "vault.backup.server.normal"
    assert V.spec_code("server", "backup", "app_consistent") == "vault.backup.database.normal"
    assert V.spec_code("disk", "backup", "crash_consistent") == "vault.backup.volume.normal"
    assert V.spec_code("turbo", "backup", "crash_consistent") == "vault.backup.turbo.normal"
    assert V.spec_code("server", "replication", "crash_consistent") == "vault.replication.server.normal"


# ------------------------------------------------------------------------------------ association
def vault(**kw) -> V.VaultState:
    base = dict(id="v", object_type="disk", protect_type="backup", region="r1", size_gb=100, status="available",
                encrypted=True, resource_count=0, associated_size_bytes=0)
    base.update(kw)
    return V.VaultState(**base)


def disk(i="d1", **kw) -> ResourceState:
    base = dict(id=i, type=DISK, name=i, status="available", region="r1", size_bytes=10 * GB)
    base.update(kw)
    return ResourceState(**base)


def test_add_ok():
    V.check_add_resources(vault(), [disk("d1"), disk("d2", status="in-use")], [], [])


def test_add_type_must_match_vault():
    with pytest.raises(InvalidParameter, match="disk vault"):
        V.check_add_resources(vault(), [ResourceState("s", SERVER, "s", "running", "r1", GB, disk_count=1)], [], [])
    with pytest.raises(InvalidParameter):
        V.check_add_resources(vault(object_type="turbo"), [disk()], [], [])


def test_add_same_region_only():
    with pytest.raises(InvalidParameter, match="same region"):
        V.check_add_resources(vault(), [disk(region="r2")], [], [])


def test_add_statuses_table_2_1():
    with pytest.raises(StateConflict):
        V.check_add_resources(vault(), [disk(status="error")], [], [])
    srv = ResourceState("s", SERVER, "s", "faulty", "r1", GB, disk_count=1)
    with pytest.raises(StateConflict):
        V.check_add_resources(vault(object_type="server"), [srv], [], [])
    for ok in ("running", "stopped"):
        V.check_add_resources(vault(object_type="server"),
                              [ResourceState("s", SERVER, "s", ok, "r1", GB, disk_count=1)], [], [])
    fs = ResourceState("f", FILE_SYSTEM, "f", "error", "r1", GB)
    with pytest.raises(StateConflict):
        V.check_add_resources(vault(object_type="turbo"), [fs], [], [])


def test_server_needs_a_disk():
    with pytest.raises(StateConflict, match="no disk") as e:
        V.check_add_resources(vault(object_type="server"),
                              [ResourceState("s", SERVER, "s", "running", "r1", 0, disk_count=0)], [], [])
    assert "--device" not in str(e.value)
    # an agent's host without disks: its device patterns allowed none, and nothing said so
    with pytest.raises(StateConflict, match="no disk") as e:
        V.check_add_resources(vault(object_type="server"),
                              [ResourceState("s", SERVER, "s", "running", "r1", 0, disk_count=0, provider="agent")],
                              [], [])
    assert "--device PATTERN" in str(e.value)


def test_one_backup_vault_per_resource():
    with pytest.raises(StateConflict, match="another vault"):
        V.check_add_resources(vault(), [disk("d1")], ["d1"], [])
    with pytest.raises(StateConflict, match="already associated with this vault"):
        V.check_add_resources(vault(), [disk("d1")], [], ["d1"])


def test_replication_vault_takes_no_resources():
    with pytest.raises(InvalidParameter, match="replication"):
        V.check_add_resources(vault(protect_type="replication"), [disk()], [], [])


def test_at_most_256_resources():
    V.check_add_resources(vault(resource_count=255, size_gb=10_000), [disk(size_bytes=GB)], [], [])
    with pytest.raises(QuotaExceeded, match="256"):
        V.check_add_resources(vault(resource_count=256, size_gb=10_000), [disk(size_bytes=GB)], [], [])
    with pytest.raises(QuotaExceeded):
        V.check_add_resources(vault(resource_count=250, size_gb=10_000),
                              [disk(f"d{i}", size_bytes=GB) for i in range(7)], [], [])


def test_total_size_cannot_exceed_capacity():
    V.check_add_resources(vault(size_gb=20), [disk(size_bytes=20 * GB)], [], [])
    with pytest.raises(QuotaExceeded, match="capacity"):
        V.check_add_resources(vault(size_gb=20), [disk(size_bytes=20 * GB + 1)], [], [])
    with pytest.raises(QuotaExceeded):
        V.check_add_resources(vault(size_gb=20, associated_size_bytes=15 * GB), [disk(size_bytes=6 * GB)], [], [])


def test_encrypted_disk_needs_encrypted_vault():
    with pytest.raises(InvalidParameter, match="encrypted"):
        V.check_add_resources(vault(encrypted=False), [disk(encrypted=True)], [], [])
    V.check_add_resources(vault(encrypted=True), [disk(encrypted=True)], [], [])


def test_deleting_vault_accepts_nothing():
    with pytest.raises(StateConflict):
        V.check_add_resources(vault(status="deleting"), [disk()], [], [])


def test_duplicate_in_request():
    with pytest.raises(InvalidParameter, match="more than once"):
        V.check_add_resources(vault(), [disk("d1"), disk("d1")], [], [])


def test_server_disk_selection():
    srv = ResourceState("s", SERVER, "srv", "running", "r1", GB, disk_count=2)
    assert V.check_server_disk_selection(srv, ["a", "b"], {"exclude_volumes": ["b"]}) == {"exclude_volumes": ["b"]}
    with pytest.raises(InvalidParameter, match="not a disk"):
        V.check_server_disk_selection(srv, ["a", "b"], {"exclude_volumes": ["zz"]})
    with pytest.raises(InvalidParameter, match="leaves no disk"):
        V.check_server_disk_selection(srv, ["a", "b"], {"exclude_volumes": ["a", "b"]})


def test_vault_delete_only_available_or_error():
    V.check_vault_deletable("available")
    V.check_vault_deletable("error")
    for st in ("locked", "deleting"):
        with pytest.raises(StateConflict):
            V.check_vault_deletable(st)
