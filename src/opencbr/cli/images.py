"""``cbr image``: full-server images made from server backups, and servers made from them
(docs/images.md)."""

from __future__ import annotations

import os

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
    human,
    print_json,
    table,
)
from opencbr.cli.params import WAIT_OPTION
from opencbr.cli.waiting import raise_if_failed, wait_for

image_app = typer.Typer(help="Full-server images made from server backups, and new servers made from them.",
                        no_args_is_help=True)

IMAGE = refs.Kind("image", "images", "/images", "images", "cbr image list")
IMAGE_ARG = typer.Argument(..., metavar="IMAGE", help="Image: id, name or id prefix.")


def resolve_image(c, ref: str) -> str:
    return refs.resolve(c, IMAGE, ref)


def _show(image: dict, as_json: bool) -> None:
    if as_json:
        print_json(image)
        return
    details({**image, "size": human(image["size_bytes"])},
            [("id", "ID"), ("name", "Name"), ("status", "Status"), ("description", "Description"),
             ("backup_id", "Backup"), ("source_resource_name", "Made from server"),
             ("source_image_type", "Backup kind"), ("size", "Size"), ("servers_created", "Servers made"),
             ("created_at", "Created")])
    table([{**d, "size": human(d["size_bytes"])} for d in image["disks"]],
          [("disk_role", "Disk"), ("resource_name", "Backed-up disk"), ("size", "Size"), ("backup_id", "Disk backup")])


@image_app.command("create")
@handle_errors
def image_create(backup: str = typer.Argument(..., metavar="BACKUP", help="Server backup: id, name or id prefix."),
                 name: str = typer.Option(..., "--name", help="The image's name."),
                 description: str = typer.Option(None, "--description", help="What the image is for."),
                 as_json: bool = JSON_OPTION):
    """Create a full-server image from a server backup (or replica) that holds the system disk. One image per
    backup; the backup cannot be deleted while the image exists.

    Example: cbr image create manualbk_a1b2 --name web-golden"""
    c = client()
    body = {"backup_id": refs.resolve(c, refs.BACKUP, backup), "name": name}
    if description is not None:
        body["description"] = description
    _show(c.post("/images", {"image": body})["image"], as_json)


@image_app.command("list")
@handle_errors
def image_list(name: str = typer.Option(None, "--name", help="Images whose name contains this."),
               as_json: bool = JSON_OPTION):
    """The project's images."""
    params = {"name": name} if name else {}
    out = client().get("/images", **params)
    if as_json:
        print_json(out)
        return
    rows = [{**i, "size": human(i["size_bytes"]), "disks": len(i["disks"])} for i in out["images"]]
    table(rows, [("id", "ID"), ("name", "Name"), ("status", "Status"), ("source_resource_name", "From server"),
                 ("disks", "Disks"), ("size", "Size"), ("servers_created", "Servers"), ("created_at", "Created")])


@image_app.command("show")
@handle_errors
def image_show(image: str = IMAGE_ARG, as_json: bool = JSON_OPTION):
    """An image: its backup, its disks and how many servers were made from it."""
    c = client()
    _show(c.get(f"/images/{resolve_image(c, image)}")["image"], as_json)


@image_app.command("delete")
@handle_errors
def image_delete(image: str = IMAGE_ARG, yes: bool = YES_OPTION, as_json: bool = JSON_OPTION):
    """Delete an image. Its backup can be deleted again; servers made from it stay."""
    c = client()
    got = c.get(f"/images/{resolve_image(c, image)}")["image"]
    confirm(f"Delete image {got['name']} ({got['id']})?", yes)
    c.delete(f"/images/{got['id']}")
    print_json({"image_id": got["id"], "deleted": True}) if as_json else typer.echo(f"image {got['id']} deleted")


@image_app.command("create-server")
@handle_errors
def image_create_server(image: str = IMAGE_ARG,
                        name: str = typer.Option(..., "--name", help="The new server's name."),
                        path: list[str] = typer.Option(None, "--path", help="Where a new disk goes: one per disk "
                                                                            "of the image, the system disk first "
                                                                            "(repeatable)."),
                        directory: str = typer.Option(None, "--directory",
                                                      help="A directory for the new disks (NAME-1.img, NAME-2.img, "
                                                           "...), instead of --path."),
                        az: str = typer.Option(None, "--az", help="Availability zone (default: the backup's)."),
                        power_on: bool = typer.Option(False, "--power-on", help="Register the server running."),
                        agent: str = typer.Option(None, "--agent", help="Make the disks on this agent's host "
                                                                        "(its paths, .img or .raw files below "
                                                                        "its roots) instead of this machine."),
                        wait: bool = WAIT_OPTION, as_json: bool = JSON_OPTION):
    """Create a server from an image: each disk of the image becomes a new disk-image file, then the server
    is registered with them. Any number of servers can be made from one image.

    Examples:
      cbr image create-server web-golden --name web3 --directory /srv/vms --wait
      cbr image create-server web-golden --name web4 --path /srv/vms/w4-sys.img --path /srv/vms/w4-data.img"""
    if bool(path) == bool(directory):
        raise ClientError("give --directory, or one --path per disk of the image")
    c = client()
    body: dict = {"name": name, "power_on": power_on}
    here = os.path.abspath if agent is None else (lambda x: x)  # an agent's paths are its host's own
    body.update({"paths": [here(x) for x in path]} if path else {"directory": here(directory)})
    if agent:
        body["agent_id"] = agent
    if az:
        body["availability_zone"] = az
    out = c.post(f"/images/{resolve_image(c, image)}/servers", {"server": body})
    if wait:
        raise_if_failed(wait_for(c, [out["operation_log_id"]], quiet=as_json))
    if as_json:
        print_json(out)
    else:
        typer.echo(f"server {name} ({out['server_id']}) {'created' if wait else 'is being created'} "
                   f"(task {out['operation_log_id']})")
