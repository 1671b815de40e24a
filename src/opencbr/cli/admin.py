"""``cbr admin``: tenants (accounts, projects, users, credentials) and the audit trail."""

from __future__ import annotations

import typer

from opencbr.cli import refs
from opencbr.cli.client import ClientError
from opencbr.cli.org_policies import org_policy_app
from opencbr.cli.output import JSON_OPTION, client, details, handle_errors, print_json, table
from opencbr.cli.params import LIMIT_OPTION, SINCE_OPTION, UNTIL_OPTION
from opencbr.cli.regions import region_app

admin_app = typer.Typer(help="Administration: projects, users, credentials, audit trail, organization policies.", no_args_is_help=True)
project_app = typer.Typer(help="Projects of your account.", no_args_is_help=True)
user_app = typer.Typer(help="Users of your account.", no_args_is_help=True)
cred_app = typer.Typer(help="AK/SK credentials.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts (operator only).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail of key operations.", no_args_is_help=True)
vault_admin_app = typer.Typer(help="Disaster recovery of vault catalogs.", no_args_is_help=True)
for name, sub in (("project", project_app), ("user", user_app), ("credential", cred_app),
                  ("account", account_app), ("audit", audit_app), ("vault", vault_admin_app), ("region", region_app),
                  ("org-policy", org_policy_app)):
    admin_app.add_typer(sub, name=name)


@project_app.command("create")
@handle_errors
def project_create(name: str = typer.Argument(..., help="A name for the project."), account: str = typer.Option(None, "--account", help="Account id (operator)."),
                   as_json: bool = JSON_OPTION):
    """Create a project in your account (or, as the operator, in --account)."""
    pr = client().post("/iam/projects", {"name": name, "account_id": account})["project"]
    print_json(pr) if as_json else details(pr, [("id", "Project ID"), ("name", "Name"), ("account_id", "Account")])


@project_app.command("list")
@handle_errors
def project_list(as_json: bool = JSON_OPTION):
    """The projects of your account."""
    rows = client().get("/iam/projects")["projects"]
    print_json(rows) if as_json else table(rows, [("id", "ID"), ("name", "Name"), ("created_at", "Created")])


@user_app.command("create")
@handle_errors
def user_create(name: str = typer.Argument(..., help="The user's name."), role: str = typer.Option("member", "--role", help="admin, member, readonly or backup (backup-only: makes backups, deletes and reads nothing; docs/roles.md)."),
                as_json: bool = JSON_OPTION):
    """Create a user in your account; give it credentials with cbr admin credential create --user NAME."""
    u = client().post("/iam/users", {"name": name, "role": role})["user"]
    print_json(u) if as_json else details(u, [("id", "User ID"), ("name", "Name"), ("role", "Role")])


@user_app.command("list")
@handle_errors
def user_list(as_json: bool = JSON_OPTION):
    """The users of your account and their roles."""
    rows = client().get("/iam/users")["users"]
    print_json(rows) if as_json else table(rows, [("id", "ID"), ("name", "Name"), ("role", "Role")])


@cred_app.command("create")
@handle_errors
def credential_create(user: str = typer.Option(None, "--user", help="User name (default: yourself)."),
                      description: str = typer.Option("", "--description", help="What the key is for."),
                      as_json: bool = JSON_OPTION):
    """Create an AK/SK pair. The SK is shown once."""
    c = client().post("/iam/credentials", {"user_name": user, "description": description})["credential"]
    print_json(c) if as_json else details(c, [("user_name", "User"), ("access_key", "AK"), ("secret_key", "SK")])


@cred_app.command("delete")
@handle_errors
def credential_delete(access_key: str = typer.Argument(..., help="The AK to revoke."), as_json: bool = JSON_OPTION):
    """Revoke an AK/SK pair: requests signed with it fail from now on."""
    client().delete(f"/iam/credentials/{access_key}")
    print_json({"deleted": access_key}) if as_json else typer.echo(f"deleted access key {access_key}")


@account_app.command("create")
@handle_errors
def account_create(name: str = typer.Argument(..., help="The tenant's name."), admin: str = typer.Option("admin", "--admin", help="Name of its admin user."),
                   as_json: bool = JSON_OPTION):
    """Create a tenant account with a project, an admin user and an AK/SK pair (operator only)."""
    out = client().post("/iam/accounts", {"name": name, "admin_name": admin})
    if as_json:
        print_json(out)
    else:
        details({**out["account"], "project_id": out["project"]["id"], **out["credential"]},
                [("id", "Account ID"), ("name", "Name"), ("project_id", "Project ID"), ("user_name", "Admin user"),
                 ("access_key", "AK"), ("secret_key", "SK")])


def _audited(c, ref: str) -> str:
    """A resource named by id, name or id prefix; one that no longer exists only by its id."""
    for kind in (refs.VAULT, refs.POLICY, refs.BACKUP, *refs.RESOURCE_KINDS):
        try:
            return refs.resolve(c, kind, ref)
        except ClientError:
            continue
    return ref


@audit_app.command("list")
@handle_errors
def audit_list(trace: str = typer.Option(None, "--trace", help="e.g. createVault"),
               resource: str = typer.Option(None, "--resource", help="Only events about this vault, policy, backup or "
                                                                        "resource: id, name or id prefix."),
               user: str = typer.Option(None, "--user", help="Only what this user did."),
               outcome: str = typer.Option(None, "--outcome", help="Only this outcome: success or failure."),
               since: str = SINCE_OPTION, until: str = UNTIL_OPTION, limit: int = LIMIT_OPTION,
               as_json: bool = JSON_OPTION):
    """Who did what, when, and how it ended.

    Example: cbr admin audit list --trace deleteVault"""
    c = client()
    data = c.get("/iam/audit-events", trace_name=trace, resource_id=_audited(c, resource) if resource else None,
                 user_name=user,
                        outcome=outcome, start_time=since, end_time=until, limit=limit)
    if as_json:
        print_json(data["events"])
    else:
        table(data["events"], [("time", "Time"), ("user_name", "User"), ("trace_name", "Operation"),
                               ("resource_type", "Type"), ("resource_name", "Name"), ("resource_id", "ID"),
                               ("outcome", "Outcome"), ("error_msg", "Error")], title=f"{data['count']} events")


@audit_app.command("tracker")
@handle_errors
def audit_tracker(state: str = typer.Argument(..., help="on or off"), as_json: bool = JSON_OPTION):
    """Enable or disable recording (existing records stay readable)."""
    out = client().put("/iam/tracker", {"enabled": state == "on"})
    print_json(out) if as_json else typer.echo(f"audit tracker {'enabled' if state == 'on' else 'disabled'}")


@vault_admin_app.command("rebuild")
@handle_errors
def vault_rebuild(vault_id: str = typer.Argument(..., help="The vault's id (see cbr admin vault stored)."), as_json: bool = JSON_OPTION):
    """Recreate a vault's catalog (the vault and its backups) from the manifests in the object store."""
    r = client().post(f"/vaults/{vault_id}/rebuild")["rebuild"]
    if as_json:
        print_json(r)
    else:
        typer.echo(f"vault {r['vault_id']}: {'created' if r['vault_created'] else 'exists'}; "
                   f"{len(r['backups_added'])} backup(s) added, {r['backups_present']} already catalogued "
                   f"({r['backups_found']} manifests)")


@vault_admin_app.command("stored")
@handle_errors
def vault_stored(as_json: bool = JSON_OPTION):
    """Vault ids that have data in the object store (operator)."""
    ids = client().get("/stored-vaults")["vault_ids"]
    print_json(ids) if as_json else typer.echo("\n".join(ids))
