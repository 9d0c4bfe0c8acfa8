"""Notices to the payer about their money, queued in the outbox in the same commit as the
payment or refund they tell of."""

from __future__ import annotations

from typing import Any

from shared.platform import outbox


def to_payer(tx: Any, order: dict[str, Any], kind: str, data: dict[str, Any]) -> None:
    """Queue notice `kind` to the order's payer in `tx`; none when we have no address."""
    if not order.get("patientEmail"):
        return
    outbox.queue(
        tx,
        order["patientUid"],
        order["patientEmail"],
        kind,
        {"orderId": order["id"], "currency": order["currency"], **data},
        "system",
    )
