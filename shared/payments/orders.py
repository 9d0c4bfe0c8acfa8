"""Orders: paying for an appointment or a clinic booking through PayPal, server-side.

`orders/{kind}_{subjectId}` is our record of one subject's payment. The amount is the
subject's price as booked, never the client's word. PayPal is called outside any Firestore
transaction; what it answers is then applied in one transaction (`settle`): the order is
marked captured, the subject confirmed, and the payment's ledger entries written together.
The capture route and PayPal's PAYMENT.CAPTURE.COMPLETED webhook both end in `settle`, which
does its work once whichever arrives first, however often either arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.integrations import paypal
from shared.payments import ledger, ledger_store, notices, refunds, rules
from shared.payments import records as order_records
from shared.payments import subjects as subject_store
from shared.payments.rules import Kind, NotPayable, OrderStatus
from shared.payments.subjects import Subjects
from shared.platform import clock, eventlog, logs, settings, store
from shared.platform.errors import ApiError, Conflict, NotFound
from shared.platform.money import Money

log = logs.get("alodoktor.orders")


class InstrumentDeclined(ApiError):
    status = 422
    code = "instrument_declined"
    title = "The payment method was declined"


class PayPalRefused(ApiError):
    """PayPal refused a call: 422 when it judged the payment (the payer's account, an order
    it let expire), 502 when it refused our request itself."""

    status = 502
    code = "paypal_refused"
    title = "PayPal refused the payment step"

    def __init__(self, exc: paypal.PayPalError) -> None:
        self.status = 422 if exc.status == 422 else 502
        super().__init__(
            f"PayPal refused: {exc.issue or exc.name or exc.status}. Nothing was recorded.",
            paypalIssue=exc.issue or exc.name,
            paypalDebugId=exc.debug_id or None,
        )


class PaymentUnsettled(ApiError):
    status = 502
    code = "paypal_unexpected_answer"
    title = "PayPal answered something unexpected"


# -- create ------------------------------------------------------------------------------


def _return_urls(order_id: str) -> tuple[str | None, str | None]:
    """Where PayPal sends the buyer back (with its `token` and `PayerID` added): the front
    end's page that captures the order, and the one saying nothing was charged."""
    from urllib.parse import urlencode

    base = settings.get().frontend_url
    if not base:
        return None, None
    order = urlencode({"order": order_id})
    return f"{base}/?paypal=return&{order}", f"{base}/?paypal=cancel&{order}"


def create(
    kind: Kind,
    subject_id: str,
    authorize: Any,
    *,
    subjects: Subjects,
    payer_email: str | None = None,
    now: datetime | None = None,
) -> tuple[dict[str, Any], bool]:
    """The subject's PayPal order, made now or found; returns (order, made_now)."""
    from google.api_core.exceptions import AlreadyExists

    at = now or clock.now()
    subject = authorize(subject_store.read(subjects, kind, subject_id))  # a stranger's: 404
    order_id, existing = _current_order(kind, subject_id)
    try:
        subjects.check_payable(kind, subject, at)
    except NotPayable as refusal:
        raise Conflict(refusal.message, code=refusal.code) from None
    if existing is not None:
        return existing, False
    money = subject_store.price(subject)
    provider_kind, provider_uid = rules.provider_of(kind, subject)
    # Our order id is the PayPal-Request-Id: a retry after a lost answer (or a second click)
    # gets the same PayPal order back instead of a second one.
    return_url, cancel_url = _return_urls(order_id)
    try:
        made = paypal.get().create_order(
            money,
            request_id=order_id,
            reference_id=f"{kind.value}:{subject_id}",
            custom_id=order_id,
            description=_description(kind, subject),
            immediate_payment=True,  # a slot is held for minutes; an eCheck clears in days
            return_url=return_url,
            cancel_url=cancel_url,
        )
    except paypal.PayPalError as exc:
        raise PayPalRefused(exc) from None
    link = paypal.approve_link(made)
    order = {
        "id": order_id,
        "kind": kind.value,
        "subjectId": subject_id,
        "patientUid": subject["patientUid"],
        "patientEmail": payer_email,  # where receipts and refund notices go
        "providerKind": provider_kind,
        "providerUid": provider_uid,
        "providerAccount": ledger.earnings_account(provider_kind, provider_uid),
        "currency": money.currency,
        "amountMinor": money.amount_minor,
        "status": OrderStatus.CREATED.value,
        "paypalOrderId": made["id"],
        "approveLink": link,
        "captureId": None,
        "refundedMinor": 0,
        "refundingMinor": 0,
        # The payout that pays its earnings out (shared/payouts); None until one does.
        "payoutId": None,
        "createdAt": at,
        "updatedAt": at,
    }
    try:
        store.create(order_records.order_ref(order_id), order)
    except AlreadyExists:
        found = order_records.get(
            order_id
        )  # a concurrent request stored the same PayPal order first
        if found is None:
            raise
        return found, False
    return order, True


MAX_ORDERS_PER_SUBJECT = 5


def _current_order(kind: Kind, subject_id: str) -> tuple[str, dict[str, Any] | None]:
    """The id of the subject's order to pay with, and that order if it exists yet.

    One order per subject, except that a payment PayPal denied, or an order it let lapse,
    leaves the subject unpaid, so the next order gets the next id (and, with it, a new
    PayPal-Request-Id)."""
    base = rules.order_id_for(kind, subject_id)
    for n in range(1, MAX_ORDERS_PER_SUBJECT + 1):
        order_id = base if n == 1 else f"{base}-{n}"
        existing = order_records.get(order_id)
        if existing is None:
            return order_id, None
        status = OrderStatus(existing["status"])
        if status in rules.CAPTURABLE:
            return order_id, existing
        if status not in rules.UNPAID_ENDS:
            raise Conflict("This is paid already.", code="already_paid", orderId=order_id)
    raise Conflict(
        "PayPal denied every payment tried for this; book again or contact support.",
        code="too_many_denied_payments",
    )


def _description(kind: Kind, subject: dict[str, Any]) -> str:
    if kind is Kind.APPOINTMENT:
        return f"Alo Doktor consultation {subject['start']:%Y-%m-%d %H:%M} UTC"
    return f"Alo Doktor clinic booking: {subject.get('serviceName', 'service')}"[:127]


# -- capture -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    order: dict[str, Any]
    refusal: NotPayable | None = None  # captured, but the subject could no longer be paid
    refund: dict[str, Any] | None = None


def capture(order: dict[str, Any], *, subjects: Subjects) -> Settled:
    """Capture an approved order (the owner's call) and settle what PayPal answers."""
    if OrderStatus(order["status"]) not in rules.CAPTURABLE:
        return _settled_before(order)
    kind = Kind(order["kind"])
    try:
        # Not charged at all is better than charged and refunded: look before capturing.
        # (Should the subject end while PayPal captures, `settle` refunds it instead.)
        subject = subject_store.read(subjects, kind, order["subjectId"])
        if subject is None:
            raise NotPayable("not_payable", "What this order paid for no longer exists.")
        subjects.check_payable(kind, subject, clock.now())
    except NotPayable as refusal:
        fresh = order_records.get(order["id"])
        if fresh is not None and OrderStatus(fresh["status"]) not in rules.CAPTURABLE:
            return _settled_before(fresh)  # a concurrent capture of this very order settled it
        raise Conflict(refusal.message, code=refusal.code) from None
    try:
        answer = _captured_order(order)
    except paypal.InstrumentDeclined:
        _next_attempt(order)
        raise InstrumentDeclined(
            "PayPal declined the payment method. Let the buyer choose another funding source "
            "in PayPal's window (the approve link) and capture again.",
            approveLink=order.get("approveLink"),
            action="choose_other_funding_source",
        ) from None
    except paypal.OrderNotApproved:
        _next_attempt(order)  # a new PayPal-Request-Id for the capture after the approval
        raise Conflict(
            "The buyer has not approved this order in PayPal's window yet.",
            code="order_not_approved",
            approveLink=order.get("approveLink"),
        ) from None
    except paypal.PayPalError as exc:
        if _lapsed(order):
            raise _expired() from None
        _next_attempt(order)  # PayPal refused: whatever comes next is a new request
        raise PayPalRefused(exc) from None
    found = first_capture(answer)
    if found is None:
        log.error("PayPal order %s has no capture: %s", order["paypalOrderId"], answer)
        raise PaymentUnsettled("PayPal's answer held no capture; nothing was recorded.")
    if found.get("status") in ("DECLINED", "FAILED"):
        _next_attempt(order)
        raise InstrumentDeclined(
            "PayPal declined the capture. Let the buyer choose another funding source.",
            approveLink=order.get("approveLink"),
            action="choose_other_funding_source",
        )
    return settle(order["id"], found, subjects=subjects)


def _expired() -> Conflict:
    return Conflict(
        "PayPal let this order lapse before it was paid; ask to pay again for a new one.",
        code="order_expired",
    )


def _settled_before(order: dict[str, Any]) -> Settled:
    """A capture of an order that is past capturing answers as its first capture did: the
    order, if it was paid; the same refusal, if it ended unpaid (it lapsed, or PayPal denied
    its pending capture), never a 200 for a payment that was not made."""
    status = OrderStatus(order["status"])
    if status is OrderStatus.ABANDONED:
        raise _expired()
    if status is OrderStatus.DENIED:
        raise Conflict(
            "PayPal denied this payment; nothing was paid. Ask to pay again for a new order.",
            code="payment_denied",
        )
    return Settled(order)  # captured before: the same answer again, nothing new


def _lapsed(order: dict[str, Any]) -> bool:
    """Whether PayPal no longer has this order to pay (it expired unapproved, or was voided);
    if so ours is marked abandoned, so the patient's next request makes a new one."""
    try:
        found = paypal.get().get_order(order["paypalOrderId"])
    except paypal.PayPalError as exc:
        lapsed = exc.status == 404
    else:
        lapsed = found.get("status") == "VOIDED"
    if lapsed:
        change = {"status": OrderStatus.ABANDONED.value, "updatedAt": clock.now()}
        store.update(order_records.order_ref(order["id"]), change, by="system")
    return lapsed


def _captured_order(order: dict[str, Any]) -> dict[str, Any]:
    """PayPal's order after capturing it (or finding it captured already)."""
    client = paypal.get()
    # One request id per attempt. Its retries (5xx, timeouts) reuse it, so a capture whose
    # answer was lost is replayed at PayPal, not made twice. PayPal documents reusing an id only
    # for those ("retry idempotent calls that fail with network timeouts or HTTP 5xx status
    # codes", developer.paypal.com/reference/guidelines/idempotency) and says nothing of a reused
    # id after a 4xx; the simulator replays the refusal, the safe reading. So after any clear
    # refusal (not approved yet, declined, refused) `_next_attempt` moves to a new id: the
    # buyer's later approval is captured afresh, never answered with the old refusal.
    attempt = int(order.get("captureAttempt", 0))
    try:
        return client.capture_order(
            order["paypalOrderId"], request_id=f"{order['id']}-capture-{attempt}"
        )
    except paypal.OrderAlreadyCaptured:
        # Captured already, perhaps by us with an answer that never arrived: PayPal's order
        # says how, so reconcile from it rather than fail.
        return client.get_order(order["paypalOrderId"])


def _next_attempt(order: dict[str, Any]) -> None:
    from google.cloud import firestore

    store.update(
        order_records.order_ref(order["id"]),
        {"captureAttempt": firestore.Increment(1), "updatedAt": clock.now()},
        by="system",
    )


def first_capture(paypal_order: dict[str, Any]) -> dict[str, Any] | None:
    for unit in paypal_order.get("purchase_units") or []:
        for cap in (unit.get("payments") or {}).get("captures") or []:
            return dict(cap)
    return None


def settle(order_id: str, cap: dict[str, Any], *, subjects: Subjects) -> Settled:
    """Apply a PayPal capture (COMPLETED or PENDING) to our order, exactly once.

    COMPLETED: in one transaction the order is captured, the payment's ledger entries are
    written and the subject confirmed; or, when the subject can no longer be paid (its hold
    ran out, the booking was cancelled), a full refund is queued in its place and sent right
    after. PENDING: the order waits for PayPal's COMPLETED or DENIED webhook.
    """
    money = Money.parse(cap["amount"]["currency_code"], cap["amount"]["value"])
    capture_id = str(cap["id"])
    pending = cap.get("status") == "PENDING"
    fee_bps = settings.get().platform_fee_bps

    def body(tx: Any) -> Settled:  # a write batch: every write below has a precondition
        snap = order_records.order_ref(order_id).get()
        if not snap.exists:
            raise NotFound("No such order.", code="order_not_found")
        order: dict[str, Any] = snap.to_dict()
        status = OrderStatus(order["status"])
        if status not in rules.CAPTURABLE or (pending and status is OrderStatus.CAPTURE_PENDING):
            return Settled(order)
        now = clock.now()
        if pending:
            change = {
                "status": OrderStatus.CAPTURE_PENDING.value,
                "captureId": capture_id,
                "updatedAt": now,
            }
            store.update(
                snap.reference, change, tx=tx, by="system", unchanged_since=snap.update_time
            )
            return Settled({**order, **change})
        kind = Kind(order["kind"])
        subject_snap = subject_store.ref(kind, order["subjectId"]).get()
        subject = subjects.shown(kind, subject_snap)
        refusal: NotPayable | None = None
        try:
            if subject is None:
                raise NotPayable("not_payable", "What this order paid for no longer exists.")
            if money != Money(order["currency"], int(order["amountMinor"])):
                raise NotPayable("amount_mismatch", "PayPal captured another amount.")
            subjects.check_payable(kind, subject, now)
        except NotPayable as exc:
            refusal = exc
        change = {
            "status": OrderStatus.CAPTURED.value,
            "captureId": capture_id,
            "currency": money.currency,
            "amountMinor": money.amount_minor,
            "feeMinor": ledger.fee_of(money.amount_minor, fee_bps),
            "capturedAt": now,
            "updatedAt": now,
        }
        captured = {**order, **change}
        ledger_store.record(
            tx,
            f"payment-{order_id}",
            ledger.payment(refunds.capture_of(captured)),
            order_id=order_id,
            parties=refunds.parties(captured),
            at=now,
        )
        payment = {
            "orderId": order_id,
            "captureId": capture_id,
            "currency": money.currency,
            "amountMinor": money.amount_minor,
            "status": "captured",
        }
        if refusal is None:
            assert subject is not None
            subjects.confirm_in(
                tx, kind, subject, payment, now, unchanged_since=subject_snap.update_time
            )
            notices.to_payer(tx, captured, "payment_received", {"amount": money.value})
            eventlog.record(
                tx,
                "payment_captured",
                f"orders/{order_id}",
                actor="system",
                at=now,
                uid=captured.get("patientUid"),
                data={"kind": kind.value, "subjectId": captured.get("subjectId")},
                amount_minor=money.amount_minor,
                currency=money.currency,
            )
        else:
            refunds.queue_in(
                tx,
                unpayable_refund_id(order_id),
                captured,
                reason=f"Paid after it could no longer be paid ({refusal.code}).",
                cause="unpayable",
                requested_by="system",
                now=now,
            )
        store.update(snap.reference, change, tx=tx, by="system", unchanged_since=snap.update_time)
        return Settled(captured, refusal)

    settled: Settled = store.run_optimistic(body)
    if settled.refusal is not None:
        log.warning("order %s captured for an unpayable subject: refunding", order_id)
        from shared.payments import refund_sending  # PayPal's refund path, rarely taken

        sent = refund_sending.send_quietly(unpayable_refund_id(order_id))
        return Settled(order_records.get(order_id) or settled.order, settled.refusal, sent)
    return settled


def unpayable_refund_id(order_id: str) -> str:
    return f"{order_id}-unpayable"
