"""Prescribing for an appointment: the appointment's rules say whether it may be prescribed
for, the prescriptions feature writes the prescription."""

from __future__ import annotations

from typing import Any

from shared.appointments import rules as appointment_rules
from shared.appointments import service as appointments
from shared.platform import idempotency
from shared.platform.context import Principal
from shared.platform.errors import NotFound
from shared.prescriptions import service as prescriptions


def write(
    doctor: Principal,
    appointment_id: str,
    items: list[dict[str, Any]],
    notes: str | None,
    key: idempotency.Key | None,
) -> tuple[dict[str, Any], bool]:
    """The doctor's prescription for their appointment's patient; (prescription, replayed).
    Someone else's appointment does not exist for this doctor (404)."""
    appointment = appointments.get(appointment_id)
    if appointment.get("doctorUid") != doctor.uid:
        raise NotFound()
    status = appointment_rules.Status(appointment["status"])
    return prescriptions.write(
        doctor,
        appointment,
        items,
        notes,
        key,
        prescribable=status in appointment_rules.PRESCRIBABLE,
    )
