"""The sharing rules of guide 4.2, one by one (the services and the API test them with real backups)."""

from __future__ import annotations

import pytest

from opencbr.domain import sharing as S
from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict

DISK, SERVER, FS = "OS::Cinder::Volume", "OS::Nova::Server", "OS::Sfs::Turbo"
GB = 1024**3


def test_what_can_be_shared():
    S.check_shareable(DISK, "available", False, False)
    S.check_shareable(SERVER, "available", False, False)
    for args, error, words in (((FS, "available", False, False), InvalidParameter, "server and disk"),
                               ((DISK, "available", True, False), InvalidParameter, "encrypted"),
                               ((DISK, "available", False, True), InvalidParameter, "share the server backup"),
                               ((DISK, "protecting", False, False), StateConflict, "available")):
        with pytest.raises(error, match=words):
            S.check_shareable(*args)


def test_recipients_are_other_projects_of_the_region():
    S.check_recipient("a", "region-1", "b", "region-1")
    with pytest.raises(InvalidParameter, match="own project"):
        S.check_recipient("a", "region-1", "a", "region-1")
    with pytest.raises(InvalidParameter, match="one region only"):
        S.check_recipient("a", "region-1", "b", "region-2")


def test_at_most_ten_projects():
    S.check_member_count(9, 1)
    with pytest.raises(QuotaExceeded, match="at most 10"):
        S.check_member_count(10, 1)
    with pytest.raises(QuotaExceeded):
        S.check_member_count(0, 11)


def test_the_accepting_vault():
    S.check_accepting_vault(DISK, "disk", "backup", "available", 10 * GB, 10 * GB - 1)
    S.check_accepting_vault(SERVER, "server", "backup", "available", 10 * GB, GB)
    for args, error, words in (((DISK, "disk", "backup", "available", 10 * GB, 10 * GB), QuotaExceeded, "greater"),
                               ((DISK, "server", "backup", "available", 10 * GB, GB), InvalidParameter, "disk backup"),
                               ((DISK, "disk", "replication", "available", 10 * GB, GB), InvalidParameter, "vault"),
                               ((DISK, "disk", "backup", "locked", 10 * GB, GB), StateConflict, "locked")):
        with pytest.raises(error, match=words):
            S.check_accepting_vault(*args)


def test_answers_and_list_types():
    assert S.check_member_status("accepted") == "accepted" and S.check_member_status("rejected") == "rejected"
    for bad in ("pending", "", None, 1):
        with pytest.raises(InvalidParameter):
            S.check_member_status(bad)
    assert S.check_own_type(None) == "private" and S.check_own_type("all_granted") == "all_granted"
    with pytest.raises(InvalidParameter):
        S.check_own_type("mine")
