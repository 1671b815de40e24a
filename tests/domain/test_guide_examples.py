"""The guide's retention examples, replayed with the dates of the guide: 5.2 (Example) and the five examples
of 13.5.2, plus 5.7 and 13.5.7. A small vault simulator creates the automatic backups at the times the
policy's schedule gives and applies retention after each backup, as the scheduler will.

5 August 2024 is a Monday, so "Monday" in 5.2 / 13.5.2 and "August 5" are the same day here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from opencbr.domain.policy import PolicySpec, validate_policy_create
from opencbr.domain.retention import BackupRecord, CurrentRetention, RetentionRule, plan_retention
from opencbr.domain.schedule import Schedule

UTC = timezone.utc
DAILY_0200 = ["FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"]


def t(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


def policy(**definition) -> PolicySpec:
    return validate_policy_create(
        {
            "name": "daily_0200",
            "operation_type": "backup",
            "operation_definition": definition,
            "trigger": {"properties": {"pattern": DAILY_0200}},
        }
    )


class Vault:
    """One disk in one vault with a backup policy; time only moves forward."""

    def __init__(self, spec: PolicySpec, applied_at: datetime):
        self.backups: dict[str, BackupRecord] = {}
        self.schedule: Schedule = spec.schedule(applied_at)
        self.current: CurrentRetention | None = spec.current_retention()
        self.clock = applied_at

    def change_rule(self, rule: RetentionRule) -> None:
        assert self.current is not None
        self.current = CurrentRetention(rule=rule, long_term=self.current.long_term, enabled=self.current.enabled)

    def run_until(self, until: datetime) -> None:
        for run in self.schedule.due_runs(self.clock, until):
            self.clock = run.scheduled_at
            if self.current is not None and self.current.enabled:
                self.backup(run.scheduled_at, automatic=True)
        self.clock = until

    def backup(self, when: datetime, automatic: bool, **kw) -> str:
        bid = f"{'autobk' if automatic else 'manualbk'}_{when:%m%d_%H%M}"
        rule = self.current.rule if automatic and self.current is not None else None
        self.backups[bid] = BackupRecord(bid, when, automatic, rule=rule, **kw)
        # the latest rule is verified after each backup, automatic or manual (13.5.2)
        self.retain(when + timedelta(minutes=5))
        return bid

    def retain(self, now: datetime):
        plan = plan_retention(self.backups.values(), self.current, now)
        for bid in plan.prune_ids:
            del self.backups[bid]
        return plan

    def auto_days(self) -> list[str]:
        return sorted(b.created_at.strftime("%m-%d") for b in self.backups.values() if b.automatic)

    def manual(self) -> list[str]:
        return sorted(b.id for b in self.backups.values() if not b.automatic)


# --------------------------------------------------------------------------------------------------
# guide 5.2 Example
# --------------------------------------------------------------------------------------------------


def test_guide_5_2_example_daily_0200_keep_three():
    """5.2: "At 10:00 a.m. on Monday, a user sets a backup policy for their vault to instruct CBR to
    execute a backup task at 02:00 a.m. every day and retain a maximum of three backups. As of 11:00 a.m.
    on Saturday, three backups will be retained, which are generated on Thursday, Friday, and Saturday.
    The backups generated at 02:00 a.m. on Tuesday and Wednesday have been automatically deleted." """
    v = Vault(policy(max_backups=3), t(8, 5))
    v.run_until(t(8, 10, 11))
    assert v.auto_days() == ["08-08", "08-09", "08-10"]  # Thursday, Friday, Saturday


# --------------------------------------------------------------------------------------------------
# guide 13.5.2
# --------------------------------------------------------------------------------------------------


def test_13_5_2_quantity_changed_to_a_new_quantity_applies_to_old_backups():
    """"Rule Type Unchanged, with Only a New Backup Quantity Configured": keep three from Monday 10:00;
    Thursday 10:00 three are kept; the count becomes one; after the 02:00 Friday backup only one most
    recent backup is kept. (The guide lowers the count to one, below the console's minimum of 2, so the
    change is made with the domain rule directly.)"""
    v = Vault(policy(max_backups=3), t(8, 5))
    v.run_until(t(8, 8))
    assert v.auto_days() == ["08-06", "08-07", "08-08"]
    v.change_rule(RetentionRule.quantity(1))
    v.run_until(t(8, 9))
    assert v.auto_days() == ["08-09"]


def test_13_5_2_new_quantity_is_verified_after_a_manual_backup_and_spares_it():
    """Same example: "If the user then perform manual backups ... the system will verify and use the
    latest retention rule after the backup task is complete ... only one most recent backup will be kept.
    Manual backups are not affected by policies, so they will not be deleted." """
    v = Vault(policy(max_backups=3), t(8, 5))
    v.run_until(t(8, 8))
    v.change_rule(RetentionRule.quantity(1))
    manual = v.backup(t(8, 8, 11), automatic=False)
    assert v.auto_days() == ["08-08"]
    assert v.manual() == [manual]
    v.run_until(t(8, 20))
    assert v.auto_days() == ["08-20"] and v.manual() == [manual]


def test_13_5_2_quantity_changed_to_time_period_old_backups_are_never_deleted():
    """"Rule Type Changed from Backup Quantity to Time Period/Permanent": keep three, changed on Thursday
    10:00 to one month. "The three backups generated based on the old policy will still be kept ... They
    will not be automatically deleted ... Backups generated based on the new policy will be kept based on
    the new retention rule." """
    v = Vault(policy(max_backups=3), t(8, 5))
    v.run_until(t(8, 8))
    v.change_rule(policy(retention_duration_months=1).retention)
    v.run_until(t(8, 9))
    assert v.auto_days() == ["08-06", "08-07", "08-08", "08-09"]
    v.run_until(t(9, 9, 1))  # Aug 9 02:00 + 1 month = Sep 9 02:00
    assert "08-09" in v.auto_days()
    v.run_until(t(9, 9, 3))
    assert "08-09" not in v.auto_days()
    v.run_until(t(10, 1))
    days = v.auto_days()
    assert days[:3] == ["08-06", "08-07", "08-08"]  # old backups, still there two months later
    assert days[3:] == [f"{d:%m-%d}" for d in (t(9, 2) + timedelta(days=i) for i in range(30))]
    plan = plan_retention(v.backups.values(), v.current, t(10, 1))
    assert plan.verdict("autobk_0806_0200").codes == ("quantity_rule_not_current",)


def test_13_5_2_quantity_changed_to_permanent_old_backups_are_never_deleted():
    v = Vault(policy(max_backups=3), t(8, 5))
    v.run_until(t(8, 8))
    v.change_rule(policy(max_backups=-1).retention)
    v.run_until(t(9, 8))
    assert len(v.auto_days()) == 3 + 31


def test_13_5_2_time_period_changed_to_longer_period_old_backups_keep_old_period():
    """"Rule Type Changed from Time Period to Time Period/Permanent": one month from August 5 10:00; three
    backups on August 8 10:00; changed to three months. "At 02:00 a.m. on September 6, the backup
    generated on August 6 based on the old policy will be deleted. The backup generated on August 9 will
    be deleted two months later based on the new policy." """
    v = Vault(policy(retention_duration_months=1), t(8, 5))
    v.run_until(t(8, 8))
    assert v.auto_days() == ["08-06", "08-07", "08-08"]
    v.change_rule(policy(retention_duration_months=3).retention)
    v.run_until(t(9, 6, 1))
    assert v.auto_days()[:2] == ["08-06", "08-07"]
    v.run_until(t(9, 6, 3))  # after the 02:00 backup of September 6
    assert v.auto_days()[:2] == ["08-07", "08-08"]
    v.run_until(t(9, 8, 3))
    assert v.auto_days()[0] == "08-09"  # all three old backups gone on their old dates
    v.run_until(t(11, 9, 1))
    assert v.auto_days()[0] == "08-09"  # three months: until November 9, two months after September
    v.run_until(t(11, 9, 3))
    assert v.auto_days()[0] == "08-10"


def test_13_5_2_time_period_changed_to_permanent_old_backups_keep_old_period():
    v = Vault(policy(retention_duration_days=3), t(8, 5))
    v.run_until(t(8, 8))
    v.change_rule(policy().retention)
    v.run_until(t(8, 20))
    assert v.auto_days()[0] == "08-09"  # 6, 7, 8 expired under the old rule
    assert len(v.auto_days()) == 12  # the new ones are permanent


def test_13_5_2_time_period_changed_to_quantity_new_rule_applies_to_old_backups():
    """"Rule Type Changed from Time Period to Backup Quantity" — new policy applied to old backups: one
    month from August 5; changed on August 8 10:00 to keep seven. "At 10:00 a.m. on August 15, the
    backups generated on August 9, 10, 11, 12, 13, 14, and 15 will be kept. The backups generated on
    August 6, 7, and 8 have been deleted based on the new policy." """
    v = Vault(policy(retention_duration_months=1), t(8, 5))
    v.run_until(t(8, 8))
    assert v.auto_days() == ["08-06", "08-07", "08-08"]
    v.change_rule(policy(max_backups=7).retention)
    v.run_until(t(8, 15))
    assert v.auto_days() == ["08-09", "08-10", "08-11", "08-12", "08-13", "08-14", "08-15"]


def test_13_5_2_time_period_changed_to_quantity_old_rule_applies_to_old_backups():
    """Same scenario — old policy applied to old backups: three days from August 5; changed on August 8
    10:00 to keep seven. "At 10:00 a.m. on August 10, the backups generated on August 8, 9, and 10 will
    be kept. The backups generated on August 6 and 7 have been deleted based on the old policy." """
    v = Vault(policy(retention_duration_days=3), t(8, 5))
    v.run_until(t(8, 8))
    assert v.auto_days() == ["08-06", "08-07", "08-08"]
    v.change_rule(policy(max_backups=7).retention)
    v.run_until(t(8, 10))
    assert v.auto_days() == ["08-08", "08-09", "08-10"]
    plan = plan_retention(
        [BackupRecord("x", t(8, 7, 2), True, rule=RetentionRule.of_days(3))], v.current, t(8, 10, 2, 5)
    )
    assert plan.verdict("x").prune and plan.verdict("x").codes == ("expired",)


# --------------------------------------------------------------------------------------------------
# 5.7, 13.5.7
# --------------------------------------------------------------------------------------------------


def test_5_7_after_removal_time_period_backups_expire_and_quantity_backups_do_not():
    """5.7: "After a policy is removed, backups retained by Time period will expire based on the retention
    rule, but backups retained by Backup quantity will not." """
    v = Vault(policy(max_backups=3), t(8, 5))
    v.run_until(t(8, 8))
    v.change_rule(policy(retention_duration_days=5).retention)
    v.run_until(t(8, 10))
    assert v.auto_days() == ["08-06", "08-07", "08-08", "08-09", "08-10"]
    v.current = None  # the policy is removed from the vault (or deleted)
    v.run_until(t(8, 14, 3))
    assert v.auto_days() == ["08-06", "08-07", "08-08", "08-09", "08-10"]  # no new backups; none expired yet
    v.retain(t(8, 14, 3))
    assert v.auto_days() == ["08-06", "08-07", "08-08", "08-10"]  # Aug 9 expired Aug 14 02:00
    v.retain(t(12, 31))
    assert v.auto_days() == ["08-06", "08-07", "08-08"]  # kept by quantity: never expire


def test_13_5_7_disabled_policy_deletes_nothing():
    """13.5.7: backups are not deleted when "The policy applied to the vault is not enabled"."""
    v = Vault(policy(max_backups=3), t(8, 5))
    v.run_until(t(8, 8))
    v.current = CurrentRetention(rule=RetentionRule.quantity(2), enabled=False)
    v.backup(t(8, 8, 11), automatic=False)
    v.run_until(t(8, 20))  # a disabled policy makes no backups
    assert v.auto_days() == ["08-06", "08-07", "08-08"]
    plan = plan_retention(v.backups.values(), v.current, t(8, 20))
    assert {c for vd in plan.verdicts if vd.backup.automatic for c in vd.codes} == {"disabled"}
    v.current = CurrentRetention(rule=RetentionRule.quantity(2), enabled=True)
    v.retain(t(8, 20))
    assert v.auto_days() == ["08-07", "08-08"]
