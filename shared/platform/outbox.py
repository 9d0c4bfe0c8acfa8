"""The notification outbox: a notice is a document written in the same commit as its cause.

Every feature queues notices here and nothing else sends them, so a notice never goes out for
a change that did not commit, nor is a committed change ever left without its notice. The
notify function delivers what is queued (e-mail, SMS or push are never sent in a transaction).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.platform import clients, store

NOTIFICATIONS = "notifications"


def queue(batch: Any, uid: str, to: str, kind: str, data: dict[str, Any], actor: str) -> None:
    """Queue notice `kind` for user `uid` at address `to`, in `batch` (a transaction or batch)."""
    ref = clients.db().collection(NOTIFICATIONS).document()
    store.create(
        ref,
        {
            "uid": uid,
            "to": to,
            "kind": kind,
            "data": data,
            "status": "queued",
            "createdAt": datetime.now(UTC),
        },
        tx=batch,
        by=actor,
    )
