"""Ordering and text matching shared by the list functions of the services."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: (key, descending) pairs, as the API's ``sort`` parameter is parsed (``api.routes.common.parse_sort``).
Sort = Sequence[tuple[str, bool]]


def order_by(sort: Sort | None, columns: Mapping[str, object], default: list, tiebreak) -> list:
    """ORDER BY clauses for ``sort`` over ``columns`` (``default`` when no sort is asked for), always
    ending with the unique ``tiebreak`` column so that pages never overlap or skip rows."""
    if not sort:
        return default
    return [columns[key].desc() if desc else columns[key].asc() for key, desc in sort] + [tiebreak]


def contains(column, value: str):
    """``column`` contains ``value`` literally: ``%`` and ``_`` are not wildcards."""
    return column.contains(value, autoescape=True)
