"""Execution-time patterns and schedules (guide 5.2; CBR v3 API section 4)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from opencbr.domain.errors import InvalidParameter
from opencbr.domain.schedule import (
    MIN_GAP_MINUTES,
    Run,
    Schedule,
    choose_backup_mode,
    decide_due,
    execution_id,
    parse_pattern,
    parse_patterns,
)

UTC = timezone.utc
MON = datetime(2024, 8, 5, 10, 0, tzinfo=UTC)  # Monday 5 August 2024, 10:00


def ids(runs):
    return [r.execution_id for r in runs]


def at(day: int, hour: int, minute: int = 0, month: int = 8) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------


class TestParsePattern:
    def test_sdk_example_round_trips(self):
        text = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=14;BYMINUTE=00"
        p = parse_pattern(text)
        assert p.freq == "WEEKLY" and p.weekdays == frozenset(range(7)) and p.times == ((14, 0),)
        assert p.text == text

    def test_daily_defaults_interval_and_minute(self):
        p = parse_pattern("freq=daily;byhour=2")
        assert (p.freq, p.interval, p.times) == ("DAILY", 1, ((2, 0),))
        assert p.text == "FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"

    def test_rrule_prefix_order_and_spaces(self):
        p = parse_pattern(" RRULE:BYMINUTE=30; BYHOUR=1,13 ;FREQ=DAILY;INTERVAL=30; ")
        assert p.interval == 30 and p.times == ((1, 30), (13, 30))

    def test_several_hours_a_day(self):
        assert parse_pattern("FREQ=WEEKLY;BYDAY=SU;BYHOUR=0,2,4;BYMINUTE=0").times == ((0, 0), (2, 0), (4, 0))

    @pytest.mark.parametrize(
        "text, fragment",
        [
            ("", "empty"),
            ("BYHOUR=2", "FREQ is required"),
            ("FREQ=MONTHLY;BYHOUR=2", "WEEKLY or DAILY"),
            ("FREQ=HOURLY;BYHOUR=2", "WEEKLY or DAILY"),
            ("FREQ=DAILY;INTERVAL=0;BYHOUR=2", "from 1 to 30"),
            ("FREQ=DAILY;INTERVAL=31;BYHOUR=2", "from 1 to 30"),
            ("FREQ=DAILY;INTERVAL=-1;BYHOUR=2", "from 1 to 30"),
            ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=2", "INTERVAL must be 1"),
            ("FREQ=DAILY;BYDAY=MO;BYHOUR=2", "cannot have BYDAY"),
            ("FREQ=WEEKLY;BYHOUR=2", "needs BYDAY"),
            ("FREQ=WEEKLY;BYDAY=MO,XX;BYHOUR=2", "BYDAY values"),
            ("FREQ=WEEKLY;BYDAY=1MO;BYHOUR=2", "BYDAY values"),
            ("FREQ=DAILY", "BYHOUR"),
            ("FREQ=DAILY;BYHOUR=24", "from 0 to 23"),
            ("FREQ=DAILY;BYHOUR=2;BYMINUTE=60", "from 0 to 59"),
            ("FREQ=DAILY;BYHOUR=a", "whole numbers"),
            # digits to str.isdigit that int() refuses: a ValueError, a 500, before
            ("FREQ=DAILY;BYHOUR=\u00b2", "whole numbers"),
            ("FREQ=DAILY;BYHOUR=2;BYMINUTE=\u00b9", "whole numbers"),
            ("FREQ=DAILY;INTERVAL=\u00b2;BYHOUR=2", "from 1 to 30"),
            ("FREQ=DAILY;BYHOUR=2;COUNT=3", "not supported"),
            ("FREQ=DAILY;BYHOUR=2;UNTIL=20250101T000000Z", "not supported"),
            ("FREQ=DAILY;BYHOUR=2;BYSECOND=5", "not supported"),
            ("FREQ=DAILY;FREQ=WEEKLY;BYHOUR=2", "twice"),
            ("FREQ=DAILY;BYHOUR", "KEY=VALUE"),
            ("FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23;BYMINUTE=0,30", "at most 24"),
        ],
    )
    def test_rejected(self, text, fragment):
        with pytest.raises(InvalidParameter) as e:
            parse_pattern(text)
        assert fragment in e.value.message

    def test_not_a_string(self):
        with pytest.raises(InvalidParameter, match="string"):
            parse_pattern(3)


class TestParsePatterns:
    def test_list_required_and_not_empty(self):
        with pytest.raises(InvalidParameter, match="list"):
            parse_patterns("FREQ=DAILY;BYHOUR=2")
        with pytest.raises(InvalidParameter, match="at least one"):
            parse_patterns([])

    def test_at_most_24_patterns(self):
        ok = [f"FREQ=DAILY;BYHOUR={h}" for h in range(24)]
        assert len(parse_patterns(ok)) == 24
        with pytest.raises(InvalidParameter, match="at most 24"):
            parse_patterns(ok + ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=0"])

    def test_duplicates_dropped(self):
        assert len(parse_patterns(["FREQ=DAILY;BYHOUR=2", "freq=daily;interval=1;byhour=2;byminute=00"])) == 1

    @pytest.mark.parametrize(
        "patterns",
        [
            ["FREQ=DAILY;BYHOUR=2", "FREQ=DAILY;BYHOUR=2;BYMINUTE=30"],
            ["FREQ=DAILY;BYHOUR=2;BYMINUTE=0,59"],
            ["FREQ=DAILY;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;BYHOUR=0;BYMINUTE=0"],  # across midnight
            ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=23;BYMINUTE=30", "FREQ=WEEKLY;BYDAY=TU;BYHOUR=0;BYMINUTE=15"],
            ["FREQ=WEEKLY;BYDAY=SU;BYHOUR=23;BYMINUTE=30", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=0;BYMINUTE=15"],  # week wraps
            ["FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;INTERVAL=3;BYHOUR=0"],
            ["FREQ=DAILY;INTERVAL=7;BYHOUR=23;BYMINUTE=30", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=0"],  # meets for some anchor
            ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=5;BYMINUTE=10", "FREQ=DAILY;INTERVAL=9;BYHOUR=5;BYMINUTE=40"],
        ],
    )
    def test_runs_less_than_an_hour_apart_rejected(self, patterns):
        with pytest.raises(InvalidParameter, match="at least 60 minutes apart"):
            parse_patterns(patterns)

    @pytest.mark.parametrize(
        "patterns",
        [
            ["FREQ=DAILY;BYHOUR=2", "FREQ=DAILY;BYHOUR=3"],
            ["FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23"],
            ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=23;BYMINUTE=30", "FREQ=WEEKLY;BYDAY=WE;BYHOUR=0"],
            ["FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;INTERVAL=2;BYHOUR=0"],
            ["FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=2", "FREQ=DAILY;BYHOUR=2"],  # same instants are one execution
            ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=2;BYMINUTE=0", "FREQ=WEEKLY;BYDAY=TU;BYHOUR=2;BYMINUTE=30"],
        ],
    )
    def test_accepted(self, patterns):
        parse_patterns(patterns)


# --------------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------------


class TestDayBasedFirstRun:
    """Guide 5.2: "If you select day-based backup, the first backup is supposed to be executed on the day
    when the backup policy is created. If the execution time on the day you create the backup policy has
    passed, the first backup will be executed in the next backup cycle." """

    def test_time_not_passed_runs_on_the_day_of_creation(self):
        s = Schedule(["FREQ=DAILY;INTERVAL=3;BYHOUR=14"], MON)
        assert ids(s.next_runs(MON, 3)) == ["20240805T140000Z", "20240808T140000Z", "20240811T140000Z"]

    def test_time_passed_runs_in_the_next_cycle(self):
        s = Schedule(["FREQ=DAILY;INTERVAL=3;BYHOUR=2"], MON)
        assert ids(s.next_runs(MON, 2)) == ["20240808T020000Z", "20240811T020000Z"]

    def test_every_day(self):
        s = Schedule(["FREQ=DAILY;INTERVAL=1;BYHOUR=2"], MON)
        assert s.next_run(MON).scheduled_at == at(6, 2)

    def test_several_times_a_day_some_passed(self):
        s = Schedule(["FREQ=DAILY;INTERVAL=2;BYHOUR=2,14"], MON)
        assert ids(s.next_runs(MON, 3)) == ["20240805T140000Z", "20240807T020000Z", "20240807T140000Z"]

    def test_phase_kept_far_from_the_anchor(self):
        s = Schedule(["FREQ=DAILY;INTERVAL=7;BYHOUR=2"], MON)
        far = MON + timedelta(days=3650)
        for r in s.next_runs(far, 5):
            assert (r.scheduled_at.date() - MON.date()).days % 7 == 0

    def test_anchor_in_the_policy_clock(self):
        # A policy read in UTC+08:00 created at 20:00 UTC on Monday = 04:00 on Tuesday local: its first
        # day is the local Tuesday, and 02:00 local has passed, so the next 3-day cycle is Friday local.
        tz8 = timezone(timedelta(hours=8))
        s = Schedule(["FREQ=DAILY;INTERVAL=3;BYHOUR=2"], at(5, 20), tz=tz8)
        first = s.next_run(at(5, 20)).scheduled_at
        assert first.astimezone(tz8) == datetime(2024, 8, 9, 2, 0, tzinfo=tz8)
        assert first == at(8, 18)


class TestSchedule:
    def test_weekly(self):
        s = Schedule(["FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=14"], MON)
        assert ids(s.next_runs(MON, 4)) == ["20240805T140000Z", "20240809T140000Z", "20240812T140000Z", "20240816T140000Z"]

    def test_nothing_before_the_anchor(self):
        s = Schedule(["FREQ=DAILY;BYHOUR=2"], MON)
        assert s.next_run(MON - timedelta(days=30)).scheduled_at == at(6, 2)
        assert s.due_runs(MON - timedelta(days=30), MON) == []

    def test_due_runs_half_open(self):
        s = Schedule(["FREQ=DAILY;BYHOUR=2"], MON)
        assert ids(s.due_runs(at(6, 2), at(8, 2))) == ["20240807T020000Z", "20240808T020000Z"]
        assert s.due_runs(at(8, 2), at(8, 2)) == []

    def test_union_of_patterns_is_deduplicated_and_ordered(self):
        s = Schedule(["FREQ=WEEKLY;BYDAY=TU;BYHOUR=2", "FREQ=DAILY;BYHOUR=2", "FREQ=WEEKLY;BYDAY=TU;BYHOUR=5"], MON)
        assert ids(s.due_runs(MON, at(7, 12))) == ["20240806T020000Z", "20240806T050000Z", "20240807T020000Z"]

    def test_pattern_times_are_utc_by_default(self):
        s = Schedule(["FREQ=WEEKLY;BYDAY=MO;BYHOUR=14"], MON.astimezone(timezone(timedelta(hours=8))))
        assert s.next_run(MON).scheduled_at == at(5, 14)
        assert s.next_run(MON).scheduled_at.tzinfo == UTC

    def test_execution_ids_are_deterministic_utc_instants(self):
        t = datetime(2024, 8, 6, 10, 0, tzinfo=timezone(timedelta(hours=8)))
        assert execution_id(t) == "20240806T020000Z"
        a = Schedule(["FREQ=DAILY;BYHOUR=2"], MON).next_runs(MON, 5)
        b = Schedule(["FREQ=DAILY;BYHOUR=2"], MON).due_runs(MON, at(10, 2))
        assert a == b

    def test_preview(self):
        s = Schedule(["FREQ=DAILY;BYHOUR=2,14"], MON)
        assert len(s.preview(MON)) == 10
        assert len(s.preview(MON, next=3)) == 3

    def test_naive_datetimes_refused(self):
        with pytest.raises(ValueError):
            Schedule(["FREQ=DAILY;BYHOUR=2"], datetime(2024, 8, 5))
        s = Schedule(["FREQ=DAILY;BYHOUR=2"], MON)
        with pytest.raises(ValueError):
            s.next_runs(datetime(2024, 8, 5), 1)
        with pytest.raises(ValueError):
            s.due_runs(MON, datetime(2024, 8, 9))

    def test_invalid_patterns_refused(self):
        with pytest.raises(InvalidParameter):
            Schedule(["FREQ=DAILY;BYHOUR=2", "FREQ=DAILY;BYHOUR=2;BYMINUTE=30"], MON)


# --------------------------------------------------------------------------------------------------
# due executions
# --------------------------------------------------------------------------------------------------


class TestDecideDue:
    def test_disabled_policy_fires_nothing(self):
        runs = [Run.at(at(6, 2))]
        (d,) = decide_due(runs, at(6, 2, 1), enabled=False)
        assert not d.fire and "disabled" in d.reason

    def test_guide_notice_overrunning_backup_skips_the_next_time(self):
        """Guide 5.2 notice: backups at 00:00, 01:00 and 02:00; the 00:00 one takes 90 minutes: "only two
        backups are generated in total, one at 00:00, and the other at 02:00"."""
        s = Schedule(["FREQ=DAILY;BYHOUR=0,1,2"], at(5, 12))
        made = []
        busy_until = None
        last = at(5, 12)
        for now in [at(6, 0), at(6, 1), at(6, 2)]:
            due = s.due_runs(last, now)
            last = now
            for d in decide_due(due, now, previous_running=busy_until is not None and now < busy_until):
                if d.fire:
                    made.append(d.run.execution_id)
                    busy_until = now + timedelta(minutes=90)
        assert made == ["20240806T000000Z", "20240806T020000Z"]

    def test_missed_beyond_the_start_window_is_skipped(self):
        runs = [Run.at(at(6, 2))]
        (d,) = decide_due(runs, at(6, 3, 1))
        assert not d.fire and "start window" in d.reason
        (d,) = decide_due(runs, at(6, 3, 1), start_window_minutes=120)
        assert d.fire

    def test_only_the_latest_of_several_due_fires(self):
        runs = [Run.at(at(6, h)) for h in (2, 3, 4)]
        ds = decide_due(runs, at(6, 4, 30), start_window_minutes=480)
        assert [d.fire for d in ds] == [False, False, True]
        assert "later execution" in ds[0].reason

    def test_not_yet_due_is_a_programming_error(self):
        with pytest.raises(ValueError):
            decide_due([Run.at(at(7, 2))], at(6, 2))


class TestBackupMode:
    now = at(10, 2)

    def test_first_backup_is_full(self):
        m = choose_backup_mode(now=self.now, has_previous_backup=False, last_full_at=None, incrementals_since_full=0, full_backup_interval=-1)
        assert m.full

    @pytest.mark.parametrize("interval", [None, -1])
    def test_never_forced(self, interval):
        m = choose_backup_mode(now=self.now, has_previous_backup=True, last_full_at=at(1, 2), incrementals_since_full=50, full_backup_interval=interval)
        assert not m.full

    def test_after_n_incrementals(self):
        kw = dict(now=self.now, has_previous_backup=True, last_full_at=at(1, 2), full_backup_interval=3)
        assert not choose_backup_mode(incrementals_since_full=2, **kw).full
        assert choose_backup_mode(incrementals_since_full=3, **kw).full

    def test_minimum_one_day_between_full_backups(self):
        """Guide 5.2: "The minimum interval between two full backups is 1 day." """
        kw = dict(has_previous_backup=True, incrementals_since_full=5, full_backup_interval=0)
        m = choose_backup_mode(now=at(10, 14), last_full_at=at(10, 2), **kw)
        assert not m.full and "1 day" in m.reason
        assert choose_backup_mode(now=at(11, 2), last_full_at=at(10, 2), **kw).full


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------

_weekly = st.builds(
    lambda days, hours, minute: f"FREQ=WEEKLY;BYDAY={','.join(days)};BYHOUR={','.join(map(str, hours))};BYMINUTE={minute}",
    st.lists(st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]), min_size=1, max_size=7, unique=True),
    st.lists(st.integers(0, 23), min_size=1, max_size=6, unique=True),
    st.integers(0, 59),
)
_daily = st.builds(
    lambda interval, hours, minute: f"FREQ=DAILY;INTERVAL={interval};BYHOUR={','.join(map(str, hours))};BYMINUTE={minute}",
    st.integers(1, 30),
    st.lists(st.integers(0, 23), min_size=1, max_size=6, unique=True),
    st.integers(0, 59),
)
_pattern_lists = st.lists(st.one_of(_weekly, _daily), min_size=1, max_size=4)
_instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
_offsets = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))])


def _schedule_or_skip(patterns, anchor, tz=UTC):
    try:
        return Schedule(patterns, anchor, tz)
    except InvalidParameter:
        assume(False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(_pattern_lists, _instants, _instants, _offsets)
def test_runs_increase_and_are_at_least_an_hour_apart(patterns, anchor, after, tz):
    s = _schedule_or_skip(patterns, anchor, tz)
    runs = s.next_runs(after, 60)
    assert len(runs) == 60
    times = [r.scheduled_at for r in runs]
    assert all(t > after and t > s.anchor for t in times)
    assert all(b - a >= timedelta(minutes=MIN_GAP_MINUTES) for a, b in pairwise(times))
    assert all(t.second == 0 and t.microsecond == 0 for t in times)
    for t in times:  # every run matches one of the patterns
        local = t.astimezone(tz)
        assert any(
            (local.hour, local.minute) in p.times
            and (
                local.weekday() in p.weekdays
                if p.freq == "WEEKLY"
                else (local.date() - s.anchor.astimezone(tz).date()).days % p.interval == 0
            )
            for p in s.patterns
        )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(_pattern_lists, _instants, st.integers(0, 20 * 24 * 60), st.integers(0, 20 * 24 * 60))
def test_due_windows_partition_time(patterns, anchor, m1, m2):
    """Consecutive scheduler ticks (a, b], (b, c] see every execution exactly once."""
    s = _schedule_or_skip(patterns, anchor)
    a = anchor - timedelta(hours=1)
    b = a + timedelta(minutes=m1)
    c = b + timedelta(minutes=m2)
    assert s.due_runs(a, b) + s.due_runs(b, c) == s.due_runs(a, c)
    whole = s.due_runs(a, c)
    assert s.next_runs(a, len(whole)) == whole
    assert len({r.execution_id for r in whole}) == len(whole)
