"""Policy validation and limits (guide 1.6, 5.2, 5.3, 5.6; CBR v3 API sections 4 and 6.4)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict
from opencbr.domain.policy import (
    PolicySpec,
    apply_policy_update,
    check_policy_count,
    check_replication_destination,
    check_vault_binding,
    parse_timezone,
    validate_policy_create,
    validate_policy_name,
)
from opencbr.domain.retention import LongTermRetention, RetentionRule

UTC = timezone.utc
SDK_PATTERN = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=14;BYMINUTE=00"


def backup_body(**definition) -> dict:
    return {
        "name": "policy001",
        "operation_type": "backup",
        "operation_definition": definition or {"max_backups": 3},
        "trigger": {"properties": {"pattern": [SDK_PATTERN]}},
    }


def replication_body(**definition) -> dict:
    od = {"retention_duration_days": 7, "destination_region": "region-b", "destination_project_id": "p0b"}
    od.update(definition)
    return {
        "name": "policy002",
        "operation_type": "replication",
        "operation_definition": od,
        "trigger": {"properties": {"pattern": [SDK_PATTERN]}},
    }


def rejected(body, fragment: str, **kw) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as e:
        validate_policy_create(body, **kw)
    assert fragment in e.value.message, e.value.message
    assert e.value.status == 400
    return e.value


def with_od(**od) -> dict:
    return backup_body(**od)


# --------------------------------------------------------------------------------------------------
# create: valid bodies
# --------------------------------------------------------------------------------------------------


class TestCreateValid:
    def test_sdk_example_backup_policy(self):
        body = {
            "enabled": True,
            "name": "policy001",
            "operation_definition": {"day_backups": 0, "month_backups": 0, "max_backups": 3, "timezone": "UTC+08:00", "week_backups": 0, "year_backups": 0},
            "operation_type": "backup",
            "trigger": {"properties": {"pattern": [SDK_PATTERN]}},
        }
        spec = validate_policy_create(body)
        assert spec.retention == RetentionRule.quantity(3)
        assert spec.long_term is None
        assert spec.to_document() == {
            "name": "policy001",
            "operation_type": "backup",
            "enabled": True,
            "operation_definition": {"max_backups": 3, "day_backups": 0, "week_backups": 0, "month_backups": 0, "year_backups": 0, "timezone": "UTC+08:00"},
            "trigger": {"type": "time", "properties": {"pattern": [SDK_PATTERN]}},
        }

    def test_sdk_example_replication_policy(self):
        spec = validate_policy_create(replication_body(enable_acceleration=False), current_region="region-a")
        assert spec.operation_type == "replication"
        assert (spec.destination_region, spec.destination_project_id) == ("region-b", "p0b")
        assert spec.retention == RetentionRule.of_days(7)

    def test_defaults_and_normalisation(self):
        body = backup_body(max_backups=3)
        body["trigger"] = {"type": "time", "properties": {"pattern": ["rrule:freq=daily;byhour=2"], "start_window_minutes": 60}}
        spec = validate_policy_create(body)
        assert spec.enabled is True
        assert spec.pattern_texts == ["FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"]
        assert spec.start_window_minutes == 60

    def test_disabled(self):
        body = backup_body()
        body["enabled"] = False
        assert validate_policy_create(body).enabled is False

    @pytest.mark.parametrize(
        "od, rule",
        [
            ({"max_backups": 2}, RetentionRule.quantity(2)),
            ({"max_backups": 99999}, RetentionRule.quantity(99999)),
            ({"retention_duration_days": 2}, RetentionRule.of_days(2)),
            ({"retention_duration_days": 99999}, RetentionRule.of_days(99999)),
            ({"retention_duration_months": 1}, RetentionRule.of_months(1)),
            ({"retention_duration_months": 3}, RetentionRule.of_months(3)),
            ({"retention_duration_months": 6}, RetentionRule.of_months(6)),
            ({"retention_duration_months": 12}, RetentionRule.of_months(12)),
            ({"max_backups": 5, "retention_duration_days": -1}, RetentionRule.quantity(5)),
            ({"max_backups": -1, "retention_duration_days": 30}, RetentionRule.of_days(30)),
            ({"max_backups": -1, "retention_duration_days": -1}, RetentionRule.permanent()),
            ({"timezone": "UTC+08:00"}, RetentionRule.permanent()),  # both absent: permanent
            ({"max_backups": None, "retention_duration_days": None}, RetentionRule.permanent()),
        ],
    )
    def test_retention_rule(self, od, rule):
        """Guide 5.2 Retention Rule: time period (2-99999 days or 1/3/6/12 months), backup quantity
        (2-99999), or permanent; the API: -1 means no limit, both absent means permanent."""
        assert validate_policy_create(backup_body(**od) if od else backup_body(timezone="UTC")).retention == rule

    def test_month_rules_echo_days_for_sdk_clients(self):
        spec = validate_policy_create(with_od(retention_duration_months=12))
        assert spec.to_operation_definition() == {"retention_duration_months": 12, "retention_duration_days": 365}

    def test_long_term_retention(self):
        spec = validate_policy_create(with_od(max_backups=3, day_backups=7, week_backups=4, month_backups=12, year_backups=100, timezone="utc-05:30"))
        assert spec.timezone == "UTC-05:30"
        assert spec.long_term == LongTermRetention(7, 4, 12, 100, timezone(-timedelta(hours=5, minutes=30)))
        cur = spec.current_retention()
        assert cur.rule == RetentionRule.quantity(3) and cur.long_term == spec.long_term and cur.enabled

    def test_cjk_names(self):
        assert validate_policy_create({**backup_body(), "name": "每日备份_01"}).name == "每日备份_01"

    def test_unknown_definition_fields_are_ignored(self):
        assert validate_policy_create(with_od(max_backups=3, some_future_field=1)).max_backups == 3

    @pytest.mark.parametrize("v", [-1, 0, 1, 100])
    def test_full_backup_interval(self, v):
        assert validate_policy_create(with_od(max_backups=3, full_backup_interval=v)).full_backup_interval == v

    def test_schedule_from_spec(self):
        spec = validate_policy_create(backup_body())
        s = spec.schedule(datetime(2024, 8, 5, 10, tzinfo=UTC))
        assert s.next_run(datetime(2024, 8, 5, 10, tzinfo=UTC)).execution_id == "20240805T140000Z"


# --------------------------------------------------------------------------------------------------
# create: every rule rejects
# --------------------------------------------------------------------------------------------------


class TestName:
    """Guide 5.2 Table 5-1: "A name must contain 1 to 64 characters including digits, letters,
    underscores (_), or hyphens (-)." """

    @pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 64, "备份"])
    def test_accepted(self, name):
        assert validate_policy_name(name) == name

    @pytest.mark.parametrize(
        "name, fragment",
        [
            (None, "required"),
            (5, "required"),
            ("", "must not be empty"),
            ("x" * 65, "at most 64"),
            ("my policy", "invalid"),
            ("policy.1", "invalid"),
            ("policy/1", "invalid"),
            ("politique-été", "invalid"),
        ],
    )
    def test_rejected(self, name, fragment):
        rejected({**backup_body(), "name": name}, fragment)


class TestCreateRejects:
    def test_body_must_be_an_object(self):
        rejected(["policy"], "policy object")

    @pytest.mark.parametrize("op", [None, "", "copy", "Backup"])
    def test_operation_type(self, op):
        rejected({**backup_body(), "operation_type": op}, "operation_type")

    @pytest.mark.parametrize("enabled", ["true", 1, 0])
    def test_enabled_must_be_boolean(self, enabled):
        rejected({**backup_body(), "enabled": enabled}, "true or false")

    @pytest.mark.parametrize(
        "trigger, fragment",
        [
            (None, "trigger (the execution times) is required"),
            ("FREQ=DAILY;BYHOUR=2", "trigger must be an object"),
            ({"type": "cron", "properties": {"pattern": [SDK_PATTERN]}}, "trigger.type"),
            ({"pattern": [SDK_PATTERN]}, "trigger.properties must be an object"),
            ({"properties": {}}, "pattern (the execution times) is required"),
            ({"properties": {"pattern": []}}, "at least one"),
            ({"properties": {"pattern": ["FREQ=MONTHLY;BYHOUR=2"]}}, "WEEKLY or DAILY"),
            ({"properties": {"pattern": ["FREQ=DAILY;BYHOUR=2", "FREQ=DAILY;BYHOUR=2;BYMINUTE=30"]}}, "60 minutes apart"),
            ({"properties": {"pattern": [f"FREQ=DAILY;BYHOUR={h}" for h in range(24)] + ["FREQ=DAILY;BYHOUR=1"]}}, "at most 24"),
            ({"properties": {"pattern": [SDK_PATTERN], "start_window_minutes": 59}}, "start_window_minutes"),
            ({"properties": {"pattern": [SDK_PATTERN], "start_window_minutes": 481}}, "start_window_minutes"),
            ({"properties": {"pattern": [SDK_PATTERN], "start_window_minutes": "60"}}, "whole number"),
        ],
    )
    def test_trigger(self, trigger, fragment):
        rejected({**backup_body(), "trigger": trigger}, fragment)

    @pytest.mark.parametrize("v", [60, 480, None])
    def test_start_window_limits_accepted(self, v):
        body = backup_body()
        body["trigger"]["properties"]["start_window_minutes"] = v
        assert validate_policy_create(body).start_window_minutes == v

    def test_operation_definition_required(self):
        rejected({**backup_body(), "operation_definition": None}, "operation_definition (the retention rule) is required")
        rejected({**backup_body(), "operation_definition": [1]}, "must be an object")

    @pytest.mark.parametrize("v", [0, 1, 100000, -2, "3", True, 2.5])
    def test_max_backups(self, v):
        """Guide 5.2: backup quantity "ranges from 2 to 99999" (-1: no limit)."""
        rejected(with_od(max_backups=v), "max_backups")

    @pytest.mark.parametrize("v", [0, 1, 100000, -5, "30"])
    def test_retention_duration_days(self, v):
        """Guide 5.2: "any desired number (2 to 99999) of days" (-1: no limit)."""
        rejected(with_od(retention_duration_days=v), "retention_duration_days")

    @pytest.mark.parametrize("v", [0, 2, 24, -1])
    def test_retention_duration_months(self, v):
        """Guide 5.2: one month, three months, six months or one year."""
        rejected(with_od(retention_duration_months=v), "1, 3, 6 or 12")

    def test_one_rule_type_only(self):
        rejected(with_od(max_backups=3, retention_duration_days=30), "not both")
        rejected(with_od(max_backups=3, retention_duration_months=1), "not both")
        rejected(with_od(retention_duration_days=31, retention_duration_months=1), "not both")

    @pytest.mark.parametrize("field", ["day_backups", "week_backups", "month_backups", "year_backups"])
    @pytest.mark.parametrize("v", [-1, 101, "7"])
    def test_long_term_range(self, field, v):
        rejected(with_od(max_backups=3, timezone="UTC+08:00", **{field: v}), field)

    @pytest.mark.parametrize("field", ["day_backups", "week_backups", "month_backups", "year_backups"])
    def test_long_term_needs_timezone(self, field):
        rejected(with_od(max_backups=3, **{field: 1}), "needs timezone")

    def test_long_term_not_with_a_time_period(self):
        rejected(with_od(retention_duration_days=30, day_backups=7, timezone="UTC+08:00"), "cannot be combined")
        rejected(with_od(retention_duration_months=1, day_backups=7, timezone="UTC+08:00"), "cannot be combined")

    def test_long_term_needs_max_backups(self):
        rejected(with_od(day_backups=7, timezone="UTC+08:00"), "set max_backups")
        rejected(with_od(max_backups=-1, week_backups=2, timezone="UTC+08:00"), "set max_backups")

    @pytest.mark.parametrize("tz", ["UTC+8", "GMT+08:00", "UTC+15:00", "UTC-13:00", "UTC+08:60", "+08:00", 8])
    def test_timezone_format(self, tz):
        rejected(with_od(max_backups=3, timezone=tz), "timezone")

    @pytest.mark.parametrize("v", [-2, 101, "5"])
    def test_full_backup_interval(self, v):
        rejected(with_od(max_backups=3, full_backup_interval=v), "full_backup_interval")

    def test_full_backup_interval_only_for_backup_policies(self):
        rejected(replication_body(full_backup_interval=5), "only to backup policies")

    def test_advanced_retention_rules_not_supported(self):
        rejected(with_od(max_backups=3, advanced_retention_rules={"weekly_retention_rules": {"days_of_week": ["MO"]}}), "not supported")
        assert validate_policy_create(with_od(max_backups=3, advanced_retention_rules={})).max_backups == 3

    @pytest.mark.parametrize("field", ["destination_region", "destination_project_id"])
    def test_replication_needs_destination(self, field):
        body = replication_body()
        del body["operation_definition"][field]
        rejected(body, f"needs {field}")
        rejected(replication_body(**{field: ""}), f"needs {field}")
        rejected(replication_body(**{field: "a b"}), field)
        rejected(replication_body(**{field: 7}), field)

    def test_replication_to_the_same_region(self):
        rejected(replication_body(destination_region="region-a"), "must differ", current_region="region-a")

    def test_replication_fields_on_a_backup_policy(self):
        rejected(with_od(max_backups=3, destination_region="region-b"), "only to replication policies")

    def test_replication_field_types(self):
        rejected(replication_body(enable_acceleration="yes"), "true or false")
        rejected(replication_body(cross_account_urn=5), "cross_account_urn")


def test_parse_timezone():
    assert parse_timezone("UTC+08:00") == ("UTC+08:00", timezone(timedelta(hours=8)))
    assert parse_timezone("UTC-00:00") == ("UTC+00:00", UTC)
    assert parse_timezone("UTC+14:00")[0] == "UTC+14:00"
    assert parse_timezone("UTC-12:00")[0] == "UTC-12:00"


# --------------------------------------------------------------------------------------------------
# update
# --------------------------------------------------------------------------------------------------


class TestUpdate:
    @pytest.fixture
    def spec(self) -> PolicySpec:
        return validate_policy_create(with_od(max_backups=3, day_backups=7, timezone="UTC+08:00", full_backup_interval=5))

    def test_nothing_changes_with_an_empty_update(self, spec):
        assert apply_policy_update(spec, {}) == spec

    def test_name_and_enabled(self, spec):
        new = apply_policy_update(spec, {"name": "renamed", "enabled": False})
        assert (new.name, new.enabled) == ("renamed", False)
        with pytest.raises(InvalidParameter, match="invalid"):
            apply_policy_update(spec, {"name": "bad name"})
        with pytest.raises(InvalidParameter, match="true or false"):
            apply_policy_update(spec, {"enabled": "no"})

    def test_operation_type_cannot_change(self, spec):
        assert apply_policy_update(spec, {"operation_type": "backup"}) == spec
        with pytest.raises(InvalidParameter, match="cannot be changed"):
            apply_policy_update(spec, {"operation_type": "replication"})

    def test_trigger(self, spec):
        new = apply_policy_update(spec, {"trigger": {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=2;BYHOUR=3"], "start_window_minutes": 120}}})
        assert new.pattern_texts == ["FREQ=DAILY;INTERVAL=2;BYHOUR=3;BYMINUTE=00"] and new.start_window_minutes == 120
        assert not new.same_trigger(spec)
        only_window = apply_policy_update(spec, {"trigger": {"properties": {"start_window_minutes": 90}}})
        assert only_window.same_trigger(spec) and only_window.start_window_minutes == 90
        with pytest.raises(InvalidParameter, match="60 minutes apart"):
            apply_policy_update(spec, {"trigger": {"properties": {"pattern": ["FREQ=DAILY;BYHOUR=2;BYMINUTE=0,30"]}}})

    def test_retention_type_switch_needs_one_field(self, spec):
        plain = validate_policy_create(with_od(max_backups=3))
        new = apply_policy_update(plain, {"operation_definition": {"retention_duration_days": 30}})
        assert new.retention == RetentionRule.of_days(30) and new.max_backups is None
        back = apply_policy_update(new, {"operation_definition": {"max_backups": 7}})
        assert back.retention == RetentionRule.quantity(7) and back.retention_duration_days is None
        perm = apply_policy_update(back, {"operation_definition": {"max_backups": -1}})
        assert perm.retention == RetentionRule.permanent()

    def test_other_fields_merge(self, spec):
        new = apply_policy_update(spec, {"operation_definition": {"week_backups": 4}})
        assert (new.max_backups, new.day_backups, new.week_backups, new.timezone, new.full_backup_interval) == (3, 7, 4, "UTC+08:00", 5)

    def test_cross_field_rules_hold_after_merge(self, spec):
        with pytest.raises(InvalidParameter, match="needs timezone"):
            apply_policy_update(spec, {"operation_definition": {"timezone": None}})
        with pytest.raises(InvalidParameter, match="cannot be combined"):
            apply_policy_update(spec, {"operation_definition": {"retention_duration_days": 30}})
        with pytest.raises(InvalidParameter, match="max_backups"):
            apply_policy_update(spec, {"operation_definition": {"max_backups": 1}})

    def test_null_resets_a_field(self, spec):
        new = apply_policy_update(spec, {"operation_definition": {"full_backup_interval": None, "day_backups": None}})
        assert new.full_backup_interval is None and new.day_backups is None and new.long_term is None

    def test_wire_echo_round_trips(self):
        spec = validate_policy_create(with_od(retention_duration_months=3))
        assert apply_policy_update(spec, copy.deepcopy(spec.to_document())) == spec

    def test_sdk_read_modify_write_of_a_month_rule_becomes_days(self):
        """The SDK model has no retention_duration_months: sending back what it read turns "3 months"
        into the 90 days it was shown (documented)."""
        spec = validate_policy_create(with_od(retention_duration_months=3))
        od = {k: v for k, v in spec.to_document()["operation_definition"].items() if k != "retention_duration_months"}
        assert apply_policy_update(spec, {"operation_definition": od}).retention == RetentionRule.of_days(90)

    def test_replication_update_keeps_destination_and_checks_region(self):
        spec = validate_policy_create(replication_body(), current_region="region-a")
        new = apply_policy_update(spec, {"operation_definition": {"retention_duration_days": 14}}, current_region="region-a")
        assert new.destination_region == "region-b" and new.retention == RetentionRule.of_days(14)
        with pytest.raises(InvalidParameter, match="must differ"):
            apply_policy_update(spec, {"operation_definition": {"destination_region": "region-a"}}, current_region="region-a")

    def test_body_must_be_an_object(self, spec):
        with pytest.raises(InvalidParameter):
            apply_policy_update(spec, None)
        with pytest.raises(InvalidParameter):
            apply_policy_update(spec, {"operation_definition": 3})


# --------------------------------------------------------------------------------------------------
# limits
# --------------------------------------------------------------------------------------------------


class TestPolicyCount:
    """Guide 1.6: "A maximum of 32 backup policies and 32 replication policies can be created." """

    @pytest.mark.parametrize("op", ["backup", "replication"])
    def test_limit(self, op):
        check_policy_count(op, 0)
        check_policy_count(op, 31)
        with pytest.raises(QuotaExceeded, match="at most 32") as e:
            check_policy_count(op, 32)
        assert e.value.status == 400 and op in e.value.message

    def test_unknown_type(self):
        with pytest.raises(InvalidParameter):
            check_policy_count("copy", 0)


class TestVaultBinding:
    @pytest.mark.parametrize("obj", ["server", "disk", "turbo"])
    def test_backup_policy_on_backup_vaults(self, obj):
        """Guide 5.2 Constraints: server, disk and SFS Turbo backup vaults."""
        check_vault_binding("backup", obj, "backup", [])

    def test_backup_policy_not_on_replication_vaults(self):
        with pytest.raises(InvalidParameter, match="only to a backup vault"):
            check_vault_binding("backup", "server", "replication", [])

    def test_backup_policy_not_on_other_vault_kinds(self):
        with pytest.raises(InvalidParameter, match="server, disk and SFS Turbo"):
            check_vault_binding("backup", "workspace", "backup", [])

    @pytest.mark.parametrize("obj", ["server", "turbo"])
    def test_replication_policy_on_server_and_turbo_vaults(self, obj):
        """Guide 5.3 (server backup vaults) and 1.6 (SFS Turbo backups can be replicated)."""
        check_vault_binding("replication", obj, "backup", ["backup"])

    def test_replication_policy_not_on_disk_vaults(self):
        """Guide 1.6: "Cloud disk backups cannot be replicated to other regions." """
        with pytest.raises(InvalidParameter, match="cloud disk"):
            check_vault_binding("replication", "disk", "backup", [])

    def test_replication_policy_not_on_replication_vaults(self):
        with pytest.raises(InvalidParameter, match="only to a backup vault"):
            check_vault_binding("replication", "server", "replication", [])

    @pytest.mark.parametrize("op", ["backup", "replication"])
    def test_one_policy_of_each_type_per_vault(self, op):
        """Guide 1.6: "A vault can be associated with only one backup policy" / "only one replication
        policy"."""
        with pytest.raises(StateConflict, match=f"only one {op} policy") as e:
            check_vault_binding(op, "server", "backup", [op])
        assert e.value.status == 409
        other = "replication" if op == "backup" else "backup"
        check_vault_binding(op, "server", "backup", [other])


class TestReplicationDestination:
    @pytest.fixture
    def spec(self):
        return validate_policy_create(replication_body())

    def test_ok(self, spec):
        check_replication_destination(spec, "server", "server", "replication", "region-b")

    def test_rejects(self, spec):
        with pytest.raises(InvalidParameter, match="replication vault"):
            check_replication_destination(spec, "server", "server", "backup", "region-b")
        with pytest.raises(InvalidParameter, match="like the source"):
            check_replication_destination(spec, "server", "turbo", "replication", "region-b")
        with pytest.raises(InvalidParameter, match="replicates to"):
            check_replication_destination(spec, "server", "server", "replication", "region-c")
        with pytest.raises(InvalidParameter, match="Only a replication policy"):
            check_replication_destination(validate_policy_create(backup_body()), "server", "server", "replication", "region-b")
