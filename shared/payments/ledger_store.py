"""The ledger in Firestore: append-only transactions and their entries; balances are sums.

Collections:
  ledger/{txId}                 one balanced transaction (kind, order, its postings)
  ledgerEntries/{txId}-{n}      one posting each, so an account's entries are one query and
                                its balance one sum() aggregation over them
  ledgerAccounts/{account}      the currencies a party's account has entries in (so a balance
                                knows which sums to run); platform accounts have none, which
                                keeps every payment from writing one hot document. Every
                                movement of a party's money writes it, so its version is also
                                the guard of that party's debits (see owed_guarded)

Transaction ids derive from what caused them (`payment-{order}`, `refund-{refund}`; a
reversal: `reversal-{order}` for a chargeback of all the order held that PayPal names no id of,
`reversal-{order}-chargeback-{PayPal's id of it}` for one it names, `reversal-{refund}` for a
refund PayPal refused after a chargeback), and they are *created*, never set: a second attempt
to book the same movement fails its whole Firestore transaction instead of counting the money
twice. A part taken from PayPal's input is made fit for a document id first
(shared.payments.rules.id_part: no '/', bounded length).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

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
    guards = _guards.get(tx, {})
    for account in {
        p.account for p in transaction.postings if p.account.startswith(PARTY_PREFIXES)
    }:
        currencies = sorted({p.currency for p in transaction.postings if p.account == account})
        ref = account_ref(account)
        taken = sum(p.amount_minor for p in transaction.postings if p.account == account)
        if account.startswith("earnings:") and taken > 0 and account not in guards:
            # Unguarded, this debit could commit beside a racing one against the same balance.
            raise RuntimeError(f"{tx_id} debits {account}: read it with owed_guarded first")
        if account not in guards:  # a credit: it can only make a debit safer
            store.set(
                ref,
                {"account": account, "currencies": firestore.ArrayUnion(currencies)},
                merge=True,
                tx=tx,
                by="system",
            )
            continue
        # A debit: the account must still be as owed_guarded read it, or the batch fails.
        read_at = guards.pop(account)
        if read_at is None:
            store.create(ref, {"account": account, "currencies": currencies}, tx=tx, by="system")
        else:
            store.update(
                ref,
                {"currencies": firestore.ArrayUnion(currencies)},
                tx=tx,
                by="system",
                unchanged_since=read_at,
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


def account_ref(account: str) -> Any:
    return _db().collection(ACCOUNTS).document(account.replace(":", "_"))


def balances(account: str) -> dict[str, int]:
    """Currency -> balance of a party's account (credit balances come out negative)."""
    snap = account_ref(account).get()
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
# each read the same balance and together take more than it holds. So every such debit
# writes the provider's account document (which every movement of their money writes anyway)
# with a precondition on the version read before summing: of two racing debits only the first
# commits; the other reads again and sees it. A credit committing meanwhile also makes the
# debit read again, which costs a retry, never money. (Until issue 26 this was a separate
# `ledgerGuards` document: one more read and one more write per debit.)

# The accounts a batch debits, with the version owed_guarded read (None: no document yet);
# record() turns each into its precondition. Weak: a batch given up leaves nothing behind.
_guards: WeakKeyDictionary[Any, dict[str, Any]] = WeakKeyDictionary()


def owed_guarded(batch: Any, provider_account: str, currency: str, *, seen: Any = None) -> int:
    """What the provider is owed now, for a debit recorded (ledger_store.record) in `batch`, a
    write batch run by store.run_optimistic: the batch commits only if no movement of these
    earnings committed since this read; if one did, the commit fails and the body runs again.
    `seen`: the account's snapshot if the caller has just read it (a payout run reads every
    provider's at once); it must be read before the sum, as here."""
    snap = seen if seen is not None else account_ref(provider_account).get()
    owed_now = owed(provider_account, currency)  # after the version it is guarded by
    _guards.setdefault(batch, {})[provider_account] = snap.update_time if snap.exists else None
    return owed_now
