"""Small helpers the route modules share."""

from __future__ import annotations

from datetime import datetime

from opencbr.domain.errors import InvalidParameter

MAX_LIMIT = 1000


def page(limit: int | None, offset: int | None, default: int = 1000, maximum: int = MAX_LIMIT) -> tuple[int, int]:
    """``limit`` is a positive integer (at most ``maximum``), ``offset`` a non-negative one."""
    limit = default if limit is None else limit
    offset = 0 if offset is None else offset
    if limit < 1 or limit > maximum:
        raise InvalidParameter(f"limit must be between 1 and {maximum}")
    if offset < 0:
        raise InvalidParameter("offset must not be negative")
    return limit, offset


def parse_time(value: str | None, name: str) -> datetime | None:
    """Time filters are ``YYYY-MM-DDTHH:MM:SSZ`` (cbr_v3.md section 4); other ISO forms are accepted."""
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
