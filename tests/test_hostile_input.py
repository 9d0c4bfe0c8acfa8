"""Hostile input anywhere gets a problem, never a 500: far dates, crafted cursors, odd ids."""

from __future__ import annotations

import base64
import json

import pytest

from shared.platform.context import Role
from tests.support import approved_doctor, bearer, create_user, problem


def _cursor(values: list, doc_id: str) -> str:
    raw = json.dumps([values, doc_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_far_dates_are_a_validation_error(stack, admin):
    doctor, _ = approved_doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    far = "9999-12-31T23:00:00-05:00"
    problem(
        patient.post("/appointments", json={"doctorUid": doctor.uid, "start": far}),
        400,
        "validation_failed",
    )
    problem(
        patient.get(
            f"/appointments/doctors/{doctor.uid}/slots",
            params={"from": "9999-12-01T00:00:00Z", "to": far},
        ),
        400,
        "validation_failed",
    )
    problem(
        patient.get("/appointments", params={"from": "0001-01-01T00:00:00Z"}),
        400,
        "validation_failed",
    )
    clinic = bearer(stack, create_user(stack, Role.CLINIC))
    problem(
        clinic.get(
            "/bookings/clinics/me/stats", params={"fromDate": "9999-12-01", "toDate": "9999-12-31"}
        ),
        400,
    )


@pytest.mark.parametrize("doc_id", ["a/b", "__reserved__", "x" * 300])
def test_crafted_cursors_are_refused(stack, doc_id):
    api = bearer(stack, create_user(stack, Role.PATIENT))
    cursor = _cursor(["2030-01-01T00:00:00+00:00"], doc_id)
    problem(api.get("/appointments", params={"cursor": cursor}), 400, "invalid_cursor")
    problem(api.get("/session/sessions", params={"cursor": cursor}), 400, "invalid_cursor")


@pytest.mark.parametrize("bad_id", ["__reserved__", "a.b..c%2Fd", "%00", "x" * 300])
def test_ids_that_cannot_name_a_document_are_not_found(stack, admin, bad_id):
    for path in (
        f"/appointments/{bad_id}",
        f"/prescriptions/{bad_id}",
        f"/bookings/{bad_id}",
        f"/admin-users/{bad_id}",
        f"/users/{bad_id}",
        f"/bookings/clinics/{bad_id}",
    ):
        response = admin.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text)


def test_unapproved_clinics_are_hidden_from_patients(stack, admin):
    from tests.test_bookings import Clinic

    clinic = Clinic(stack)  # set up while approved
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    assert patient.get(f"/bookings/clinics/{clinic.uid}").status_code == 200
    admin.post(
        f"/admin-users/{clinic.uid}/approval",
        json={"decision": "reject", "reason": "expired permit"},
    ).raise_for_status()
    problem(patient.get(f"/bookings/clinics/{clinic.uid}"), 404)
    assert admin.get(f"/bookings/clinics/{clinic.uid}").status_code == 200


def test_booking_notes_handed_out_are_logged(stack):
    from tests.test_audit import entries
    from tests.test_bookings import Clinic, _ask

    clinic = Clinic(stack)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booking = _ask(patient, clinic, extra={"note": "sore throat"}).json()
    seen = clinic.api.get(f"/bookings/{booking['id']}")
    assert seen.json()["note"] == "sore throat"
    reads = [e for e in entries(f"bookings/{booking['id']}") if e["action"] == "read"]
    assert clinic.uid in {e["actor"] for e in reads}
