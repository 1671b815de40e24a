"""The vault lock's rules (domain.vault_lock): what it protects, how long, and which changes weaken it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from opencbr.domain import vault_lock as L
from opencbr.domain.errors import CBRError

NOW = datetime(2026, 6, 1, 12, 0)
DAY = timedelta(days=1)


def test_a_backup_is_protected_for_its_retention_but_no_longer_than_the_lock():
    lock = L.VaultLock("governance", 10, NOW + 5 * DAY)
    assert lock.protects(NOW - 9 * DAY, NOW)            # 9 days old, kept 10
    assert not lock.protects(NOW - 11 * DAY, NOW)       # older than the retention
    assert lock.protected_until(NOW) == NOW + 5 * DAY   # the lock ends first
    assert not lock.protects(NOW, NOW + 5 * DAY)        # the lock has ended


@pytest.mark.parametrize("spec,fragment", [
    ({"mode": "worm", "retention_days": 1, "lock_days": 1}, "mode"),
    ({"mode": "governance", "retention_days": 0, "lock_days": 1}, "retention_days"),
    ({"mode": "governance", "retention_days": True, "lock_days": 1}, "retention_days"),
    ({"mode": "governance", "retention_days": 1}, "lock_days"),
    ({"mode": "governance", "retention_days": 1, "lock_days": 1, "until": "2027-01-01"}, "not both"),
    ({"mode": "governance", "retention_days": 1, "until": "2026-05-01T00:00:00Z"}, "future"),
    ({"mode": "governance", "retention_days": 1, "until": "soon"}, "ISO"),
    ({"mode": "governance", "retention_days": 1, "until": "0001-01-01T00:00:00+01:00"}, "range"),
])
def test_bad_locks_are_refused(spec, fragment):
    with pytest.raises(CBRError) as e:
        L.parse_lock(spec, NOW)
    assert e.value.code == L.BAD_LOCK and fragment in e.value.message


def test_until_with_an_offset_is_taken_in_utc():
    lock = L.parse_lock({"mode": "compliance", "retention_days": 3, "until": "2026-07-01T08:00:00+08:00"}, NOW)
    assert lock.until == datetime(2026, 7, 1, 0, 0)


@pytest.mark.parametrize("new,weaker", [
    (L.VaultLock("governance", 10, NOW + 30 * DAY), False),
    (L.VaultLock("compliance", 11, NOW + 31 * DAY), False),
    (L.VaultLock("governance", 9, NOW + 30 * DAY), True),
    (L.VaultLock("governance", 10, NOW + 29 * DAY), True),
    (None, True),
])
def test_what_weakens_a_governance_lock(new, weaker):
    old = L.VaultLock("governance", 10, NOW + 30 * DAY)
    assert L.weakens(old, new) is weaker
    if weaker:
        with pytest.raises(CBRError) as e:
            L.check_change(old, new, NOW, governor=False)
        assert (e.value.status, e.value.code) == (403, L.GOVERNOR_NEEDED)
    L.check_change(old, new, NOW, governor=True)


def test_compliance_binds_governors_until_it_ends():
    old = L.VaultLock("compliance", 10, NOW + 30 * DAY)
    for new in (None, L.VaultLock("governance", 10, NOW + 40 * DAY), L.VaultLock("compliance", 10, NOW + DAY)):
        with pytest.raises(CBRError) as e:
            L.check_change(old, new, NOW, governor=True)
        assert e.value.code == L.COMPLIANCE_FIXED
    L.check_change(old, None, NOW + 30 * DAY, governor=False)  # ended
