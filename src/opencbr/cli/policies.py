"""``cbr policy``: backup and replication policies (guide chapter 5), their next execution times, and a
retention dry run.

Execution times: ``--pattern`` takes the API's RRULE strings as they are (times in UTC, as the CBR API
defines them). ``--at HH:MM`` with ``--weekdays`` or ``--every`` takes local times — in ``--timezone``, else
in this machine's zone — and converts them to UTC patterns, as the public console does ("The execution
times refer to the local times of clients", guide 5.2). The zone is kept with the policy, so that
``policy show`` and ``policy preview`` give both local and UTC times.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from opencbr.cli import refs
from opencbr.cli.client import ClientError
from opencbr.cli.output import (
    JSON_OPTION,
    YES_OPTION,
    client,
    confirm,
    details,
    handle_errors,
    parse_utc,
    print_json,
    table,
)
from opencbr.cli.params import LIMIT_OPTION, POLICY_ARG, VAULT_ARG, VAULT_FILTER

policy_app = typer.Typer(help="Policies: automatic backups at set times, and how long they are kept.",
                         no_args_is_help=True)

_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_TZ_RE = re.compile(r"^UTC([+-])(\d{2}):(\d{2})$")
_COLS = [("id", "ID"), ("name", "Name"), ("operation_type", "Type"), ("enabled", "Enabled"),
         ("times", "Execution times (UTC)"), ("retention", "Retention"), ("vaults", "Vaults")]


# ------------------------------------------------------------------------------------ helpers
def resolve(ref: str) -> str:
    """A policy id from an id, a unique name or a unique id prefix."""
    return refs.resolve(client(), refs.POLICY, ref)


def _vault(ref: str) -> str:
    return refs.resolve(client(), refs.VAULT, ref)


def _offset_minutes(tz: str) -> int:
    m = _TZ_RE.match(tz.strip().upper())
    if not m:
        raise ClientError(f"--timezone must look like UTC+08:00 or name a zone like Europe/Berlin, got {tz!r}")
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return -minutes if m.group(1) == "-" else minutes


def utc_offset_text(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta(0)).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def zone(tz: str | None) -> str:
    """``--timezone`` as the API keeps it (``UTC+08:00``): given so, or a zone name at today's offset, or,
    without one, this machine's zone at today's offset."""
    if not tz:
        return utc_offset_text(datetime.now().astimezone().utcoffset())
    if _TZ_RE.match(tz.strip().upper()):
        return tz.strip().upper()
    try:
        return utc_offset_text(datetime.now(ZoneInfo(tz)).utcoffset())
    except (ZoneInfoNotFoundError, ValueError):
        raise ClientError(f"--timezone must look like UTC+08:00 or name a zone like Europe/Berlin, got {tz!r}") \
            from None


def local_times(pattern: str, tz: str) -> str:
    """An RRULE's times (UTC) said in the zone ``tz``: ``daily at 02:00`` or ``MO,TU at 02:00``."""
    rule = dict(part.split("=", 1) for part in pattern.split(";") if "=" in part)
    offset = _offset_minutes(tz)
    shifts, times = set(), []
    for h in rule.get("BYHOUR", "0").split(","):
        for m in rule.get("BYMINUTE", "0").split(","):
            shift, minute = divmod(int(h) * 60 + int(m) + offset, 1440)
            shifts.add(shift)
            times.append(f"{minute // 60:02d}:{minute % 60:02d}")
    when = ", ".join(sorted(times))
    if rule.get("FREQ") == "WEEKLY" and len(shifts) == 1:
        (shift,) = shifts
        days = [_WEEKDAYS[(_WEEKDAYS.index(d) + shift) % 7] for d in rule.get("BYDAY", "").split(",") if d in _WEEKDAYS]
        return f"{','.join(sorted(days, key=_WEEKDAYS.index))} at {when}"
    if rule.get("FREQ") == "DAILY":
        n = int(rule.get("INTERVAL", "1"))
        return f"{'daily' if n == 1 else f'every {n} days'} at {when}"
    return f"{pattern} (times shown in UTC)"


def local_patterns(times: list[str], weekdays: str | None, every: int | None, tz: str | None) -> list[str]:
    """RRULE patterns in UTC for local execution times ``HH:MM`` in ``tz`` (``UTC+08:00``), on
    ``weekdays`` (``MO,TU``) or every ``every`` days. A time that falls on the previous or next day in UTC
    moves its weekdays with it; times are grouped so that each pattern's BYHOUR x BYMINUTE is exactly the
    times asked for."""
    if bool(weekdays) == bool(every):
        raise ClientError("with --at, give either --weekdays MO,TU,... or --every N (days)")
    offset = _offset_minutes(tz) if tz else 0
    days: list[int] = []
    if weekdays:
        for d in weekdays.upper().split(","):
            d = d.strip()
            if d not in _WEEKDAYS:
                raise ClientError(f"--weekdays takes MO, TU, WE, TH, FR, SA, SU; got {d!r}")
            days.append(_WEEKDAYS.index(d))
    groups: dict[tuple[int, int], list[int]] = {}
    for t in times:
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", t.strip())
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ClientError(f"--at takes a time HH:MM, got {t!r}")
        utc = int(m.group(1)) * 60 + int(m.group(2)) - offset
        shift, minute_of_day = divmod(utc, 1440)
        groups.setdefault((shift, minute_of_day % 60), []).append(minute_of_day // 60)
    out = []
    for (shift, minute), hours in sorted(groups.items()):
        hh = ",".join(str(h) for h in sorted(set(hours)))
        if weekdays:
            byday = ",".join(_WEEKDAYS[d] for d in sorted({(d + shift) % 7 for d in days}))
            out.append(f"FREQ=WEEKLY;BYDAY={byday};BYHOUR={hh};BYMINUTE={minute:02d}")
        else:
            out.append(f"FREQ=DAILY;INTERVAL={every};BYHOUR={hh};BYMINUTE={minute:02d}")
    return out


def retention_text(od: dict) -> str:
    if (od.get("max_backups") or -1) > 0:
        text = f"keep {od['max_backups']}"
    elif od.get("retention_duration_months"):
        m = od["retention_duration_months"]
        text = "1 year" if m == 12 else f"{m} month{'s' if m > 1 else ''}"
    elif (od.get("retention_duration_days") or -1) > 0:
        text = f"{od['retention_duration_days']} days"
    else:
        text = "permanent"
    gfs = [f"{od[k]}{k[0]}" for k in ("day_backups", "week_backups", "month_backups", "year_backups") if od.get(k)]
    return text + (f" + long-term {'/'.join(gfs)}" if gfs else "")


def _row(p: dict) -> dict:
    return {**p, "times": "; ".join(p["trigger"]["properties"]["pattern"]),
            "retention": retention_text(p["operation_definition"]),
            "vaults": ", ".join(v["vault_id"] for v in p.get("associated_vaults") or [])}


def _show(p: dict, as_json: bool) -> None:
    if as_json:
        print_json(p)
        return
    od = p["operation_definition"]
    tz = od.get("timezone") or ""
    full = od.get("full_backup_interval")
    row = {**_row(p), "start_at": p["trigger"]["properties"].get("start_time"),
           "tz": tz or "none (times are UTC)",
           "local": "; ".join(local_times(x, tz) for x in p["trigger"]["properties"]["pattern"]) if tz else "",
           "window": p["trigger"]["properties"].get("start_window_minutes") or 60,
           "full": f"after {full} incremental backups" if full and full > 0 else "never (always incremental)",
           "dest": f"{od.get('destination_region')} / {od.get('destination_project_id')}"
           if p["operation_type"] == "replication" else ""}
    managed = [("organization_policy_id", "Managed by (organization policy)")] if p.get("organization_policy_id") else []
    details(row, [("id", "ID"), ("name", "Name"), ("operation_type", "Type"), ("enabled", "Enabled"),
                  ("local", f"Execution times ({tz})"), ("times", "Execution times (UTC)"), ("tz", "Time zone"),
                  ("start_at", "Trigger start"), ("window", "Start window (min)"),
                  ("retention", "Retention"), ("full", "Full backup"),
                  ("dest", "Destination"), ("vaults", "Vaults"), *managed])


def _definition(keep, days, months, permanent, timezone, daily, weekly, monthly, yearly, full_every,
                destination_region, destination_project) -> dict:
    od: dict = {}
    chosen = [x for x in (keep is not None, days is not None, months is not None, permanent) if x]
    if len(chosen) > 1:
        raise ClientError("choose one retention rule: --keep N, --days N, --months N or --permanent")
    if keep is not None:
        od["max_backups"] = keep
    if days is not None:
        od["retention_duration_days"] = days
    if months is not None:
        od["retention_duration_months"] = months
    if permanent:
        od.update(max_backups=-1, retention_duration_days=-1)
    for k, v in (("timezone", timezone), ("day_backups", daily), ("week_backups", weekly),
                 ("month_backups", monthly), ("year_backups", yearly), ("full_backup_interval", full_every),
                 ("destination_region", destination_region), ("destination_project_id", destination_project)):
        if v is not None:
            od[k] = v
    return od


def _patterns(pattern, at, weekdays, every, timezone) -> list[str] | None:
    if at:
        if pattern:
            raise ClientError("give --pattern or --at, not both")
        return local_patterns(at, weekdays, every, zone(timezone))
    if weekdays or every:
        raise ClientError("--weekdays and --every go with --at HH:MM")
    return list(pattern) if pattern else None


# Options shared by create and update.
_PATTERN = typer.Option(None, "--pattern", help="RRULE in UTC, e.g. 'FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=14;BYMINUTE=00' "
                                               "(repeatable).")
_AT = typer.Option(None, "--at", help="Execution time HH:MM in --timezone, else in this machine's time zone "
                                     "(repeatable).")
_WEEKDAYS_OPT = typer.Option(None, "--weekdays", help="With --at: days of the week, e.g. MO,WE,FR.")
_EVERY = typer.Option(None, "--every", help="With --at: every N days (1-30).")
_KEEP = typer.Option(None, "--keep", help="Keep the N most recent automatic backups (2-99999).")
_DAYS = typer.Option(None, "--days", help="Keep each automatic backup N days (2-99999).")
_MONTHS = typer.Option(None, "--months", help="Keep each automatic backup 1, 3, 6 or 12 months.")
_PERMANENT = typer.Option(False, "--permanent", help="Keep automatic backups forever.")
_TZ = typer.Option(None, "--timezone", help="Time zone of --at and of long-term retention, e.g. UTC+08:00 or "
                                           "Europe/Berlin (today's offset). Default: this machine's.")
_DAILY = typer.Option(None, "--daily", help="Long-term: keep the newest backup of each of the last N days.")
_WEEKLY = typer.Option(None, "--weekly", help="Long-term: ... of the last N weeks.")
_MONTHLY = typer.Option(None, "--monthly", help="Long-term: ... of the last N months.")
_YEARLY = typer.Option(None, "--yearly", help="Long-term: ... of the last N years.")
_FULL = typer.Option(None, "--full-every", help="A full backup after N incremental ones (-1: never).")
_WINDOW = typer.Option(None, "--start-window", help="Minutes an execution may start late (60-480).")
_DREGION = typer.Option(None, "--destination-region", help="Replication: the destination region.")
_DPROJECT = typer.Option(None, "--destination-project", help="Replication: the destination project id.")


# ------------------------------------------------------------------------------------ commands
@policy_app.command("create")
@handle_errors
def policy_create(name: str = typer.Option(..., "--name", help="A name for the policy."),
                  type_: str = typer.Option("backup", "--type", help="backup or replication."),
                  pattern: list[str] = _PATTERN, at: list[str] = _AT, weekdays: str = _WEEKDAYS_OPT,
                  every: int = _EVERY, keep: int = _KEEP, days: int = _DAYS, months: int = _MONTHS,
                  permanent: bool = _PERMANENT, timezone: str = _TZ, daily: int = _DAILY, weekly: int = _WEEKLY,
                  monthly: int = _MONTHLY, yearly: int = _YEARLY, full_every: int = _FULL, start_window: int = _WINDOW,
                  destination_region: str = _DREGION, destination_project: str = _DPROJECT,
                  enabled: bool = typer.Option(True, "--enabled/--disabled", help="Whether it fires (default: yes)."),
                  as_json: bool = JSON_OPTION):
    """Create a policy: when backups are made automatically, and how long they are kept.

    Examples:
      cbr policy create --name nightly --at 02:00 --every 1 --keep 7
      cbr policy create --name weekdays --at 01:00 --at 13:00 --weekdays MO,TU,WE,TH,FR --days 30
      cbr policy create --name raw --pattern 'FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=0' --permanent"""
    patterns = _patterns(pattern, at, weekdays, every, timezone)
    timezone = zone(timezone) if at or timezone else None  # kept with the policy: local times are shown in it
    if not patterns:
        raise ClientError("give the execution times: --pattern RRULE, or --at HH:MM with --weekdays or --every")
    props: dict = {"pattern": patterns}
    if start_window is not None:
        props["start_window_minutes"] = start_window
    body = {"name": name, "operation_type": type_, "enabled": enabled, "trigger": {"properties": props},
            "operation_definition": _definition(keep, days, months, permanent, timezone, daily, weekly, monthly,
                                                yearly, full_every, destination_region, destination_project)}
    _show(client().post("/policies", {"policy": body})["policy"], as_json)


@policy_app.command("list")
@handle_errors
def policy_list(type_: str = typer.Option(None, "--type", help="backup or replication."),
                vault: str = typer.Option(None, "--vault", help="Only the policies of this vault."),
                as_json: bool = JSON_OPTION):
    """The policies: execution times, retention and the vaults they apply to."""
    data = client().get("/policies", operation_type=type_, vault_id=_vault(vault) if vault else None)
    if as_json:
        print_json(data["policies"])
    else:
        table([_row(p) for p in data["policies"]], _COLS, title=f"{data['count']} policies")


@policy_app.command("show")
@handle_errors
def policy_show(policy: str = POLICY_ARG, as_json: bool = JSON_OPTION):
    """A policy: its execution times in its time zone and in UTC, retention, vaults."""
    _show(client().get(f"/policies/{resolve(policy)}")["policy"], as_json)


@policy_app.command("update")
@handle_errors
def policy_update(policy: str = POLICY_ARG, name: str = typer.Option(None, "--name", help="A new name."), pattern: list[str] = _PATTERN,
                  at: list[str] = _AT, weekdays: str = _WEEKDAYS_OPT, every: int = _EVERY, keep: int = _KEEP,
                  days: int = _DAYS, months: int = _MONTHS, permanent: bool = _PERMANENT, timezone: str = _TZ,
                  daily: int = _DAILY, weekly: int = _WEEKLY, monthly: int = _MONTHLY, yearly: int = _YEARLY,
                  full_every: int = _FULL, start_window: int = _WINDOW,
                  enabled: bool = typer.Option(None, "--enable/--disable", help="Let it fire, or pause it."),
                  as_json: bool = JSON_OPTION):
    """Change a policy. A new number of backups to keep applies to all its backups at the next backup; a
    change to keeping by time (or forever) applies only to backups made from then on.

    Example: cbr policy update nightly --at 03:00 --every 1"""
    pid = resolve(policy)
    body: dict = {}
    if name is not None:
        body["name"] = name
    if enabled is not None:
        body["enabled"] = enabled
    patterns = _patterns(pattern, at, weekdays, every, timezone)
    timezone = zone(timezone) if at or timezone else None  # kept with the policy: local times are shown in it
    if patterns or start_window is not None:
        if not patterns:
            patterns = client().get(f"/policies/{pid}")["policy"]["trigger"]["properties"]["pattern"]
        props: dict = {"pattern": patterns}
        if start_window is not None:
            props["start_window_minutes"] = start_window
        body["trigger"] = {"properties": props}
    od = _definition(keep, days, months, permanent, timezone, daily, weekly, monthly, yearly, full_every, None, None)
    if od:
        body["operation_definition"] = od
    if not body:
        raise ClientError("nothing to change; see cbr policy update --help")
    _show(client().put(f"/policies/{pid}", {"policy": body})["policy"], as_json)


@policy_app.command("delete")
@handle_errors
def policy_delete(policy: str = typer.Argument(..., help="Policy: id, name or id prefix."), yes: bool = YES_OPTION,
                  as_json: bool = JSON_OPTION):
    """Delete a policy and remove it from its vaults. Its backups are kept."""
    pid = resolve(policy)
    confirm(f"Delete policy {policy} ({pid})?", yes)
    client().delete(f"/policies/{pid}")
    print_json({"policy_id": pid, "deleted": True}) if as_json else typer.echo(f"policy {pid} deleted")


@policy_app.command("apply")
@handle_errors
def policy_apply(policy: str = POLICY_ARG, vault: str = VAULT_ARG,
                 destination_vault: str = typer.Option(None, "--destination-vault",
                                                       help="Replication policies: the vault receiving replicas."),
                 as_json: bool = JSON_OPTION):
    """Apply a policy to a vault: its resources are then backed up at the policy's times.

    Example: cbr policy apply nightly servers"""
    body = {"policy_id": resolve(policy)}
    if destination_vault:
        body["destination_vault_id"] = destination_vault  # in the destination project: its id
    out = client().post(f"/vaults/{_vault(vault)}/associatepolicy", body)["associate_policy"]
    print_json(out) if as_json else typer.echo(f"policy {out['policy_id']} applied to vault {out['vault_id']}")


@policy_app.command("remove")
@handle_errors
def policy_remove(policy: str = POLICY_ARG, vault: str = VAULT_ARG, as_json: bool = JSON_OPTION):
    """Remove a policy from a vault. No backup is deleted."""
    out = client().post(f"/vaults/{_vault(vault)}/dissociatepolicy", {"policy_id": resolve(policy)})
    out = out["dissociate_policy"]
    print_json(out) if as_json else typer.echo(f"policy {out['policy_id']} removed from vault {out['vault_id']}")


@policy_app.command("preview")
@handle_errors
def policy_preview(policy: str = POLICY_ARG, next_: int = typer.Option(10, "--next", help="How many (1-100)."),
                   as_json: bool = JSON_OPTION):
    """The next execution times of a policy."""
    data = client().get(f"/policies/{resolve(policy)}/preview", next=next_)
    if as_json:
        print_json(data)
    else:
        here = zone(None)
        rows = [{"utc": e["scheduled_at"].replace("T", " ").replace("Z", ""), "zone": e["local_time"],
                 "here": parse_utc(e["scheduled_at"]).astimezone().strftime("%Y-%m-%d %H:%M %a")}
                for e in data["executions"]]
        columns = [("zone", f"Local ({data['timezone']})"), ("utc", "UTC")]
        if here != data["timezone"]:
            columns.append(("here", f"This machine ({here})"))
        table(rows, columns, title=f"next {len(data['executions'])} executions")


@policy_app.command("executions")
@handle_errors
def policy_executions(policy: str = POLICY_ARG, vault: str = VAULT_FILTER, limit: int = LIMIT_OPTION,
                      as_json: bool = JSON_OPTION):
    """What the scheduler decided for each execution time: fired, skipped (and why) or failed."""
    data = client().get(f"/policies/{resolve(policy)}/executions", vault_id=_vault(vault) if vault else None,
                        limit=limit)
    if as_json:
        print_json(data["executions"])
    else:
        table(data["executions"], [("scheduled_at", "Scheduled"), ("vault_id", "Vault"), ("decision", "Decision"),
                                   ("reason", "Reason"), ("checkpoint_id", "Checkpoint")],
              title=f"{data['count']} executions")


@policy_app.command("prune")
@handle_errors
def policy_prune(policy: str = POLICY_ARG, vault: str = typer.Option(None, "--vault", help="Vault (required without --dry-run)."),
                 dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted, and why."),
                 as_json: bool = JSON_OPTION):
    """Apply the policy's retention now, or with --dry-run list what it would delete and why."""
    pid = resolve(policy)
    c = client()
    if dry_run:
        data = c.get(f"/policies/{pid}/retention-preview", vault_id=_vault(vault) if vault else None)
    else:
        if not vault:
            raise ClientError("--vault is required to prune (or use --dry-run)")
        data = c.post(f"/policies/{pid}/prune", {"vault_id": _vault(vault)})
    if as_json:
        print_json(data)
        return
    verb = "would delete" if dry_run else "deleted"
    for r in data["resources"]:
        typer.echo(f"{r['resource_name'] or r['resource_id']} in vault {r['vault_id']}:")
        for b in r["backups"]:
            typer.echo(f"  {b['backup_name']} ({b['created_at']}): {b['explain']}")
    n = data.get("prune_count") if dry_run else data.get("deleted_count")
    typer.echo(f"{verb} {n} backup(s)")

