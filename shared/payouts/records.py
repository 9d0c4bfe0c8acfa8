"""Where payouts and payout profiles are stored, and reading them.

payouts/{payoutId}          one payout: provider, currency, amount, the orders it pays (its
                            statement), its state and what PayPal said of it
payoutProfiles/{uid}        a provider's payout address (verified), a pending change of it,
                            its cooling-off, an admin's hold on the provider
"""

from __future__ import annotations

from typing import Any

from shared.platform import clients, pagination, store

PAYOUTS = "payouts"
PROFILES = "payoutProfiles"


def payout_ref(payout_id: str) -> Any:
    return clients.db().collection(PAYOUTS).document(payout_id)


def profile_ref(uid: str) -> Any:
    return clients.db().collection(PROFILES).document(uid)


def get(payout_id: str) -> dict[str, Any] | None:
    return store.read_by_id(payout_ref, payout_id)


def profile(uid: str) -> dict[str, Any] | None:
    snap = profile_ref(uid).get()
    data: dict[str, Any] | None = snap.to_dict() if snap.exists else None
    return data


def by_field(field: str, value: str) -> dict[str, Any] | None:
    from google.cloud.firestore import FieldFilter

    query = clients.db().collection(PAYOUTS).where(filter=FieldFilter(field, "==", value))
    found = [s.to_dict() for s in query.limit(1).stream()]
    return found[0] if found else None


def with_status(statuses: list[str], *, limit: int) -> list[Any]:
    """Snapshots of payouts in these states (any order)."""
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection(PAYOUTS)
        .where(filter=FieldFilter("status", "in", statuses))
        .limit(limit)
    )
    return list(query.stream())


def list_payouts(
    *, provider_uid: str | None, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Payouts newest first: one provider's, or (None) everyone's."""
    from google.cloud.firestore import FieldFilter, Query

    collection = clients.db().collection(PAYOUTS)
    query: Any = collection
    for name, value in (("providerUid", provider_uid), ("status", status)):
        if value is not None:
            query = query.where(filter=FieldFilter(name, "==", value))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("createdAt", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [s.to_dict() for s in snaps], next_cursor
