"""Small helpers shared by the tree modules."""

from __future__ import annotations

import grp
import importlib
import os
import pwd
from typing import Callable

from ..chunks.manifests import check_name
from ..chunks.store import ChunkStore
from ..errors import InvalidArgument, Missing
from .dynamic_index import DynamicIndex

Progress = Callable[[int, int], None]


def chunkstore_of(repo_or_cs) -> ChunkStore:
    """Accept a :class:`~opencbr.engine.Repository` or a :class:`ChunkStore`."""
    if isinstance(repo_or_cs, ChunkStore) or getattr(repo_or_cs, "remote", False):
        return repo_or_cs  # (a remote one: engine/remote/client.py, the same seams over a channel)
    cs = getattr(repo_or_cs, "chunks", None)
    if isinstance(cs, ChunkStore):
        return cs
    raise TypeError("expected a Repository or a ChunkStore")


def load_index(cs: ChunkStore, backup_id: str, *, refs: bool = True) -> DynamicIndex:
    """The dynamic index of a tree backup (Missing; InvalidArgument if it is a disk backup). Not
    ``refs``: the manifest's refs segments are not read (a restore, browse or verify needs only its
    catalog; an incremental over a channel reads the parent's refs, the chunks the vault holds)."""
    check_name(backup_id)
    m = cs.read_manifest(backup_id) if refs else cs.manifest_head(backup_id)
    if m.header.get("type") != "tree":
        raise InvalidArgument(f"backup {backup_id} is a {m.header.get('type')} backup, not a file-system backup")
    return DynamicIndex.from_manifest(m)


def show(path: bytes) -> str:
    """A catalog path for humans: '/'-rooted, undecodable bytes kept as surrogate escapes."""
    return "/" + os.fsdecode(path)


def parse_path(path: str | bytes | None) -> bytes:
    """A user-given path inside a backup -> catalog path (no leading/trailing '/', b"" = root).
    '.' components are dropped; '..' is refused (a backup path never climbs)."""
    if path is None:
        return b""
    p = os.fsencode(path)
    parts = [c for c in p.split(b"/") if c not in (b"", b".")]
    if any(c == b".." for c in parts) or b"\0" in p:
        raise InvalidArgument(f"invalid path {os.fsdecode(p)!r}: '..' and NUL are not allowed")
    return b"/".join(parts)


def in_subtree(key: bytes, sub_key: bytes) -> bool:
    """True if catalog key ``key`` is ``sub_key`` or below it (keys use NUL as separator)."""
    if not sub_key:
        return True
    return key == sub_key or key.startswith(sub_key + b"\0")


class Names:
    """uid/gid -> user/group name, cached (the password database is read once per id)."""

    def __init__(self) -> None:
        self._u: dict[int, bytes] = {}
        self._g: dict[int, bytes] = {}

    def user(self, uid: int) -> bytes:
        n = self._u.get(uid)
        if n is None:
            try:
                n = os.fsencode(pwd.getpwuid(uid).pw_name)
            except (KeyError, OverflowError):
                n = b""
            self._u[uid] = n
        return n

    def group(self, gid: int) -> bytes:
        n = self._g.get(gid)
        if n is None:
            try:
                n = os.fsencode(grp.getgrgid(gid).gr_name)
            except (KeyError, OverflowError):
                n = b""
            self._g[gid] = n
        return n


def not_found(backup_id: str, path: bytes) -> Missing:
    return Missing(f"path {show(path)} is not in backup {backup_id}")


def built_extension(name: str, abi: int, ruled_out_by: str):
    """One of this package's optional C extensions (``_listing``, ``_reading``) if it is built and
    speaks interface ``abi`` (a stale build of another version is not used), unless the environment
    variable ``ruled_out_by`` is ``python`` (to compare, or to rule it out); else None. The caller then
    checks that it agrees with the Python code on this machine before using it."""
    if os.environ.get(ruled_out_by) == "python":
        return None
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        return None
    return module if getattr(module, "ABI", None) == abi else None
