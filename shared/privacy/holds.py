"""The end of a legal hold: `POST /privacy/holds/sweep` (Cloud Scheduler, daily) erases what
an erased account's hold (`legalHolds/{uid}`, written by shared.privacy.erasure) kept once
the retention of that part of it is over, by the business clock.

Per part of the hold (rules.hold_parts):
  collections.<name>  the account's records there (visit records and prescriptions: medical;
                      orders, refunds, payouts: financial). A record that names no one else is
                      deleted; one that names others too (the doctor of a patient's visit, the
                      provider of an order) is stripped of the account (its fields naming it,
                      and the health fields when it was the patient), and stays theirs.
  books               the ledger: its postings keep their amounts (every transaction still
                      balances, and the books of the other side stay whole), but the account's
                      name loses the uid (`patient_payments:erased`); the transactions' party
                      fields naming it are cleared; its ledgerAccounts and ledgerGuards records
                      (ids made of the uid) are deleted.
  auditLog            nothing is deleted: the audit log is append-only and kept by the export
                      bucket's retention policy; the part records that.

Each part finished is marked on the hold (`endedAt`, `erased` and `stripped` counts); the hold
is closed (`closedAt`, `nextEnd` null) when no part is left. Work per call is bounded (`limit`
records); a hold not finished is taken up again by the next call. A second run over what is
done finds nothing: deleted records are gone, stripped ones no longer name the account, and
finished parts are not looked at again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.audit.rules import HEALTH_FIELDS
from shared.platform import clients, clock, logs, store
from shared.privacy import rules

HOLDS = "legalHolds"
LEDGER = "ledger"
ENTRIES = "ledgerEntries"
ACCOUNTS = "ledgerAccounts"
GUARDS = "ledgerGuards"

log = logs.get("alodoktor.privacy")

_HOLDINGS = {h.collection: h for h in rules.HOLDINGS if h.treatment == "hold"}


def _db() -> Any:
    return clients.db()


def due(now: datetime, limit: int) -> list[Any]:
    """Holds with a part whose retention is over, the earliest first."""
    from google.cloud.firestore import FieldFilter

    query = (
        _db()
        .collection(HOLDS)
        .where(filter=FieldFilter("nextEnd", "<=", now))
        .order_by("nextEnd")
        .limit(limit)
    )
    return list(query.stream())


class _Budget:
    def __init__(self, records: int) -> None:
        self.left = records
        self.erased = 0
        self.stripped = 0


def sweep(limit: int, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """Erase up to `limit` held records whose retention is over at `now` (the business clock's
    time unless given)."""
    now = now or clock.now()
    budget = _Budget(limit)
    worked: list[str] = []
    closed: list[str] = []
    continuing: list[str] = []
    for snap in due(now, limit):
        if budget.left <= 0:
            continuing.append(snap.id)
            continue
        worked.append(snap.id)
        state = _sweep_hold(snap, now, budget, actor)
        if state == "closed":
            closed.append(snap.id)
        elif state == "continuing":
            continuing.append(snap.id)
    return {
        "holds": worked,
        "closed": closed,
        "continuing": continuing,
        "erased": budget.erased,
        "stripped": budget.stripped,
    }


def _sweep_hold(snap: Any, now: datetime, budget: _Budget, actor: str) -> str:
    """Finish the hold's ended parts: "closed" (nothing left), "continuing" (the budget ran
    out), or "waiting" (what is left ends later)."""
    from google.cloud import firestore

    uid = snap.id
    hold = snap.to_dict() or {}
    update: dict[str, Any] = {}
    finished: set[str] = set()
    for path, part in rules.hold_parts(hold):
        if not rules.part_ended(part, now):
            continue
        erased, stripped = budget.erased, budget.stripped
        complete = _end_part(path, part, uid, budget, actor)
        if budget.erased > erased:
            update[f"{path}.erased"] = firestore.Increment(budget.erased - erased)
        if budget.stripped > stripped:
            update[f"{path}.stripped"] = firestore.Increment(budget.stripped - stripped)
        if not complete:
            break
        update[f"{path}.endedAt"] = now
        if path == "auditLog":
            update[f"{path}.keptBy"] = rules.AUDIT_KEPT_BY
        finished.add(path)
    remaining = rules.next_end(hold, finished=frozenset(finished))
    update |= {"nextEnd": remaining} if remaining else {"nextEnd": None, "closedAt": now}
    store.update(_db().collection(HOLDS).document(uid), update, by=actor)
    if remaining is None:
        log.info("legal hold of %s closed", uid)
        return "closed"
    return "continuing" if remaining <= now else "waiting"


def _end_part(path: str, part: Mapping[str, Any], uid: str, budget: _Budget, actor: str) -> bool:
    """Erase what the part holds, within the budget; True when nothing of it is left."""
    if path == "auditLog":
        return True  # kept: rules.AUDIT_KEPT_BY
    if path == "books":
        accounts = [a for a in part.get("accounts", []) if isinstance(a, str)]
        return _end_books(uid, accounts, budget, actor)
    holding = _HOLDINGS.get(path.split(".", 1)[1])
    if holding is None:  # a collection no longer held: nothing this code knows to erase
        return True
    return _end_records(holding, uid, budget, actor)


def _end_records(holding: rules.Holding, uid: str, budget: _Budget, actor: str) -> bool:
    from google.cloud.firestore import FieldFilter

    collection = _db().collection(holding.collection)
    for field in holding.fields:
        if budget.left <= 0:
            return False
        query = collection.where(filter=FieldFilter(field, "==", uid)).limit(budget.left)
        for record in query.stream():
            data = record.to_dict() or {}
            stripped = rules.at_end(holding, data, uid, HEALTH_FIELDS)
            if stripped is None:
                store.delete(record.reference, by=actor)
                budget.erased += 1
            else:
                store.update(record.reference, stripped, by=actor)
                budget.stripped += 1
            budget.left -= 1
    # Every field's query came back short of the budget, or the budget ends exactly here:
    # a next call finds what is left, if anything.
    return budget.left > 0


def _end_books(uid: str, accounts: list[str], budget: _Budget, actor: str) -> bool:
    from google.cloud.firestore import FieldFilter

    db = _db()
    named = frozenset(accounts)
    for account in accounts:
        if budget.left <= 0:
            return False
        query = (
            db.collection(ENTRIES)
            .where(filter=FieldFilter("account", "==", account))
            .limit(budget.left)
        )
        for entry in query.stream():
            store.update(entry.reference, {"account": rules.erased_account(account)}, by=actor)
            budget.stripped += 1
            budget.left -= 1
    for field in ("patientUid", "providerUid"):
        if budget.left <= 0:
            return False
        query = db.collection(LEDGER).where(filter=FieldFilter(field, "==", uid))
        for tx in query.limit(budget.left).stream():
            store.update(
                tx.reference,
                rules.stripped_transaction(tx.to_dict() or {}, uid, named),
                by=actor,
            )
            budget.stripped += 1
            budget.left -= 1
    if budget.left <= 0:
        return False
    for account in accounts:
        ref = db.collection(ACCOUNTS).document(account.replace(":", "_"))
        snap = ref.get()
        if not snap.exists:
            continue
        for currency in (snap.to_dict() or {}).get("currencies", []):
            guard = db.collection(GUARDS).document(f"{account}_{currency}".replace(":", "_"))
            store.delete(guard, by=actor)
        store.delete(ref, by=actor)
        budget.erased += 1
        budget.left -= 1
    return True
