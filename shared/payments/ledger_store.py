"""The ledger in Firestore: append-only transactions and their entries; balances are sums.

Collections:
  ledger/{txId}                 one balanced transaction (kind, order, its postings)
  ledgerEntries/{txId}-{n}      one posting each, so an account's entries are one query and
                                its balance one sum() aggregation over them
  ledgerAccounts/{account}      the currencies a party's account has entries in (so a balance
                                knows which sums to run); platform accounts have none, which
                                keeps every payment from writing one hot document

Transaction ids derive from what caused them (`payment-{order}`, `refund-{refund}`,
`reversal-{order}`), and they are *created*, never set: a second attempt to book the same
movement fails its whole Firestore transaction instead of counting the money twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.payments import ledger
from shared.platform import clients, clock, pagination, store

LEDGER = "ledger"
ENTRIES = "ledgerEntries"
ACCOUNTS = "ledgerAccounts"
PARTY_PREFIXES = ("earnings:", "patient_payments:")


def _db() -> Any:
    return clients.db()


def record(
    tx: Any,
    tx_id: str,
    transaction: ledger.Transaction,
    *,
    order_id: str,
    parties: dict[str, str],
    at: datetime | None = None,
) -> None:
    """Write a balanced transaction and its entries inside the Firestore transaction `tx`."""
    from google.cloud import firestore

    when = at or clock.now()
    postings: list[dict[str, Any]] = [
        {"account": p.account, "amountMinor": p.amount_minor, "currency": p.currency}
        for p in transaction.postings
    ]
    store.create(
        _db().collection(LEDGER).document(tx_id),
        {
            "id": tx_id,
            "kind": transaction.kind,
            "orderId": order_id,
            "postings": postings,
            **parties,
            "createdAt": when,
        },
        tx=tx,
        by="system",
    )
    for n, posting in enumerate(postings):
        store.create(
            _db().collection(ENTRIES).document(f"{tx_id}-{n}"),
            {**posting, "txId": tx_id, "kind": transaction.kind, "orderId": order_id, "at": when},
            tx=tx,
            by="system",
        )
    for account in {
        p.account for p in transaction.postings if p.account.startswith(PARTY_PREFIXES)
    }:
        currencies = sorted({p.currency for p in transaction.postings if p.account == account})
        store.set(
            _db().collection(ACCOUNTS).document(account.replace(":", "_")),
            {"account": account, "currencies": firestore.ArrayUnion(currencies)},
            merge=True,
            tx=tx,
            by="system",
        )


def balance(account: str, currency: str, *, tx: Any = None) -> int:
    """The sum of an account's entries in one currency (debit positive)."""
    from google.cloud.firestore import FieldFilter

    query = (
        _db()
        .collection(ENTRIES)
        .where(filter=FieldFilter("account", "==", account))
        .where(filter=FieldFilter("currency", "==", currency))
    )
    result = query.sum("amountMinor", alias="total").get(transaction=tx)
    value = result[0][0].value if result and result[0] else 0
    return int(value or 0)


def owed(provider_account: str, currency: str, *, tx: Any = None) -> int:
    """What the platform owes a provider in one currency (their earnings' credit balance)."""
    return -balance(provider_account, currency, tx=tx)


def balances(account: str) -> dict[str, int]:
    """Currency -> balance of a party's account (credit balances come out negative)."""
    snap = _db().collection(ACCOUNTS).document(account.replace(":", "_")).get()
    currencies = (snap.to_dict() or {}).get("currencies", []) if snap.exists else []
    return {c: balance(account, c) for c in sorted(currencies)}


def entries(
    account: str | None, *, limit: int, cursor: str | None, order_id: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """An account's entries (every entry when None), newest first."""
    from google.cloud.firestore import FieldFilter, Query

    collection = _db().collection(ENTRIES)
    query: Any = collection
    if account is not None:
        query = query.where(filter=FieldFilter("account", "==", account))
    if order_id is not None:
        query = query.where(filter=FieldFilter("orderId", "==", order_id))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("at", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [{**s.to_dict(), "id": s.id} for s in snaps], next_cursor


def transactions_of(order_id: str) -> list[dict[str, Any]]:
    """Every ledger transaction an order caused, oldest first."""
    from shared.payments import records as order_records

    return order_records.of_order(LEDGER, order_id)


# -- the per-provider guard (issue 15) ----------------------------------------------------
# Balances are sums of entries, read without locks. Two movements that each take from one
# provider's earnings (a payout being recorded, a refund or chargeback being booked) could
# each read the same balance and together take more than it holds. So every such debit also
# writes the provider's guard document, with a precondition on the version it read before
# summing: of two racing debits only the first commits; the other reads again and sees it.
# Credits (payments, returned payouts) need no guard: they can only make a debit safer.

GUARDS = "ledgerGuards"


def guard_ref(provider_account: str, currency: str) -> Any:
    return _db().collection(GUARDS).document(f"{provider_account}_{currency}".replace(":", "_"))


def owed_guarded(batch: Any, provider_account: str, currency: str) -> int:
    """What the provider is owed now, for a debit committed in `batch` (a write batch run by
    store.run_optimistic): the batch commits only if no other guarded debit of these earnings
    committed since this read; if one did, the commit fails and the body runs again."""
    from google.cloud import firestore

    ref = guard_ref(provider_account, currency)
    snap = ref.get()  # first, so that a debit committing after it fails our precondition
    owed_now = owed(provider_account, currency)
    if snap.exists:
        store.update(
            ref,
            {"debits": firestore.Increment(1)},
            tx=batch,
            by="system",
            unchanged_since=snap.update_time,
        )
    else:
        made = {"account": provider_account, "currency": currency, "debits": 1}
        store.create(ref, made, tx=batch, by="system")
    return owed_now
