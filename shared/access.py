"""Records of who read health data: every read of a prescription or an appointment's notes."""

from __future__ import annotations

from datetime import UTC, datetime

from shared import clients, context, store

COLLECTION = "accessEvents"


def record_reads(resources: list[str], *, reason: str) -> None:
    """One access event per resource path read by the current caller, in one batch."""
    if not resources:
        return
    ctx = context.current()
    principal = ctx.principal if ctx else None
    batch = clients.db().batch()
    now = datetime.now(UTC)
    for path in resources:
        store.create(
            clients.db().collection(COLLECTION).document(),
            {
                "kind": "read",
                "resource": path,
                "reason": reason,
                "actor": principal.uid if principal else "system",
                "role": principal.role.value if principal else None,
                "at": now,
            },
            tx=batch,
        )
    batch.commit()
