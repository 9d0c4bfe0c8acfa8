"""Appointments and clinic bookings as payouts sees them: the `Deliveries` port of
shared/payouts/deliveries.py, answered from each feature's own records and states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.appointments import rules as appointment_rules
from shared.appointments import service as appointments
from shared.bookings import rules as booking_rules
from shared.bookings import service as bookings
from shared.payments.rules import Kind
from shared.payouts.deliveries import Subject
from shared.platform import clients

_BATCH = 300  # documents per get_all


def delivery_time(kind: Kind, doc: dict[str, Any] | None) -> datetime | None:
    """When the visit an order paid for was delivered: its own end, as its feature's rules
    say (never when someone recorded its outcome); None while it has not been."""
    if doc is None:
        return None
    if kind is Kind.APPOINTMENT:
        return appointment_rules.delivered_at(doc)
    return booking_rules.delivered_at(doc)


class _Deliveries:
    def delivered_at(self, subjects: Sequence[Subject]) -> dict[Subject, datetime | None]:
        refs = {
            subject: (
                appointments.appointment_ref(subject[1])
                if subject[0] is Kind.APPOINTMENT
                else bookings.booking_ref(subject[1])
            )
            for subject in set(subjects)
        }
        by_path = {ref.path: subject for subject, ref in refs.items()}
        found: dict[Subject, datetime | None] = dict.fromkeys(refs)
        ordered = list(refs.values())
        for start in range(0, len(ordered), _BATCH):
            for snap in clients.db().get_all(ordered[start : start + _BATCH]):
                subject = by_path[snap.reference.path]
                found[subject] = delivery_time(subject[0], snap.to_dict() if snap.exists else None)
        return found


DELIVERIES = _Deliveries()
