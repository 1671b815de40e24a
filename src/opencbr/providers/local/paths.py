"""Paths of the service's machines as tenants name them: made normal, compared by component, and
confined to the operator's ``resource_roots`` (nothing here looks at the disk but :func:`root_forms`)."""

from __future__ import annotations

import os

from opencbr.domain.errors import InvalidParameter
from opencbr.providers.base import PathSwapped


def normal_path(path: object) -> str:
    """A path as the user gave it, made absolute-normal (``//a/./b/`` -> ``/a/b``) without touching the
    disk: what permissions are checked on before anything is looked up (no existence oracle)."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidParameter("path must be a non-empty string")
    if not os.path.isabs(path):
        raise InvalidParameter(f"path must be absolute: {path!r}")
    return "/" + os.path.normpath(path).lstrip("/")


def within(path: str, top: str) -> bool:
    """``path`` is ``top`` or lies below it, compared component-wise on normal paths (``/a/fsx`` is not
    below ``/a/fs``)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    """One of two normal paths contains the other (or they are equal)."""
    return within(a, b) or within(b, a)


def ancestors(path: str) -> list[str]:
    """Every directory above a normal path, ``/`` first."""
    out, cur = [], path
    while cur != "/":
        cur = os.path.dirname(cur)
        out.append(cur)
    return out[::-1]


def check_allowed(path: str, roots: tuple[str, ...]) -> None:
    """Operators may confine resources to some directories (setting ``resource_roots``)."""
    if roots and not any(within(path, r) for r in root_forms(roots)):
        raise InvalidParameter(f"{path} is outside the directories this service may protect: {', '.join(roots)}")


def root_forms(roots: tuple[str, ...]) -> list[str]:
    """A root as configured and as it resolves (an operator may name a root through a symlink)."""
    forms = []
    for r in roots:
        forms += [normal_path(r), os.path.realpath(r)]
    return forms


def split_root(path: str, roots: tuple[str, ...]) -> tuple[str, str]:
    """The trusted directory a path is opened from (the deepest root holding it; ``/`` without
    roots) and the rest of the path, which must hold no symlink."""
    tops = [t for t in (root_forms(roots) if roots else ["/"]) if within(path, t)]
    if not tops:
        raise PathSwapped(f"{path} is outside the directories this service may protect: {', '.join(roots)}")
    top = max(tops, key=len)
    return top, os.path.relpath(path, top)
