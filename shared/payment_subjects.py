"""What an order pays for (an appointment or a clinic booking), seen the same way by payments.

Each aggregate keeps its own rules; this module only dispatches to them, so the payment code
reads, confirms and un-confirms either kind inside its own Firestore transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import appointments, bookings, store
from shared.money import Money
from shared.payment_rules import Kind


def ref(kind: Kind, subject_id: str) -> Any:
    if kind is Kind.APPOINTMENT:
        return appointments.appointment_ref(subject_id)
    return bookings.booking_ref(subject_id)


def read(kind: Kind, subject_id: str, *, tx: Any = None) -> dict[str, Any] | None:
    """The subject as its owner would see it now (a run-out hold shows as expired)."""
    if not 1 <= len(subject_id) <= 128:
        return None
    return shown(kind, ref(kind, subject_id).get(transaction=tx))


def shown(kind: Kind, snap: Any) -> dict[str, Any] | None:
    if not snap.exists:
        return None
    doc: dict[str, Any] = snap.to_dict()
    return appointments.shown(doc) if kind is Kind.APPOINTMENT else doc


def price(doc: dict[str, Any]) -> Money:
    """What the subject costs: copied from the doctor or the clinic when it was booked."""
    return Money(doc["price"]["currency"], int(doc["price"]["amountMinor"]))


def confirm_in(
    tx: Any,
    kind: Kind,
    doc: dict[str, Any],
    payment: dict[str, Any],
    now: datetime,
    *,
    unchanged_since: Any = None,
) -> None:
    """Confirm the paid subject; with `unchanged_since`, only if nobody changed it since."""
    if kind is Kind.APPOINTMENT:
        appointments.confirm_in(tx, doc, payment, now, unchanged_since=unchanged_since)
    else:
        bookings.record_payment_in(tx, doc, payment, now, unchanged_since=unchanged_since)


def revoke_in(
    tx: Any,
    kind: Kind,
    doc: dict[str, Any],
    reason: str,
    now: datetime,
    *,
    unchanged_since: Any = None,
) -> None:
    """Un-confirm a subject whose payment PayPal took back; with `unchanged_since`, only if
    nobody changed it since."""
    if kind is Kind.APPOINTMENT:
        appointments.revoke_payment_in(tx, doc, reason, now, unchanged_since=unchanged_since)
    else:
        bookings.revoke_payment_in(tx, doc, reason, now, unchanged_since=unchanged_since)


def mark_payment_in(
    tx: Any, kind: Kind, snap: Any, status: str, now: datetime, *, unchanged_since: Any = None
) -> None:
    """Show the paid subject's payment as refunded or partly refunded (writes only)."""
    store.update(
        snap.reference,
        {"payment.status": status, "updatedAt": now},
        tx=tx,
        by="system",
        unchanged_since=unchanged_since,
    )
