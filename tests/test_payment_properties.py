"""Property tests of payments: random sequences of pay, refund and webhook events against the
real services (Firestore emulator, PayPal simulator, the gateway for webhooks) keep the books
balanced and never drive an account below zero."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.integrations import paypal
from shared.payments import orders, refund_sending, refunds
from shared.payments import records as order_records
from shared.payments.rules import Kind
from shared.platform import clients, errors
from shared.platform.context import Principal, Role
from shared.platform.money import Money
from shared.workflows.payment_subjects import SUBJECTS
from tests.payment_support import account_sum, assert_balanced, ledger_of
from tests.support import eventually

PRICE = 2000
STEP = st.one_of(
    st.tuples(st.just("capture")),
    st.tuples(st.just("refund"), st.integers(min_value=1, max_value=2500)),
    st.tuples(st.just("refund_all")),
    st.tuples(st.just("replay")),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("dashboard_refund"), st.integers(min_value=1, max_value=2500)),
)
ADMIN = Principal(
    uid="admin-property",
    email=None,
    role=Role.ADMIN,
    approved=True,
    session_id=None,
    auth_time=0,
)


def _appointment() -> dict[str, Any]:
    """A pending appointment straight in Firestore: this test is about the books, not booking."""
    now = datetime.now(UTC)
    doc = {
        "id": uuid.uuid4().hex[:20],
        "patientUid": "patient-" + uuid.uuid4().hex[:8],
        "doctorUid": "doctor-" + uuid.uuid4().hex[:8],
        "clinicUid": None,
        "start": now + timedelta(days=3),
        "end": now + timedelta(days=3, minutes=30),
        "status": "pending_payment",
        "price": {"currency": "USD", "amountMinor": PRICE},
        "holdExpiresAt": now + timedelta(minutes=15),
        "slotId": "property-" + uuid.uuid4().hex,
        "createdAt": now,
    }
    clients.db().collection("appointments").document(doc["id"]).set(doc)
    clients.db().collection("slots").document(doc["slotId"]).set({"status": "held"})
    return doc


def _check_books(order_id: str) -> None:
    order = order_records.get(order_id)
    assert order is not None
    books = ledger_of(order_id)
    assert_balanced(books)
    assert len([t for t in books if t["kind"] == "payment"]) <= 1
    assert account_sum(books, "paypal_clearing") >= 0  # never more given back than taken
    assert account_sum(books, order.get("providerAccount", "")) <= 0  # never owed below zero
    assert account_sum(books, "platform_fees") <= 0
    returned = -account_sum(books, "paypal_clearing") + (PRICE if books else 0)
    if books:
        assert returned == PRICE - account_sum(books, "paypal_clearing")
    assert int(order.get("refundedMinor", 0)) <= int(order["amountMinor"])


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=1, max_size=6))
def test_random_payment_histories_keep_the_books_balanced(stack, sim, steps) -> None:
    # `sim` fails the test if any PayPal call broke PayPal's published contract.
    client = paypal.get()
    subject = _appointment()
    order, _ = orders.create(Kind.APPOINTMENT, subject["id"], lambda doc: doc, subjects=SUBJECTS)
    requests.post(
        order["approveLink"], data={"action": "approve"}, timeout=30, allow_redirects=False
    ).raise_for_status()
    for step in steps:
        current = order_records.get(order["id"])
        assert current is not None
        if step[0] == "capture":
            orders.capture(current, subjects=SUBJECTS)
        elif step[0] in ("refund", "refund_all") and current.get("captureId"):
            amount = None if step[0] == "refund_all" else Money("USD", step[1])
            # More than is left, or nothing left, is refused (409) and books nothing.
            with contextlib.suppress(errors.Conflict):
                refund_sending.request(
                    current["id"], amount=amount, reason="property", admin=ADMIN, key=None
                )
        elif step[0] == "dashboard_refund" and current.get("captureId"):
            with contextlib.suppress(paypal.RefundRefused):
                client.refund_capture(
                    current["captureId"],
                    request_id=uuid.uuid4().hex,
                    money=Money("USD", step[1]),
                )
        elif step[0] == "replay":
            sent = requests.get(f"{stack.paypal_url}/_sim/webhooks", timeout=30).json()
            for d in [d for d in sent["webhooks"] if d["status"] == 200][-3:]:
                requests.post(
                    f"{stack.gateway_url}/paypal-webhook",
                    data=_canonical(d["event"]),
                    headers=d["headers"],
                    timeout=30,
                )
        elif step[0] == "reverse" and current.get("captureId"):
            requests.post(
                f"{stack.paypal_url}/_sim/webhooks",
                json={"eventType": "PAYMENT.CAPTURE.REVERSED", "captureId": current["captureId"]},
                timeout=30,
            ).raise_for_status()
        _check_books(order["id"])
    # However the history went, once PayPal's webhooks are in, its books and ours agree.
    eventually(lambda: _disagreement(order["id"]), lambda got: got is None, "PayPal and the books")


def _disagreement(order_id: str) -> str | None:
    order = order_records.get(order_id)
    assert order is not None
    clearing = account_sum(ledger_of(order_id), "paypal_clearing")
    if not order.get("captureId"):
        return None if clearing == 0 else f"uncaptured, yet clearing holds {clearing}"
    if order["status"] in ("reversed", "denied"):
        return None if clearing == 0 else f"reversed, yet clearing holds {clearing}"
    done = [r for r in refunds.for_order(order_id) if r["status"] == "completed"]
    refunded = sum(int(r["amountMinor"]) for r in done)
    if clearing != int(order["amountMinor"]) - refunded:
        return f"clearing {clearing} after {refunded} refunded"
    held = paypal.get().get_capture(order["captureId"])
    fully = held["status"] == "REFUNDED"
    if fully != (refunded == int(order["amountMinor"])):
        return f"PayPal says {held['status']}, we refunded {refunded}"
    return None


def _canonical(event: dict[str, Any]) -> bytes:
    import json

    return json.dumps(event, separators=(",", ":")).encode()


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
