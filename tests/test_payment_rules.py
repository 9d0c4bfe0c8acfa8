"""The payment rules alone: what may be paid, refund policy, what is left to refund."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.payments import rules
from shared.payments.rules import Kind, NotPayable, OrderStatus
from shared.platform.context import Role
from shared.workflows.payment_subjects import SUBJECTS

NOW = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def _appointment(status: str = "pending_payment", hold_minutes: int = 10) -> dict:
    return {"status": status, "holdExpiresAt": NOW + timedelta(minutes=hold_minutes)}


def _booking(status: str = "requested", paid: bool = False, hours_ahead: int = 48) -> dict:
    doc = {"status": status, "windowStart": NOW + timedelta(hours=hours_ahead)}
    if paid:
        doc["payment"] = {"status": "captured"}
    return doc


def _refusal(kind: Kind, doc: dict) -> str | None:
    try:
        SUBJECTS.check_payable(kind, doc, NOW)
    except NotPayable as exc:
        return exc.code
    return None


def test_a_held_appointment_is_payable_until_its_hold_runs_out():
    assert _refusal(Kind.APPOINTMENT, _appointment()) is None
    assert _refusal(Kind.APPOINTMENT, _appointment(hold_minutes=0)) == "hold_expired"
    assert _refusal(Kind.APPOINTMENT, _appointment("expired")) == "hold_expired"
    assert _refusal(Kind.APPOINTMENT, _appointment("confirmed")) == "already_paid"
    assert _refusal(Kind.APPOINTMENT, _appointment("cancelled")) == "not_payable"


def test_an_open_booking_is_payable_once_before_its_window():
    assert _refusal(Kind.BOOKING, _booking()) is None
    assert _refusal(Kind.BOOKING, _booking("accepted")) is None
    assert _refusal(Kind.BOOKING, _booking(paid=True)) == "already_paid"
    for ended in ("cancelled", "declined", "completed", "no_show", "checked_in"):
        assert _refusal(Kind.BOOKING, _booking(ended)) == "not_payable", ended
    assert _refusal(Kind.BOOKING, _booking(hours_ahead=0)) == "window_started"


@pytest.mark.parametrize(
    ("role", "starts_in", "full"),
    [
        (Role.PATIENT, DAY, True),  # exactly the notice: still in time
        (Role.PATIENT, DAY - timedelta(seconds=1), False),
        (Role.PATIENT, timedelta(hours=3), False),
        (Role.DOCTOR, timedelta(minutes=5), True),
        (Role.CLINIC, timedelta(0), True),
        (Role.ADMIN, timedelta(hours=1), True),
        ("system", timedelta(hours=1), True),
    ],
)
def test_the_refund_policy(role, starts_in, full):
    decision = rules.on_cancellation(role, starts_in, full_refund_notice=DAY)
    assert decision.full is full
    assert decision.reason


def test_what_is_left_to_refund_counts_refunds_under_way():
    order = {"status": "captured", "amountMinor": 2000, "refundedMinor": 500}
    assert rules.refundable(order) == 1500
    assert rules.refundable({**order, "refundingMinor": 1000}) == 500
    assert rules.refundable({**order, "status": "reversed"}) == 0
    assert rules.refundable({**order, "status": "created"}) == 0


def test_the_status_after_a_refund():
    assert rules.status_after_refund(2000, 2000) is OrderStatus.REFUNDED
    assert rules.status_after_refund(2000, 1) is OrderStatus.PARTIALLY_REFUNDED
    assert rules.status_after_refund(2000, 0) is OrderStatus.CAPTURED


def test_one_order_per_subject_and_who_is_paid():
    assert rules.order_id_for(Kind.BOOKING, "b1") == "booking_b1"
    assert rules.provider_of(Kind.APPOINTMENT, {"doctorUid": "d"}) == ("doctor", "d")
    assert rules.provider_of(Kind.BOOKING, {"clinicUid": "c"}) == ("clinic", "c")
