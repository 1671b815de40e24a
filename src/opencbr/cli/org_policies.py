"""``cbr admin org-policy``: organization policies (docs/organization-policies.md). The operator defines a
backup or replication policy once; every project of the target accounts receives it as one of its own
policies, which it may apply to vaults but not change or delete. Creating, changing and deleting them is
for the operator; the tenants of a target account may list and show them.

The execution time and retention options are those of ``cbr policy create``.
"""

from __future__ import annotations

import typer

from opencbr.cli import policies as pol
from opencbr.cli import refs
from opencbr.cli.client import ClientError
from opencbr.cli.output import JSON_OPTION, YES_OPTION, client, confirm, details, handle_errors, print_json, table

org_policy_app = typer.Typer(help="Organization policies: a policy deployed to every project of chosen accounts "
                                  "(operator).", no_args_is_help=True)

ORG_POLICY = refs.Kind("organization policy", "organization policies", "/organization-policies", "policies",
                       "cbr admin org-policy list")
_REF = typer.Argument(..., help="Organization policy: id, name or id prefix.")
_ACCOUNTS = typer.Option(None, "--accounts", help="The target accounts: 'all' (every account, also those created "
                                                  "later) or a comma-separated list of account names or ids.")
_COLS = [("id", "ID"), ("name", "Name"), ("operation_type", "Type"), ("policy_name", "Policy"),
         ("policy_enabled", "Enabled"), ("times", "Execution times (UTC)"), ("retention", "Retention"),
         ("effective_scope", "Accounts"), ("status", "Status")]


def resolve(ref: str) -> str:
    return refs.resolve(client(), ORG_POLICY, ref)


def _row(o: dict) -> dict:
    return {**o, "times": "; ".join(o["policy_trigger"]["properties"]["pattern"]),
            "retention": pol.retention_text(o["policy_operation_definition"])}


def _show(o: dict, as_json: bool) -> None:
    if as_json:
        print_json(o)
        return
    details({**_row(o), "owner": f"{o['domain_name']} ({o['domain_id']})"},
            [("id", "ID"), ("name", "Name"), ("description", "Description"), ("operation_type", "Type"),
             ("policy_name", "Policy name"), ("policy_enabled", "Enabled"), ("times", "Execution times (UTC)"),
             ("retention", "Retention"), ("effective_scope", "Accounts"), ("owner", "Operator account"),
             ("status", "Deployment")])


def _trigger(pattern, at, weekdays, every, timezone, start_window) -> dict | None:
    patterns = pol._patterns(pattern, at, weekdays, every, timezone)
    if not patterns and start_window is None:
        return None
    props: dict = {"pattern": patterns} if patterns else {}
    if start_window is not None:
        props["start_window_minutes"] = start_window
    return {"properties": props}


@org_policy_app.command("create")
@handle_errors
def org_policy_create(name: str = typer.Argument(..., help="A name for the organization policy."),
                      policy_name: str = typer.Option(None, "--policy-name", help="The name of the policy each "
                                                                                  "project receives (default: NAME)."),
                      type_: str = typer.Option("backup", "--type", help="backup or replication."),
                      accounts: str = _ACCOUNTS,
                      description: str = typer.Option(None, "--description", help="What it is for."),
                      pattern: list[str] = pol._PATTERN, at: list[str] = pol._AT, weekdays: str = pol._WEEKDAYS_OPT,
                      every: int = pol._EVERY, keep: int = pol._KEEP, days: int = pol._DAYS, months: int = pol._MONTHS,
                      permanent: bool = pol._PERMANENT, timezone: str = pol._TZ, daily: int = pol._DAILY,
                      weekly: int = pol._WEEKLY, monthly: int = pol._MONTHLY, yearly: int = pol._YEARLY,
                      full_every: int = pol._FULL, start_window: int = pol._WINDOW,
                      destination_region: str = pol._DREGION, destination_project: str = pol._DPROJECT,
                      enabled: bool = typer.Option(True, "--enabled/--disabled", help="Whether it fires (default: yes)."),
                      as_json: bool = JSON_OPTION):
    """Create an organization policy and deploy it to every project of the target accounts (operator).

    Example: cbr admin org-policy create nightly --accounts team-a,team-b --at 02:00 --every 1 --keep 7"""
    timezone_kept = pol.zone(timezone) if at or timezone else None
    trigger = _trigger(pattern, at, weekdays, every, timezone, start_window)
    if not trigger or not trigger["properties"].get("pattern"):
        raise ClientError("give the execution times: --pattern RRULE, or --at HH:MM with --weekdays or --every")
    body = {"name": name, "operation_type": type_, "policy_name": policy_name or name, "policy_enabled": enabled,
            "policy_trigger": trigger, "effective_scope": accounts or "all",
            "policy_operation_definition": pol._definition(keep, days, months, permanent, timezone_kept, daily, weekly,
                                                           monthly, yearly, full_every, destination_region,
                                                           destination_project)}
    if description is not None:
        body["description"] = description
    _show(client().post("/organization-policies", {"policy": body})["policy"], as_json)


@org_policy_app.command("list")
@handle_errors
def org_policy_list(type_: str = typer.Option(None, "--type", help="backup or replication."),
                    as_json: bool = JSON_OPTION):
    """The organization policies: all of them for the operator, those deployed to your account otherwise."""
    data = client().get("/organization-policies", operation_type=type_)
    if as_json:
        print_json(data["policies"])
    else:
        table([_row(o) for o in data["policies"]], _COLS, title=f"{data['count']} organization policies")


@org_policy_app.command("show")
@handle_errors
def org_policy_show(org_policy: str = _REF, as_json: bool = JSON_OPTION):
    """An organization policy: the policy it deploys and the accounts it deploys it to."""
    _show(client().get(f"/organization-policies/{resolve(org_policy)}")["policy"], as_json)


@org_policy_app.command("update")
@handle_errors
def org_policy_update(org_policy: str = _REF, name: str = typer.Option(None, "--name", help="A new name."),
                      policy_name: str = typer.Option(None, "--policy-name", help="A new name for the deployed policies."),
                      accounts: str = _ACCOUNTS,
                      description: str = typer.Option(None, "--description", help="A new description."),
                      pattern: list[str] = pol._PATTERN, at: list[str] = pol._AT, weekdays: str = pol._WEEKDAYS_OPT,
                      every: int = pol._EVERY, keep: int = pol._KEEP, days: int = pol._DAYS, months: int = pol._MONTHS,
                      permanent: bool = pol._PERMANENT, timezone: str = pol._TZ, daily: int = pol._DAILY,
                      weekly: int = pol._WEEKLY, monthly: int = pol._MONTHLY, yearly: int = pol._YEARLY,
                      full_every: int = pol._FULL, start_window: int = pol._WINDOW,
                      enabled: bool = typer.Option(None, "--enable/--disable", help="Let it fire, or pause it."),
                      as_json: bool = JSON_OPTION):
    """Change an organization policy and every policy it deployed (operator).

    Accounts added with --accounts receive it; accounts left out lose it.

    Example: cbr admin org-policy update nightly --keep 14 --accounts all"""
    oid = resolve(org_policy)
    body: dict = {k: v for k, v in (("name", name), ("policy_name", policy_name), ("description", description),
                                    ("effective_scope", accounts), ("policy_enabled", enabled)) if v is not None}
    timezone_kept = pol.zone(timezone) if at or timezone else None
    trigger = _trigger(pattern, at, weekdays, every, timezone, start_window)
    if trigger:
        body["policy_trigger"] = trigger
    od = pol._definition(keep, days, months, permanent, timezone_kept, daily, weekly, monthly, yearly, full_every,
                         None, None)
    if od:
        body["policy_operation_definition"] = od
    if not body:
        raise ClientError("nothing to change; see cbr admin org-policy update --help")
    _show(client().put(f"/organization-policies/{oid}", {"policy": body})["policy"], as_json)


@org_policy_app.command("delete")
@handle_errors
def org_policy_delete(org_policy: str = _REF, yes: bool = YES_OPTION, as_json: bool = JSON_OPTION):
    """Delete an organization policy and the policies it deployed (operator).

    The deployed policies are removed from their vaults; their backups are kept."""
    oid = resolve(org_policy)
    confirm(f"Delete organization policy {org_policy} ({oid}) and the policies it deployed?", yes)
    client().delete(f"/organization-policies/{oid}")
    print_json({"organization_policy_id": oid, "deleted": True}) if as_json else \
        typer.echo(f"organization policy {oid} deleted")


@org_policy_app.command("status")
@handle_errors
def org_policy_status(org_policy: str = _REF, as_json: bool = JSON_OPTION):
    """Where an organization policy is deployed: one row per project, with the reason where it failed."""
    data = client().get(f"/organization-policies/{resolve(org_policy)}/policy-detail")
    if as_json:
        print_json(data["policies"])
    else:
        table(data["policies"], [("domain_id", "Account"), ("project_id", "Project"), ("policy_id", "Policy"),
                                 ("status", "Status"), ("fail_reason", "Reason")],
              title=f"{data['count']} projects")
