"""The notification outbox: a notice is a document written in the same commit as its cause.

Every feature queues notices here and nothing else sends them, so a notice never goes out for
a change that did not commit, nor is a committed change ever left without its notice. The
notify function delivers what is queued (e-mail, SMS or push are never sent in a transaction).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.platform import clients, clock, store

NOTIFICATIONS = "notifications"


def queue(
    batch: Any,
    uid: str,
    to: str,
    kind: str,
    data: dict[str, Any],
    actor: str,
    *,
    notice_id: str | None = None,
    not_before: datetime | None = None,
    replace: bool = False,
) -> None:
    """Queue notice `kind` for user `uid` at address `to`, in `batch` (a transaction or batch).

    `to` is the e-mail address the cause knew (empty: the recipient's profile's); notify adds
    SMS and push as the recipient's preferences allow. `notice_id` makes the notice
    deterministic (a reminder that can be cancelled); `not_before` holds it until then;
    `replace` queues it afresh over an earlier one of that id (a reminder for a time that was
    cancelled and chosen again), which notify's sweep delivers when due.
    """
    now = clock.now()
    collection = clients.db().collection(NOTIFICATIONS)
    ref = collection.document(notice_id) if notice_id else collection.document()
    write = store.set if replace else store.create
    write(
        ref,
        {
            "uid": uid,
            "to": to,
            "kind": kind,
            "data": data,
            "status": "queued",
            "createdAt": now,
            # When notify's sweep should look at it (the trigger delivers it at once when due).
            "dueAt": max(not_before, now) if not_before else now,
            "notBefore": not_before,
        },
        tx=batch,
        by=actor,
    )


def cancel(batch: Any, notice_id: str, actor: str) -> None:
    """Cancel notice `notice_id` in `batch` (a reminder whose appointment was cancelled or
    moved): what has not gone out yet never will. Writes only, so it fits any transaction;
    a notice that was never queued is left as a cancelled stub."""
    store.set(
        clients.db().collection(NOTIFICATIONS).document(notice_id),
        {"cancelled": True, "cancelledAt": clock.now()},
        merge=True,
        tx=batch,
        by=actor,
    )


def reminder_id(appointment_id: str, start: datetime) -> str:
    """The id of an appointment's reminder for the time it starts (a new time, a new one)."""
    return f"reminder-{appointment_id}-{int(start.timestamp())}"
