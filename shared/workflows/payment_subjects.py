"""Appointments and clinic bookings as payments sees them: the `Subjects` port of
shared/payments/subjects.py, implemented by dispatching to each feature's own rules.

Each aggregate keeps its own rules; this module only dispatches to them, so the payment code
reads, confirms and un-confirms either kind inside its own Firestore transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.appointments import rules as appointment_rules
from shared.appointments import service as appointments
from shared.bookings import rules as booking_rules
from shared.bookings import service as bookings
from shared.payments.rules import Kind, NotPayable


class _Subjects:
    def shown(self, kind: Kind, snap: Any) -> dict[str, Any] | None:
        if not snap.exists:
            return None
        doc: dict[str, Any] = snap.to_dict()
        return appointments.shown(doc) if kind is Kind.APPOINTMENT else doc

    def check_payable(self, kind: Kind, doc: dict[str, Any], now: datetime) -> None:
        if kind is Kind.APPOINTMENT:
            refusal = appointment_rules.payment_refusal(doc, now)
        else:
            refusal = booking_rules.payment_refusal(doc, now)
        if refusal is not None:
            raise NotPayable(*refusal)

    def confirm_in(
        self,
        tx: Any,
        kind: Kind,
        doc: dict[str, Any],
        payment: dict[str, Any],
        now: datetime,
        *,
        unchanged_since: Any = None,
    ) -> None:
        if kind is Kind.APPOINTMENT:
            appointments.confirm_in(tx, doc, payment, now, unchanged_since=unchanged_since)
        else:
            bookings.record_payment_in(tx, doc, payment, now, unchanged_since=unchanged_since)

    def revoke_in(
        self,
        tx: Any,
        kind: Kind,
        doc: dict[str, Any],
        reason: str,
        now: datetime,
        *,
        unchanged_since: Any = None,
    ) -> None:
        if kind is Kind.APPOINTMENT:
            appointments.revoke_payment_in(tx, doc, reason, now, unchanged_since=unchanged_since)
        else:
            bookings.revoke_payment_in(tx, doc, reason, now, unchanged_since=unchanged_since)


SUBJECTS = _Subjects()
