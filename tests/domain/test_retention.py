"""Retention rules (guide 5.2 Retention Rule, 13.2.16, 13.5.2) and GFS long-term retention."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbr.domain.retention import (
    BackupRecord,
    CurrentRetention,
    LongTermRetention,
    RetentionRule,
    plan_retention,
)

UTC = timezone.utc


def day(n: int, hour: int = 2) -> datetime:
    """Day n counted from 1 January 2024, at 02:00 UTC."""
    return datetime(2024, 1, 1, hour, tzinfo=UTC) + timedelta(days=n)


def autos(n: int, rule: RetentionRule, start: int = 0, **kw) -> list[BackupRecord]:
    return [BackupRecord(f"a{start + i:04d}", day(start + i), True, rule=rule, **kw) for i in range(n)]


def count(n: int, **kw) -> CurrentRetention:
    return CurrentRetention(rule=RetentionRule.quantity(n), **kw)


class TestRule:
    def test_expiry(self):
        created = datetime(2024, 8, 6, 2, tzinfo=UTC)
        assert RetentionRule.of_days(3).expires_at(created) == datetime(2024, 8, 9, 2, tzinfo=UTC)
        assert RetentionRule.of_months(1).expires_at(created) == datetime(2024, 9, 6, 2, tzinfo=UTC)
        assert RetentionRule.of_months(1).expires_at(datetime(2024, 1, 31, tzinfo=UTC)) == datetime(2024, 2, 29, tzinfo=UTC)
        assert RetentionRule.quantity(3).expires_at(created) is None
        assert RetentionRule.permanent().expires_at(created) is None

    @pytest.mark.parametrize("rule", [RetentionRule.quantity(3), RetentionRule.of_days(30), RetentionRule.of_months(6), RetentionRule.permanent()])
    def test_encode_round_trip(self, rule):
        assert RetentionRule.decode(rule.encode()) == rule

    @pytest.mark.parametrize("bad", ["count:", "weeks:3", "days:x", ""])
    def test_decode_rejects(self, bad):
        with pytest.raises(ValueError):
            RetentionRule.decode(bad)

    def test_inconsistent_rules_refused(self):
        with pytest.raises(ValueError):
            RetentionRule("count")
        with pytest.raises(ValueError):
            RetentionRule("duration", days=3, months=1)
        with pytest.raises(ValueError):
            RetentionRule("forever")


class TestAlways:
    def test_manual_backups_are_never_pruned(self):
        """5.2: "The retention rules apply only to auto-generated backups, but not manual backups." """
        manual = [BackupRecord(f"m{i}", day(i), False) for i in range(10)]
        plan = plan_retention(manual + autos(5, RetentionRule.quantity(2), start=20), count(2), day(40))
        assert plan.prune_ids == ["a0022", "a0021", "a0020"]
        assert all(plan.verdict(f"m{i}").codes == ("manual",) for i in range(10))

    def test_manual_backups_do_not_count_towards_the_quantity(self):
        backups = autos(2, RetentionRule.quantity(2)) + [BackupRecord("m", day(5), False)]
        assert plan_retention(backups, count(2), day(6)).prune_ids == []

    def test_backup_used_by_an_image_is_never_pruned(self):
        """5.2: "If a backup is used to create an image, the backup will not be deleted by the retention
        rule." 6.2: such a backup "will not be counted as a retained backup": it takes none of the N places."""
        backups = autos(5, RetentionRule.quantity(2))
        backups[0] = BackupRecord("a0000", day(0), True, used_by_image=True, rule=RetentionRule.of_days(2))
        plan = plan_retention(backups, count(2), day(10))
        v = plan.verdict("a0000")
        assert not v.prune and v.codes == ("image",) and {r.code for r in v.overridden} == {"expired", "beyond_count"}
        assert plan.prune_ids == ["a0002", "a0001"]
        backups[4] = BackupRecord("a0004", day(4), True, used_by_image=True, rule=RetentionRule.quantity(2))
        plan = plan_retention(backups, count(2), day(10))
        assert plan.verdict("a0004").codes == ("image",)
        assert plan.prune_ids == ["a0001"]  # the two most recent without an image are a0003 and a0002

    def test_failed_backups_at_most_ten_for_one_month(self):
        """5.2: "A maximum of 10 backups are retained for failed periodic backup tasks. They are retained
        for one month and can be deleted manually." """
        failed = [BackupRecord(f"f{i:02d}", day(i), True, status="error", rule=RetentionRule.permanent()) for i in range(12)]
        plan = plan_retention(failed, CurrentRetention(RetentionRule.permanent()), day(12))
        assert plan.prune_ids == ["f01", "f00"]
        assert plan.verdict("f00").codes == ("failed_too_many",)
        plan = plan_retention(failed, None, datetime(2024, 2, 3, 2, tzinfo=UTC))  # f02 made 3 Jan 02:00
        assert set(plan.prune_ids) == {"f00", "f01", "f02"}
        assert plan.verdict("f02").codes == ("failed_too_old",)
        assert plan.verdict("f03").codes == ("failed_recent",)

    def test_failed_backups_do_not_count_towards_the_quantity(self):
        backups = autos(2, RetentionRule.quantity(2)) + [BackupRecord("f", day(5), True, status="error")]
        assert plan_retention(backups, count(2), day(6)).prune_ids == []

    def test_manual_failed_backups_are_left_alone(self):
        failed = [BackupRecord(f"f{i:02d}", day(i), False, status="error") for i in range(12)]
        assert plan_retention(failed, None, day(300)).prune_ids == []

    @pytest.mark.parametrize("status", ["protecting", "waiting_protect", "deleting", "waiting_delete"])
    def test_in_progress_backups_are_untouched_and_not_counted(self, status):
        backups = autos(2, RetentionRule.quantity(2)) + [BackupRecord("p", day(5), True, status=status, rule=RetentionRule.quantity(2))]
        plan = plan_retention(backups, count(2), day(6))
        assert plan.prune_ids == [] and plan.verdict("p").codes == ("busy",) and plan.verdict("p").overridden == ()

    def test_restoring_backup_counts_but_is_deleted_later(self):
        backups = [BackupRecord("r", day(0), True, status="restoring", rule=RetentionRule.quantity(2))] + autos(3, RetentionRule.quantity(2), start=1)
        plan = plan_retention(backups, count(2), day(6))
        assert plan.prune_ids == ["a0001"]
        assert plan.verdict("r").codes == ("busy",) and plan.verdict("r").overridden[0].code == "beyond_count"

    def test_unknown_rule_is_permanent(self):
        backups = [BackupRecord("x", day(0), True, rule=None)]
        assert plan_retention(backups, CurrentRetention(RetentionRule.of_days(2)), day(100)).prune_ids == []
        assert plan_retention(backups, None, day(100)).verdict("x").codes == ("permanent",)

    def test_plan_is_newest_first_and_explained(self):
        plan = plan_retention(autos(4, RetentionRule.quantity(2)), count(2), day(5))
        assert [v.backup_id for v in plan.verdicts] == ["a0003", "a0002", "a0001", "a0000"]
        lines = plan.explain()
        assert lines[0].startswith("keep a0003: one of the 2 most recent")
        assert lines[3].startswith("delete a0000: not among the 2 most recent")
        assert plan.keep_ids == ["a0003", "a0002"] and [v.backup_id for v in plan.to_prune] == ["a0001", "a0000"]

    def test_naive_datetimes_refused(self):
        with pytest.raises(ValueError):
            plan_retention([], None, datetime(2024, 1, 1))
        with pytest.raises(ValueError):
            plan_retention([BackupRecord("x", datetime(2024, 1, 1), True)], None, day(1))


class TestLongTerm:
    def test_gfs_like_restic(self):
        """Daily backups for two years; keep 3 + 7 daily, 4 weekly, 6 monthly, 2 yearly."""
        start = datetime(2023, 1, 1, 2, tzinfo=UTC)
        n = (datetime(2024, 12, 31, 2, tzinfo=UTC) - start).days + 1
        backups = [BackupRecord(f"{(start + timedelta(days=i)):%Y-%m-%d}", start + timedelta(days=i), True, rule=RetentionRule.quantity(3)) for i in range(n)]
        lt = LongTermRetention(daily=7, weekly=4, monthly=6, yearly=2)
        plan = plan_retention(backups, CurrentRetention(RetentionRule.quantity(3), lt), datetime(2025, 1, 1, tzinfo=UTC))
        kept = sorted(plan.keep_ids)
        assert kept == sorted(
            [f"2024-12-{d}" for d in range(25, 32)]  # 7 days
            + ["2024-12-22", "2024-12-15"]  # weeks: 2025-W01 (Tue 31), W52 (Sun 29), W51 (Sun 22), W50 (Sun 15)
            + ["2024-11-30", "2024-10-31", "2024-09-30", "2024-08-31", "2024-07-31"]  # months
            + ["2023-12-31"]  # years
        )
        assert plan.verdict("2024-12-31").codes == ("latest", "long_term_daily", "long_term_weekly", "long_term_monthly", "long_term_yearly")
        assert plan.verdict("2024-12-29").codes == ("latest", "long_term_daily", "long_term_weekly")
        assert plan.verdict("2024-12-28").codes == ("long_term_daily",)
        assert plan.verdict("2024-12-15").codes == ("long_term_weekly",)
        assert plan.verdict("2024-12-15").overridden[0].code == "beyond_count"
        assert plan.verdict("2023-12-31").codes == ("long_term_yearly",)

    def test_incremental_pruning_equals_one_shot(self):
        lt = LongTermRetention(daily=5, weekly=3, monthly=2)
        cur = CurrentRetention(RetentionRule.quantity(2), lt)
        all_backups = autos(120, RetentionRule.quantity(2))
        live: dict[str, BackupRecord] = {}
        for b in all_backups:
            live[b.id] = b
            for bid in plan_retention(live.values(), cur, b.created_at).prune_ids:
                del live[bid]
        one_shot = plan_retention(all_backups, cur, all_backups[-1].created_at)
        assert sorted(live) == sorted(one_shot.keep_ids)

    def test_days_are_taken_in_the_policy_time_zone(self):
        backups = [
            BackupRecord("aug4", datetime(2024, 8, 4, 10, tzinfo=UTC), True, rule=RetentionRule.quantity(1)),
            BackupRecord("aug5_10", datetime(2024, 8, 5, 10, tzinfo=UTC), True, rule=RetentionRule.quantity(1)),  # Aug 5 18:00 at +8
            BackupRecord("aug5_20", datetime(2024, 8, 5, 20, tzinfo=UTC), True, rule=RetentionRule.quantity(1)),  # Aug 6 04:00 at +8
            BackupRecord("aug6_01", datetime(2024, 8, 6, 1, tzinfo=UTC), True, rule=RetentionRule.quantity(1)),  # Aug 6 09:00 at +8
        ]
        now = datetime(2024, 8, 6, 2, tzinfo=UTC)
        in_utc = plan_retention(backups, CurrentRetention(RetentionRule.quantity(1), LongTermRetention(daily=2)), now)
        assert sorted(in_utc.keep_ids) == ["aug5_20", "aug6_01"]
        plus8 = LongTermRetention(daily=2, tz=timezone(timedelta(hours=8)))
        in_plus8 = plan_retention(backups, CurrentRetention(RetentionRule.quantity(1), plus8), now)
        assert sorted(in_plus8.keep_ids) == ["aug5_10", "aug6_01"]

    def test_long_term_is_off_when_the_policy_is_removed(self):
        backups = autos(10, RetentionRule.quantity(2))
        assert plan_retention(backups, None, day(20)).prune_ids == []


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------

_rules = st.one_of(
    st.builds(RetentionRule.quantity, st.integers(1, 6)),
    st.builds(RetentionRule.of_days, st.integers(1, 20)),
    st.builds(RetentionRule.of_months, st.sampled_from([1, 3])),
    st.just(RetentionRule.permanent()),
    st.none(),
)
_statuses = st.sampled_from(["available"] * 6 + ["error", "protecting", "restoring", "deleting"])


@st.composite
def _backups(draw):
    n = draw(st.integers(0, 40))
    out = []
    for i in range(n):
        created = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=draw(st.integers(0, 24 * 120)))
        out.append(
            BackupRecord(
                id=f"b{i:03d}",
                created_at=created,
                automatic=draw(st.booleans()),
                status=draw(_statuses),
                used_by_image=draw(st.integers(0, 9)) == 0,
                rule=draw(_rules),
            )
        )
    return out


_long_terms = st.one_of(
    st.none(),
    st.builds(LongTermRetention, daily=st.integers(0, 5), weekly=st.integers(0, 3), monthly=st.integers(0, 2), yearly=st.integers(0, 1),
              tz=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
)
_currents = st.one_of(
    st.none(),
    st.builds(CurrentRetention, rule=_rules.filter(lambda r: r is not None), long_term=_long_terms, enabled=st.booleans()),
)
_nows = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 9, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(_backups(), _currents, _nows)
def test_never_prunes_manual_image_or_in_progress_backups(backups, current, now):
    plan = plan_retention(backups, current, now)
    for v in plan.to_prune:
        assert v.backup.automatic
        assert not v.backup.used_by_image
        assert v.backup.status in ("available", "error")
    assert sorted(v.backup_id for v in plan.verdicts) == sorted(b.id for b in backups)
    assert all(v.reasons for v in plan.verdicts)


@settings(max_examples=300, deadline=None)
@given(_backups(), _currents, _nows)
def test_plan_is_idempotent_and_order_independent(backups, current, now):
    plan = plan_retention(backups, current, now)
    assert plan_retention(list(reversed(backups)), current, now) == plan
    left = [b for b in backups if b.id not in set(plan.prune_ids)]
    assert plan_retention(left, current, now).prune_ids == []


@settings(max_examples=300, deadline=None)
@given(_backups(), st.integers(1, 6), _nows)
def test_quantity_rule_keeps_at_most_n_plain_automatic_backups(backups, n, now):
    plan = plan_retention(backups, count(n), now)
    plain = [v for v in plan.to_keep if v.backup.automatic and v.backup.status == "available" and not v.backup.used_by_image]
    assert len(plain) <= n
    # and the ones it keeps are the newest of the counted automatic backups (those with an image are not
    # counted, guide 6.2)
    counted = sorted((b for b in backups if b.automatic and b.status in ("available", "restoring")
                      and not b.used_by_image), key=lambda b: (b.created_at, b.id), reverse=True)
    for v in plain:
        assert v.backup in counted[:n]


@settings(max_examples=300, deadline=None)
@given(_backups(), _currents, _nows)
def test_13_5_2_stamps(backups, current, now):
    """Time-period backups expire on their own date unless protected; quantity backups are never deleted
    while the current rule is not a quantity."""
    plan = plan_retention(backups, current, now)
    disabled = current is not None and not current.enabled
    for v in plan.verdicts:
        b = v.backup
        if not b.automatic or b.status != "available" or b.used_by_image:
            continue
        if b.rule is not None and b.rule.kind == "count" and (current is None or current.rule.kind != "count"):
            assert not v.prune
        exp = b.rule.expires_at(b.created_at) if b.rule is not None else None
        long_term = any(r.code.startswith("long_term") for r in v.reasons)
        if exp is not None and exp <= now and not disabled and not long_term:
            assert v.prune
        if disabled:
            assert not v.prune


def test_a_current_retention_encodes_its_long_term_levels_and_reads_back():
    from datetime import timedelta, timezone

    from opencbr.domain.retention import CurrentRetention, LongTermRetention, RetentionRule
    plain = CurrentRetention(RetentionRule.of_days(30))
    assert plain.encode() == "days:30" and CurrentRetention.decode("days:30") == plain
    gfs = CurrentRetention(RetentionRule.quantity(99999),
                           LongTermRetention(99999, 99999, 99999, 99999, timezone(timedelta(hours=-5, minutes=-30))))
    text = gfs.encode()
    assert text == "count:99999;gfs:99999,99999,99999,99999,-0530" and len(text) <= 64
    assert CurrentRetention.decode(text) == gfs
    for bad in ("count:2;gfs:1,2,3", "count:2;x", "count:2;gfs:1,2,3,4,0800", "count:2;gfs:a,2,3,4,+0800"):
        with pytest.raises(ValueError):
            CurrentRetention.decode(bad)
