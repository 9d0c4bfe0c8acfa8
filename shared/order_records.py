"""Reading orders and what hangs off them: the one place that knows where they are stored."""

from __future__ import annotations

from typing import Any

from shared import clients

ORDERS = "orders"
MAX_PER_ORDER = 200  # refunds or ledger transactions of one order: a handful in practice


def order_ref(order_id: str) -> Any:
    return clients.db().collection(ORDERS).document(order_id)


def get(order_id: str) -> dict[str, Any] | None:
    if not 1 <= len(order_id) <= 200:
        return None
    snap = order_ref(order_id).get()
    data: dict[str, Any] | None = snap.to_dict() if snap.exists else None
    return data


def find(field: str, value: str) -> dict[str, Any] | None:
    """The order whose `field` (paypalOrderId, captureId) is `value`, if any."""
    return next(iter(where(ORDERS, field, value, limit=1)), None)


def of_order(collection: str, order_id: str) -> list[dict[str, Any]]:
    """The documents of `collection` (refunds, ledger) that belong to an order, oldest first."""
    found = where(collection, "orderId", order_id, limit=MAX_PER_ORDER)
    return sorted(found, key=lambda d: d["createdAt"])


def where(collection: str, field: str, value: str, *, limit: int) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    query = clients.db().collection(collection).where(filter=FieldFilter(field, "==", value))
    found: list[dict[str, Any]] = [s.to_dict() or {} for s in query.limit(limit).stream()]
    return found
