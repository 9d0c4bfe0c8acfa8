"""Reading orders and what hangs off them: the one place that knows where they are stored.

Writing them is shared/payments/orders.py's (and, for refunds, shared/payments/refunds.py's)
business."""

from __future__ import annotations

from typing import Any

from shared.payments.rules import OrderStatus
from shared.platform import clients, pagination, store

ORDERS = "orders"
MAX_PER_ORDER = 200  # refunds or ledger transactions of one order: a handful in practice


def order_ref(order_id: str) -> Any:
    return clients.db().collection(ORDERS).document(order_id)


def get(order_id: str) -> dict[str, Any] | None:
    return store.read_by_id(order_ref, order_id)


def by_paypal_id(paypal_order_id: str) -> dict[str, Any] | None:
    return _one("paypalOrderId", paypal_order_id)


def by_capture_id(capture_id: str) -> dict[str, Any] | None:
    return _one("captureId", capture_id)


def _one(field: str, value: str) -> dict[str, Any] | None:
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


def list_orders(
    *,
    patient_uid: str | None,
    provider_uid: str | None,
    status: OrderStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Orders newest first: a patient's, a provider's, or (neither given) all of them."""
    from google.cloud.firestore import FieldFilter, Query

    collection = clients.db().collection(ORDERS)
    query: Any = collection
    for name, value in (
        ("patientUid", patient_uid),
        ("providerUid", provider_uid),
        ("status", status.value if status else None),
    ):
        if value is not None:
            query = query.where(filter=FieldFilter(name, "==", value))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("createdAt", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [s.to_dict() for s in snaps], next_cursor
