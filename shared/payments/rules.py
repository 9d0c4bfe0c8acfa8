"""Payments, the rules alone: what may be paid, the order's states, and the refund policy. Pure.

The payment services (shared/payments/orders.py, refunds.py, webhooks.py) apply these to what
they read; tests/test_payment_rules.py checks them without any I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from shared.platform.context import Role

# PayPal's ids (of a refund, a chargeback) as they are: letters, digits, '-' and '_', short.
PAYPAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def id_part(paypal_id: str) -> str:
    """PayPal's id of something, fit to be part of a Firestore document id (a ledger
    transaction's, a refund's): as it is when it has the shape of PayPal's ids, else a digest
    of it (`sha-` and 64 hex digits, longer than any id kept as it is, so the two never meet).
    An id with '/' (a path), dots, '__' or of any length so names one document, the same one
    at every delivery, and a redelivery finds it booked."""
    if PAYPAL_ID.fullmatch(paypal_id):
        return paypal_id
    return "sha-" + hashlib.sha256(paypal_id.encode("utf-8")).hexdigest()


class Kind(StrEnum):
    """What an order pays for."""

    APPOINTMENT = "appointment"
    BOOKING = "booking"


class OrderStatus(StrEnum):
    CREATED = "created"  # a PayPal order exists; the buyer approves it in PayPal's window
    CAPTURE_PENDING = "capture_pending"  # PayPal holds the capture (e.g. an eCheck) for now
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DENIED = "denied"  # a pending capture PayPal then denied: nothing was paid
    REVERSED = "reversed"  # a chargeback took back all the order still held
    ABANDONED = "abandoned"  # PayPal let the order lapse unpaid: the next one may be made


# Statuses in which money was taken and (some of it) is still with the platform. A chargeback
# of part of it (`reversedMinor`) leaves the order in its status: it still holds the rest,
# which may be refunded and is paid out to the provider (shared/payments/webhooks.take_back).
HOLDS_MONEY = frozenset(
    {OrderStatus.CAPTURED, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}
)
# Statuses an order can still be captured from.
CAPTURABLE = frozenset({OrderStatus.CREATED, OrderStatus.CAPTURE_PENDING})
# Statuses that ended with nothing paid: the subject may be paid with a new order.
UNPAID_ENDS = frozenset({OrderStatus.DENIED, OrderStatus.ABANDONED})


class NotPayable(Exception):
    """Why a subject cannot be paid now; `code` is the problem code (409). Each subject's own
    rules say when it may be paid (`payment_refusal` in shared/appointments/rules.py and
    shared/bookings/rules.py); shared/workflows/payment_subjects.py raises this from them."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def provider_of(kind: Kind, doc: dict[str, Any]) -> tuple[str, str]:
    """(earnings kind, uid) of whoever is paid for this subject."""
    if kind is Kind.APPOINTMENT:
        return "doctor", str(doc["doctorUid"])
    return "clinic", str(doc["clinicUid"])


def order_id_for(kind: Kind, subject_id: str) -> str:
    """One order per subject: asking to pay twice finds the same order."""
    return f"{kind.value}_{subject_id}"


# -- refunds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundDecision:
    full: bool
    reason: str


def on_cancellation(
    role: Role | str, starts_in: timedelta, *, full_refund_notice: timedelta
) -> RefundDecision:
    """The refund a cancellation of a paid appointment or booking earns.

    A patient who cancels at least `full_refund_notice` ahead gets everything back, later
    nothing. When the doctor, the clinic, an admin or the system (a declined or expired
    request) cancels, the patient is never out of pocket.
    """
    if role in (Role.PATIENT, Role.PATIENT.value):
        if starts_in >= full_refund_notice:
            return RefundDecision(True, "cancelled by the patient in time for a full refund")
        return RefundDecision(False, "cancelled by the patient too late for a refund")
    who = role.value if isinstance(role, Role) else role
    return RefundDecision(True, f"cancelled by the {who}")


def refundable(order: dict[str, Any]) -> int:
    """Minor units of an order that may still be refunded (captured, less refunded, less
    refunds under way and less what chargebacks of part of it took back)."""
    if OrderStatus(order["status"]) not in HOLDS_MONEY:
        return 0
    return (
        int(order["amountMinor"])
        - int(order.get("refundedMinor", 0))
        - int(order.get("refundingMinor", 0))
        - int(order.get("reversedMinor", 0))
    )


def status_after_refund(
    amount_minor: int, refunded_minor: int, reversed_minor: int = 0
) -> OrderStatus:
    """An order's status once `refunded_minor` is refunded: `refunded` when refunds and partial
    chargebacks (`reversed_minor`) together left it nothing."""
    if refunded_minor + reversed_minor >= amount_minor:
        return OrderStatus.REFUNDED
    return OrderStatus.PARTIALLY_REFUNDED if refunded_minor else OrderStatus.CAPTURED
