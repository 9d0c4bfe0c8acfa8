"""What became of a payout at PayPal, and what admins do about it.

PayPal tells by webhook (`receive`: verified with PayPal's verify-webhook-signature API for
the payouts webhook, deduplicated by event id in `paypalEvents`) and by being asked (`sweep`:
every payout PayPal has that is not final, and paid ones for `WATCH_DAYS`, since PayPal sends
no webhook when a paid item is reversed). Both end in `apply_item`, which moves a payout only
forward (rules.after_item), so duplicated or out-of-order news does no harm, and books the
money once (ledger ids derive from the payout):

  SUCCESS                    payouts_in_transit -> out of PayPal's balance (`payout_paid`)
  FAILED, RETURNED, BLOCKED  payouts_in_transit -> the provider's earnings, owed again
  REVERSED, REFUNDED (paid)  PayPal's balance -> the provider's earnings, owed again
  UNCLAIMED                  still in transit; the provider is told to claim it, and after
                             PAYOUT_UNCLAIMED_CANCEL_DAYS the sweep cancels it (RETURNED)

Money that comes back also unmarks the payout's orders, so the next payout pays them. It
first pays back what the platform lost meanwhile on the provider's earnings: a chargeback or
refund booked while the money was away found nothing to take (the earnings were in transit)
and booked the shortfall to `platform_losses`; had the money not been away, it would have
taken it from there. So the losses booked since the payout was recorded (the provider's, in
its currency, less what earlier returns recovered of them) go back from the earnings
(`payout-recovered-{payout}`, recorded in the payout's `recoveredLosses`), and only the
rest is owed again. While a payout stays paid, its losses stay booked: they were real.
`check_transit` (daily) compares the ledger's money in transit with the open payouts.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from shared.integrations import paypal
from shared.payments import ledger, ledger_store
from shared.payments import records as order_records
from shared.payments import webhooks as payment_webhooks
from shared.payouts import notices, records, rules, scheduling
from shared.payouts.rules import Status
from shared.platform import clients, clock, eventlog, logs, settings, store
from shared.platform.errors import BadRequest, Conflict, NotFound
from shared.platform.ids import DOC_ID
from shared.platform.money import EXPONENTS, Money

log = logs.get("alodoktor.payouts")

WATCH_DAYS = 30  # how long a paid payout is still asked about (a reversal has no webhook)
STALE = timedelta(minutes=30)  # a task that has not sent its payout by then is enqueued anew
EVENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_LOSS_ENTRIES = 1000  # `platform_losses` entries read since a returned payout was recorded
# PayPal's answers to cancelling an item that is no longer unclaimed (claimed, or returned).
ITEM_MOVED_ON = frozenset({"ITEM_INCORRECT_STATUS", "ITEM_ALREADY_CANCELLED"})


# -- applying PayPal's news ------------------------------------------------------------------


def apply_item(payout_id: str, item: dict[str, Any], *, batch_status: str | None = None) -> str:
    """Apply what PayPal says of the payout's item (and batch); returns the payout's status."""
    item_status = str(item.get("transaction_status") or "")
    now = clock.now()

    def body(batch: Any) -> str:
        snap = records.payout_ref(payout_id).get()
        if not snap.exists:
            return "unknown_payout"
        payout: dict[str, Any] = snap.to_dict()
        current = Status(payout["status"])
        target = rules.after_item(current, item_status) if item_status else None
        if target is None and batch_status:
            target = rules.after_batch(current, batch_status)
        change: dict[str, Any] = {}
        for name, value in (
            ("paypalItemId", item.get("payout_item_id")),
            ("paypalBatchId", item.get("payout_batch_id")),
        ):
            if value and not payout.get(name):
                change[name] = value
        if target is None:
            if change:
                store.update(
                    snap.reference,
                    {**change, "updatedAt": now},
                    tx=batch,
                    by="paypal",
                    unchanged_since=snap.update_time,
                )
            return current.value
        change |= {
            "status": target.value,
            "itemStatus": item_status or None,
            "leaseUntil": None,
            "updatedAt": now,
        }
        _book(batch, payout, target, item, now, change)
        store.update(
            snap.reference, change, tx=batch, by="paypal", unchanged_since=snap.update_time
        )
        return target.value

    result: str = store.run_optimistic(body, attempts=10)
    return result


def _book(
    batch: Any,
    payout: dict[str, Any],
    target: Status,
    item: dict[str, Any],
    now: datetime,
    change: dict[str, Any],
) -> None:
    """The ledger entries, order marks and notices of one move (writes only, in `batch`)."""
    pid, uid = payout["id"], payout["providerUid"]
    currency, amount = payout["currency"], int(payout["amountMinor"])
    shown = {"payoutId": pid, "currency": currency, "amount": Money(currency, amount).value}
    if target is Status.PAID:
        fee = _fee_minor(item, currency)
        ledger_store.record(
            batch,
            f"payout-paid-{pid}",
            ledger.payout_paid(amount, currency, fee),
            order_id=pid,
            parties={"providerUid": uid},
            at=now,
        )
        change |= {"paidAt": now, "feeMinor": fee}
        eventlog.record(
            batch,
            "payout_sent",
            f"payouts/{pid}",
            actor="paypal",
            at=now,
            uid=uid,
            amount_minor=amount,
            currency=currency,
        )
        notices.to_provider(batch, uid, "payout_sent", shown)
    elif target in (Status.RETURNED, Status.REVERSED):
        taken_back = target is Status.REVERSED
        transaction = (
            ledger.payout_reversed(payout["providerAccount"], amount, currency)
            if taken_back
            else ledger.payout_returned(payout["providerAccount"], amount, currency)
        )
        tx_id = f"payout-{'reversed' if taken_back else 'returned'}-{pid}"
        change |= _book_return(batch, payout, tx_id, transaction, now)
        _unmark_orders(batch, payout)
        change |= {"returnedAt": now}
        notices.to_provider(batch, uid, "payout_returned", {**shown, "reason": target.value})
        if taken_back:
            notices.alert_admins(
                batch,
                "payout_reversed",
                f"PayPal took back paid payout {pid} ({item.get('transaction_status')}).",
                {"payoutId": pid},
            )
    elif target is Status.UNCLAIMED:
        change["unclaimedSince"] = now
        notices.to_provider(
            batch, uid, "payout_unclaimed", {**shown, "receiver": payout.get("receiver")}
        )


def _fee_minor(item: dict[str, Any], currency: str) -> int:
    fee = item.get("payout_item_fee") or {}
    if not isinstance(fee, dict) or fee.get("currency") != currency:
        return 0  # a fee in another currency is PayPal's conversion's business, not booked here
    with contextlib.suppress(Exception):
        return max(Money.parse(currency, str(fee.get("value", "0"))).amount_minor, 0)
    return 0


def _book_return(
    batch: Any,
    payout: dict[str, Any],
    tx_id: str,
    transaction: ledger.Transaction,
    now: datetime,
) -> dict[str, Any]:
    """Book the payout's money back in the provider's earnings (`transaction`, as `tx_id`),
    less what pays back the losses the platform booked meanwhile; returns the payout's fields
    that record the recovery (none when nothing was recovered)."""
    pid, uid = payout["id"], payout["providerUid"]
    account, currency = payout["providerAccount"], payout["currency"]
    # The guard is read before the losses: a loss booked after this read writes the provider's
    # account document too, so this commit fails and the body reads the losses again.
    ledger_store.owed_guarded(batch, account, currency)
    since = payout.get("createdAt")
    losses = _losses_since(account, currency, since) if isinstance(since, datetime) else []
    taken = rules.recoveries(losses, int(payout["amountMinor"]))
    recovered = sum(part for _, part in taken)
    parties = {"providerUid": uid}
    if recovered:  # the debit first: it is the one the guard is for
        ledger_store.record(
            batch,
            f"payout-recovered-{pid}",
            ledger.loss_recovered(account, recovered, currency),
            order_id=pid,
            parties=parties,
            at=now,
        )
    ledger_store.record(batch, tx_id, transaction, order_id=pid, parties=parties, at=now)
    if not recovered:
        return {}
    log.info("payout %s: %d of its money paid back the platform's losses", pid, recovered)
    return {
        "recoveredMinor": recovered,
        "recoveredLosses": [
            {"txId": loss.tx_id, "orderId": loss.order_id, "amountMinor": part}
            for loss, part in taken
        ],
    }


def _losses_since(account: str, currency: str, since: datetime) -> list[rules.Loss]:
    """The losses booked on the provider's earnings in `currency` since `since`, each with
    what earlier returned payouts recovered of it. Losses are rare: all of the platform's
    since then are read (one query on `platform_losses`), then their transactions."""
    from google.cloud.firestore import FieldFilter, Query

    db = clients.db()
    query = (
        db.collection(ledger_store.ENTRIES)
        .where(filter=FieldFilter("account", "==", ledger.LOSSES))
        .where(filter=FieldFilter("at", ">=", since))
        .order_by("at", direction=Query.DESCENDING)
        .limit(MAX_LOSS_ENTRIES)
    )
    entries = [s.to_dict() or {} for s in query.stream()]
    if len(entries) >= MAX_LOSS_ENTRIES:
        log.warning(
            "more than %d losses since %s: the oldest are not recovered", len(entries), since
        )
    tx_ids = sorted({str(e["txId"]) for e in entries if e.get("currency") == currency})
    if not tx_ids:
        return []
    refs = [db.collection(ledger_store.LEDGER).document(t) for t in tx_ids]
    theirs = [
        t
        for t in (s.to_dict() or {} for s in db.get_all(refs) if s.exists)
        if any(
            p.get("account") == account and p.get("currency") == currency
            for p in t.get("postings") or []
        )
    ]
    recovered: dict[str, int] = defaultdict(int)
    recovering = sorted({str(t["orderId"]) for t in theirs if t.get("kind") == "loss_recovered"})
    for snap in db.get_all([records.payout_ref(p) for p in recovering]) if recovering else []:
        for part in (snap.to_dict() or {}).get("recoveredLosses") or []:
            recovered[str(part["txId"])] += int(part["amountMinor"])
    losses = []
    for t in theirs:
        if t.get("kind") == "loss_recovered":
            continue
        lost = sum(
            int(p["amountMinor"])
            for p in t.get("postings") or []
            if p.get("account") == ledger.LOSSES and p.get("currency") == currency
        )
        if lost > 0:
            losses.append(
                rules.Loss(t["id"], str(t.get("orderId")), t["createdAt"], lost, recovered[t["id"]])
            )
    return losses


def _unmark_orders(batch: Any, payout: dict[str, Any]) -> None:
    """The money came back: the orders it paid are owed again, for the next payout."""
    for line in payout.get("lines") or []:
        store.update(
            order_records.order_ref(line["orderId"]), {"payoutId": None}, tx=batch, by="system"
        )


def reconcile(payout: dict[str, Any]) -> str:
    """Ask PayPal about the payout's batch and apply what it says."""
    batch_id = payout.get("paypalBatchId")
    if not batch_id:
        return str(payout["status"])
    found = paypal.get().get_payout_batch(batch_id)
    status = str((found.get("batch_header") or {}).get("batch_status") or "")
    outcome = str(payout["status"])
    for item in found.get("items") or []:
        outcome = apply_item(payout["id"], item, batch_status=status)
    if not found.get("items"):
        outcome = apply_item(payout["id"], {}, batch_status=status)
    return outcome


# -- webhooks ----------------------------------------------------------------------------------


def receive(headers: dict[str, str], event: dict[str, Any]) -> dict[str, Any]:
    """Verify, deduplicate and apply one PAYMENT.PAYOUTS* delivery; returns what happened."""
    from google.api_core.exceptions import AlreadyExists

    event_id = str(event.get("id", ""))
    if not EVENT_ID.fullmatch(event_id):
        raise BadRequest("The event has no usable id.", code="webhook_invalid")
    resource = event.get("resource")
    if not isinstance(resource, dict):
        raise BadRequest("The event has no resource.", code="webhook_invalid")
    try:
        verified = paypal.get().verify_webhook(
            headers, event, webhook_id=settings.get().paypal_payouts_webhook_id
        )
    except paypal.PayPalUnavailable:
        raise  # 503: PayPal delivers again later
    except paypal.PayPalError as exc:
        log.warning("PayPal would not verify payout webhook %s: %s", event_id, exc)
        verified = False
    if not verified:
        log.warning("unverified payout webhook %s (%s)", event_id, event.get("event_type"))
        raise BadRequest("PayPal did not verify this webhook.", code="webhook_unverified")
    ref = clients.db().collection(payment_webhooks.EVENTS).document(event_id)
    seen = ref.get()
    if seen.exists:
        return {"eventId": event_id, "outcome": (seen.to_dict() or {})["outcome"], "replayed": True}
    outcome = _apply_event(str(event.get("event_type", "")), resource)
    with contextlib.suppress(AlreadyExists):  # a concurrent delivery recorded it first
        store.create(
            ref,
            {
                "id": event_id,
                "eventType": event.get("event_type"),
                "resourceId": resource.get("payout_item_id")
                or (resource.get("batch_header") or {}).get("payout_batch_id"),
                "outcome": outcome,
                "receivedAt": clock.now(),
            },
            by="paypal",
        )
    log.info("payout webhook %s %s: %s", event_id, event.get("event_type"), outcome)
    return {"eventId": event_id, "outcome": outcome, "replayed": False}


def _apply_event(event_type: str, resource: dict[str, Any]) -> str:
    if event_type.startswith("PAYMENT.PAYOUTS-ITEM."):
        payout = _payout_of(
            resource.get("sender_batch_id"),
            resource.get("payout_batch_id"),
            resource.get("payout_item_id"),
        )
        if payout is None:
            log.warning("payout webhook for an item we do not know: %s", resource)
            return "unknown_payout"
        if not isinstance(resource.get("transaction_status"), str):
            return "ignored"
        return apply_item(payout["id"], resource)
    if event_type.startswith("PAYMENT.PAYOUTSBATCH."):
        header = resource.get("batch_header") if "batch_header" in resource else resource
        header = header if isinstance(header, dict) else {}
        sender = (header.get("sender_batch_header") or {}).get("sender_batch_id")
        payout = _payout_of(sender, header.get("payout_batch_id"), None)
        if payout is None:
            return "unknown_payout"
        if not payout.get("paypalBatchId") and isinstance(header.get("payout_batch_id"), str):
            payout = {**payout, "paypalBatchId": header["payout_batch_id"]}
        # The batch's events carry no items (PayPal's note): ask for them.
        try:
            return reconcile(payout)
        except paypal.PayPalUnavailable:
            raise  # 503: PayPal delivers the event again later
        except paypal.PayPalError as exc:
            log.warning("payout %s: PayPal would not show its batch: %s", payout["id"], exc)
            return "batch_unreadable"  # the sweep asks again
    return "ignored"


def _payout_of(sender_batch_id: Any, batch_id: Any, item_id: Any) -> dict[str, Any] | None:
    # Our sender_batch_ids are payout ids; another's (a reserved `__x__`, a slashed `a/b`)
    # could not even be looked up as a document: it is not ours, whatever PayPal's ids say.
    if isinstance(sender_batch_id, str) and sender_batch_id:
        if not DOC_ID.fullmatch(sender_batch_id):
            return None
        found = records.get(sender_batch_id)
        if found is not None:
            return found
    for field, value in (("paypalBatchId", batch_id), ("paypalItemId", item_id)):
        if isinstance(value, str) and value:
            found = records.by_field(field, value)
            if found is not None:
                return found
    return None


# -- the sweep -------------------------------------------------------------------------------


def sweep(*, limit: int, now: datetime | None = None) -> dict[str, int | bool]:
    """Ask PayPal about payouts not yet final; cancel items unclaimed too long; enqueue anew
    payouts whose task gave up. Returns counts (`more`: call again)."""
    at = now or clock.now()
    days = settings.get().payout_unclaimed_cancel_days
    asked = changed = cancelled = redispatched = failed = 0
    open_snaps = records.with_status([s.value for s in rules.WITH_PAYPAL], limit=limit)
    candidates = [s.to_dict() for s in open_snaps] + _watched_paid(at, limit)
    candidates += _stale_scheduled(at, limit)
    for payout in candidates[:limit]:
        try:
            status = Status(payout["status"])
            if status is Status.SCHEDULED or (
                status is Status.SENDING and not payout.get("paypalBatchId")
            ):
                if _stale(payout, at) and _redispatch(payout, at):
                    redispatched += 1
                continue
            asked += 1
            before = payout["status"]
            if status is Status.UNCLAIMED and rules.unclaimed_due(
                payout.get("unclaimedSince"), at, days
            ):
                if not payout.get("paypalItemId"):
                    reconcile(payout)  # learn the item's id first
                    payout = records.get(payout["id"]) or payout
                item, made = _cancel_item(payout["paypalItemId"])
                cancelled += int(made)
                after = apply_item(payout["id"], item)
            else:
                after = reconcile(payout)
            changed += int(after != before)
        except paypal.PayPalUnavailable:
            log.warning("the payout sweep stops: PayPal is unavailable")
            failed += 1
            break
        except Exception:  # one payout's trouble must not hold up the others
            log.exception("payout %s could not be reconciled", payout.get("id"))
            failed += 1
    return {
        "asked": asked,
        "changed": changed,
        "cancelled": cancelled,
        "redispatched": redispatched,
        "failed": failed,
        "more": len(candidates) > limit,
    }


def _cancel_item(item_id: str) -> tuple[dict[str, Any], bool]:
    """Cancel an unclaimed item; returns PayPal's item and whether this call cancelled it.
    An item PayPal has moved on meanwhile (claimed late, or returned by PayPal itself, with
    its webhook lost) cannot be cancelled: then it is read as it stands, to be reconciled."""
    client = paypal.get()
    try:
        return client.cancel_payout_item(item_id), True
    except paypal.PayPalUnavailable:
        raise
    except paypal.PayPalError as exc:
        if exc.name not in ITEM_MOVED_ON and exc.issue not in ITEM_MOVED_ON:
            raise
        log.info("payout item %s is no longer unclaimed (%s): reading it", item_id, exc)
    return client.get_payout_item(item_id), False


def _watched_paid(now: datetime, limit: int) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection(records.PAYOUTS)
        .where(filter=FieldFilter("status", "==", Status.PAID.value))
        .where(filter=FieldFilter("paidAt", ">=", now - timedelta(days=WATCH_DAYS)))
        .limit(limit)
    )
    return [s.to_dict() or {} for s in query.stream()]


def _stale_scheduled(now: datetime, limit: int) -> list[dict[str, Any]]:
    return [
        s.to_dict()
        for s in records.with_status([Status.SCHEDULED.value], limit=limit)
        if _stale(s.to_dict(), now)
    ]


def _stale(payout: dict[str, Any], now: datetime) -> bool:
    """A task that should have sent this payout by now gave up (or never came)."""
    lease = payout.get("leaseUntil")
    if isinstance(lease, datetime) and lease > now:
        return False
    since = payout.get("updatedAt")  # when it was recorded or last dispatched
    return isinstance(since, datetime) and since + STALE <= now


def _redispatch(payout: dict[str, Any], now: datetime) -> bool:
    """Enqueue a new task (a new name) for a payout whose task is gone; the worker resumes a
    `sending` one with its same PayPal-Request-Id."""

    def body(batch: Any) -> dict[str, Any] | None:
        snap = records.payout_ref(payout["id"]).get()
        current: dict[str, Any] = snap.to_dict()
        if current["status"] != payout["status"] or not _stale(current, now):
            return None
        change = {
            "dispatch": int(current.get("dispatch", 0)) + 1,
            "updatedAt": now,
        }
        store.update(
            snap.reference, change, tx=batch, by="system", unchanged_since=snap.update_time
        )
        return {**current, **change}

    again: dict[str, Any] | None = store.run_optimistic(body)
    if again is None:
        return False
    scheduling.dispatch(again)
    return True


# -- the daily check ---------------------------------------------------------------------------


def check_transit() -> dict[str, Any]:
    """Whether the money the ledger holds in transit is exactly the open payouts' sum, per
    currency, read at one moment; if not, admins are alerted."""
    from google.cloud import firestore

    def read(tx: Any) -> tuple[dict[str, int], dict[str, int]]:
        from google.cloud.firestore import FieldFilter

        open_minor: dict[str, int] = {}
        query = (
            clients.db()
            .collection(records.PAYOUTS)
            .where(filter=FieldFilter("status", "in", [s.value for s in rules.IN_TRANSIT]))
        )
        for snap in query.stream(transaction=tx):
            doc = snap.to_dict() or {}
            open_minor[doc["currency"]] = open_minor.get(doc["currency"], 0) + int(
                doc["amountMinor"]
            )
        ledger_minor = {
            c: ledger_store.balance(ledger.IN_TRANSIT, c, tx=tx) for c in sorted(EXPONENTS)
        }
        return {c: v for c, v in ledger_minor.items() if v}, open_minor

    snapshot = firestore.transactional(read)
    ledger_minor, open_minor = snapshot(clients.db().transaction(read_only=True))
    mismatches = rules.transit_mismatches(ledger_minor, open_minor)
    report = {
        "currencies": sorted(set(ledger_minor) | set(open_minor)),
        "mismatches": [
            {
                "currency": c,
                "inTransit": Money(c, pair[0]).value,
                "openPayouts": Money(c, pair[1]).value,
            }
            for c, pair in mismatches.items()
        ],
    }
    if mismatches:
        batch = clients.db().batch()
        notices.alert_admins(
            batch,
            "payouts_in_transit_mismatch",
            f"Money in transit does not match the open payouts: {report['mismatches']}",
            {"mismatches": report["mismatches"]},
        )
        batch.commit()
    return report


# -- admins' actions ---------------------------------------------------------------------------


def hold(payout_id: str, reason: str) -> dict[str, Any]:
    """Keep a payout PayPal does not have yet from being sent."""
    now = clock.now()

    def body(batch: Any) -> dict[str, Any]:
        snap = records.payout_ref(payout_id).get()
        if not snap.exists:
            raise NotFound("No such payout.", code="payout_not_found")
        payout: dict[str, Any] = snap.to_dict()
        status = Status(payout["status"])
        if status is Status.HELD:
            return payout
        if status is not Status.SCHEDULED:
            # (A refused one waits for an admin anyway: retry or cancel it.)
            raise Conflict(f"A {status.value} payout cannot be held.", code="payout_not_holdable")
        change = {
            "status": Status.HELD.value,
            "holdReason": "admin",
            "holdNote": reason,
            "updatedAt": now,
        }
        store.update(snap.reference, change, tx=batch, unchanged_since=snap.update_time)
        return {**payout, **change}

    result: dict[str, Any] = store.run_optimistic(body)
    return result


def release(payout_id: str) -> dict[str, Any]:
    """A held payout is sent after all (a new task)."""
    return _again(payout_id, (Status.HELD,), new_attempt=False, code="payout_not_held")


def retry(payout_id: str) -> dict[str, Any]:
    """Send a payout PayPal refused once more (a new attempt: a new PayPal-Request-Id, the
    same sender_batch_id), e.g. after PayPal's balance was topped up."""
    return _again(payout_id, (Status.REFUSED,), new_attempt=True, code="payout_not_refused")


def _again(
    payout_id: str, states: tuple[Status, ...], *, new_attempt: bool, code: str
) -> dict[str, Any]:
    now = clock.now()
    again = scheduling.reschedule(payout_id, from_statuses=states, now=now, new_attempt=new_attempt)
    if again is None:
        current = records.get(payout_id)
        if current is None:
            raise NotFound("No such payout.", code="payout_not_found")
        raise Conflict(f"This payout is {current['status']}.", code=code)
    try:
        scheduling.dispatch(again)
    except Exception:  # scheduled: the next run enqueues it
        log.exception("payout %s rescheduled but not enqueued", payout_id)
    return records.get(payout_id) or again


def cancel(payout_id: str, reason: str) -> dict[str, Any]:
    """Give up a payout PayPal does not have (held or refused): its money goes back to the
    provider's earnings, and its orders to the next payout."""
    now = clock.now()

    def body(batch: Any) -> dict[str, Any]:
        snap = records.payout_ref(payout_id).get()
        if not snap.exists:
            raise NotFound("No such payout.", code="payout_not_found")
        payout: dict[str, Any] = snap.to_dict()
        status = Status(payout["status"])
        if status is Status.CANCELLED:
            return payout
        if status not in (Status.SCHEDULED, Status.HELD, Status.REFUSED):
            raise Conflict(
                f"A {status.value} payout cannot be cancelled.", code="payout_not_cancellable"
            )
        recovery = _book_return(
            batch,
            payout,
            f"payout-returned-{payout_id}",
            ledger.payout_returned(
                payout["providerAccount"], int(payout["amountMinor"]), payout["currency"]
            ),
            now,
        )
        _unmark_orders(batch, payout)
        change = {
            "status": Status.CANCELLED.value,
            "cancelNote": reason,
            "returnedAt": now,
            "updatedAt": now,
            **recovery,
        }
        store.update(snap.reference, change, tx=batch, unchanged_since=snap.update_time)
        return {**payout, **change}

    result: dict[str, Any] = store.run_optimistic(body)
    return result
