"""Opaque list cursors: the sort values of the last item returned, plus its document id."""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import UTC, datetime
from typing import Any

from shared.platform import ids
from shared.platform.errors import BadRequest
from shared.platform.fields import INT64_MAX, INT64_MIN

MAX_CURSOR_CHARS = 512


def encode(values: list[Any], doc_id: str) -> str:
    parts = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    raw = json.dumps([parts, doc_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[list[Any], str]:
    bad = BadRequest("The cursor is not one this API returned.", code="invalid_cursor")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad
    try:
        parts, doc_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values = [
            datetime.fromisoformat(p["t"]) if isinstance(p, dict) and set(p) == {"t"} else p
            for p in parts
        ]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(doc_id, str) or not ids.DOC_ID.fullmatch(doc_id):
        raise bad
    if not all(_storable(v) for v in values):
        raise bad
    return values, doc_id


def _storable(value: Any) -> bool:
    """Whether a cursor's sort value is one a listing could have returned, and one a query can
    compare with: a crafted cursor's 10**20 or nested object is refused, not sent to Firestore
    (whose client fails on an int past int64, or a time that leaves its years in UTC: a 500)."""
    if isinstance(value, datetime):
        try:  # Firestore's timestamps are years 1 to 9999 in UTC; +14:00 on 0001-01-01 is not
            value.astimezone(UTC)
        except (OverflowError, ValueError):
            return False
        return True
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    return isinstance(value, float) and math.isfinite(value)


def run_page(
    collection: Any,
    query: Any,
    order: list[tuple[str, str]],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of `query` ordered by `order` (field, "ASCENDING"|"DESCENDING"), then by id.

    Returns the snapshots and the cursor of the next page (None on the last page).
    """
    for field_path, direction in order:
        query = query.order_by(field_path, direction=direction)
    last_direction = order[-1][1] if order else "ASCENDING"
    query = query.order_by("__name__", direction=last_direction)
    if cursor:
        values, doc_id = decode(cursor)
        if len(values) != len(order):
            raise BadRequest("The cursor belongs to another listing.", code="invalid_cursor")
        position = {f: v for (f, _), v in zip(order, values, strict=True)}
        position["__name__"] = collection.document(doc_id)
        query = query.start_after(position)
    snaps = list(query.limit(limit + 1).stream())
    page = snaps[:limit]
    if len(snaps) <= limit:
        return page, None
    last = page[-1]
    return page, encode([_field(last, f) for f, _ in order], last.id)


def _field(snap: Any, path: str) -> Any:
    value = snap.to_dict()
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
