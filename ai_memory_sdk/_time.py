"""Times: every stored or shown time is UTC, and a naive ``datetime`` is taken to be UTC."""

from __future__ import annotations

from datetime import datetime, timezone


def as_utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC time; a naive one is read as UTC (what the API documents), not as local time."""
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
