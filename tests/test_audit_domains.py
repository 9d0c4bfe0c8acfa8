"""Mutations through the appointments, prescriptions and bookings functions are audited:
one entry per change, by the right actor, health data as keyed hashes rather than copied."""

from __future__ import annotations

from shared.appointments import service as appointments
from shared.platform.context import Role
from tests.support import approved_doctor, bearer, create_user, slot_in
from tests.test_audit import wait_for
from tests.test_bookings import Clinic, _ask


def test_booking_and_cancelling_an_appointment(stack, admin):
    doctor, doctor_api = approved_doctor(stack, admin)
    patient_user = create_user(stack, Role.PATIENT)
    patient = bearer(stack, patient_user)
    booked = patient.post(
        "/appointments", json={"doctorUid": doctor.uid, "start": slot_in(30), "note": "chest pain"}
    )
    assert booked.status_code == 201, booked.text
    appointments.confirm(booked.json()["id"])
    cancelled = doctor_api.post(
        f"/appointments/{booked.json()['id']}/cancel", json={"reason": "doctor unwell"}
    )
    assert cancelled.status_code == 200, cancelled.text

    created, confirmed, cancel = wait_for(
        f"appointments/{booked.json()['id']}", ["create", "update", "update"], changes_only=True
    )
    assert created["actor"] == patient_user.uid
    assert created["function"] == "appointments"
    assert created["changes"]["note"]["after"].startswith("hmac-sha256:")
    assert "chest pain" not in str(created)
    assert confirmed["actor"] == "system"
    assert cancel["actor"] == doctor.uid
    assert cancel["changes"]["status"] == {"before": "confirmed", "after": "cancelled"}


def test_writing_and_filling_a_prescription(stack, admin):
    doctor, doctor_api = approved_doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booked = patient.post("/appointments", json={"doctorUid": doctor.uid, "start": slot_in(30)})
    appointments.confirm(booked.json()["id"])
    item = {
        "medication": "Ibuprofen",
        "strength": "200 mg",
        "form": "tablet",
        "dose": "1",
        "frequency": "twice a day",
        "durationDays": 3,
        "quantity": 6,
    }
    rx = doctor_api.post(
        "/prescriptions", json={"appointmentId": booked.json()["id"], "items": [item]}
    ).json()
    pharmacy_user = create_user(stack, Role.PHARMACY)
    patient.post(f"/prescriptions/{rx['id']}/send", json={"pharmacyUid": pharmacy_user.uid})
    bearer(stack, pharmacy_user).post(f"/prescriptions/{rx['id']}/receive").raise_for_status()

    history = wait_for(
        f"prescriptions/{rx['id']}", ["create", "update", "update"], changes_only=True
    )
    written = history[0]
    assert written["actor"] == doctor.uid
    assert written["changes"]["items"]["after"].startswith("hmac-sha256:")
    assert "Ibuprofen" not in str(written)
    assert [e["actor"] for e in history[1:]] == [
        patient.get("/session").json()["uid"],
        pharmacy_user.uid,
    ]


def test_requesting_and_accepting_a_clinic_booking(stack):
    clinic = Clinic(stack)
    patient_user = create_user(stack, Role.PATIENT)
    requested = _ask(bearer(stack, patient_user), clinic)
    assert requested.status_code == 201, requested.text
    booking_id = requested.json()["id"]
    clinic.act(booking_id, "accept")

    created, accepted = wait_for(f"bookings/{booking_id}", ["create", "update"])
    assert created["actor"] == patient_user.uid
    assert created["function"] == "bookings"
    assert accepted["actor"] == clinic.uid
    assert accepted["changes"]["status"] == {"before": "requested", "after": "accepted"}
