"""Retention: which automatic backups of one resource in one vault to delete now, and why.

Pure rules: the caller passes the backups (with the retention rule that was in force when each automatic
backup was created), the policy's current retention and "now"; :func:`plan_retention` returns a verdict
per backup with its reasons, usable as a dry-run listing as it is.

The model behind guide 13.5.2 ("Why the New Retention Rule I Changed Is Not Applied?"), in two clauses:

(a) **A time-period rule is stamped on the backup.** A backup created under "keep N days / months"
    expires N days / months after its creation, whatever the policy says later — even with no policy at
    all (guide 5.7: "After a policy is removed, backups retained by Time period will expire based on the
    retention rule, but backups retained by Backup quantity will not").
(b) **A backup-quantity rule is evaluated when it is current**: while the policy's current rule is "keep
    N", every automatic backup of the resource competes for the N places, whatever rule it was created
    under.

A backup is deleted when (a) or (b) says so (the "union" of 13.5.2's last scenario). This reproduces the
five scenarios of 13.5.2: quantity -> quantity (the new number applies to old backups), quantity ->
time/permanent (old backups are never deleted automatically), time -> time/permanent (old backups keep
their old period), time -> quantity (old period and new quantity both apply). Permanent stamps nothing
and counts like any other backup under a later quantity rule.

Always, whatever the rules say (guide 5.2, Retention Rule notes):

* only automatic backups are deleted; manual ones never ("The retention rules apply only to
  auto-generated backups, but not manual backups");
* a backup used to create an image is never deleted ("If a backup is used to create an image, the backup
  will not be deleted by the retention rule");
* failed automatic backups: "A maximum of 10 backups are retained for failed periodic backup tasks. They
  are retained for one month";
* nothing is deleted while the vault's policy is disabled (5.2 "Only after a backup policy is enabled
  and applied will CBR automatically back up the vault resources and deletes expired backups"; 13.5.7).

Beyond the guide, **long-term (GFS) retention** — the API's ``day_backups``, ``week_backups``,
``month_backups``, ``year_backups`` in the policy's ``timezone`` — keeps, like restic ``forget
--keep-daily/--keep-weekly/...``, the newest backup of each of the last N days (ISO weeks, months, years)
that have backups. Each rule is evaluated independently over all automatic backups, so one backup may be
kept by several. Long-term backups are "not counted against max_backups": they are kept in addition to
the N most recent ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Iterable, Sequence

from dateutil.relativedelta import relativedelta

__all__ = [
    "COUNT",
    "DURATION",
    "PERMANENT",
    "RetentionRule",
    "LongTermRetention",
    "CurrentRetention",
    "BackupRecord",
    "Reason",
    "Verdict",
    "RetentionPlan",
    "plan_retention",
    "MAX_FAILED_KEPT",
    "FAILED_KEPT_MONTHS",
]

COUNT = "count"
DURATION = "duration"
PERMANENT = "permanent"

#: Guide 5.2: "A maximum of 10 backups are retained for failed periodic backup tasks."
MAX_FAILED_KEPT = 10
#: Guide 5.2: "They are retained for one month".
FAILED_KEPT_MONTHS = 1

#: Backup statuses (CBR v3 API section 4) that are a restore point: they count towards "keep N".
COUNTED_STATUSES = frozenset({"available", "restoring", "waiting_restore"})
#: Only an available backup is deleted by retention; a restoring one waits for the next evaluation.
PRUNABLE_STATUSES = frozenset({"available"})
FAILED_STATUS = "error"


def _require_aware(dt: datetime, name: str) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {dt!r}")


def _fmt(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionRule:
    """One retention rule of the guide (5.2 "Retention Rule"): keep the ``count`` most recent automatic
    backups (``COUNT``), keep each backup for ``days`` days or ``months`` calendar months (``DURATION``),
    or keep forever (``PERMANENT``).

    Use the constructors :meth:`quantity`, :meth:`of_days`, :meth:`of_months`, :meth:`permanent`. Store a
    rule with :meth:`encode` (``"count:3"``, ``"days:30"``, ``"months:1"``, ``"permanent"``) and read it back
    with :meth:`decode`. Values are not range-checked against the API limits here (the guide's own example
    in 13.5.2 keeps one backup); :mod:`opencbr.domain.policy` enforces those.
    """

    kind: str
    count: int | None = None
    days: int | None = None
    months: int | None = None

    def __post_init__(self) -> None:
        if self.kind == COUNT:
            ok = isinstance(self.count, int) and self.count >= 1 and self.days is None and self.months is None
        elif self.kind == DURATION:
            ok = self.count is None and (
                (isinstance(self.days, int) and self.days >= 1 and self.months is None)
                or (isinstance(self.months, int) and self.months >= 1 and self.days is None)
            )
        elif self.kind == PERMANENT:
            ok = self.count is None and self.days is None and self.months is None
        else:
            ok = False
        if not ok:
            raise ValueError(f"inconsistent retention rule {self!r}")

    @classmethod
    def quantity(cls, count: int) -> "RetentionRule":
        return cls(COUNT, count=count)

    @classmethod
    def of_days(cls, days: int) -> "RetentionRule":
        return cls(DURATION, days=days)

    @classmethod
    def of_months(cls, months: int) -> "RetentionRule":
        return cls(DURATION, months=months)

    @classmethod
    def permanent(cls) -> "RetentionRule":
        return cls(PERMANENT)

    def expires_at(self, created_at: datetime) -> datetime | None:
        """When a backup created under this rule expires (a time-period rule), else None. Days are 24 h;
        months are calendar months (Aug 6 + 1 month = Sep 6, guide 13.5.2). Fills a backup's
        ``expired_at``."""
        _require_aware(created_at, "created_at")
        if self.kind != DURATION:
            return None
        if self.days is not None:
            return created_at + timedelta(days=self.days)
        return created_at + relativedelta(months=self.months)

    def describe(self) -> str:
        if self.kind == COUNT:
            return f"keep the {self.count} most recent automatic backup{'s' if self.count != 1 else ''}"
        if self.kind == DURATION:
            if self.days is not None:
                return f"keep each backup {self.days} day{'s' if self.days != 1 else ''}"
            return f"keep each backup {self.months} month{'s' if self.months != 1 else ''}"
        return "keep backups permanently"

    def encode(self) -> str:
        if self.kind == COUNT:
            return f"count:{self.count}"
        if self.kind == DURATION:
            return f"days:{self.days}" if self.days is not None else f"months:{self.months}"
        return PERMANENT

    @classmethod
    def decode(cls, text: str) -> "RetentionRule":
        if text == PERMANENT:
            return cls.permanent()
        kind, _, value = text.partition(":")
        if not value.isdigit():
            raise ValueError(f"not an encoded retention rule: {text!r}")
        n = int(value)
        if kind == "count":
            return cls.quantity(n)
        if kind == "days":
            return cls.of_days(n)
        if kind == "months":
            return cls.of_months(n)
        raise ValueError(f"not an encoded retention rule: {text!r}")


@dataclass(frozen=True)
class LongTermRetention:
    """GFS long-term retention: keep the newest backup of each of the last ``daily`` days, ``weekly`` ISO
    weeks, ``monthly`` months and ``yearly`` years that have backups, with days etc. taken in ``tz`` (the
    policy's ``timezone``). 0 turns a level off."""

    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    tz: tzinfo = timezone.utc

    def __post_init__(self) -> None:
        for name in ("daily", "weekly", "monthly", "yearly"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")

    @property
    def active(self) -> bool:
        return any((self.daily, self.weekly, self.monthly, self.yearly))


@dataclass(frozen=True)
class CurrentRetention:
    """What the vault's policy says now. Pass ``None`` to :func:`plan_retention` when the vault has no
    backup policy (removed, or deleted)."""

    rule: RetentionRule
    long_term: LongTermRetention | None = None
    enabled: bool = True

    def encode(self) -> str:
        """The rule, with the long-term levels when they are on, as one short text (at most 45
        characters, for a 64-character column): ``count:3`` or ``count:3;gfs:7,4,12,1,+0800``. A replica
        carries it to its destination (guide 5.3), which prunes by it as a policy would."""
        text = self.rule.encode()
        lt = self.long_term
        if lt is None or not lt.active:
            return text
        minutes = int(lt.tz.utcoffset(None).total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        offset = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
        return f"{text};gfs:{lt.daily},{lt.weekly},{lt.monthly},{lt.yearly},{offset}"

    @classmethod
    def decode(cls, text: str) -> "CurrentRetention":
        """The inverse of :meth:`encode`; also reads a plain :meth:`RetentionRule.encode` text."""
        rule_text, _, rest = text.partition(";")
        rule = RetentionRule.decode(rule_text)
        if not rest:
            return cls(rule)
        fields = rest.removeprefix("gfs:").split(",") if rest.startswith("gfs:") else []
        if len(fields) != 5 or not all(f.isdigit() for f in fields[:4]):
            raise ValueError(f"not an encoded retention: {text!r}")
        off = fields[4]
        if len(off) != 5 or off[0] not in "+-" or not off[1:].isdigit():
            raise ValueError(f"not an encoded retention: {text!r}")
        minutes = (int(off[1:3]) * 60 + int(off[3:])) * (-1 if off[0] == "-" else 1)
        daily, weekly, monthly, yearly = (int(f) for f in fields[:4])
        return cls(rule, LongTermRetention(daily, weekly, monthly, yearly, timezone(timedelta(minutes=minutes))))


@dataclass(frozen=True)
class BackupRecord:
    """One backup of the resource, as the catalog has it.

    ``rule`` is the retention rule of the policy when this automatic backup was created (record it at
    creation: ``spec.retention``); ``None`` (unknown, e.g. imported) is treated as permanent. ``status`` is
    the CBR backup status (``available``, ``error``, ``protecting``, ``restoring``, ``deleting``...).
    """

    id: str
    created_at: datetime
    automatic: bool
    status: str = "available"
    used_by_image: bool = False
    rule: RetentionRule | None = None


@dataclass(frozen=True)
class Reason:
    """One reason of a verdict: a stable ``code`` (for programs) and a ``text`` for people.

    Keep codes: ``manual``, ``image``, ``busy``, ``disabled``, ``latest`` (among the N most recent),
    ``within_period``, ``quantity_rule_not_current`` (created under a quantity rule, which is not the
    current rule: 13.5.2 / 5.7), ``permanent``, ``long_term_daily|weekly|monthly|yearly``,
    ``failed_recent``. Delete codes: ``expired``, ``beyond_count``, ``failed_too_old``, ``failed_too_many``.
    """

    code: str
    text: str


@dataclass(frozen=True)
class Verdict:
    """Keep or delete one backup. ``prune`` is True when retention deletes it now. A kept backup may also
    list the reasons it would otherwise have been deleted (``overridden``), e.g. it is used by an image."""

    backup: BackupRecord
    prune: bool
    reasons: tuple[Reason, ...]
    overridden: tuple[Reason, ...] = ()

    @property
    def backup_id(self) -> str:
        return self.backup.id

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def explain(self) -> str:
        head = "delete" if self.prune else "keep"
        text = f"{head} {self.backup.id}: " + "; ".join(r.text for r in self.reasons)
        if self.overridden:
            text += " (would otherwise be deleted: " + "; ".join(r.text for r in self.overridden) + ")"
        return text


@dataclass(frozen=True)
class RetentionPlan:
    """The verdicts for every backup given, newest first."""

    verdicts: tuple[Verdict, ...]
    now: datetime

    @property
    def to_prune(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.prune]

    @property
    def to_keep(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.prune]

    @property
    def prune_ids(self) -> list[str]:
        return [v.backup.id for v in self.verdicts if v.prune]

    @property
    def keep_ids(self) -> list[str]:
        return [v.backup.id for v in self.verdicts if not v.prune]

    def verdict(self, backup_id: str) -> Verdict:
        for v in self.verdicts:
            if v.backup.id == backup_id:
                return v
        raise KeyError(backup_id)

    def explain(self) -> list[str]:
        """One line per backup, for a dry-run listing."""
        return [v.explain() for v in self.verdicts]


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------


def _gfs_keys(lt: LongTermRetention) -> list[tuple[str, int, str, object]]:
    def day(dt: datetime) -> tuple[int, int, int]:
        d = dt.astimezone(lt.tz)
        return (d.year, d.month, d.day)

    def week(dt: datetime) -> tuple[int, int]:
        iso = dt.astimezone(lt.tz).isocalendar()
        return (iso[0], iso[1])

    def month(dt: datetime) -> tuple[int, int]:
        d = dt.astimezone(lt.tz)
        return (d.year, d.month)

    def year(dt: datetime) -> int:
        return dt.astimezone(lt.tz).year

    return [
        ("long_term_daily", lt.daily, "day_backups", day),
        ("long_term_weekly", lt.weekly, "week_backups", week),
        ("long_term_monthly", lt.monthly, "month_backups", month),
        ("long_term_yearly", lt.yearly, "year_backups", year),
    ]


def _long_term_picks(counted: Sequence[BackupRecord], lt: LongTermRetention) -> dict[str, list[Reason]]:
    """restic-style buckets: newest first, the first backup seen in a new bucket is kept, for the first
    N buckets. Levels are independent."""
    picks: dict[str, list[Reason]] = {}
    labels = {"long_term_daily": "day", "long_term_weekly": "week", "long_term_monthly": "month", "long_term_yearly": "year"}
    for code, n, field_name, key in _gfs_keys(lt):
        if n <= 0:
            continue
        seen: list[object] = []
        for b in counted:
            k = key(b.created_at)  # type: ignore[operator]
            if seen and seen[-1] == k:
                continue
            if len(seen) >= n:
                break
            seen.append(k)
            picks.setdefault(b.id, []).append(
                Reason(code, f"newest backup of its {labels[code]} ({_bucket_text(code, k)}), one of the last {n} kept long-term ({field_name}={n})")
            )
    return picks


def _bucket_text(code: str, k: object) -> str:
    if code == "long_term_daily":
        y, m, d = k  # type: ignore[misc]
        return f"{y:04d}-{m:02d}-{d:02d}"
    if code == "long_term_weekly":
        y, w = k  # type: ignore[misc]
        return f"{y:04d}-W{w:02d}"
    if code == "long_term_monthly":
        y, m = k  # type: ignore[misc]
        return f"{y:04d}-{m:02d}"
    return f"{k}"


def _sort_newest_first(backups: Iterable[BackupRecord]) -> list[BackupRecord]:
    items = list(backups)
    for b in items:
        _require_aware(b.created_at, f"created_at of backup {b.id}")
    # newest first; ties broken by id so the result does not depend on input order
    items.sort(key=lambda b: b.id, reverse=True)
    items.sort(key=lambda b: b.created_at, reverse=True)
    return items


def _failed_verdicts(failed: Sequence[BackupRecord], now: datetime) -> list[Verdict]:
    """Guide 5.2, Retention Rule note: "A maximum of 10 backups are retained for failed periodic backup
    tasks. They are retained for one month and can be deleted manually." Applies to failed automatic
    backups whatever the policy says."""
    out: list[Verdict] = []
    for i, b in enumerate(failed):
        until = b.created_at + relativedelta(months=FAILED_KEPT_MONTHS)
        if until <= now:
            out.append(Verdict(b, True, (Reason("failed_too_old", f"failed automatic backup older than one month (kept until {_fmt(until)}; guide 5.2)"),)))
        elif i >= MAX_FAILED_KEPT:
            out.append(Verdict(b, True, (Reason("failed_too_many", f"only the {MAX_FAILED_KEPT} most recent failed automatic backups are kept (guide 5.2)"),)))
        else:
            out.append(Verdict(b, False, (Reason("failed_recent", f"failed automatic backup, kept until {_fmt(until)} unless more than {MAX_FAILED_KEPT} fail (guide 5.2)"),)))
    return out


def plan_retention(
    backups: Iterable[BackupRecord],
    current: CurrentRetention | None,
    now: datetime,
) -> RetentionPlan:
    """Decide which backups of one resource in one vault retention deletes at ``now`` (guide 5.2 Retention
    Rule, 5.7, 13.5.2, 13.2.16, 13.5.7; GFS beyond the guide). See the module docstring for the model.

    Call it after each backup of the resource completes, automatic or manual (13.5.2: "After a backup is
    generated, regardless of an automatic or a manual one, the system verifies and uses the latest
    retention rule"), and in the periodic sweep (5.2: expired backups are deleted in batches). The plan is
    idempotent: applying it and planning again at the same ``now`` deletes nothing more.
    """
    _require_aware(now, "now")
    ordered = _sort_newest_first(backups)

    verdicts: dict[str, Verdict] = {}
    failed = [b for b in ordered if b.automatic and b.status == FAILED_STATUS and not b.used_by_image]
    for v in _failed_verdicts(failed, now):
        verdicts[v.backup.id] = v

    # guide 6.2: a backup used to create an image "will not be counted as a retained backup"
    counted = [b for b in ordered if b.automatic and b.status in COUNTED_STATUSES and not b.used_by_image]
    disabled = current is not None and not current.enabled
    count_rule = current.rule if current is not None and current.rule.kind == COUNT else None
    window = {b.id for b in counted[: count_rule.count]} if count_rule is not None else set()
    picks: dict[str, list[Reason]] = {}
    if current is not None and current.long_term is not None and current.long_term.active and not disabled:
        picks = _long_term_picks(counted, current.long_term)

    for b in ordered:
        if b.id in verdicts:
            continue
        if not b.automatic:
            verdicts[b.id] = Verdict(b, False, (Reason("manual", "manual backup: retention rules apply only to automatic backups (guide 5.2, 13.2.16)"),))
            continue
        if b.status not in COUNTED_STATUSES:
            verdicts[b.id] = Verdict(b, False, (Reason("busy", f"backup is {b.status}; retention does not touch it"),))
            continue
        if disabled:
            verdicts[b.id] = Verdict(b, False, (Reason("disabled", "the vault's policy is disabled: nothing is deleted (guide 5.2, 13.5.7)"),))
            continue

        keep: list[Reason] = []
        delete: list[Reason] = []
        rule = b.rule or RetentionRule.permanent()

        # (a) the rule the backup was created under
        if rule.kind == DURATION:
            exp = rule.expires_at(b.created_at)
            assert exp is not None
            if exp <= now:
                delete.append(Reason("expired", f"expired on {_fmt(exp)}: created under \"{rule.describe()}\" (guide 13.5.2)"))
            else:
                keep.append(Reason("within_period", f"kept until {_fmt(exp)}: created under \"{rule.describe()}\" (guide 13.5.2)"))
        elif rule.kind == PERMANENT:
            if count_rule is None:
                keep.append(Reason("permanent", "created under a permanent rule" + ("" if b.rule else " (no rule recorded)")))
        elif count_rule is None:  # created under a quantity rule that is no longer current
            keep.append(
                Reason(
                    "quantity_rule_not_current",
                    f"created under \"{rule.describe()}\", which is no longer the policy's rule: backups kept by "
                    "quantity are not deleted automatically any more (guide 13.5.2, 5.7); delete it manually if unwanted",
                )
            )

        # (b) the current quantity rule
        if count_rule is not None:
            if b.id in window:
                keep.append(Reason("latest", f"one of the {count_rule.count} most recent automatic backups (max_backups={count_rule.count})"))
            else:
                delete.append(Reason("beyond_count", f"not among the {count_rule.count} most recent automatic backups (max_backups={count_rule.count}; guide 5.2, 13.5.2)"))

        lt = picks.get(b.id, [])
        if b.used_by_image and not delete:
            keep.append(Reason("image", "used to create an image: never deleted by retention (guide 5.2)"))
        if not delete:
            verdicts[b.id] = Verdict(b, False, tuple(keep + lt))
        elif lt:
            verdicts[b.id] = Verdict(b, False, tuple(lt), overridden=tuple(delete))
        elif b.used_by_image:
            verdicts[b.id] = Verdict(b, False, (Reason("image", "used to create an image: never deleted by retention (guide 5.2)"),), overridden=tuple(delete))
        elif b.status not in PRUNABLE_STATUSES:
            verdicts[b.id] = Verdict(b, False, (Reason("busy", f"backup is {b.status}; it will be deleted once that finishes"),), overridden=tuple(delete))
        else:
            verdicts[b.id] = Verdict(b, True, tuple(delete))

    return RetentionPlan(verdicts=tuple(verdicts[b.id] for b in ordered), now=now)
