"""The vault lock (WORM, write once read many; docs/vault-lock.md): the rules, without I/O.

A lock has a mode, a minimum retention and an end. While it holds (``now < until``), every backup of the
vault is protected for ``retention_days`` after it was made: it cannot be deleted, by a user, by
retention or by dissociating its resource, and its expiry cannot be brought forward. The vault itself
cannot be deleted while the lock holds.

- **governance**: administrators holding the *vault lock governor* permission (granted by the operator)
  may lift it or shorten it; everybody else may only extend it.
- **compliance**: nobody may lift it, shorten it or turn it into governance, not even the operator,
  until it ends; it may only be extended.

Times are naive UTC, as in the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from opencbr.domain.errors import Forbidden, InvalidParameter, StateConflict

GOVERNANCE, COMPLIANCE = "governance", "compliance"
MODES = (GOVERNANCE, COMPLIANCE)
#: A lock's retention and its own lifetime are bounded (a century): longer is a typing mistake.
MAX_DAYS = 36500

# Error codes of the vault lock (BackupService.6660-6699; docs/vault-lock.md lists them).
BACKUP_PROTECTED = "BackupService.6660"
VAULT_LOCKED = "BackupService.6661"
DISSOCIATION_PROTECTED = "BackupService.6662"
EXPIRY_PROTECTED = "BackupService.6663"
COMPLIANCE_FIXED = "BackupService.6664"
GOVERNOR_NEEDED = "BackupService.6665"
BAD_LOCK = "BackupService.6666"
NO_LOCK = "BackupService.6667"
MIGRATION_PROTECTED = "BackupService.6668"
GOVERNOR_NOT_ADMIN = "BackupService.6669"


@dataclass(frozen=True)
class VaultLock:
    mode: str
    retention_days: int
    until: datetime

    def active(self, now: datetime) -> bool:
        return now < self.until

    def protected_until(self, created: datetime) -> datetime:
        """The end of a backup's protection: its minimum retention, but no longer than the lock."""
        return min(created + timedelta(days=self.retention_days), self.until)

    def protects(self, created: datetime, now: datetime) -> bool:
        """Whether a backup made at ``created`` is under the lock at ``now``."""
        return self.active(now) and now < self.protected_until(created)

    def to_record(self) -> dict:
        """What the vault's repository keeps (the catalog can be rebuilt from it)."""
        return {"mode": self.mode, "retention_days": self.retention_days, "until": self.until.isoformat()}

    @classmethod
    def from_record(cls, record: dict) -> "VaultLock":
        until = datetime.fromisoformat(record["until"]).replace(tzinfo=None)
        return cls(str(record["mode"]), int(record["retention_days"]), until)


def parse_lock(spec: object, now: datetime) -> VaultLock:
    """A lock from a request: ``{"mode", "retention_days", "lock_days"}`` (the lock ends ``lock_days``
    from now) or ``{"mode", "retention_days", "until": ISO time}``."""
    if not isinstance(spec, dict):
        raise InvalidParameter("lock must be an object with mode, retention_days and lock_days (or until)",
                               code=BAD_LOCK)
    mode = spec.get("mode")
    if mode not in MODES:
        raise InvalidParameter("lock.mode must be governance or compliance", code=BAD_LOCK)
    days = spec.get("retention_days")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise InvalidParameter(f"lock.retention_days must be a whole number of days from 1 to {MAX_DAYS}",
                               code=BAD_LOCK)
    until = _until(spec, now)
    if not now < until <= now + timedelta(days=MAX_DAYS):
        raise InvalidParameter(f"the lock must end in the future and within {MAX_DAYS} days", code=BAD_LOCK)
    return VaultLock(mode, days, until)


def _until(spec: dict, now: datetime) -> datetime:
    if spec.get("until") is not None and spec.get("lock_days") is not None:
        raise InvalidParameter("give lock.lock_days or lock.until, not both", code=BAD_LOCK)
    lock_days = spec.get("lock_days")
    if lock_days is not None:
        if isinstance(lock_days, bool) or not isinstance(lock_days, int) or not 1 <= lock_days <= MAX_DAYS:
            raise InvalidParameter(f"lock.lock_days must be a whole number of days from 1 to {MAX_DAYS}",
                                   code=BAD_LOCK)
        return now + timedelta(days=lock_days)
    until = spec.get("until")
    try:
        parsed = datetime.fromisoformat(until) if isinstance(until, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidParameter("lock.lock_days (days) or lock.until (an ISO 8601 time) is required", code=BAD_LOCK)
    if parsed.tzinfo is not None:
        try:
            parsed = (parsed - parsed.utcoffset()).replace(tzinfo=None)
        except OverflowError:
            raise InvalidParameter("lock.until is out of range", code=BAD_LOCK) from None
    return parsed


def weakens(old: VaultLock, new: VaultLock | None) -> bool:
    """Whether ``new`` protects less than ``old`` in any way: lifted, ended earlier, a shorter minimum
    retention, or compliance turned into governance."""
    if new is None:
        return True
    return (new.until < old.until or new.retention_days < old.retention_days
            or (old.mode == COMPLIANCE and new.mode != COMPLIANCE))


def check_change(old: VaultLock | None, new: VaultLock | None, now: datetime, *, governor: bool) -> None:
    """Who may replace lock ``old`` by ``new`` (None: lift it). A lock that has ended is gone: anything
    may follow it. A stronger or equal lock is always allowed (to whoever may set locks at all)."""
    if old is None and new is None:
        raise InvalidParameter("the vault has no lock", code=NO_LOCK, status=404)
    if old is None or not old.active(now):
        return
    if not weakens(old, new):
        return
    if old.mode == COMPLIANCE:
        raise Forbidden(f"the vault is under a compliance lock until {old.until.isoformat()}Z: nobody can lift, "
                        "shorten or weaken it before then; it can only be extended", code=COMPLIANCE_FIXED)
    if not governor:
        raise Forbidden("lifting or shortening a governance lock needs the vault lock governor permission "
                        "(the operator grants it to administrators)", code=GOVERNOR_NEEDED)


def check_backup_deletable(lock: VaultLock | None, created: datetime, now: datetime, what: str) -> None:
    """A backup under the lock cannot be deleted (``what`` names it in the message)."""
    if lock is not None and lock.protects(created, now):
        raise StateConflict(f"{what} is protected by the vault's {lock.mode} lock until "
                            f"{lock.protected_until(created).isoformat()}Z", code=BACKUP_PROTECTED)


def check_expiry(lock: VaultLock | None, created: datetime, expiry: datetime, now: datetime) -> None:
    """A backup under the lock keeps at least its protection: its expiry cannot come before it ends."""
    if lock is not None and lock.protects(created, now) and expiry < lock.protected_until(created):
        raise StateConflict(f"backups are protected by the vault's {lock.mode} lock until "
                            f"{lock.protected_until(created).isoformat()}Z; their expiry cannot come earlier",
                            code=EXPIRY_PROTECTED)


def check_vault_deletable(lock: VaultLock | None, now: datetime) -> None:
    if lock is not None and lock.active(now):
        raise StateConflict(f"the vault is under a {lock.mode} lock until {lock.until.isoformat()}Z and cannot be "
                            "deleted before then", code=VAULT_LOCKED)
