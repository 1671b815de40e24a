"""Ordering, paging and text matching shared by the list functions of the services."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import and_, literal, or_, tuple_

#: (key, descending) pairs, as the API's ``sort`` parameter is parsed (``api.routes.common.parse_sort``).
Sort = Sequence[tuple[str, bool]]


def order_by(sort: Sort | None, columns: Mapping[str, object], default: list, tiebreak) -> list:
    """ORDER BY clauses for ``sort`` over ``columns`` (``default`` when no sort is asked for), always
    ending with the unique ``tiebreak`` column so that pages never overlap or skip rows."""
    if not sort:
        return default
    return [columns[key].desc() if desc else columns[key].asc() for key, desc in sort] + [tiebreak]


def order_keys(sort: Sort | None, columns: Mapping[str, object], default: list[tuple[object, bool]],
               tiebreak) -> list[tuple[object, bool]]:
    """``order_by`` as (column, descending) pairs, for lists that page by keyset (``after``). The
    ``tiebreak`` runs in the direction of the last key: an order in one direction is one walk of an index
    ending in (key, tiebreak), forwards or backwards; for a mixed one (``created_at DESC, id``) SQLite's
    planner may sort every matching row instead."""
    if not sort:
        return default
    return [(columns[key], desc) for key, desc in sort] + [(tiebreak, sort[-1][1])]


def clauses(keys: list[tuple[object, bool]]) -> list:
    """The ORDER BY clauses of ``order_keys``."""
    return [col.desc() if desc else col.asc() for col, desc in keys]


def after(keys: list[tuple[object, bool]], values: Sequence) -> object | None:
    """Rows that come after the row whose sort-key ``values`` are given (keyset paging: the database
    seeks in an index instead of counting its way to the marker). None when a value is NULL (NULLs sort
    differently on each database): the caller counts the position instead."""
    if any(v is None for v in values):
        return None
    if len({desc for _, desc in keys}) == 1:
        # One direction: a row-value comparison, which both databases turn into one range of the index.
        row = tuple_(*(col for col, _ in keys))
        marker = tuple_(*(literal(v, col.type) for (col, _), v in zip(keys, values, strict=True)))
        return row < marker if keys[0][1] else row > marker
    terms = []
    for i, ((col, desc), value) in enumerate(zip(keys, values, strict=True)):
        equal = [c == v for (c, _), v in zip(keys[:i], values[:i], strict=True)]
        terms.append(and_(*equal, col < value if desc else col > value))
    return or_(*terms)


def contains(column, value: str):
    """``column`` contains ``value`` literally: ``%`` and ``_`` are not wildcards."""
    return column.contains(value, autoescape=True)
