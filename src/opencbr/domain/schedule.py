"""Execution times of a policy: the CBR subset of RFC 2445 RRULEs, the schedule they make, and the
rules of guide 5.2 about when an execution runs, is skipped, or makes a full backup.

Pure rules: no I/O, no clock. Every function that needs "now" takes it as a timezone-aware datetime, so
the scheduler (and the tests) inject time.

Interpretation choices (see each docstring for the guide section):

* **Pattern times are UTC.** The CBR v3 API says the ``BYHOUR``/``BYMINUTE`` of a trigger pattern are UTC
  and the public console converts the user's local clock to UTC before sending them; the guide's 5.2
  notice ("The execution times refer to the local times of clients") describes what the console shows.
  The policy's ``timezone`` field (``UTC+08:00``) is, per the API, the zone of the long-term (GFS)
  retention fields, not of the trigger. :class:`Schedule` nevertheless takes a ``tz`` argument (default
  UTC) naming the wall clock in which ``BYDAY``/``BYHOUR``/``BYMINUTE`` and "the day of creation" are read,
  so a caller that wants local-time triggers can have them without another implementation.
* **The anchor** of a schedule is the moment its trigger was set (the policy's ``trigger.properties.
  start_time``: creation, or the last update that changed the pattern). Nothing runs at or before it, and
  day-based ("every N days") patterns count their days from the anchor's day (guide 5.2).
* **Execution ids** are the scheduled UTC instant, ``YYYYMMDDTHHMMSSZ``: the same execution always gets
  the same id, so a scheduler can insert ``(policy_id, execution_id)`` under a unique constraint and fire
  each execution exactly once, whichever process sees it first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Iterable, Iterator, Sequence

from dateutil import rrule as _rr

from opencbr.domain.errors import InvalidParameter

__all__ = [
    "MAX_PATTERNS",
    "MIN_GAP_MINUTES",
    "DEFAULT_START_WINDOW_MINUTES",
    "Pattern",
    "parse_pattern",
    "parse_patterns",
    "check_min_gap",
    "Run",
    "Schedule",
    "DueDecision",
    "decide_due",
    "BackupMode",
    "choose_backup_mode",
    "execution_id",
]

#: At most 24 RRULE strings in ``trigger.properties.pattern`` (CBR v3 API, section 4).
MAX_PATTERNS = 24
#: Two executions of one policy are at least one hour apart (CBR v3 API, section 4).
MIN_GAP_MINUTES = 60
#: At most 24 executions a day: implied by the one-hour gap, checked per pattern for a clearer message.
MAX_RUNS_PER_DAY = 24
#: Day-based patterns run every 1 to 30 days (guide 5.2, Backup Cycle "Custom cycle").
MIN_DAY_INTERVAL = 1
MAX_DAY_INTERVAL = 30
#: ``start_window_minutes`` when the policy leaves it null: an execution may start up to this late.
DEFAULT_START_WINDOW_MINUTES = 60
#: Guide 5.2: "The minimum interval between two full backups is 1 day."
MIN_FULL_BACKUP_INTERVAL = timedelta(days=1)

_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_ALLOWED_KEYS = ("FREQ", "INTERVAL", "BYDAY", "BYHOUR", "BYMINUTE")
_DAY = timedelta(days=1)


# --------------------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One trigger pattern of the CBR subset, parsed and normalised.

    ``freq`` is ``"WEEKLY"`` (on ``weekdays``, 0 = Monday .. 6 = Sunday, ``interval`` always 1) or
    ``"DAILY"`` (every ``interval`` days, 1..30, counted from the schedule's anchor day). ``times`` are the
    (hour, minute) of the day, sorted and distinct.
    """

    freq: str
    interval: int
    weekdays: frozenset[int]
    times: tuple[tuple[int, int], ...]

    @property
    def text(self) -> str:
        """The canonical RRULE string, e.g. ``FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=14;BYMINUTE=00``."""
        hours = sorted({h for h, _ in self.times})
        minutes = sorted({m for _, m in self.times})
        parts = [f"FREQ={self.freq}"]
        if self.freq == "DAILY":
            parts.append(f"INTERVAL={self.interval}")
        else:
            parts.append("BYDAY=" + ",".join(_WEEKDAYS[d] for d in sorted(self.weekdays)))
        parts.append("BYHOUR=" + ",".join(str(h) for h in hours))
        parts.append("BYMINUTE=" + ",".join(f"{m:02d}" for m in minutes))
        return ";".join(parts)

    @property
    def period_days(self) -> int:
        return 7 if self.freq == "WEEKLY" else self.interval

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.text


def _bad(raw: object, why: str) -> InvalidParameter:
    return InvalidParameter(f"Invalid execution time pattern {raw!r}: {why}")


def _int_list(raw: str, key: str, value: str, lo: int, hi: int) -> list[int]:
    out: list[int] = []
    for item in value.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()):  # ('²' is a digit to str.isdigit, not to int())
            raise _bad(raw, f"{key} must be a comma-separated list of whole numbers from {lo} to {hi}, got {value!r}.")
        n = int(item)
        if not lo <= n <= hi:
            raise _bad(raw, f"{key} values must be from {lo} to {hi}, got {n}.")
        out.append(n)
    return out


def parse_pattern(raw: object) -> Pattern:
    """Parse one trigger pattern of the CBR subset (CBR v3 API section 4; guide 5.2 "Execution Time" and
    "Backup Cycle").

    Accepted: ``FREQ=WEEKLY;BYDAY=<MO..SU list>`` (week-based cycle) or ``FREQ=DAILY;INTERVAL=<1..30>``
    (custom cycle, every 1 to 30 days; INTERVAL defaults to 1), with ``BYHOUR`` 0-23 (required) and
    ``BYMINUTE`` 0-59 (default 0). Several hours or minutes may be listed: every combination is an
    execution time. The guide's console offers whole hours only; the API allows any minute, so we do too.
    Keys are case-insensitive, an ``RRULE:`` prefix is allowed. Anything else (``COUNT``, ``UNTIL``,
    ``BYSECOND``, ``BYMONTH``, numbered weekdays such as ``1MO``...) is rejected.
    """
    if not isinstance(raw, str):
        raise InvalidParameter(f"Each execution time pattern must be a string, got {type(raw).__name__}.")
    text = raw.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    if not text:
        raise _bad(raw, "it is empty.")
    fields: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().upper()
        value = value.strip().upper()
        if not sep or not value:
            raise _bad(raw, f"{part!r} is not of the form KEY=VALUE.")
        if key not in _ALLOWED_KEYS:
            raise _bad(raw, f"{key} is not supported; only FREQ, INTERVAL, BYDAY, BYHOUR and BYMINUTE are.")
        if key in fields:
            raise _bad(raw, f"{key} is given twice.")
        fields[key] = value

    freq = fields.get("FREQ")
    if freq is None:
        raise _bad(raw, "FREQ is required (FREQ=WEEKLY with BYDAY, or FREQ=DAILY with INTERVAL).")
    if freq not in ("WEEKLY", "DAILY"):
        raise _bad(raw, f"FREQ must be WEEKLY or DAILY, got {freq}.")

    if "BYHOUR" not in fields:
        raise _bad(raw, "BYHOUR (the hour of the execution time, 0-23) is required.")
    hours = _int_list(raw, "BYHOUR", fields["BYHOUR"], 0, 23)
    minutes = _int_list(raw, "BYMINUTE", fields["BYMINUTE"], 0, 59) if "BYMINUTE" in fields else [0]

    if freq == "WEEKLY":
        if "BYDAY" not in fields:
            raise _bad(raw, "a weekly pattern needs BYDAY, the days of the week to run on (MO,TU,...,SU).")
        days: set[int] = set()
        for d in fields["BYDAY"].split(","):
            d = d.strip()
            if d not in _WEEKDAYS:
                raise _bad(raw, f"BYDAY values must be among MO, TU, WE, TH, FR, SA, SU, got {d!r}.")
            days.add(_WEEKDAYS.index(d))
        if fields.get("INTERVAL", "1").lstrip("0") != "1":
            raise _bad(
                raw,
                "a weekly pattern runs every week, so INTERVAL must be 1; for longer cycles use "
                "FREQ=DAILY;INTERVAL=<1-30>.",
            )
        interval = 1
        weekdays = frozenset(days)
    else:
        if "BYDAY" in fields:
            raise _bad(raw, "a day-based pattern (FREQ=DAILY) cannot have BYDAY; use FREQ=WEEKLY;BYDAY=... to pick days of the week.")
        interval = 1
        if "INTERVAL" in fields:
            iv = fields["INTERVAL"]
            if not (iv.isascii() and iv.isdigit()) or not MIN_DAY_INTERVAL <= int(iv) <= MAX_DAY_INTERVAL:
                raise _bad(raw, f"INTERVAL must be a whole number of days from {MIN_DAY_INTERVAL} to {MAX_DAY_INTERVAL}, got {iv}.")
            interval = int(iv)
        weekdays = frozenset()

    times = tuple(sorted({(h, m) for h in hours for m in minutes}))
    if len(times) > MAX_RUNS_PER_DAY:
        raise _bad(raw, f"it has {len(times)} execution times a day; at most {MAX_RUNS_PER_DAY} are allowed.")
    return Pattern(freq=freq, interval=interval, weekdays=weekdays, times=times)


def _days_can_meet(p: Pattern, q: Pattern, shift: int) -> bool:
    """Whether some day d on which ``p`` runs has ``q`` running on day d + shift, for some anchor.

    Conservative on purpose (any anchor): validation must not depend on the day a policy is created.
    """
    if p.freq == "WEEKLY" and q.freq == "WEEKLY":
        return any((d + shift) % 7 in q.weekdays for d in p.weekdays)
    if p.freq == "DAILY" and q.freq == "DAILY":
        # both count days from the same anchor day: d = i*P and d + shift = j*Q
        return shift % math.gcd(p.interval, q.interval) == 0
    return True  # a weekly and a day-based pattern meet on some weekday for some anchor


def check_min_gap(patterns: Sequence[Pattern]) -> None:
    """Reject pattern sets in which two executions can be less than one hour apart (CBR v3 API section 4:
    "runs >= 1 h apart, <= 24 per day"; guide 5.2 "Backups can be scheduled at the beginning of each
    hour").

    Identical instants coming from two patterns are one execution, not a conflict. Day-based patterns all
    count from the same anchor day; whether a weekly pattern meets a day-based one depends on that day, so
    such a pair is judged for the worst anchor: a set of patterns accepted today stays valid whenever its
    anchor moves. With a one-hour gap there can be at most 24 executions a day.
    """
    labelled = [(i, p, t) for i, p in enumerate(patterns) for t in p.times]
    for a in range(len(labelled)):
        i, p, (h1, m1) = labelled[a]
        for b in range(a, len(labelled)):
            j, q, (h2, m2) = labelled[b]
            delta = (h2 * 60 + m2) - (h1 * 60 + m1)
            for shift in (-1, 0, 1):
                sep = shift * 1440 + delta
                if sep == 0 or abs(sep) >= MIN_GAP_MINUTES:
                    continue
                if _days_can_meet(p, q, shift):
                    where = "" if i == j else f" (patterns {i + 1} and {j + 1})"
                    raise InvalidParameter(
                        f"Execution times {h1:02d}:{m1:02d} and {h2:02d}:{m2:02d}{where} can be only "
                        f"{abs(sep)} minutes apart; executions of a policy must be at least "
                        f"{MIN_GAP_MINUTES} minutes apart."
                    )


def parse_patterns(raw: object) -> tuple[Pattern, ...]:
    """Parse and check ``trigger.properties.pattern``: a non-empty list of at most 24 patterns (CBR v3 API
    section 4), each valid per :func:`parse_pattern`, together at least one hour apart
    (:func:`check_min_gap`). Duplicate patterns are dropped (order kept)."""
    if not isinstance(raw, list):
        raise InvalidParameter("trigger.properties.pattern must be a list of execution time patterns (RRULE strings).")
    if not raw:
        raise InvalidParameter("trigger.properties.pattern must contain at least one execution time pattern.")
    if len(raw) > MAX_PATTERNS:
        raise InvalidParameter(
            f"trigger.properties.pattern has {len(raw)} patterns; at most {MAX_PATTERNS} are allowed."
        )
    out: list[Pattern] = []
    for item in raw:
        p = parse_pattern(item)
        if p not in out:
            out.append(p)
    check_min_gap(out)
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------


def execution_id(scheduled_at: datetime) -> str:
    """The deterministic id of the execution scheduled at ``scheduled_at``: its UTC instant as
    ``YYYYMMDDTHHMMSSZ``. Combine it with the policy id for a unique key."""
    _require_aware(scheduled_at, "scheduled_at")
    return scheduled_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True, order=True)
class Run:
    """One execution time of a policy. ``scheduled_at`` is timezone-aware UTC."""

    scheduled_at: datetime
    execution_id: str

    @classmethod
    def at(cls, scheduled_at: datetime) -> "Run":
        utc = scheduled_at.astimezone(timezone.utc)
        return cls(scheduled_at=utc, execution_id=execution_id(utc))


def _require_aware(dt: datetime, name: str) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {dt!r}")


class Schedule:
    """The execution times of a policy's trigger.

    ``patterns`` are RRULE strings (validated with :func:`parse_patterns`) or parsed :class:`Pattern`
    objects. ``anchor`` is when the trigger was set (aware). ``tz`` is the wall clock of the patterns:
    UTC by default, as the CBR API defines (see the module docstring); use a fixed offset.

    Guide 5.2, Backup Cycle: "If you select day-based backup, the first backup is supposed to be executed
    on the day when the backup policy is created. If the execution time on the day you create the backup
    policy has passed, the first backup will be executed in the next backup cycle." So a day-based
    pattern runs on the anchor's day and then every ``INTERVAL`` days after it: created Monday 10:00 with
    ``FREQ=DAILY;INTERVAL=3;BYHOUR=14`` it first runs Monday 14:00; with ``BYHOUR=2`` Monday 02:00 has
    passed, and the next cycle is Thursday 02:00. Weekly patterns run on their weekdays from the anchor
    on. No execution is at or before the anchor.
    """

    def __init__(self, patterns: Iterable[str | Pattern], anchor: datetime, tz: tzinfo = timezone.utc):
        _require_aware(anchor, "anchor")
        items = list(patterns)
        if all(isinstance(p, Pattern) for p in items):
            parsed = tuple(dict.fromkeys(items))  # type: ignore[arg-type]
            if not parsed:
                raise InvalidParameter("A schedule needs at least one execution time pattern.")
            check_min_gap(parsed)
        else:
            parsed = parse_patterns([p.text if isinstance(p, Pattern) else p for p in items])
        self.patterns: tuple[Pattern, ...] = parsed
        self.anchor: datetime = anchor.astimezone(timezone.utc)
        self.tz: tzinfo = tz
        self._anchor_day: date = anchor.astimezone(tz).date()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Schedule({[p.text for p in self.patterns]!r}, anchor={self.anchor.isoformat()}, tz={self.tz})"

    # -- internals ---------------------------------------------------------------------------------

    def _rule_start(self, p: Pattern, day: date) -> date:
        """A day no later than ``day`` (and no earlier than the anchor day) on which an rrule for ``p``
        may start without changing its phase, so iteration never walks from a years-old anchor."""
        if day <= self._anchor_day:
            return self._anchor_day
        if p.freq == "WEEKLY":
            return day
        elapsed = (day - self._anchor_day).days
        return self._anchor_day + timedelta(days=(elapsed // p.interval) * p.interval)

    def _iter_after(self, after: datetime) -> Iterator[datetime]:
        """Aware UTC execution times strictly after ``after`` (and after the anchor), increasing."""
        lower = max(after.astimezone(timezone.utc), self.anchor)
        local_day = lower.astimezone(self.tz).date() - _DAY  # one day of slack for offsets
        rset = _rr.rruleset()
        for p in self.patterns:
            start = self._rule_start(p, local_day)
            dtstart = datetime.combine(start, time(0, 0), tzinfo=self.tz)
            kwargs = dict(
                dtstart=dtstart,
                interval=p.interval,
                byhour=sorted({h for h, _ in p.times}),
                byminute=sorted({m for _, m in p.times}),
                bysecond=0,
                cache=False,
            )
            if p.freq == "WEEKLY":
                rset.rrule(_rr.rrule(_rr.WEEKLY, byweekday=sorted(p.weekdays), **kwargs))
            else:
                rset.rrule(_rr.rrule(_rr.DAILY, **kwargs))
        last: datetime | None = None
        for occ in rset.xafter(lower.astimezone(self.tz), inc=False):
            utc = occ.astimezone(timezone.utc)
            if utc <= lower or (last is not None and utc <= last):
                continue
            last = utc
            yield utc

    # -- public ------------------------------------------------------------------------------------

    def next_runs(self, after: datetime, count: int) -> list[Run]:
        """The next ``count`` executions strictly after ``after`` (aware), in increasing order."""
        _require_aware(after, "after")
        if count < 0:
            raise ValueError("count must be >= 0")
        out: list[Run] = []
        if count == 0:
            return out
        for t in self._iter_after(after):
            out.append(Run.at(t))
            if len(out) >= count:
                break
        return out

    def next_run(self, after: datetime) -> Run:
        """The first execution strictly after ``after``."""
        return self.next_runs(after, 1)[0]

    def due_runs(self, since: datetime, until: datetime) -> list[Run]:
        """Executions with ``since < scheduled_at <= until`` (both aware), increasing.

        Half-open on the left, so consecutive windows ``(a, b]``, ``(b, c]`` partition time: a scheduler
        that remembers the last ``until`` it processed never sees an execution twice nor misses one.
        """
        _require_aware(since, "since")
        _require_aware(until, "until")
        out: list[Run] = []
        if until <= since:
            return out
        for t in self._iter_after(since):
            if t > until:
                break
            out.append(Run.at(t))
        return out

    def preview(self, now: datetime, next: int = 10) -> list[Run]:  # noqa: A002 - the CLI's --next
        """The next ``next`` execution times after ``now`` (``cbr policy preview --next``)."""
        return self.next_runs(now, next)


# --------------------------------------------------------------------------------------------------
# What to do with due executions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueDecision:
    """What the scheduler should do with one due execution: ``action`` is ``"fire"`` or ``"skip"``;
    ``reason`` says why in words a user understands (recorded on a skipped task)."""

    run: Run
    action: str
    reason: str

    @property
    def fire(self) -> bool:
        return self.action == "fire"


def decide_due(
    due: Sequence[Run],
    now: datetime,
    *,
    enabled: bool = True,
    start_window_minutes: int | None = None,
    previous_running: bool = False,
) -> list[DueDecision]:
    """Decide, for the due executions of one policy (and one vault), which to fire now and which to skip.

    * A disabled policy fires nothing (guide 5.2 "A backup policy must be enabled before it can be used
      for periodic backups"; 13.5.5).
    * An execution may start at most ``start_window_minutes`` (API: 60-480, null = 60) after its time; a
      later one (the service was down) is skipped, not caught up.
    * Of several executions still in their window, only the latest fires; the older ones are superseded.
    * When the backup of the previous execution is still running, the execution is skipped (guide 5.2
      notice: backups at 00:00, 01:00 and 02:00, the 00:00 one running until 01:30: "only two backups are
      generated in total, one at 00:00, and the other at 02:00").
    """
    _require_aware(now, "now")
    window = timedelta(minutes=start_window_minutes if start_window_minutes is not None else DEFAULT_START_WINDOW_MINUTES)
    runs = sorted(due)
    decisions: list[DueDecision] = []
    if not enabled:
        return [DueDecision(r, "skip", "The policy is disabled; a disabled policy runs no executions.") for r in runs]
    in_window = [r for r in runs if r.scheduled_at <= now <= r.scheduled_at + window]
    latest = in_window[-1] if in_window else None
    for r in runs:
        if r.scheduled_at > now:
            raise ValueError(f"execution {r.execution_id} is not due yet at {now.isoformat()}")
        if r != latest:
            if r in in_window:
                reason = "A later execution time is also due; only the latest one runs."
            else:
                reason = (
                    f"The execution time passed more than {int(window.total_seconds() // 60)} minutes ago "
                    "(its start window) while the scheduler was not running; it is skipped."
                )
            decisions.append(DueDecision(r, "skip", reason))
        elif previous_running:
            decisions.append(
                DueDecision(
                    r, "skip", "The backup of the previous execution time is still running; this execution time is skipped."
                )
            )
        else:
            decisions.append(DueDecision(r, "fire", "Due."))
    return decisions


# --------------------------------------------------------------------------------------------------
# Full or incremental
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupMode:
    """Whether an automatic backup re-reads everything (``full``) or only changes, and why."""

    full: bool
    reason: str


def choose_backup_mode(
    *,
    now: datetime,
    has_previous_backup: bool,
    last_full_at: datetime | None,
    incrementals_since_full: int,
    full_backup_interval: int | None,
) -> BackupMode:
    """Full or incremental for the next automatic backup of one resource.

    * Guide 5.2: "CBR by default performs a full backup for a resource in the initial backup and
      incremental backups in all subsequent backups." No previous available backup: full.
    * ``full_backup_interval`` (API: -1..100; null = -1): after that many incremental backups the next one
      is full; -1 never forces a full backup, 0 asks for a full backup every time.
    * Guide 5.2: "The minimum interval between two full backups is 1 day." A forced full backup less
      than a day after the last full one is made incremental instead (the initial backup is always full:
      there is nothing to be incremental to).
    """
    _require_aware(now, "now")
    if not has_previous_backup:
        return BackupMode(True, "First backup of the resource: it is full.")
    interval = -1 if full_backup_interval is None else full_backup_interval
    if interval < 0:
        return BackupMode(False, "Incremental: the policy never forces a full backup.")
    if last_full_at is not None and incrementals_since_full < interval:
        return BackupMode(False, f"Incremental: {incrementals_since_full} of {interval} incremental backups made since the last full one.")
    if last_full_at is not None:
        _require_aware(last_full_at, "last_full_at")
        if now - last_full_at < MIN_FULL_BACKUP_INTERVAL:
            return BackupMode(False, "Incremental: the last full backup is less than 1 day old, the minimum interval between two full backups.")
    return BackupMode(True, f"Full: the policy asks for a full backup after {interval} incremental backups.")

