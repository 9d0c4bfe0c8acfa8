"""PayPal's webhooks: verified before they are believed, applied once, reconciled with ours.

Each delivery is checked with PayPal's verify-webhook-signature API; one that fails changes
nothing. An event id is recorded in `paypalEvents/{id}` after it was applied, so a replay is
acknowledged without being applied again. Applying is itself idempotent (it moves orders and
refunds only forward), so two deliveries of one event racing each other do no harm either.

  PAYMENT.CAPTURE.COMPLETED  settle the order, as the capture route would (a lost answer)
  PAYMENT.CAPTURE.PENDING    the order waits for PayPal (an eCheck): capture_pending
  PAYMENT.CAPTURE.DENIED     a pending capture failed: the order is denied; money we had
                             counted is taken back as for a reversal
  PAYMENT.CAPTURE.REVERSED   a chargeback: the ledger is reversed and the subject un-confirmed;
                             one naming less than the order still holds reverses that part
                             alone (see take_back)
  PAYMENT.CAPTURE.REFUNDED   ours: finish booking it; made in PayPal's dashboard: record it
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Any

from shared.integrations import paypal
from shared.payments import ledger, ledger_store, orders, refunds, rules
from shared.payments import records as order_records
from shared.payments import subjects as subject_store
from shared.payments.rules import Kind, OrderStatus
from shared.payments.subjects import Subjects
from shared.platform import clients, clock, ids, logs, store
from shared.platform.errors import BadRequest
from shared.platform.money import Money

log = logs.get("alodoktor.paypal_events")

EVENTS = "paypalEvents"
EVENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# What applying a chargeback of part of an order answers: an outcome, never an order status
# (the order keeps its own, for it still holds the rest).
REVERSED_IN_PART = "reversed_in_part"


def _db() -> Any:
    return clients.db()


def receive(
    headers: dict[str, str], event: dict[str, Any], *, subjects: Subjects
) -> dict[str, Any]:
    """Verify, deduplicate and apply one delivery; returns what happened."""
    from google.api_core.exceptions import AlreadyExists

    event_id = str(event.get("id", ""))
    if not EVENT_ID.fullmatch(event_id):
        raise BadRequest("The event has no usable id.", code="webhook_invalid")
    problem = malformed(event.get("resource"))
    if problem:
        log.error("PayPal webhook %s is malformed: %s", event_id, problem)
        raise BadRequest(f"The event's resource is malformed: {problem}.", code="webhook_invalid")
    try:
        verified = paypal.get().verify_webhook(headers, event)
    except paypal.PayPalUnavailable:
        raise  # 503: PayPal delivers again later
    except paypal.PayPalError as exc:  # PayPal refused to check it (e.g. headers it rejects)
        log.warning("PayPal would not verify webhook %s: %s", event_id, exc)
        verified = False
    if not verified:
        log.warning("unverified PayPal webhook %s (%s)", event_id, event.get("event_type"))
        raise BadRequest("PayPal did not verify this webhook.", code="webhook_unverified")
    ref = _db().collection(EVENTS).document(event_id)
    seen = ref.get()
    if seen.exists:
        return {"eventId": event_id, "outcome": seen.to_dict()["outcome"], "replayed": True}
    outcome = apply(event, subjects=subjects)
    # A concurrent delivery of the same event may record it first; applying was idempotent.
    with contextlib.suppress(AlreadyExists):
        store.create(
            ref,
            {
                "id": event_id,
                "eventType": event.get("event_type"),
                "resourceId": (event.get("resource") or {}).get("id"),
                "outcome": outcome,
                "receivedAt": clock.now(),
            },
            by="paypal",
        )
    log.info("PayPal webhook %s %s: %s", event_id, event.get("event_type"), outcome)
    return {"eventId": event_id, "outcome": outcome, "replayed": False}


def malformed(resource: Any) -> str | None:
    """What is wrong with a resource's shape, if anything, before any of it is believed."""
    from shared.platform.money import MoneyError

    if not isinstance(resource, dict):
        return "not an object"
    if not isinstance(resource.get("id"), str):
        return "no id"
    for name in ("custom_id", "status"):
        if name in resource and not isinstance(resource[name], str):
            return f"{name} is not a string"
    amount = resource.get("amount")
    if not isinstance(amount, dict):
        return "no amount"
    try:
        Money.parse(str(amount.get("currency_code")), str(amount.get("value")).lstrip("-"))
    except MoneyError as exc:
        return f"amount: {exc}"
    links = resource.get("links", [])
    if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
        return "links is not a list of objects"
    extra = resource.get("supplementary_data", {})
    if not isinstance(extra, dict) or not isinstance(extra.get("related_ids", {}), dict):
        return "supplementary_data is not an object"
    return None


def apply(event: dict[str, Any], *, subjects: Subjects) -> str:
    kind = str(event.get("event_type", ""))
    resource = event.get("resource")
    if not isinstance(resource, dict):
        return "ignored"
    if kind == "PAYMENT.CAPTURE.REFUNDED":
        return _refunded(resource)
    if not kind.startswith("PAYMENT.CAPTURE."):
        return "ignored"
    order = _order_of_capture(resource) or _order_of_capture({"id": _capture_id_of(resource)})
    if order is None:
        log.warning("PayPal %s for a capture we do not know: %s", kind, resource.get("id"))
        return "unknown_capture"
    if kind in ("PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.PENDING"):
        settled = orders.settle(order["id"], resource, subjects=subjects)
        return "refunded_unpayable" if settled.refusal else settled.order["status"]
    if kind in ("PAYMENT.CAPTURE.DENIED", "PAYMENT.CAPTURE.REVERSED"):
        why = kind.rsplit(".", 1)[1].lower()
        amount_minor = _reversed_minor(resource)
        return take_back(
            order["id"],
            _capture_id_of(resource),
            why,
            amount_minor,
            # PayPal's id, fit for the ledger's document id (shared.payments.rules.id_part).
            reversal_id=None if amount_minor is None else rules.id_part(str(resource["id"])),
            subjects=subjects,
        )
    return "ignored"


def _capture_id_of(resource: dict[str, Any]) -> str:
    """A capture's own id, or, for a refund-shaped resource (as PayPal may send a reversal),
    the capture its `up` link names."""
    return _capture_id_of_refund(resource) or str(resource.get("id"))


def _reversed_minor(resource: dict[str, Any]) -> int | None:
    """What a refund-shaped reversal took back; None for a capture-shaped one (all of it)."""
    if _capture_id_of_refund(resource) is None:
        return None
    amount = resource.get("amount")
    if not isinstance(amount, dict):
        return None
    value = str(amount.get("value", "")).lstrip("-")
    return Money.parse(str(amount.get("currency_code", "")), value).amount_minor


def _searchable(value: object) -> str | None:
    """PayPal's id `value` if it can be looked up: one no order can hold (a path, kilobytes
    long: Firestore refuses to query a value over 1500 bytes, a 500 and a retry without end)
    finds nothing, without asking."""
    return value if isinstance(value, str) and ids.DOC_ID.fullmatch(value) else None


def _order_of_capture(capture: dict[str, Any]) -> dict[str, Any] | None:
    custom = capture.get("custom_id")
    if isinstance(custom, str):
        found = order_records.get(custom)
        if found is not None:
            return found
    capture_id = _searchable(capture.get("id"))
    if capture_id is not None:
        found = order_records.by_capture_id(capture_id)
        if found is not None:
            return found
    related = (capture.get("supplementary_data") or {}).get("related_ids") or {}
    paypal_order_id = _searchable(related.get("order_id"))
    if paypal_order_id is not None:
        return order_records.by_paypal_id(paypal_order_id)
    return None


def take_back(
    order_id: str,
    capture_id: str,
    why: str,
    amount_minor: int | None = None,
    *,
    reversal_id: str | None = None,
    subjects: Subjects,
) -> str:
    """PayPal took the money back (a denied pending capture, or a chargeback). Lock-free
    (store.run_optimistic), as it races refunds being booked for the same order. Returns the
    order's status, or `reversed_in_part`.

    The rule:
    - Whole: a capture-shaped event (`amount_minor` None), or one naming at least what the
      order still holds (captured, less refunded, refunds under way and earlier reversals).
      The ledger reverses all that is left, the order becomes `reversed` (or `denied`) and
      the subject it paid for is un-confirmed.
    - In part: a refund-shaped reversal naming less than that. The ledger reverses that much
      alone; the order keeps its status (it still holds the rest: refundable, and payable to
      the provider, whose payout subtracts `reversedMinor`) and the subject stays confirmed,
      for the patient paid for it and has not taken all of it back.
    Each reversal is its own ledger transaction: `reversal-{order}` for a whole one without
    PayPal's id of it, else `reversal-{order}-chargeback-{reversal_id}` (`reversal_id` made
    fit for a document id by the caller: rules.id_part). `reversedMinor` adds
    up, and the ids applied are kept in `reversalIds`, so the same reversal delivered again (a
    new delivery of an event, or two racing) changes nothing.
    """

    def body(tx: Any) -> str:  # a write batch: every write below has a precondition
        snap = order_records.order_ref(order_id).get()
        order: dict[str, Any] = snap.to_dict()
        status = OrderStatus(order["status"])
        now = clock.now()
        if status in (OrderStatus.DENIED, OrderStatus.REVERSED):
            return status.value
        if order.get("captureId") not in (None, capture_id):
            return "unknown_capture"
        if status not in rules.HOLDS_MONEY:  # created or capture_pending: nothing was counted
            change = {"status": OrderStatus.DENIED.value, "captureId": capture_id}
            store.update(
                snap.reference,
                {**change, "updatedAt": now},
                tx=tx,
                by="paypal",
                unchanged_since=snap.update_time,
            )
            return OrderStatus.DENIED.value
        applied: list[str] = list(order.get("reversalIds") or [])
        if reversal_id is not None and reversal_id in applied:
            return REVERSED_IN_PART  # booked already; a whole one would have ended above
        capture = refunds.capture_of(order)
        booked = int(order.get("refundedMinor", 0)) + int(order.get("reversedMinor", 0))
        # Refunds under way are PayPal's too: a chargeback only takes what they leave.
        left = capture.amount_minor - booked - int(order.get("refundingMinor", 0))
        take = left if amount_minor is None else min(amount_minor, left)
        if take > 0:
            # `-chargeback-` keeps it apart from a failed refund's `reversal-{refund id}`.
            tail = f"-chargeback-{reversal_id}" if reversal_id else ""
            tx_id = f"reversal-{order_id}{tail}"
            _book_reversal(tx, order, capture, take, booked, tx_id, now)
        written: dict[str, Any] = {
            "reversedMinor": int(order.get("reversedMinor", 0)) + max(take, 0),
            "updatedAt": now,
        }
        if reversal_id is not None:
            written["reversalIds"] = [*applied, reversal_id]
        whole = take >= left  # else in part: the order still holds the rest, in its status
        target = OrderStatus.DENIED if why == "denied" else OrderStatus.REVERSED
        if whole:
            written["status"] = target.value
        store.update(snap.reference, written, tx=tx, by="paypal", unchanged_since=snap.update_time)
        if not whole:
            return REVERSED_IN_PART
        _revoke_subject(tx, order, why, now, subjects=subjects)
        return target.value

    result: str = store.run_optimistic(body, attempts=10)
    return result


def _book_reversal(
    tx: Any,
    order: dict[str, Any],
    capture: ledger.Capture,
    amount_minor: int,
    returned_minor: int,
    tx_id: str,
    now: datetime,
) -> None:
    """Reverse `amount_minor` of the capture in the ledger, after `returned_minor` booked
    before it (refunds and earlier reversals), so the fee's share rounds cumulatively."""
    owed = ledger_store.owed_guarded(tx, capture.provider, capture.currency)
    transaction = ledger.give_back(
        capture, amount_minor, returned_minor, provider_owed_minor=owed, kind="reversal"
    )
    ledger_store.record(
        tx, tx_id, transaction, order_id=order["id"], parties=refunds.parties(order), at=now
    )


def _revoke_subject(
    tx: Any, order: dict[str, Any], why: str, now: datetime, *, subjects: Subjects
) -> None:
    """Un-confirm the subject, if this order paid for it: one that could no longer be paid
    (and was refunded instead) never carried this payment."""
    kind = Kind(order["kind"])
    subject_snap = subject_store.ref(kind, order["subjectId"]).get()
    subject = subjects.shown(kind, subject_snap)
    if subject is not None and (subject.get("payment") or {}).get("orderId") == order["id"]:
        subjects.revoke_in(
            tx,
            kind,
            subject,
            f"PayPal {why} the payment.",
            now,
            unchanged_since=subject_snap.update_time,
        )


def _refunded(refund: dict[str, Any]) -> str:
    custom = refund.get("custom_id")
    ours = refunds.get(custom) if isinstance(custom, str) else None
    if ours is not None:
        if ours["status"] == refunds.SENDING:
            if str(refund.get("status", "COMPLETED")) != "COMPLETED":
                # Not done at PayPal (PENDING): the sweep asks PayPal again; booked when done.
                refunds.note_pending(ours["id"], refund)
                return "refund_pending"
            refunds.book(ours["id"], refund)
            return "refund_booked"
        return f"refund_{ours['status']}"
    capture_id = _searchable(_capture_id_of_refund(refund))
    order = order_records.by_capture_id(capture_id) if capture_id else None
    if order is None:
        log.warning("PayPal refund %s of a capture we do not know", refund.get("id"))
        return "unknown_capture"
    recorded = refunds.record_external(order, refund)
    return f"external_refund_{recorded['status']}"


def _capture_id_of_refund(refund: dict[str, Any]) -> str | None:
    for link in refund.get("links") or []:
        href = str(link.get("href", ""))
        if link.get("rel") == "up" and "/captures/" in href:
            return href.rsplit("/captures/", 1)[1].split("/")[0] or None
    return None
