"""Times between the catalog and the domain: catalog times are naive UTC, the domain wants aware ones."""

from __future__ import annotations

from datetime import datetime, timezone

UTC = timezone.utc


def aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


def fmt(dt: datetime) -> str:
    """A time as users read it in reasons and messages."""
    return aware(dt).strftime("%Y-%m-%d %H:%M UTC")
