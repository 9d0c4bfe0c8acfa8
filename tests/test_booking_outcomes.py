"""Issue 23 against the whole stack: a clinic cannot record the outcome of a paid booking before
its window starts, so the patient can still cancel it for a refund; and payouts pay the clinic a
holding period after the window's end, never after the time the outcome was recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.payouts import rules as payout_rules
from shared.payouts import scheduling
from shared.platform import clients, store
from shared.platform.context import Role
from shared.workflows.payout_deliveries import DELIVERIES
from tests.payment_support import stored_order
from tests.payout_support import DELIVERED_DAYS_AGO, cooled_off, set_address
from tests.paypal_support import Sim
from tests.support import Api, bearer, create_user, problem
from tests.test_bookings import Clinic, _book, _window
from tests.test_payment_refunds import _pay_booking


def _paid_and_accepted(stack: Any, sim: Sim) -> tuple[Clinic, Api, dict[str, Any], dict[str, Any]]:
    """A clinic's accepted booking whose window starts in three days, paid through PayPal."""
    clinic = Clinic(stack)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booking = _book(patient, clinic, _window(3))
    order = _pay_booking(patient, booking["id"], sim)
    clinic.act(booking["id"], "accept")
    return clinic, patient, booking, order


def test_a_paid_booking_days_ahead_cannot_be_marked_and_its_patient_still_gets_a_refund(
    stack, sim: Sim
):
    clinic, patient, booking, order = _paid_and_accepted(stack, sim)
    problem(clinic.api.post(f"/bookings/{booking['id']}/no-show"), 409, "not_started")
    problem(clinic.api.post(f"/bookings/{booking['id']}/check-in"), 409, "not_started")
    problem(clinic.api.post(f"/bookings/{booking['id']}/complete"), 409, "illegal_transition")

    cancelled = patient.post(f"/bookings/{booking['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["refund"] == "full"
    assert stored_order(order["id"])["status"] == "refunded"


def _record(clinic: Clinic) -> tuple[dict[str, Any] | None, str]:
    now = datetime.now(UTC)
    return scheduling.record(
        "clinic",
        clinic.uid,
        "USD",
        period=payout_rules.period_of(now),
        now=now,
        deliveries=DELIVERIES,
    )


def test_a_clinic_is_paid_a_holding_period_after_the_window_ends_not_after_the_marking(
    stack, sim: Sim
):
    clinic, _, booking, order = _paid_and_accepted(stack, sim)
    set_address(clinic.api, clinic.uid, f"pay-{uuid.uuid4().hex[:10]}@clinics.example")
    cooled_off(clinic.uid)
    ref = clients.db().collection("bookings").document(booking["id"])
    long_ago = datetime.now(UTC) - timedelta(days=DELIVERED_DAYS_AGO)
    # Marked a no-show weeks before its window, as the service let a clinic do before issue 23
    # (such records are stored): the window is still three days ahead, so nothing is due.
    store.update(ref, {"status": "no_show", "at.no_show": long_ago}, by="test")
    assert _record(clinic) == (None, "nothing_due")

    # Its window ended a holding period ago: now the clinic is paid for it.
    window = {"windowStart": long_ago - timedelta(minutes=30), "windowEnd": long_ago}
    store.update(ref, {**window, "at.no_show": datetime.now(UTC)}, by="test")
    payout, outcome = _record(clinic)
    assert outcome == "recorded"
    assert payout is not None
    assert [line["orderId"] for line in payout["lines"]] == [order["id"]]
