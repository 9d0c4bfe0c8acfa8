"""Reading the domain event log (shared/platform/eventlog.py writes it) and its daily
aggregates: the admin feed and dashboards. Aggregates are summed from each day's counter
shards, never computed by scanning events."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from shared.notify import rules
from shared.platform import clients, eventlog, pagination

MAX_DAYS = 92


def feed(
    *, kind: str | None, uid: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first, of one kind and/or about one user."""
    from google.cloud.firestore import FieldFilter

    collection = clients.db().collection(eventlog.EVENTS)
    query: Any = collection
    if kind:
        query = query.where(filter=FieldFilter("kind", "==", kind))
    if uid:
        query = query.where(filter=FieldFilter("uid", "==", uid))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("at", "DESCENDING")], limit=limit, cursor=cursor
    )
    return [{**(s.to_dict() or {}), "id": s.id} for s in snaps], next_cursor


def days(start: date, end: date) -> list[dict[str, Any]]:
    """Each day's aggregates from `start` to `end`, inclusive (at most MAX_DAYS)."""
    count = (end - start).days + 1
    wanted = [(start + timedelta(days=i)).isoformat() for i in range(count)]
    db = clients.db()
    refs = [
        db.collection(eventlog.ANALYTICS).document(day).collection(eventlog.SHARDS).document(str(n))
        for day in wanted
        for n in range(eventlog.SHARD_COUNT)
    ]
    by_day: dict[str, list[dict[str, Any]]] = {day: [] for day in wanted}
    for snap in db.get_all(refs):
        if snap.exists:
            by_day[snap.reference.parent.parent.id].append(snap.to_dict() or {})
    return [rules.daily_summary(day, shards) for day, shards in by_day.items()]
