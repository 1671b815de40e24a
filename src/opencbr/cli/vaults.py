"""``cbr vault``: create, list, show, update and delete vaults; associate resources."""

from __future__ import annotations

import typer

from opencbr.cli import output, refs
from opencbr.cli.client import ApiClient
from opencbr.cli.output import JSON_OPTION, YES_OPTION, client, confirm, details, handle_errors, print_json, table
from opencbr.cli.params import DESCRIPTION_OPTION, NAME_FILTER, VAULT_ARG
from opencbr.cli.waiting import raise_if_failed, wait_for

vault_app = typer.Typer(help="Vaults: where backups are stored.", no_args_is_help=True)

_TYPES = {"server": "OS::Nova::Server", "disk": "OS::Cinder::Volume", "turbo": "OS::Sfs::Turbo"}
_COLS = [("id", "ID"), ("name", "Name"), ("billing.object_type", "Type"), ("billing.protect_type", "Protect"),
         ("billing.status", "Status"), ("usage", "Used / capacity"), ("nres", "Resources"),
         ("encrypted", "Encrypted")]
#: The vault's consistency level, in the words ``backup show`` uses.
CONSISTENCY = {"crash_consistent": "crash-consistent", "app_consistent": "application-consistent"}


def resolve(ref: str, c: ApiClient | None = None) -> str:
    """A vault id from an id, a unique name or a unique id prefix."""
    return refs.resolve(c or client(), refs.VAULT, ref)


def _resource_ids(c: ApiClient, vault_type: str, resources: list[str]) -> list[str]:
    """Ids of the resources a vault of this type protects, named by id, name or id prefix."""
    kinds = (refs.KIND_OF_VAULT_TYPE[vault_type],) if vault_type in refs.KIND_OF_VAULT_TYPE else refs.RESOURCE_KINDS
    return [refs.resolve_resource(c, r, kinds)["id"] for r in resources]


def _row(v: dict) -> dict:
    used = v.get("used_bytes")
    used = used if used is not None else v["billing"]["used"] * 1024**2
    level = v["billing"].get("consistent_level")
    return {**v, "usage": f"{output.human(used)} / {v['billing']['size']} GB", "used_h": output.human(used),
            "nres": len(v["resources"]), "az": v.get("availability_zone") or "any",
            "consistency": CONSISTENCY.get(level, level)}


def _show(v: dict, as_json: bool) -> None:
    if as_json:
        print_json(v)
        return
    details(_row(v), [("id", "ID"), ("name", "Name"), ("description", "Description"),
                      ("billing.object_type", "Type"), ("billing.protect_type", "Protection"),
                      ("consistency", "Consistency"), ("billing.status", "Status"),
                      ("billing.size", "Capacity (GB)"), ("used_h", "Used"),
                      ("billing.allocated", "Associated (GB)"), ("encrypted", "Encrypted"),
                      ("auto_expand", "Auto-expand"), ("threshold", "Alarm threshold %"),
                      ("az", "AZ"), ("created_at", "Created")])
    if v["resources"]:
        table(v["resources"], [("id", "Resource ID"), ("name", "Name"), ("type", "Type"), ("size", "GB"),
                               ("protect_status", "Status"), ("backup_count", "Backups")])


@vault_app.command("create")
@handle_errors
def vault_create(name: str = typer.Option(None, "--name", help="Default: vault_ and four digits."),
                 type_: str = typer.Option(..., "--type", help="server, disk or turbo (file systems)."),
                 size: int = typer.Option(..., "--size", help="Capacity in GB (10 to 10,485,760)."),
                 protect_type: str = typer.Option("backup", "--protect-type", help="backup or replication."),
                 consistency: str = typer.Option("crash_consistent", "--consistency",
                                                 help="crash_consistent or app_consistent (server vaults)."),
                 resource: list[str] = typer.Option(None, "--resource", help="A server, disk or file system to "
                                                    "protect: id, name or id prefix (repeatable)."),
                 description: str = DESCRIPTION_OPTION,
                 encryption: bool = typer.Option(True, "--encryption/--no-encryption",
                                                 help="Encrypt the vault's data (default on)."),
                 auto_expand: bool = typer.Option(False, "--auto-expand",
                                                  help="Grow the capacity by itself when backups need more."),
                 az: str = typer.Option(None, "--az", help="Availability zone (default: any)."),
                 as_json: bool = JSON_OPTION):
    """Create a vault: where backups of servers, disks or file systems are kept, encrypted by default.

    Examples:
      cbr vault create --name servers --type server --size 100 --resource web1
      cbr vault create --name shares --type turbo --size 50 --resource share --no-encryption"""
    c = client()
    body = {"vault": {"name": name, "description": description, "encrypted": encryption, "auto_expand": auto_expand,
                      "availability_zone": az,
                      "billing": {"object_type": type_, "protect_type": protect_type,
                                  "consistent_level": consistency, "size": size},
                      "resources": [{"id": r, "type": _TYPES.get(type_, type_)}
                                    for r in _resource_ids(c, type_, resource or [])]}}
    body["vault"] = {k: v for k, v in body["vault"].items() if v is not None}
    _show(c.post("/vaults", body)["vault"], as_json)


@vault_app.command("list")
@handle_errors
def vault_list(type_: str = typer.Option(None, "--type", help="Only vaults of this type: server, disk or turbo."),
               status: str = typer.Option(None, "--status", help="Only vaults in this state, e.g. available."),
               name: str = NAME_FILTER, as_json: bool = JSON_OPTION):
    """The vaults: type, usage against capacity, resources, encryption."""
    data = client().get("/vaults", object_type=type_, status=status, name=name)
    if as_json:
        print_json(data["vaults"])
    else:
        table([_row(v) for v in data["vaults"]], _COLS, title=f"{data['count']} vaults")


@vault_app.command("show")
@handle_errors
def vault_show(vault: str = VAULT_ARG, as_json: bool = JSON_OPTION):
    """A vault and the resources it protects."""
    _show(client().get(f"/vaults/{resolve(vault)}")["vault"], as_json)


@vault_app.command("update")
@handle_errors
def vault_update(vault: str = VAULT_ARG, name: str = typer.Option(None, "--name", help="A new name."),
                 size: int = typer.Option(None, "--size", help="New capacity in GB."),
                 consistency: str = typer.Option(None, "--consistency", help="app_consistent (one way only)."),
                 auto_expand: bool = typer.Option(None, "--auto-expand/--no-auto-expand",
                                                  help="Grow the capacity by itself when backups need more."),
                 threshold: int = typer.Option(None, "--threshold", help="Usage alarm threshold, % of capacity "
                                                                         "(1-100)."),
                 as_json: bool = JSON_OPTION):
    """Rename, resize or change a vault.

    Example: cbr vault update servers --size 200"""
    billing = {k: v for k, v in (("size", size), ("consistent_level", consistency)) if v is not None}
    body = {k: v for k, v in (("name", name), ("auto_expand", auto_expand), ("threshold", threshold),
                              ("billing", billing or None)) if v is not None}
    _show(client().put(f"/vaults/{resolve(vault)}", {"vault": body})["vault"], as_json)


@vault_app.command("delete")
@handle_errors
def vault_delete(vault: str = VAULT_ARG, wait: bool = typer.Option(False, "--wait", help="Wait until it is gone."),
                 yes: bool = YES_OPTION, as_json: bool = JSON_OPTION):
    """Delete a vault and every backup in it."""
    c = client()
    vid = resolve(vault, c)
    v = c.get(f"/vaults/{vid}")["vault"]
    count = c.get("/backups", vault_id=vid, limit=1)["count"]
    confirm(f"Delete vault {v['name']} ({vid}) and its {count} backup(s)?", yes)
    task_id = c.delete(f"/vaults/{vid}")["operation_log_id"]
    result = {"vault_id": vid, "task_id": task_id}
    if wait:
        logs = wait_for(c, [task_id], quiet=as_json)
        raise_if_failed(logs)
        result["status"] = logs[0]["status"]
    print_json(result) if as_json else typer.echo(f"vault {vid} is being deleted (task {result['task_id']})"
                                                   if not wait else f"vault {vid} deleted")


@vault_app.command("add-resource")
@handle_errors
def vault_add(vault: str = VAULT_ARG,
              resource_ids: list[str] = typer.Argument(..., metavar="RESOURCE...",
                                                       help="Servers, disks or file systems: id, name or id prefix."),
              as_json: bool = JSON_OPTION):
    """Protect more resources with a vault (of the vault's type).

    Example: cbr vault add-resource servers web2"""
    c = client()
    vid = resolve(vault, c)
    v = c.get(f"/vaults/{vid}")["vault"]
    vtype = v["billing"]["object_type"]
    added = c.post(f"/vaults/{vid}/addresources",
                   {"resources": [{"id": r, "type": _TYPES[vtype]}
                                  for r in _resource_ids(c, vtype, resource_ids)]})["add_resource_ids"]
    print_json({"add_resource_ids": added}) if as_json else typer.echo(f"associated {', '.join(added)}")


@vault_app.command("remove-resource")
@handle_errors
def vault_remove(vault: str = VAULT_ARG,
                 resource_ids: list[str] = typer.Argument(..., metavar="RESOURCE...",
                                                          help="Servers, disks or file systems: id, name or id "
                                                               "prefix."),
                 yes: bool = YES_OPTION, as_json: bool = JSON_OPTION):
    """Dissociate resources from a vault; their backups in this vault are deleted."""
    c = client()
    vid = resolve(vault, c)
    confirm(f"Remove {', '.join(resource_ids)} from vault {vault} and delete their backups in it?", yes)
    removed = c.post(f"/vaults/{vid}/removeresources",
                     {"resource_ids": [refs.resolve_resource(c, r)["id"] for r in resource_ids]})["remove_resource_ids"]
    print_json({"remove_resource_ids": removed}) if as_json else typer.echo(f"dissociated {', '.join(removed)}")
