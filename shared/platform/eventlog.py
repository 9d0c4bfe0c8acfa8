"""The domain event log: one `events` document per thing that happened, in the commit of the
change that made it happen, with its day's aggregates counted in the same commit.

An event's id is its kind and its subject (`appointment_booked-<appointmentId>`), so a cause
can only ever log it once: a second commit of the same event fails its `create` and with it the
whole change, which the features already make impossible (each transition happens once). The
daily aggregates (`analytics/<YYYY-MM-DD>/shards/<n>`, UTC days) are increments spread over a
few shards, so busy days never contend on one document, and are read back by summing the
shards (shared/notify/activity.py): never by scanning events.

No health data here: an event names its subject and carries amounts and states only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.platform import clients, store

EVENTS = "events"
ANALYTICS = "analytics"
SHARDS = "shards"
SHARD_COUNT = 8

# The kinds of event the platform logs, and what each counts in its day's aggregates.
KINDS: frozenset[str] = frozenset(
    {
        "user_signed_up",
        "appointment_booked",
        "appointment_cancelled",
        "appointment_completed",
        "appointment_no_show",
        "booking_requested",
        "booking_answered",
        "booking_cancelled",
        "booking_no_show",
        "payment_captured",
        "refund_completed",
        "prescription_written",
        "prescription_dispensed",
        "payout_sent",
    }
)


def event_id(kind: str, subject_id: str) -> str:
    return f"{kind}-{subject_id}"


def shard_of(identifier: str) -> int:
    return int(hashlib.sha256(identifier.encode()).hexdigest()[:8], 16) % SHARD_COUNT


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def counters(kind: str, amount_minor: int | None, currency: str | None) -> dict[str, int]:
    """What one event adds to its day: its kind's count, and its money by currency."""
    added = {f"counts.{kind}": 1}
    if amount_minor is not None and currency:
        added[f"amounts.{kind}.{currency}"] = int(amount_minor)
    return added


def record(
    tx: Any,
    kind: str,
    subject: str,
    *,
    actor: str,
    at: datetime,
    uid: str | None = None,
    data: Mapping[str, Any] | None = None,
    amount_minor: int | None = None,
    currency: str | None = None,
    occurrence: str | None = None,
) -> None:
    """Log event `kind` about `subject` ("appointments/<id>") in `tx` (a transaction or a
    batch), and count it in its day's aggregates in the same commit. `occurrence` tells apart
    events a subject may have more than once (an account id reused after a deletion)."""
    from google.cloud import firestore

    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    subject_id = subject.rpartition("/")[2]
    identifier = event_id(kind, f"{subject_id}-{occurrence}" if occurrence else subject_id)
    day = day_of(at)
    db = clients.db()
    store.create(
        db.collection(EVENTS).document(identifier),
        {
            "kind": kind,
            "subject": subject,
            "uid": uid,
            "actor": actor,
            "at": at,
            "day": day,
            "data": dict(data or {}),
            "amountMinor": amount_minor,
            "currency": currency,
        },
        tx=tx,
        by=actor,
    )
    shard = (
        db.collection(ANALYTICS)
        .document(day)
        .collection(SHARDS)
        .document(str(shard_of(identifier)))
    )
    increments: dict[str, Any] = {"day": day}
    for path, value in counters(kind, amount_minor, currency).items():
        increments[path] = firestore.Increment(value)
    # Nested maps in a merge: each count is its own field, incremented where it stands.
    store.set(shard, _nested(increments), merge=True, tx=tx, by=actor)


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested
