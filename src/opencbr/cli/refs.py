"""Naming things on the command line: every argument or option that names a vault, policy, backup,
resource or task accepts the full id, the name (when it is unique in the project) or a unique prefix of
the id, as git accepts abbreviated commit ids. Tables show such prefixes when the full ids do not fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opencbr.cli.client import ApiClient, ClientError

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: Shortest id prefix that is looked up (shorter ones would match too much to be meant).
MIN_PREFIX = 4
#: Tables show at least this many characters of an id.
SHORT_ID = 8


@dataclass(frozen=True)
class Kind:
    label: str          # what a user calls it, singular
    plural: str
    route: str          # the list route
    key: str            # the list in its answer
    list_command: str   # where a user sees them
    paged: bool = True
    named: bool = True


VAULT = Kind("vault", "vaults", "/vaults", "vaults", "cbr vault list")
POLICY = Kind("policy", "policies", "/policies", "policies", "cbr policy list", paged=False)
BACKUP = Kind("backup", "backups", "/backups", "backups", "cbr backup list --disks")
DISK = Kind("disk", "disks", "/inventory/disks", "resources", "cbr disk list")
SERVER = Kind("server", "servers", "/inventory/servers", "resources", "cbr server list")
FILE_SYSTEM = Kind("file system", "file systems", "/inventory/file-systems", "resources", "cbr fs list")
TASK = Kind("task", "tasks", "/operation-logs", "operation_logs", "cbr task list", named=False)
RESOURCE_KINDS = (SERVER, DISK, FILE_SYSTEM)
#: A vault type (``cbr vault create --type``) and the resources it protects.
KIND_OF_VAULT_TYPE = {"server": SERVER, "disk": DISK, "turbo": FILE_SYSTEM}


def _items(c: ApiClient, kind: Kind) -> list[dict]:
    """Every item of a kind in the project (a server backup's disk backups included)."""
    if not kind.paged:
        items = c.get(kind.route)[kind.key]
    else:
        items, offset = [], 0
        while True:
            page = c.get(kind.route, limit=1000, offset=offset)[kind.key]
            items += page
            if len(page) < 1000:
                break
            offset += len(page)
    if kind is BACKUP:
        items = items + [child for b in items for child in b.get("children") or []]
    return [{**i, "_kind": kind} for i in items]


def _describe(item: dict) -> str:
    extra = item.get("resource_name") or item.get("operation_type") or ""
    return f"  {item['id']}  {item.get('name') or ''}  {item['_kind'].label}" + (f" of {extra}" if extra else "")


def _pick(ref: str, items: list[dict], what: str, list_command: str) -> dict:
    """The one item ``ref`` names: its id, else its (unique) name, else a unique id prefix."""
    exact = [i for i in items if i["id"] == ref]
    if exact:
        return exact[0]
    for how, matches in (("are named", [i for i in items if i.get("name") == ref]),
                         ("have ids starting with",
                          [i for i in items if len(ref) >= MIN_PREFIX and i["id"].startswith(ref.lower())])):
        if len(matches) == 1:
            return matches[0]
        if matches:
            listing = "\n".join(_describe(i) for i in matches[:20])
            raise ClientError(f"{ref!r} is ambiguous: {len(matches)} {what} {how} {ref!r}:\n{listing}\n"
                              "give the id (or a longer prefix of it)")
    hint = f" (ids need at least {MIN_PREFIX} characters)" if 0 < len(ref) < MIN_PREFIX else ""
    raise ClientError(f"{ref!r} is not the name, id or id prefix of any of your {what}{hint}; "
                      f"see `{list_command}`")


def resolve(c: ApiClient, kind: Kind, ref: str) -> str:
    """The id of the ``kind`` named by ``ref`` (id, unique name or unique id prefix)."""
    if _UUID.match(ref):
        return ref  # a full id: the server says whether it exists
    return _pick(ref, _items(c, kind), kind.plural, kind.list_command)["id"]


def resolve_resource(c: ApiClient, ref: str, kinds: tuple[Kind, ...] = RESOURCE_KINDS) -> dict:
    """A resource (server, disk or file system) named by ``ref``: ``{"id", "kind"}``."""
    if _UUID.match(ref) and len(kinds) == 1:
        return {"id": ref, "kind": kinds[0]}
    items = [i for k in kinds for i in _items(c, k)]
    what = " or ".join(k.plural for k in kinds)
    item = _pick(ref, items, what, " / ".join(k.list_command for k in kinds))
    return {"id": item["id"], "kind": item["_kind"]}


def short_ids(ids: set[str]) -> dict[str, str]:
    """Each id's shortest prefix (at least SHORT_ID characters) that no other id of the set shares."""
    out = {}
    for i in ids:
        n = SHORT_ID
        while n < len(i) and any(o != i and o.startswith(i[:n]) for o in ids):
            n += 1
        out[i] = i[:n]
    return out


def looks_like_id(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))
