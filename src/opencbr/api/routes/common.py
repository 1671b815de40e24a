"""The one place list parameters are parsed and checked, for every list route: the page (``limit``,
``offset``), ``sort``, ``status``, the creation-time window (``start_time``, ``end_time``) and text
filters such as ``name``. Each bad value answers 400 naming the parameter; nothing reaches the catalog
that it cannot store or compare (a 20-digit offset, a NUL character)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from opencbr.domain.errors import InvalidParameter

MAX_LIMIT = 1000
#: Far beyond any list this service holds, and well inside every catalog's integer range.
MAX_OFFSET = 1_000_000_000
#: Text filters (names, ids) are at most this long; ids are 36 or 64 characters, names 64 or 255.
MAX_FILTER_CHARS = 255
#: ``sort`` names at most this many keys.
MAX_SORT_KEYS = 5
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: (key, descending) pairs of a parsed ``sort``.
Sort = list[tuple[str, bool]]


def page(limit: int | None, offset: int | None, default: int = 1000, maximum: int = MAX_LIMIT) -> tuple[int, int]:
    """``limit`` is an integer from 1 to ``maximum``, ``offset`` one from 0 to ``MAX_OFFSET``."""
    limit = default if limit is None else limit
    offset = 0 if offset is None else offset
    if not 1 <= limit <= maximum:
        raise InvalidParameter(f"limit must be between 1 and {maximum}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidParameter(f"offset must be between 0 and {MAX_OFFSET}")
    return limit, offset


def count(value: int | None, name: str, default: int, maximum: int) -> int:
    """A small positive count parameter (``next`` of a schedule preview, a ``limit`` without offset)."""
    value = default if value is None else value
    if not 1 <= value <= maximum:
        raise InvalidParameter(f"{name} must be between 1 and {maximum}")
    return value


def text(value: str | None, name: str, max_chars: int = MAX_FILTER_CHARS) -> str | None:
    """A text filter: printable (no control character: ``%00`` would match everything in SQLite and be
    refused by PostgreSQL) and at most ``max_chars`` long. Empty means no filter."""
    if value is None or value == "":
        return None
    if len(value) > max_chars:
        raise InvalidParameter(f"{name} must be at most {max_chars} characters")
    if _CONTROL.search(value):
        raise InvalidParameter(f"{name} must not contain control characters")
    return value


def texts(values: Sequence[str] | None, name: str, max_items: int = 100) -> list[str] | None:
    """A repeated or comma-separated text filter (``id``, ``resource_ids``)."""
    if not values:
        return None
    if len(values) > max_items:
        raise InvalidParameter(f"{name} names at most {max_items} values")
    return [v for v in (text(x, name) for x in values) if v] or None


def choice(value: str | None, name: str, allowed: Iterable[str]) -> str | None:
    """An enumerated filter (a type, a mode): one of ``allowed``, or none."""
    if value is None or value == "":
        return None
    allowed = tuple(allowed)
    if value not in allowed:
        raise InvalidParameter(f"{name} must be one of {', '.join(allowed)}")
    return value


def statuses(values: str | Sequence[str] | None, allowed: Iterable[str], name: str = "status") -> list[str] | None:
    """``status``: one value, or several (repeated), each one of ``allowed``."""
    if values is None or values == "":
        return None
    values = [values] if isinstance(values, str) else list(values)
    return [v for v in (choice(x, name, allowed) for x in values) if v] or None


def parse_sort(sort: str | None, keys: Iterable[str]) -> Sort:
    """``key[:asc|desc],...`` with each key one of ``keys``; [] for the default
    order."""
    keys = tuple(keys)
    if not sort:
        return []
    parts = sort.split(",")
    if len(parts) > MAX_SORT_KEYS:
        raise InvalidParameter(f"sort names at most {MAX_SORT_KEYS} keys")
    out: Sort = []
    for part in parts:
        key, _, direction = part.strip().partition(":")
        if key not in keys or direction not in ("", "asc", "desc"):
            raise InvalidParameter(f"cannot sort by {part[:40]!r}; use key[:asc|desc] with key one of {', '.join(keys)}")
        out.append((key, direction != "asc"))
    return out


def parse_time(value: str | None, name: str) -> datetime | None:
    """Time filters are ``YYYY-MM-DDTHH:MM:SSZ``, as the public API writes them; other ISO forms are accepted."""
    if not value:
        return None
    v = value.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S.%f",
                "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(v, fmt)
        except ValueError:
            continue
    raise InvalidParameter(f"{name} must be a time like 2024-01-31T12:00:00Z")


def time_window(start_time: str | None, end_time: str | None) -> tuple[datetime | None, datetime | None]:
    """``start_time`` and ``end_time`` (creation time, inclusive); the start may not be after the end."""
    start, end = parse_time(start_time, "start_time"), parse_time(end_time, "end_time")
    if start and end and start > end:
        raise InvalidParameter("start_time must not be after end_time")
    return start, end
