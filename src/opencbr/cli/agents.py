"""``cbr agent``: the agents on protected hosts: enrolment tokens and install commands, list, show,
unregister, and the directories of a host to protect (``cbr agent path add|remove``)."""

from __future__ import annotations

import typer

from opencbr.cli.client import ApiClient, ClientError
from opencbr.cli.output import JSON_OPTION, YES_OPTION, client, confirm, details, handle_errors, print_json, table

agent_app = typer.Typer(help="Agents: the opencbr-agent on each protected host.", no_args_is_help=True)
path_app = typer.Typer(help="Directories of an agent's host protected as file systems.", no_args_is_help=True)
agent_app.add_typer(path_app, name="path")

AGENT_ARG = typer.Argument(..., help="The agent: its id, host name or nickname, or a unique id prefix.")
_COLS = [("agent_id", "ID"), ("host", "Host"), ("host_ip", "IP"), ("status", "Status"),
         ("agent_version", "Version"), ("last_active_time", "Last active"), ("last_backup_time", "Last backup"),
         ("npaths", "Paths")]


def resolve(c: ApiClient, ref: str) -> str:
    """An agent id from an id, a unique host name or nickname, or a unique id prefix."""
    agents = c.get("/agents", limit="1000")["agents"]
    for match in (lambda a: a["agent_id"] == ref, lambda a: ref in (a["host_name"], a["host_nickname"]),
                  lambda a: a["agent_id"].startswith(ref)):
        found = [a["agent_id"] for a in agents if match(a)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ClientError(f"{ref!r} names {len(found)} agents; use the agent id")
    raise ClientError(f"no agent {ref!r} in this project (cbr agent list shows them)")


def _row(a: dict) -> dict:
    return {**a, "host": a.get("host_nickname") or a.get("host_name"), "npaths": len(a.get("paths") or [])}


def _commands(cmds: dict) -> None:
    if cmds.get("address_warning"):  # before the commands, where it is read before they are copied
        typer.echo(f"WARNING: {cmds['address_warning']}\n", err=True)
    typer.echo(f"On the Linux host to protect:\n  {cmds['install']}\nor step by step:")
    for key in ("package", "register", "start"):
        typer.echo(f"  {cmds[key]}")
    for key in ("token_hint", "root_hint"):
        if cmds.get(key):
            typer.echo(f"({cmds[key]})")
    if cmds.get("ca_fingerprint"):
        typer.echo(f"The service's CA (opencbr-agent register --ca-fingerprint, with AK/SK): {cmds['ca_fingerprint']}")


@agent_app.command("list")
@handle_errors
def agent_list(status: str = typer.Option(None, "--status", help="Only agents online, offline or uninstalled."),
               as_json: bool = JSON_OPTION):
    """The agents of this project: host, status (from the heartbeat), version, last answer."""
    data = client().get("/agents", status=status, limit="1000")
    if as_json:
        print_json(data["agents"])
    else:
        table([_row(a) for a in data["agents"]], _COLS, title=f"{data['count']} agents")


@agent_app.command("show")
@handle_errors
def agent_show(agent: str = AGENT_ARG, as_json: bool = JSON_OPTION):
    """An agent: where it listens, its status, last backup and last error, and its protected paths."""
    c = client()
    a = c.get(f"/agents/{resolve(c, agent)}")["agent"]
    if as_json:
        print_json(a)
        return
    row = {**_row(a), "outdated": ("yes: upgrade it (cbr agent install-command)" if a.get("is_old") else "no")
           if "is_old" in a else ""}
    details(row, [("agent_id", "ID"), ("host_name", "Host"), ("host_nickname", "Nickname"), ("host_ip", "IP"),
                      ("host_os", "OS"), ("endpoint", "Endpoint"), ("status", "Status"), ("enrolled", "Enrolled"),
                      ("agent_version", "Version"), ("outdated", "Outdated"), ("last_active_time", "Last active"),
                      ("last_backup_time", "Last backup"), ("last_error", "Last error"), ("created_at", "Registered")])
    if a["paths"]:  # (the file system's state: a path the agent refuses is registered all the same)
        rows = [{**p, "state": p.get("file_system_status", "") + (f": {p['file_system_status_reason']}"
                                                                   if p.get("file_system_status_reason") else "")}
                for p in a["paths"]]
        table(rows, [("dir_path", "Path"), ("exclude_paths", "Excluded"), ("status", "Status"),
                     ("state", "File system")])


@agent_app.command("token")
@handle_errors
def agent_token(as_json: bool = JSON_OPTION):
    """A one-time enrolment token (valid one hour) and the commands that install an agent with it.

    Example:
      cbr agent token"""
    out = client().post("/agents/tokens")
    if as_json:
        print_json(out)
        return
    typer.echo(f"Token (one host, until {out['expires_at']} UTC):\n  {out['token']}\n")
    _commands(out["install_command"])


@agent_app.command("install-command")
@handle_errors
def agent_install_command(as_json: bool = JSON_OPTION):
    """The commands that install and enrol an agent on a Linux host (the token comes from cbr agent token)."""
    out = client().get("/agents/install-command")["install_command"]
    print_json(out) if as_json else _commands(out)


@agent_app.command("unregister")
@handle_errors
def agent_unregister(agent: str = AGENT_ARG, yes: bool = YES_OPTION, as_json: bool = JSON_OPTION):
    """Unregister an agent: the service stops talking to it at once; its resources stay (in error) with
    their backups."""
    c = client()
    agent_id = resolve(c, agent)
    confirm(f"Unregister agent {agent_id}? The service will not connect to it again.", yes)
    c.delete(f"/agents/{agent_id}")
    print_json({"agent_id": agent_id, "unregistered": True}) if as_json else typer.echo(
        f"agent {agent_id} unregistered")


@path_app.command("add")
@handle_errors
def path_add(agent: str = AGENT_ARG,
             path: list[str] = typer.Argument(..., help="Absolute directories on the agent's host."),
             exclude: list[str] = typer.Option(None, "--exclude", help="A directory inside one of the paths to "
                                               "leave out of its backups (repeatable)."),
             as_json: bool = JSON_OPTION):
    """Protect directories of an agent's host: each becomes a file system you can put in a vault.

    Example:
      cbr agent path add web1 /srv/www --exclude /srv/www/cache"""
    c = client()
    excludes: dict[str, list[str]] = {}
    for x in exclude or []:
        owner = max((p for p in path if x.startswith(p.rstrip("/") + "/")), key=len, default=None)
        if owner is None:
            raise ClientError(f"--exclude {x} lies inside none of the paths")
        excludes.setdefault(owner, []).append(x)
    body = {"add_path": list(path),
            "exclude_path": [{"path_name": p, "exclude_path_name": xs} for p, xs in excludes.items()]}
    out = c.post(f"/agents/{resolve(c, agent)}/add-path", body)
    if as_json:
        print_json(out)
        return
    typer.echo(f"added: {', '.join(out['added']) or '-'}; already there: {', '.join(out['existed']) or '-'}")
    for owner, xs in excludes.items():  # (set on a path already there too: its exclusions are replaced)
        typer.echo(f"{owner}: leaves out {', '.join(xs)}")


@path_app.command("remove")
@handle_errors
def path_remove(agent: str = AGENT_ARG,
                path: list[str] = typer.Argument(..., help="Directories to stop protecting."),
                as_json: bool = JSON_OPTION):
    """Stop protecting directories of an agent's host (their backups stay)."""
    c = client()
    out = c.post(f"/agents/{resolve(c, agent)}/remove-path", {"remove_path": list(path)})
    print_json(out) if as_json else typer.echo(f"removed: {', '.join(out['removed']) or '-'}; "
                                               f"not there: {', '.join(out['not_existed']) or '-'}")
