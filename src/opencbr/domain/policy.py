"""Backup and replication policies: validation and normalisation of the CBR v3 policy model, and the
limits on how many policies exist and which vaults they may be applied to.

Input is a policy document (``name``, ``operation_type``, ``enabled``, ``operation_definition``,
``trigger``): the ``policy`` object of a create / update request (api/wire.py unwraps ``{"policy": {...}}``),
or a stored policy. Output is a :class:`PolicySpec`, immutable and normalised, from which the services
get the document to store (:meth:`PolicySpec.to_document`), the schedule (:meth:`PolicySpec.schedule`) and
the retention (:meth:`PolicySpec.current_retention`). The guide states its rules in the document's fields,
so the document is parsed and rendered here; every envelope around it (request bodies, ids, times,
bindings) is the API's (api/wire.py). Every rule violation raises
:class:`~opencbr.domain.errors.InvalidParameter` (bad field), :class:`~opencbr.domain.errors.QuotaExceeded`
(a count limit) or :class:`~opencbr.domain.errors.StateConflict` (the vault already has such a policy),
with a message a user understands.

Choices where the guide and the API documentation differ (the guide wins):

* ``max_backups``: -1 (no count limit) or **2**-99999. The guide (5.2 Retention Rule, "Backup quantity
  ... The value ranges from 2 to 99999") is stricter than the SDK docs (0-99999); 0 would delete every
  automatic backup as soon as it is made and 1 is below the guide's minimum. (The guide's own example in
  13.5.2 lowers a count to one; that example is covered at the retention level, where any count >= 1
  works.)
* ``retention_duration_days``: -1 (no time limit) or **2**-99999 (guide 5.2 "any desired number (2 to
  99999) of days"; the SDK docs allow 1).
* The console's "one month, three months, six months, one year" are **calendar months** — the dates of
  guide 13.5.2 need them (a backup of August 6 kept "one month" is deleted on September 6, 31 days
  later). The API has no such field, so OpenCBR accepts an extension field ``retention_duration_months``
  (1, 3, 6 or 12) in ``operation_definition``, used by our console and CLI. The wire form echoes it and,
  for clients that only know the SDK model, also ``retention_duration_days`` 30 / 90 / 180 / 365.
* A retention rule is one type (guide 5.2: time period, backup quantity or permanent): ``max_backups``
  and a retention duration cannot both be set (the public API documentation says the same).
* Long-term retention (``day/week/month/year_backups`` > 0) needs ``timezone`` and works together with
  ``max_backups`` (API: "not counted against max_backups"; it cannot be combined with
  ``retention_duration_days``). With a permanent rule it would change nothing, so it is rejected there too.
* Unknown fields of ``operation_definition`` are ignored (newer SDKs may send fields we do not know);
  ``advanced_retention_rules`` is rejected when non-empty, because ignoring it would keep backups the user
  meant to delete or the reverse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Iterable, Mapping

from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict
from opencbr.domain.retention import CurrentRetention, LongTermRetention, RetentionRule
from opencbr.domain.schedule import Pattern, Schedule, parse_patterns

__all__ = [
    "BACKUP",
    "REPLICATION",
    "OPERATION_TYPES",
    "MAX_POLICIES_PER_TYPE",
    "PolicySpec",
    "validate_policy_name",
    "parse_timezone",
    "validate_policy_create",
    "apply_policy_update",
    "check_policy_count",
    "check_vault_binding",
    "check_replication_destination",
]

BACKUP = "backup"
REPLICATION = "replication"
OPERATION_TYPES = (BACKUP, REPLICATION)

#: Guide 1.6: "A maximum of 32 backup policies and 32 replication policies can be created."
MAX_POLICIES_PER_TYPE = 32
NAME_MAX = 64
COUNT_MIN, COUNT_MAX = 2, 99999
DAYS_MIN, DAYS_MAX = 2, 99999
#: The console's time-period choices (guide 5.2) and the day counts echoed to SDK clients.
MONTH_CHOICES: Mapping[int, int] = {1: 30, 3: 90, 6: 180, 12: 365}
LONG_TERM_MAX = 100
START_WINDOW_MIN, START_WINDOW_MAX = 60, 480
FULL_INTERVAL_MIN, FULL_INTERVAL_MAX = -1, 100
_LONG_TERM_FIELDS = ("day_backups", "week_backups", "month_backups", "year_backups")
_RETENTION_FIELDS = ("max_backups", "retention_duration_days", "retention_duration_months")
_REPLICATION_FIELDS = ("destination_region", "destination_project_id", "enable_acceleration", "cross_account_urn")
#: Vault object types each policy type may be applied to (guide 5.2 Constraints; 1.6 and 5.3).
_BACKUP_OBJECT_TYPES = ("server", "disk", "turbo")
_REPLICATION_OBJECT_TYPES = ("server", "turbo")
_OBJECT_NAMES = {"server": "cloud server", "disk": "cloud disk", "turbo": "SFS Turbo"}

# Letters, digits, "_" and "-"; the SDK documentation also allows Chinese characters (CJK ideographs).
_NAME_RE = re.compile(r"[A-Za-z0-9_\-\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{1,64}")
_REGION_RE = re.compile(r"[A-Za-z0-9_\-]{1,255}")
_TZ_RE = re.compile(r"UTC([+-])(\d{2}):(\d{2})")
UTC = timezone.utc


# --------------------------------------------------------------------------------------------------
# Field helpers
# --------------------------------------------------------------------------------------------------


def _int_field(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"{name} must be a whole number, got {value!r}.")
    return value


def _bool_field(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameter(f"{name} must be true or false, got {value!r}.")
    return value


def validate_policy_name(name: Any) -> str:
    """Guide 5.2 / 5.3, Table 5-1 "Name": "A name must contain 1 to 64 characters including digits,
    letters, underscores (_), or hyphens (-)". The SDK documentation also allows Chinese characters; we
    accept CJK ideographs too. Spaces and other punctuation are rejected."""
    if not isinstance(name, str):
        raise InvalidParameter("The policy name is required and must be a string.")
    if not name:
        raise InvalidParameter("The policy name must not be empty (1 to 64 characters).")
    if len(name) > NAME_MAX:
        raise InvalidParameter(f"The policy name has {len(name)} characters; at most {NAME_MAX} are allowed.")
    if not _NAME_RE.fullmatch(name):
        raise InvalidParameter(
            f"The policy name {name!r} is invalid: use only letters, digits, underscores (_), hyphens (-) "
            "or Chinese characters."
        )
    return name


def parse_timezone(value: Any) -> tuple[str, tzinfo]:
    """The policy ``timezone`` (CBR v3 API section 4: "like UTC+08:00"): ``UTC`` followed by a sign and
    ``HH:MM``, from UTC-12:00 to UTC+14:00. Returns the normalised text and a fixed-offset tzinfo."""
    if not isinstance(value, str):
        raise InvalidParameter(f"timezone must be a string like UTC+08:00, got {value!r}.")
    m = _TZ_RE.fullmatch(value.strip().upper())
    if not m:
        raise InvalidParameter(f"timezone must look like UTC+08:00 or UTC-05:30, got {value!r}.")
    sign, hh, mm = m.group(1), int(m.group(2)), int(m.group(3))
    if mm >= 60 or (sign == "+" and (hh, mm) > (14, 0)) or (sign == "-" and (hh, mm) > (12, 0)):
        raise InvalidParameter(f"timezone {value!r} is out of range (UTC-12:00 to UTC+14:00).")
    offset = timedelta(hours=hh, minutes=mm) * (-1 if sign == "-" else 1)
    if offset == timedelta(0):
        sign = "+"
    return f"UTC{sign}{hh:02d}:{mm:02d}", timezone(offset)


def _parse_start_window(value: Any) -> int | None:
    """CBR v3 API section 4: ``start_window_minutes`` 60-480 or null."""
    if value is None:
        return None
    v = _int_field(value, "trigger.properties.start_window_minutes")
    if not START_WINDOW_MIN <= v <= START_WINDOW_MAX:
        raise InvalidParameter(
            f"start_window_minutes must be from {START_WINDOW_MIN} to {START_WINDOW_MAX}, or null; got {v}."
        )
    return v


# --------------------------------------------------------------------------------------------------
# The normalised policy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySpec:
    """A valid policy, normalised. ``None`` means "not set". Wire-level integers are kept as given
    (``max_backups=-1`` stays -1); :attr:`retention` and :attr:`long_term` give their meaning."""

    name: str
    operation_type: str
    enabled: bool
    patterns: tuple[Pattern, ...]
    start_window_minutes: int | None = None
    max_backups: int | None = None
    retention_duration_days: int | None = None
    retention_duration_months: int | None = None
    day_backups: int | None = None
    week_backups: int | None = None
    month_backups: int | None = None
    year_backups: int | None = None
    timezone: str | None = None
    full_backup_interval: int | None = None
    destination_region: str | None = None
    destination_project_id: str | None = None
    enable_acceleration: bool | None = None
    cross_account_urn: str | None = None

    # -- meaning -----------------------------------------------------------------------------------

    @property
    def pattern_texts(self) -> list[str]:
        return [p.text for p in self.patterns]

    @property
    def retention(self) -> RetentionRule:
        """The retention rule (guide 5.2): quantity, time period or permanent. Record it on every
        automatic backup at creation (13.5.2 depends on the rule in force then)."""
        if self.max_backups is not None and self.max_backups > 0:
            return RetentionRule.quantity(self.max_backups)
        if self.retention_duration_days is not None and self.retention_duration_days > 0:
            return RetentionRule.of_days(self.retention_duration_days)
        if self.retention_duration_months is not None:
            return RetentionRule.of_months(self.retention_duration_months)
        return RetentionRule.permanent()

    @property
    def tz(self) -> tzinfo:
        """The policy time zone as a fixed offset (UTC if not set)."""
        return parse_timezone(self.timezone)[1] if self.timezone else UTC

    @property
    def long_term(self) -> LongTermRetention | None:
        lt = LongTermRetention(
            daily=self.day_backups or 0,
            weekly=self.week_backups or 0,
            monthly=self.month_backups or 0,
            yearly=self.year_backups or 0,
            tz=self.tz,
        )
        return lt if lt.active else None

    def current_retention(self) -> CurrentRetention:
        """What :func:`opencbr.domain.retention.plan_retention` needs from this policy."""
        return CurrentRetention(rule=self.retention, long_term=self.long_term, enabled=self.enabled)

    def schedule(self, anchor: datetime, tz: tzinfo = UTC) -> Schedule:
        """The execution times. ``anchor`` is the trigger's start time (creation, or the last update that
        changed the pattern; see :meth:`same_trigger`). Patterns are UTC per the API (see
        :mod:`opencbr.domain.schedule`); pass ``tz`` only to read them in another wall clock."""
        return Schedule(self.patterns, anchor, tz)

    def same_trigger(self, other: "PolicySpec") -> bool:
        """Whether the execution times are unchanged (keep the trigger start time) or not (reset it:
        a day-based cycle restarts on the day of the change, guide 5.2)."""
        return set(self.patterns) == set(other.patterns)

    # -- the document ------------------------------------------------------------------------------

    def _definition_fields(self) -> dict[str, Any]:
        names = (
            "max_backups", "retention_duration_days", "retention_duration_months", *_LONG_TERM_FIELDS,
            "timezone", "full_backup_interval", *_REPLICATION_FIELDS,
        )
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def to_operation_definition(self) -> dict[str, Any]:
        """``operation_definition`` as the API returns it (unset fields omitted)."""
        od = self._definition_fields()
        if self.retention_duration_months is not None:
            od["retention_duration_days"] = MONTH_CHOICES[self.retention_duration_months]
        return od

    def to_document(self) -> dict[str, Any]:
        """The policy document: what the catalog stores (and :func:`validate_policy_create` reads back),
        and the policy fields of an API response, which adds ``id``, ``associated_vaults`` and ``trigger``
        ``id``/``name``/``properties.start_time`` (api/wire.py)."""
        props: dict[str, Any] = {"pattern": self.pattern_texts}
        if self.start_window_minutes is not None:
            props["start_window_minutes"] = self.start_window_minutes
        return {
            "name": self.name,
            "operation_type": self.operation_type,
            "enabled": self.enabled,
            "operation_definition": self.to_operation_definition(),
            "trigger": {"type": "time", "properties": props},
        }


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def _parse_trigger(trigger: Any, *, require_pattern: bool) -> dict[str, Any]:
    """``trigger`` = ``{"properties": {"pattern": [...], "start_window_minutes": ...}}`` (CBR v3 API 6.4)."""
    if not isinstance(trigger, dict):
        raise InvalidParameter("trigger must be an object with properties.pattern, the execution times.")
    if trigger.get("type") not in (None, "time"):
        raise InvalidParameter(f"trigger.type must be \"time\", got {trigger.get('type')!r}.")
    props = trigger.get("properties")
    if not isinstance(props, dict):
        raise InvalidParameter("trigger.properties must be an object with pattern, the execution times.")
    out: dict[str, Any] = {}
    if "pattern" in props or require_pattern:
        if props.get("pattern") is None:
            raise InvalidParameter("trigger.properties.pattern (the execution times) is required.")
        out["patterns"] = parse_patterns(props["pattern"])
    if "start_window_minutes" in props:
        out["start_window_minutes"] = _parse_start_window(props["start_window_minutes"])
    return out


def _parse_definition(operation_type: str, od: Any, current_region: str | None) -> dict[str, Any]:
    """Validate ``operation_definition`` (CBR v3 API sections 4 and 6.4; guide 5.2 and 5.3 Retention Rule)
    and return the normalised fields. See the module docstring for the choices."""
    if not isinstance(od, dict):
        raise InvalidParameter("operation_definition must be an object (retention rule, and for replication the destination).")
    od = {k: v for k, v in od.items() if v is not None}
    out: dict[str, Any] = {}

    if "max_backups" in od:
        v = _int_field(od["max_backups"], "max_backups")
        if v != -1 and not COUNT_MIN <= v <= COUNT_MAX:
            raise InvalidParameter(
                f"max_backups (the number of backups to keep) must be from {COUNT_MIN} to {COUNT_MAX}, "
                f"or -1 for no limit; got {v}."
            )
        out["max_backups"] = v
    if "retention_duration_days" in od:
        v = _int_field(od["retention_duration_days"], "retention_duration_days")
        if v != -1 and not DAYS_MIN <= v <= DAYS_MAX:
            raise InvalidParameter(
                f"retention_duration_days must be from {DAYS_MIN} to {DAYS_MAX} days, or -1 for no time "
                f"limit; got {v}."
            )
        out["retention_duration_days"] = v
    if "retention_duration_months" in od:
        v = _int_field(od["retention_duration_months"], "retention_duration_months")
        if v not in MONTH_CHOICES:
            raise InvalidParameter(
                f"retention_duration_months must be 1, 3, 6 or 12 (one month, three months, six months, one "
                f"year); got {v}."
            )
        out["retention_duration_months"] = v

    if out.get("retention_duration_months") in MONTH_CHOICES and out.get("retention_duration_days") == MONTH_CHOICES[
        out["retention_duration_months"]
    ]:
        del out["retention_duration_days"]  # our own wire echo of a month rule, sent back unchanged
    by_count = out.get("max_backups", -1) > 0
    by_days = out.get("retention_duration_days", -1) > 0
    by_months = "retention_duration_months" in out
    if by_days and by_months:
        raise InvalidParameter("Set either retention_duration_days or retention_duration_months, not both.")
    if by_count and (by_days or by_months):
        raise InvalidParameter(
            "A retention rule keeps backups either by quantity (max_backups) or by time period "
            "(retention_duration_days), not both; set the other one to -1 or leave it out."
        )

    for f in _LONG_TERM_FIELDS:
        if f in od:
            v = _int_field(od[f], f)
            if not 0 <= v <= LONG_TERM_MAX:
                raise InvalidParameter(f"{f} must be from 0 to {LONG_TERM_MAX}; got {v}.")
            out[f] = v
    if "timezone" in od:
        out["timezone"] = parse_timezone(od["timezone"])[0]
    long_term = [f for f in _LONG_TERM_FIELDS if out.get(f, 0) > 0]
    if long_term:
        if "timezone" not in out:
            raise InvalidParameter(
                f"{', '.join(long_term)} (long-term retention) needs timezone, e.g. UTC+08:00, to tell "
                "which day, week, month and year a backup belongs to."
            )
        if by_days or by_months:
            raise InvalidParameter(
                f"{', '.join(long_term)} (long-term retention) cannot be combined with a retention time "
                "period; use it with max_backups."
            )
        if not by_count:
            raise InvalidParameter(
                f"{', '.join(long_term)} (long-term retention) keeps backups beyond max_backups; set "
                "max_backups too (with no limit every backup is kept anyway)."
            )

    if od.get("advanced_retention_rules"):
        raise InvalidParameter(
            "advanced_retention_rules is not supported; use day_backups, week_backups, month_backups and "
            "year_backups with timezone for long-term retention."
        )

    if "full_backup_interval" in od:
        if operation_type != BACKUP:
            raise InvalidParameter("full_backup_interval applies only to backup policies.")
        v = _int_field(od["full_backup_interval"], "full_backup_interval")
        if not FULL_INTERVAL_MIN <= v <= FULL_INTERVAL_MAX:
            raise InvalidParameter(
                f"full_backup_interval must be from {FULL_INTERVAL_MIN} (never force a full backup) to "
                f"{FULL_INTERVAL_MAX}; got {v}."
            )
        out["full_backup_interval"] = v

    if operation_type == REPLICATION:
        for f in ("destination_region", "destination_project_id"):
            v = od.get(f)
            if v is None or v == "":
                raise InvalidParameter(f"A replication policy needs {f} (guide 5.3, Destination Region).")
            if not isinstance(v, str) or not _REGION_RE.fullmatch(v):
                raise InvalidParameter(
                    f"{f} must be 1 to 255 letters, digits, underscores (_) or hyphens (-); got {v!r}."
                )
            out[f] = v
        if current_region is not None and out["destination_region"] == current_region:
            raise InvalidParameter(
                f"The destination region of a replication policy must differ from the current region "
                f"({current_region})."
            )
        if "enable_acceleration" in od:
            out["enable_acceleration"] = _bool_field(od["enable_acceleration"], "enable_acceleration")
        if "cross_account_urn" in od:
            if not isinstance(od["cross_account_urn"], str):
                raise InvalidParameter("cross_account_urn must be a string.")
            out["cross_account_urn"] = od["cross_account_urn"]
    else:
        extra = [f for f in _REPLICATION_FIELDS if f in od]
        if extra:
            raise InvalidParameter(f"{', '.join(extra)} applies only to replication policies.")
    return out


def validate_policy_create(body: Any, *, current_region: str | None = None) -> PolicySpec:
    """Validate the ``policy`` object of a create request (CBR v3 API 6.4: ``name``*, ``operation_type``*,
    ``operation_definition``*, ``trigger``*, ``enabled`` default true) and return it normalised.

    Rules: name (:func:`validate_policy_name`, guide 5.2 Table 5-1); operation type backup or replication;
    execution times (:func:`opencbr.domain.schedule.parse_patterns`); retention and replication fields
    (module docstring; guide 5.2, 5.3). Pass ``current_region`` to reject a replication to the same region.
    """
    if not isinstance(body, dict):
        raise InvalidParameter("The request must contain a policy object.")
    name = validate_policy_name(body.get("name"))
    op = body.get("operation_type")
    if op not in OPERATION_TYPES:
        raise InvalidParameter(f"operation_type must be \"backup\" or \"replication\", got {op!r}.")
    enabled = True if body.get("enabled") is None else _bool_field(body["enabled"], "enabled")
    if body.get("trigger") is None:
        raise InvalidParameter("trigger (the execution times) is required.")
    trig = _parse_trigger(body["trigger"], require_pattern=True)
    if body.get("operation_definition") is None:
        raise InvalidParameter("operation_definition (the retention rule) is required.")
    od = _parse_definition(op, body["operation_definition"], current_region)
    return PolicySpec(name=name, operation_type=op, enabled=enabled, **trig, **od)


def apply_policy_update(spec: PolicySpec, body: Any, *, current_region: str | None = None) -> PolicySpec:
    """Apply the ``policy`` object of an update request (CBR v3 API 6.4: ``name``, ``enabled``,
    ``operation_definition``, ``trigger``; all optional) to ``spec`` and return the new, validated spec.

    ``operation_definition`` is merged field by field, except the retention rule, which is replaced as a
    whole when the update names any of ``max_backups``, ``retention_duration_days``,
    ``retention_duration_months`` (so switching from quantity to time period needs one field). A field set
    to null is reset. The operation type cannot change. Guide 5.4: "If the retention rule is modified, the
    new rule does not necessarily apply to existing backups" — see :mod:`opencbr.domain.retention`.
    """
    if not isinstance(body, dict):
        raise InvalidParameter("The request must contain a policy object.")
    op = body.get("operation_type")
    if op is not None and op != spec.operation_type:
        raise InvalidParameter(
            f"The type of a policy cannot be changed (it is a {spec.operation_type} policy); create a new policy instead."
        )
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = validate_policy_name(body["name"])
    if body.get("enabled") is not None:
        changes["enabled"] = _bool_field(body["enabled"], "enabled")
    if body.get("trigger") is not None:
        changes.update(_parse_trigger(body["trigger"], require_pattern=False))
    if body.get("operation_definition") is not None:
        upd = body["operation_definition"]
        if not isinstance(upd, dict):
            raise InvalidParameter("operation_definition must be an object.")
        merged = spec._definition_fields()
        if any(k in upd for k in _RETENTION_FIELDS):
            for k in _RETENTION_FIELDS:
                merged.pop(k, None)
        merged.update(upd)
        od = _parse_definition(spec.operation_type, merged, current_region)
        for k in spec._definition_fields().keys() | od.keys():
            changes[k] = od.get(k)
    return replace(spec, **changes)


# --------------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------------


def check_policy_count(operation_type: str, existing_count: int) -> None:
    """Guide 1.6: "A maximum of 32 backup policies and 32 replication policies can be created" (also 5.2
    Constraints). ``existing_count`` is how many policies of that type the project has before this one."""
    if operation_type not in OPERATION_TYPES:
        raise InvalidParameter(f"operation_type must be \"backup\" or \"replication\", got {operation_type!r}.")
    if existing_count >= MAX_POLICIES_PER_TYPE:
        raise QuotaExceeded(
            f"You already have {existing_count} {operation_type} policies; at most {MAX_POLICIES_PER_TYPE} "
            f"can be created. Delete a {operation_type} policy you no longer need first."
        )


def check_vault_binding(
    policy_op_type: str,
    vault_object_type: str,
    vault_protect_type: str,
    vault_existing_policy_types: Iterable[str],
) -> None:
    """Whether a policy may be applied to a vault.

    * Guide 5.2 Constraints: "Backup policies can be applied to the following types of vaults: server
      backup vaults, disk backup vaults, SFS Turbo backup vaults" — so backup vaults only.
    * Guide 5.3 Constraints: "You can only apply replication policies to server backup vaults"; guide 1.6
      lets SFS Turbo backups be replicated too, and says "Cloud disk backups cannot be replicated to other
      regions": replication policies go to server and SFS Turbo backup vaults.
    * Guide 1.6: "A vault can be associated with only one backup policy" / "only one replication policy"
      (also 5.6): a vault that already has a policy of that type refuses another (409). Pass the types of
      the policies bound to the vault other than this one (re-applying the same policy is the service's
      no-op).
    """
    if policy_op_type not in OPERATION_TYPES:
        raise InvalidParameter(f"operation_type must be \"backup\" or \"replication\", got {policy_op_type!r}.")
    kind = _OBJECT_NAMES.get(vault_object_type, vault_object_type)
    if vault_protect_type != "backup":
        raise InvalidParameter(
            f"A {policy_op_type} policy can be applied only to a backup vault; this is a "
            f"{vault_protect_type} vault."
        )
    if policy_op_type == BACKUP and vault_object_type not in _BACKUP_OBJECT_TYPES:
        raise InvalidParameter(
            f"Backup policies can be applied only to server, disk and SFS Turbo backup vaults, not to a {kind} vault."
        )
    if policy_op_type == REPLICATION and vault_object_type not in _REPLICATION_OBJECT_TYPES:
        raise InvalidParameter(
            f"Replication policies can be applied only to server and SFS Turbo backup vaults, not to a {kind} "
            "backup vault (cloud disk backups cannot be replicated to other regions)."
        )
    if policy_op_type in set(vault_existing_policy_types):
        raise StateConflict(
            f"The vault already has a {policy_op_type} policy; a vault can be associated with only one "
            f"{policy_op_type} policy. Remove that policy from the vault first."
        )


def check_replication_destination(
    policy: PolicySpec,
    source_object_type: str,
    dest_vault_object_type: str,
    dest_vault_protect_type: str,
    dest_vault_region: str,
) -> None:
    """When a replication policy is applied with a ``destination_vault_id`` (CBR v3 API 6.1
    associate_vault_policy): the destination must be a replication vault (``protect_type=replication``,
    guide 3.6 / 4.4) of the same object type, in the policy's destination region (guide 5.3)."""
    if policy.operation_type != REPLICATION:
        raise InvalidParameter("Only a replication policy has a destination vault.")
    if dest_vault_protect_type != "replication":
        raise InvalidParameter("The destination vault of a replication policy must be a replication vault.")
    if dest_vault_object_type != source_object_type:
        raise InvalidParameter(
            f"The destination vault holds {_OBJECT_NAMES.get(dest_vault_object_type, dest_vault_object_type)} "
            f"replicas; it must hold {_OBJECT_NAMES.get(source_object_type, source_object_type)} replicas like the source vault."
        )
    if dest_vault_region != policy.destination_region:
        raise InvalidParameter(
            f"The destination vault is in region {dest_vault_region}, but the policy replicates to "
            f"{policy.destination_region}."
        )
