"""Sending refunds to PayPal: the side-effect half of shared/payments/refunds.py.

`refunds` queues, reserves and books refunds, all in Firestore; this module is the only one
that calls PayPal for them, outside any transaction, with `PayPal-Request-Id` = the refund's
id so a retry (by the next call or the sweep) is the same request and cannot refund twice.

What PayPal answers decides by the client's one rule (shared.integrations.paypal.transient):
PayPal down or saying "not now" (5xx, timeouts, 429, 409 PREVIOUS_REQUEST_IN_PROGRESS, a token
it will not take) leaves the refund `sending`, its amount still held, for the sweep; only a
definite refusal (400, 403, 404, 422, or a refund PayPal reports FAILED or CANCELLED) fails it,
gives the amount back to the order, and alerts the admins (a `payout_alert` notice with
`alert` = `refund_failed`, and the ERROR line `PayPal refused refund ...` that monitoring
matches): a patient is owed money only a person can now return.

A refund PayPal answers PENDING (an eCheck's) is not done: it stays `sending`, its amount held,
with PayPal's refund id noted; the next send (the sweep) asks PayPal how it stands, booking it
once COMPLETED (or PayPal's PAYMENT.CAPTURE.REFUNDED webhook does) and failing it, with the
admins told, should PayPal fail it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from shared.integrations import paypal
from shared.payments import ledger, ledger_store, refunds, rules
from shared.payments.records import order_ref
from shared.payments.rules import OrderStatus
from shared.platform import alert_recipients, clients, clock, idempotency, logs, outbox, store
from shared.platform.context import Principal
from shared.platform.errors import Conflict, NotFound
from shared.platform.money import Money

log = logs.get("alodoktor.refunds")

# The admins' alert of a failed refund: the notice kind every operations alert uses so far
# (shared/notify/rules.py), told apart by its `alert`.
ALERT_KIND = "payout_alert"
REFUND_FAILED = "refund_failed"
PENDING = "PENDING"  # PayPal's refund status while it is not done (an eCheck's refund)


def send_quietly(refund_id: str) -> dict[str, Any] | None:
    """`send`, but PayPal being down only leaves the refund for the sweep."""
    try:
        return send(refund_id)
    except paypal.PayPalUnavailable:
        log.warning("refund %s waits for PayPal; the sweep will send it", refund_id)
    except Exception:  # what caused it has committed: its answer must not become a 500
        log.exception("refund %s failed to send; the sweep will try again", refund_id)
    return refunds.get(refund_id)


def send(refund_id: str) -> dict[str, Any]:
    """Reserve, send and book one refund; safe to call again at any step."""
    refund = refunds.reserve(refund_id)
    if refund is None:
        raise NotFound("No such refund.", code="refund_not_found")
    if refund["status"] != refunds.SENDING:
        return refund
    if refund.get("paypalRefund"):
        # PayPal made this refund itself (in its dashboard): only our books are behind.
        return refunds.book(refund_id, refund["paypalRefund"])
    order = order_ref(refund["orderId"]).get().to_dict()
    money = Money(refund["currency"], int(refund["amountMinor"]))
    try:
        if refund.get("paypalStatus") == PENDING and refund.get("paypalRefundId"):
            # PayPal took it and has not finished (an eCheck's): ask how it stands.
            answer = paypal.get().get_refund(refund["paypalRefundId"])
        else:
            answer = paypal.get().refund_capture(
                order["captureId"],
                request_id=refund_id,
                money=money,
                custom_id=refund_id,
                note_to_payer=refund["reason"],
            )
    except paypal.PayPalUnavailable:
        raise  # "not now": the refund stays `sending`; the sweep makes the same request again
    except paypal.PayPalError as exc:  # a definite refusal (paypal.transient said so)
        return _fail(refund_id, exc.issue or exc.name or "refused", str(exc))
    status = str(answer.get("status"))
    if status in ("FAILED", "CANCELLED"):
        return _fail(refund_id, status.lower(), f"PayPal answered the refund {status}")
    if status == PENDING:
        return refunds.note_pending(refund_id, answer)
    return refunds.book(refund_id, answer)


def _fail(refund_id: str, error: str, why: str) -> dict[str, Any]:
    """PayPal refused for good: give the reserved amount back to the order, or, once a
    chargeback has reversed the order, book that amount as reversed too (PayPal took it back
    with the rest); and tell the admins in the same commit, since the patient is still owed."""
    failed_now = [False]  # whether this call's commit failed it (not an earlier one's)

    def body(batch: Any) -> dict[str, Any]:
        failed_now[0] = False
        snap = refunds.refund_ref(refund_id).get()
        refund: dict[str, Any] = snap.to_dict()
        if refund["status"] != refunds.SENDING:
            return refund
        failed_now[0] = True
        now = clock.now()
        change = {"status": refunds.FAILED, "error": error, "updatedAt": now}
        store.update(
            snap.reference, change, tx=batch, by="system", unchanged_since=snap.update_time
        )
        _alert_admins(batch, refund, error)
        order_snap = order_ref(refund["orderId"]).get()
        order = order_snap.to_dict()
        amount = int(refund["amountMinor"])
        if OrderStatus(order["status"]) in rules.HOLDS_MONEY:
            refunds.hold(batch, order_snap, -amount, now)
            return {**refund, **change}
        capture = refunds.capture_of(order)
        reversed_before = int(order.get("reversedMinor", 0))
        try:
            transaction = ledger.give_back(
                capture,
                amount,
                int(order.get("refundedMinor", 0)) + reversed_before,
                provider_owed_minor=ledger_store.owed_guarded(
                    batch, capture.provider, capture.currency
                ),
                kind="reversal",
            )
        except ledger.LedgerError:
            if store.changed_since(snap.reference, snap.update_time):
                raise store.ReadAgain() from None  # settled meanwhile: read it again
            raise
        ledger_store.record(
            batch,
            f"reversal-{refund_id}",
            transaction,
            order_id=order["id"],
            parties=refunds.parties(order),
        )
        store.update(
            order_snap.reference,
            {
                "refundingMinor": max(int(order.get("refundingMinor", 0)) - amount, 0),
                "reversedMinor": reversed_before + amount,
                "updatedAt": now,
            },
            tx=batch,
            by="system",
            unchanged_since=order_snap.update_time,
        )
        return {**refund, **change}

    result: dict[str, Any] = store.run_optimistic(body, attempts=10)
    if failed_now[0]:
        # monitoring.tf's `refund_refused` matches this line's start: keep its wording.
        log.error(
            "PayPal refused refund %s: %s (order %s; admins alerted)",
            refund_id,
            why,
            result.get("orderId"),
        )
    return result


def _alert_admins(batch: Any, refund: dict[str, Any], error: str) -> None:
    """A notice to each admin, in `batch`: the refund failed and the patient is owed."""
    amount = Money(refund["currency"], int(refund["amountMinor"]))
    message = (
        f"PayPal refused refund {refund['id']} of {amount.value} {amount.currency} "
        f"(order {refund['orderId']}): {error}. The patient has not been paid back; fix the "
        "cause in PayPal and refund again, or pay them back outside PayPal."
    )
    data = {
        "alert": REFUND_FAILED,
        "message": message,
        "refundId": refund["id"],
        "orderId": refund["orderId"],
        "error": error,
    }
    for uid, email in alert_recipients.admins():
        outbox.queue(batch, uid, email, ALERT_KIND, data, "system")


def send_for_cancellation(subject: dict[str, Any]) -> dict[str, Any] | None:
    """After a cancellation commits: send its refund now (the sweep retries if PayPal is down)."""
    order_id = refunds.paid_order_id(subject)
    if order_id is None or refunds.get(refunds.cancellation_refund_id(order_id)) is None:
        return None  # unpaid, or the policy granted no refund
    return send_quietly(refunds.cancellation_refund_id(order_id))


# -- admin refunds -----------------------------------------------------------------------


def request(
    order_id: str,
    *,
    amount: Money | None,
    reason: str,
    admin: Principal,
    key: idempotency.Key | None,
) -> tuple[dict[str, Any], bool]:
    """An admin's refund of all or part of a capture; returns (refund, replayed). The refund
    is `completed` when PayPal made it, `sending` while PayPal is down or has it pending (the
    sweep sends or asks again), `failed` when PayPal refused it."""
    refund_id = f"{order_id}-{uuid.uuid4().hex[:12]}"

    def create(batch: Any) -> str:
        first = idempotency.earlier(key)
        if first is not None:
            return first
        snap = order_ref(order_id).get()
        if not snap.exists:
            raise NotFound("No such order.", code="order_not_found")
        order = snap.to_dict()
        amount_minor = refunds.check_amount(order, amount)
        now = clock.now()
        # Queued and reserved at once, so concurrent refunds can never exceed the capture:
        # the order's precondition lets only one of two racing reservations commit.
        refunds.queue_in(
            batch,
            refund_id,
            order,
            reason=reason,
            cause="admin",
            requested_by=admin.uid,
            amount_minor=amount_minor,
            now=now,
            status=refunds.SENDING,
        )
        refunds.hold(batch, snap, amount_minor, now)
        idempotency.remember(key, batch, refund_id, now=now)
        return refund_id

    made: str = store.run_optimistic(create, attempts=10)
    if made != refund_id:
        first = refunds.get(made)
        if first is None:
            raise Conflict("This Idempotency-Key's refund is gone.", code="idempotency_key_reused")
        return first, True
    # Queued and held: whatever PayPal answers now, the refund exists (a retry by the admin
    # would make a second one), so PayPal down answers it `sending`, for the sweep, not a 503.
    sent = send_quietly(made)
    assert sent is not None  # created above
    return sent, False


# -- the sweep ---------------------------------------------------------------------------


def sweep(*, limit: int, older_than: timedelta = timedelta(minutes=1)) -> tuple[int, int, bool]:
    """Send refunds left pending or sending (PayPal was down); returns (sent, still open, more).

    Only refunds untouched for `older_than` are taken, so the sweep does not race a request
    that is sending its refund right now (and if it did, PayPal-Request-Id makes it harmless).
    """
    from google.cloud.firestore import FieldFilter

    cutoff = clock.now() - older_than
    due = list(
        clients.db()
        .collection(refunds.REFUNDS)
        .where(filter=FieldFilter("status", "in", list(refunds.OPEN)))
        .where(filter=FieldFilter("updatedAt", "<=", cutoff))
        .limit(limit)
        .stream()
    )
    done = waiting = 0
    for snap in due:
        try:
            result = send_quietly(snap.id)
        except Exception:  # one broken refund must not hold up every other one behind it
            log.exception("refund %s could not be sent; it stays for the next sweep", snap.id)
            waiting += 1
            continue
        if result is not None and result["status"] in refunds.OPEN:
            waiting += 1
            _alert_if_stuck(result)
        else:
            done += 1
    return done, waiting, len(due) == limit


STUCK_AFTER = timedelta(hours=24)  # a patient waiting this long for PayPal needs a person


def _alert_if_stuck(refund: dict[str, Any]) -> None:
    """PayPal saying "not now" for a day (wrong credentials, a lasting outage) would leave a
    refund waiting with no one told: each sweep then logs the ERROR line monitoring alerts on
    (terraform/monitoring.tf, refund_stuck)."""
    created = refund.get("createdAt")
    if isinstance(created, datetime) and clock.now() - created >= STUCK_AFTER:
        log.error(
            "refund %s has waited for PayPal since %s",
            refund["id"],
            created.isoformat(),
            extra={"fields": {"refundId": refund["id"], "orderId": refund.get("orderId")}},
        )
