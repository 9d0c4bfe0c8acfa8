"""Refunds: queued with what caused them, sent to PayPal after, booked in the ledger once.

A refund is a document `refunds/{id}` that moves pending -> sending -> completed (or failed,
or skipped when nothing is left to refund):

1. *queued* (`queue_in`) in the same Firestore transaction as its cause: the cancellation,
   the capture of something that could no longer be paid, or an admin's decision. A cause
   therefore never commits without its refund, nor a refund without its cause.
2. *reserved* (`reserve`, called by `refund_sending.send`): one transaction fixes the
   amount, checks it against what the order still holds, and counts it in the order's
   `refundingMinor`, so two refunds of one order can never together exceed the capture.
3. *sent* to PayPal by shared/payments/refund_sending.py (the only half that calls PayPal),
   with `PayPal-Request-Id` = the refund's id, outside any transaction. A retry after a lost
   answer, by the sweep or by the next call, is the same request to PayPal and cannot refund
   twice. PayPal down leaves the refund `sending`, for the sweep; so does a refund PayPal
   answers PENDING (`note_pending`), until PayPal says it is done.
4. *booked*: one transaction writes the reversing ledger entries, the order's refunded total
   and status, the subject's payment status, and the refund's completion. The PayPal webhook
   for the refund (PAYMENT.CAPTURE.REFUNDED) ends in the same step, whichever comes first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.payments import ledger, ledger_store, notices, rules, subjects
from shared.payments import records as order_records
from shared.payments.records import order_ref
from shared.payments.rules import Kind, OrderStatus
from shared.platform import clients, clock, context, eventlog, logs, settings, store
from shared.platform.context import Role
from shared.platform.errors import Conflict
from shared.platform.money import Money

log = logs.get("alodoktor.refunds")

REFUNDS = "refunds"
PENDING, SENDING, COMPLETED, FAILED, SKIPPED = (
    "pending",
    "sending",
    "completed",
    "failed",
    "skipped",
)
OPEN = (PENDING, SENDING)
PAID = ("captured", "partially_refunded")  # a subject's payment status with money to give back


def _db() -> Any:
    return clients.db()


def refund_ref(refund_id: str) -> Any:
    return _db().collection(REFUNDS).document(refund_id)


def get(refund_id: str) -> dict[str, Any] | None:
    return store.read_by_id(refund_ref, refund_id)


# -- queueing ----------------------------------------------------------------------------


def queue_in(
    tx: Any,
    refund_id: str,
    order: dict[str, Any],
    *,
    reason: str,
    cause: str,
    requested_by: str,
    amount_minor: int | None = None,
    now: datetime | None = None,
    status: str = PENDING,
    paypal_refund: dict[str, Any] | None = None,
) -> None:
    """Queue a refund of `amount_minor` (None: all that is left when it is sent). Writes only."""
    at = now or clock.now()
    store.create(
        refund_ref(refund_id),
        {
            "id": refund_id,
            "orderId": order["id"],
            "patientUid": order["patientUid"],
            "providerUid": order["providerUid"],
            "captureId": order.get("captureId"),
            "currency": order["currency"],
            "amountMinor": amount_minor,
            "reason": reason,
            "cause": cause,
            "requestedBy": requested_by,
            "status": status,
            # Set when PayPal made the refund itself: it is booked, never sent again.
            "paypalRefund": paypal_refund,
            "createdAt": at,
            "updatedAt": at,
        },
        tx=tx,
        by=requested_by,
    )


def paid_order_id(subject: dict[str, Any]) -> str | None:
    payment = subject.get("payment") or {}
    return str(payment["orderId"]) if payment.get("status") in PAID else None


def cancellation_refund_id(order_id: str) -> str:
    return f"{order_id}-cancel"


def queue_for_cancellation(
    tx: Any, subject: dict[str, Any], role: Role | str, starts_in: timedelta
) -> str | None:
    """Inside the cancellation's transaction: queue the refund the policy grants, if any.
    Returns what was granted, "full" or "none"; None when nothing was paid. Writes only."""
    order_id = paid_order_id(subject)
    if order_id is None:
        return None
    notice = timedelta(hours=settings.get().full_refund_notice_hours)
    decision = rules.on_cancellation(role, starts_in, full_refund_notice=notice)
    if not decision.full:
        return "none"
    ctx = context.current()
    actor = ctx.principal.uid if ctx and ctx.principal else "system"
    # No read here: the cancellation has written already, and the subject's payment record
    # carries what the refund needs.
    payment = subject["payment"]
    basis = {
        "id": order_id,
        "patientUid": subject["patientUid"],
        "providerUid": subject.get("doctorUid") or subject["clinicUid"],
        "captureId": payment.get("captureId"),
        "currency": payment["currency"],
    }
    queue_in(
        tx,
        cancellation_refund_id(order_id),
        basis,
        reason=decision.reason,
        cause="cancellation",
        requested_by=actor,
    )
    return "full"


def check_amount(order: dict[str, Any], amount: Money | None) -> int:
    left = rules.refundable(order)
    if OrderStatus(order["status"]) not in rules.HOLDS_MONEY or left <= 0:
        raise Conflict("Nothing of this order is left to refund.", code="nothing_to_refund")
    if amount is None:
        _check_provider_can_give_back(order, left)
        return left
    if amount.currency != order["currency"]:
        raise Conflict(
            f"This order was paid in {order['currency']}.", code="refund_currency_mismatch"
        )
    if amount.amount_minor > left:
        raise Conflict(
            f"Only {Money(order['currency'], left).value} {order['currency']} is left to refund.",
            code="refund_exceeds_capture",
            refundable={
                "currency": order["currency"],
                "value": Money(order["currency"], left).value,
            },
        )
    _check_provider_can_give_back(order, amount.amount_minor)
    return amount.amount_minor


def _check_provider_can_give_back(order: dict[str, Any], amount_minor: int) -> None:
    """An admin's refund may not take back earnings the provider was already paid out: that
    would be the platform's loss, which only a chargeback may impose."""
    capture = capture_of(order)
    returned = (
        int(order.get("refundedMinor", 0))
        + int(order.get("refundingMinor", 0))
        + int(order.get("reversedMinor", 0))  # a chargeback of part of it took that already
    )
    try:
        ledger.give_back(
            capture,
            amount_minor,
            returned,
            provider_owed_minor=ledger_store.owed(capture.provider, capture.currency),
        )
    except ledger.LedgerError as exc:
        raise Conflict(str(exc), code=exc.code) from None


def hold(batch: Any, order_snap: Any, amount_minor: int, now: datetime) -> None:
    """Count `amount_minor` (negative: release it) as being refunded, if the order is as read."""
    held = int(order_snap.to_dict().get("refundingMinor", 0))
    store.update(
        order_snap.reference,
        {"refundingMinor": max(held + amount_minor, 0), "updatedAt": now},
        tx=batch,
        by="system",
        unchanged_since=order_snap.update_time,
    )


def reserve(refund_id: str) -> dict[str, Any] | None:
    def body(batch: Any) -> dict[str, Any] | None:
        snap = refund_ref(refund_id).get()
        if not snap.exists:
            return None
        refund: dict[str, Any] = snap.to_dict()
        if refund["status"] != PENDING:
            return refund
        order_snap = order_ref(refund["orderId"]).get()
        left = rules.refundable(order_snap.to_dict())
        amount = left if refund["amountMinor"] is None else int(refund["amountMinor"])
        now = clock.now()
        if amount <= 0 and int(order_snap.to_dict().get("refundingMinor", 0)) > 0:
            return refund  # another refund holds the rest; if PayPal refuses it, this one runs
        if amount <= 0:
            change: dict[str, Any] = {"status": SKIPPED, "amountMinor": 0, "updatedAt": now}
        elif amount > left:
            change = {"status": FAILED, "error": "refund_exceeds_capture", "updatedAt": now}
        else:
            change = {"status": SENDING, "amountMinor": amount, "updatedAt": now}
            hold(batch, order_snap, amount, now)
        store.update(
            snap.reference, change, tx=batch, by="system", unchanged_since=snap.update_time
        )
        return {**refund, **change}

    result: dict[str, Any] | None = store.run_optimistic(body, attempts=10)
    return result


def book(refund_id: str, paypal_refund: dict[str, Any]) -> dict[str, Any]:
    """PayPal refunded: write the reversing entries and finish the refund, exactly once."""

    # Optimistic, not a transaction: this races PayPal's webhook for the same refund.
    def body(tx: Any) -> dict[str, Any]:
        snap = refund_ref(refund_id).get()
        refund: dict[str, Any] = snap.to_dict()
        if refund["status"] != SENDING:
            return refund  # booked already (by the webhook, or by an earlier call)
        order_snap = order_ref(refund["orderId"]).get()
        order = order_snap.to_dict()
        amount = int(refund["amountMinor"])
        capture = capture_of(order)
        owed = ledger_store.owed_guarded(tx, capture.provider, capture.currency)
        now = clock.now()
        refunded = int(order.get("refundedMinor", 0))
        # A chargeback booked meanwhile returned its part already: count it as returned.
        returned = refunded + int(order.get("reversedMinor", 0))
        try:
            transaction = ledger.give_back(
                capture,
                amount,
                returned,
                provider_owed_minor=owed,
                kind="refund",
                absorb_shortfall=True,  # PayPal has already paid it back: the books must follow
            )
        except ledger.LedgerError:
            # The webhook may have booked this very refund between our two reads: the order
            # then already counts it. Start over and find it booked.
            if store.changed_since(snap.reference, snap.update_time):
                raise store.ReadAgain() from None
            raise
        ledger_store.record(
            tx, f"refund-{refund_id}", transaction, order_id=order["id"], parties=parties(order)
        )
        status = rules.status_after_refund(
            int(order["amountMinor"]), refunded + amount, int(order.get("reversedMinor", 0))
        )
        if OrderStatus(order["status"]) not in rules.HOLDS_MONEY:
            status = OrderStatus(order["status"])  # reversed or denied stays so
        store.update(
            order_snap.reference,
            {
                "refundedMinor": refunded + amount,
                "refundingMinor": max(int(order.get("refundingMinor", 0)) - amount, 0),
                "status": status.value,
                "updatedAt": now,
            },
            tx=tx,
            by="system",
            unchanged_since=order_snap.update_time,
        )
        subject = subjects.ref(Kind(order["kind"]), order["subjectId"]).get()
        if ((subject.to_dict() or {}).get("payment") or {}).get("orderId") == order["id"]:
            subjects.mark_payment_in(
                tx, subject, status.value, now, unchanged_since=subject.update_time
            )
        eventlog.record(
            tx,
            "refund_completed",
            f"refunds/{refund_id}",
            actor="system",
            at=now,
            uid=order.get("patientUid"),
            data={"orderId": order["id"]},
            amount_minor=amount,
            currency=order["currency"],
        )
        notices.to_payer(
            tx,
            order,
            "refund_completed",
            {"refundId": refund_id, "amount": Money(order["currency"], amount).value},
        )
        change = {
            "status": COMPLETED,
            "paypalRefundId": paypal_refund.get("id"),
            "paypalStatus": paypal_refund.get("status"),
            "completedAt": now,
            "updatedAt": now,
        }
        store.update(snap.reference, change, tx=tx, by="system", unchanged_since=snap.update_time)
        return {**refund, **change}

    result: dict[str, Any] = store.run_optimistic(body, attempts=10)
    return result


def note_pending(refund_id: str, paypal_refund: dict[str, Any]) -> dict[str, Any]:
    """PayPal took the refund but has not finished it (PENDING): it stays `sending`, its amount
    held, with PayPal's refund id, so the next send asks PayPal how it stands instead of
    booking money the patient may never get."""

    def body(tx: Any) -> dict[str, Any]:
        snap = refund_ref(refund_id).get()
        refund: dict[str, Any] = snap.to_dict()
        if refund["status"] != SENDING:
            return refund  # booked or failed meanwhile (the webhook, another send)
        change = {
            "paypalRefundId": paypal_refund.get("id"),
            "paypalStatus": paypal_refund.get("status"),
            "updatedAt": clock.now(),
        }
        if (
            refund.get("paypalRefundId") == change["paypalRefundId"]
            and refund.get("paypalStatus") == change["paypalStatus"]
        ):
            return refund  # nothing new: not written, so the sweep's order stays as it was
        store.update(snap.reference, change, tx=tx, by="system", unchanged_since=snap.update_time)
        return {**refund, **change}

    result: dict[str, Any] = store.run_optimistic(body, attempts=10)
    log.info("refund %s is PENDING at PayPal (%s)", refund_id, paypal_refund.get("id"))
    return result


def capture_of(order: dict[str, Any]) -> ledger.Capture:
    """The ledger's view of an order's capture: the basis of every refund and reversal."""
    return ledger.Capture(
        patient=order["patientUid"],
        provider=order["providerAccount"],
        currency=order["currency"],
        amount_minor=int(order["amountMinor"]),
        fee_minor=int(order["feeMinor"]),
    )


def parties(order: dict[str, Any]) -> dict[str, str]:
    return {"patientUid": order["patientUid"], "providerUid": order["providerUid"]}


def record_external(order: dict[str, Any], paypal_refund: dict[str, Any]) -> dict[str, Any]:
    """A refund made outside this backend (in PayPal's dashboard): record and book it once."""
    noted = note_external(order, paypal_refund)
    if noted["status"] != SENDING:
        return noted
    return book(noted["id"], paypal_refund)


def note_external(order: dict[str, Any], paypal_refund: dict[str, Any]) -> dict[str, Any]:
    """Record a refund PayPal made on its own, reserved against the order, to be booked (by
    the caller now, or by the sweep should this instance stop first: never sent again)."""
    # PayPal's id, fit for a document id (and the ledger's `refund-{refund id}`).
    refund_id = f"{order['id']}-paypal-{rules.id_part(str(paypal_refund.get('id')))}"
    amount = paypal_refund.get("amount") or {}
    money = Money.parse(amount.get("currency_code", order["currency"]), amount.get("value", "0"))

    def create(batch: Any) -> dict[str, Any]:
        snap = refund_ref(refund_id).get()
        if snap.exists:
            existing: dict[str, Any] = snap.to_dict()
            return existing
        order_snap = order_ref(order["id"]).get()
        now = clock.now()
        queue_in(
            batch,
            refund_id,
            {**order_snap.to_dict(), "currency": money.currency},
            reason="Refunded in PayPal",
            cause="paypal",
            requested_by="paypal",
            amount_minor=money.amount_minor,
            now=now,
            status=SENDING,  # PayPal has refunded already: reserved at once, nothing can refuse
            paypal_refund={"id": paypal_refund.get("id"), "status": paypal_refund.get("status")},
        )
        hold(batch, order_snap, money.amount_minor, now)
        return {"id": refund_id, "status": SENDING}

    created: dict[str, Any] = store.run_optimistic(create, attempts=10)
    return created


def for_order(order_id: str) -> list[dict[str, Any]]:
    return order_records.of_order(REFUNDS, order_id)
