"""``cbr vault tag``: a vault's tags; ``cbr vault auto-bind``: automatic association by bind rules;
``cbr resource-tags``: the tags of a disk, server or file system (the rules pick resources by them)."""

from __future__ import annotations

import typer

from opencbr.cli import refs
from opencbr.cli.client import ClientError
from opencbr.cli.output import JSON_OPTION, client, handle_errors, print_json, table
from opencbr.cli.params import VAULT_ARG
from opencbr.cli.vaults import resolve

tag_app = typer.Typer(help="A vault's tags (key=value, at most 10).", no_args_is_help=True)
resource_tag_app = typer.Typer(help="Tags of disks, servers and file systems (automatic association picks "
                                    "resources by them).", no_args_is_help=True)

_PAIRS = typer.Argument(..., metavar="KEY=VALUE...", help="Tags; a value may be empty (KEY=).")


def _pairs(items: list[str]) -> list[dict[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ClientError(f"{item!r}: write tags as KEY=VALUE")
        out.append({"key": key, "value": value})
    return out


def _print(tags: list[dict], as_json: bool) -> None:
    if as_json:
        print_json({"tags": tags})
    elif not tags:
        typer.echo("no tags")
    else:
        table(tags, [("key", "Key"), ("value", "Value")])


@tag_app.command("list")
@handle_errors
def tag_list(vault: str = VAULT_ARG, as_json: bool = JSON_OPTION):
    """The vault's tags."""
    _print(client().get(f"/vault/{resolve(vault)}/tags")["tags"], as_json)


@tag_app.command("add")
@handle_errors
def tag_add(vault: str = VAULT_ARG, tags: list[str] = _PAIRS, as_json: bool = JSON_OPTION):
    """Add tags; a key the vault has already takes the new value.

    Example: cbr vault tag add servers env=prod owner=ops"""
    c = client()
    vid = resolve(vault, c)
    c.post(f"/vault/{vid}/tags/action", {"action": "create", "tags": _pairs(tags)})
    _print(c.get(f"/vault/{vid}/tags")["tags"], as_json)


@tag_app.command("remove")
@handle_errors
def tag_remove(vault: str = VAULT_ARG, keys: list[str] = typer.Argument(..., metavar="KEY...", help="The keys of the tags to remove."),
               as_json: bool = JSON_OPTION):
    """Remove tags by key (keys the vault does not have are ignored)."""
    c = client()
    vid = resolve(vault, c)
    c.post(f"/vault/{vid}/tags/action", {"action": "delete", "tags": [{"key": k} for k in keys]})
    _print(c.get(f"/vault/{vid}/tags")["tags"], as_json)


@tag_app.command("find")
@handle_errors
def tag_find(tags: list[str] = typer.Argument(None, metavar="KEY[=VALUE]...",
                                              help="Vaults with every one of these tags (any value without =)."),
             untagged: bool = typer.Option(False, "--untagged", help="Vaults without any tag."),
             as_json: bool = JSON_OPTION):
    """Vaults by their tags."""
    body: dict = {"action": "filter"}
    if untagged:
        body["without_any_tag"] = True
    elif tags:
        wanted: dict[str, list[str]] = {}
        for t in tags:
            key, sep, value = t.partition("=")
            wanted.setdefault(key, []).extend([value] if sep else [])
        body["tags"] = [{"key": k, "values": v} for k, v in wanted.items()]
    found = client().post("/vault/resource_instances/action", body)["resources"]
    rows = [{"id": r["resource_id"], "name": r["resource_name"],
             "tags": ", ".join(f"{t['key']}={t['value']}" for t in r["tags"])} for r in found]
    print_json(found) if as_json else table(rows, [("id", "ID"), ("name", "Name"), ("tags", "Tags")])


@tag_app.command("keys")
@handle_errors
def tag_keys(as_json: bool = JSON_OPTION):
    """Every tag key used on the project's vaults, with its values."""
    tags = client().get("/vault/tags")["tags"]
    rows = [{"key": t["key"], "values": ", ".join(t["values"])} for t in tags]
    print_json(tags) if as_json else table(rows, [("key", "Key"), ("values", "Values")])


@handle_errors
def auto_bind(vault: str = VAULT_ARG,
              tags: list[str] = typer.Argument(None, metavar="KEY=VALUE...",
                                               help="Resources with any of these tags (at most 5); none: every "
                                                    "unprotected resource of the vault's type."),
              off: bool = typer.Option(False, "--off", help="Turn automatic association off."),
              as_json: bool = JSON_OPTION):
    """Automatic association: unprotected resources join the vault at its next backup period.

    At each backup period of its policy, the vault takes the resources of its type that no vault
    protects yet (those with one of the tags, when given) and backs them up.

    Example: cbr vault auto-bind servers app=web"""
    body = {"auto_bind": False} if off else {"auto_bind": True, "bind_rules": {"tags": _pairs(tags or [])}}
    v = client().put(f"/vaults/{resolve(vault)}", {"vault": body})["vault"]
    if as_json:
        print_json({"id": v["id"], "auto_bind": v["auto_bind"], "bind_rules": v["bind_rules"]})
    else:
        rules = ", ".join(f"{t['key']}={t['value']}" for t in (v["bind_rules"] or {}).get("tags") or [])
        typer.echo(f"vault {v['name']}: automatic association " + (
            "off" if not v["auto_bind"] else f"on ({rules or 'every unprotected resource'})"))


def _resource(ref: str) -> dict:
    return refs.resolve_resource(client(), ref)


@resource_tag_app.command("show")
@handle_errors
def resource_tags_show(resource: str = typer.Argument(..., help="A disk, server or file system."),
                       as_json: bool = JSON_OPTION):
    """A resource's tags."""
    r = _resource(resource)
    _print(client().get(f"/inventory/{r['kind'].route.rsplit('/', 1)[1]}/{r['id']}/tags")["tags"], as_json)


@resource_tag_app.command("set")
@handle_errors
def resource_tags_set(resource: str = typer.Argument(..., help="A disk, server or file system."),
                      tags: list[str] = typer.Argument(None, metavar="KEY=VALUE...", help="Its tags (none: remove "
                                                                                          "all)."),
                      as_json: bool = JSON_OPTION):
    """Replace a resource's tags.

    Example: cbr resource-tags set web1 app=web tier=front"""
    r = _resource(resource)
    out = client().put(f"/inventory/{r['kind'].route.rsplit('/', 1)[1]}/{r['id']}/tags", {"tags": _pairs(tags or [])})
    _print(out["tags"], as_json)
