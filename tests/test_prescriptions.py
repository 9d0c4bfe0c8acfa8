"""Prescriptions against the emulators: who writes, who sees, who moves, and read records."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from google.cloud.firestore import FieldFilter

from shared.appointments import service as appointments
from shared.platform import clients
from shared.platform.context import Role
from tests.support import PRESCRIPTION_ITEM as ITEM
from tests.support import Api, approved_doctor, bearer, create_user, problem, slot_in


@pytest.fixture
def visit(stack, admin):
    """A confirmed appointment: (doctor api, patient api, patient user, appointment id)."""
    _, doctor_api = approved_doctor(stack, admin)
    patient_user = create_user(stack, Role.PATIENT)
    patient = bearer(stack, patient_user)
    doctor_uid = doctor_api.get("/session").json()["uid"]
    booked = patient.post("/appointments", json={"doctorUid": doctor_uid, "start": slot_in(30)})
    assert booked.status_code == 201, booked.text
    appointments.confirm(booked.json()["id"])
    return doctor_api, patient, patient_user, booked.json()["id"]


def _write(doctor: Api, appointment_id: str, **headers):
    return doctor.post(
        "/prescriptions",
        json={"appointmentId": appointment_id, "items": [ITEM], "notes": "Suspected strep."},
        headers=headers,
    )


def _pharmacy(stack, admin) -> tuple[str, Api]:
    user = create_user(stack, Role.PHARMACY)
    return user.uid, bearer(stack, user)


def read_entries(path: str, actor: str) -> list[dict[str, Any]]:
    """`read` entries of the audit log for this resource and reader."""
    entries = clients.db().collection("audit").where(filter=FieldFilter("resource", "==", path))
    found = (e.to_dict() or {} for e in entries.stream())
    return [e for e in found if e["action"] == "read" and e["actor"] == actor]


def reads_of(path: str, actor: str) -> int:
    return len(read_entries(path, actor))


def test_the_appointments_doctor_writes_for_its_patient(stack, visit):
    doctor, patient, patient_user, appointment_id = visit

    response = _write(doctor, appointment_id)

    assert response.status_code == 201, response.text
    rx = response.json()
    assert rx["status"] == "issued"
    assert rx["patientUid"] == patient_user.uid
    assert rx["items"][0]["medication"] == "Amoxicillin"
    assert rx["items"][0]["durationDays"] == 7
    problem(
        patient.post("/prescriptions", json={"appointmentId": appointment_id, "items": [ITEM]}), 403
    )


def test_a_doctor_cannot_prescribe_on_someone_elses_or_unconfirmed_appointment(stack, admin, visit):
    _, other_doctor = approved_doctor(stack, admin)
    _, patient, _, appointment_id = visit
    problem(_write(other_doctor, appointment_id), 404)
    problem(_write(other_doctor, "no-such-appointment"), 404)

    other_uid = other_doctor.get("/session").json()["uid"]
    pending = patient.post(
        "/appointments", json={"doctorUid": other_uid, "start": slot_in(40)}
    ).json()
    problem(_write(other_doctor, pending["id"]), 409, "appointment_not_eligible")


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([{**ITEM, "quantity": 0}], "items.0.quantity"),
        ([{**ITEM, "form": "potion"}], "items.0.form"),
        ([{**ITEM, "medication": "x" * 200}], "items.0.medication"),
        ([{**ITEM, "colour": "red"}], "items.0.colour"),
    ],
)
def test_items_are_validated(stack, visit, items, field):
    doctor, _, _, appointment_id = visit
    response = doctor.post("/prescriptions", json={"appointmentId": appointment_id, "items": items})
    errors = problem(response, 400, "validation_failed")["errors"]
    assert any(e["field"] == field for e in errors), errors


def test_idempotent_write(stack, visit):
    doctor, _, _, appointment_id = visit
    key = uuid.uuid4().hex
    first = _write(doctor, appointment_id, **{"Idempotency-Key": key})
    again = _write(doctor, appointment_id, **{"Idempotency-Key": key})
    assert again.json()["id"] == first.json()["id"]
    assert len(doctor.get("/prescriptions").json()["items"]) == 1


@pytest.mark.parametrize("same_body", [True, False])
def test_one_key_sent_at_once_makes_one_prescription(stack, visit, same_body):
    """Eight writes with one Idempotency-Key at once: one is made; the others replay it, or,
    sent with another body, are refused (409); none is a 500 of the key's lost race."""
    from concurrent.futures import ThreadPoolExecutor

    doctor, _, _, appointment_id = visit
    key = uuid.uuid4().hex

    def write(n: int) -> Any:
        item = ITEM if same_body else {**ITEM, "quantity": n + 1}
        return doctor.post(
            "/prescriptions",
            json={"appointmentId": appointment_id, "items": [item]},
            headers={"Idempotency-Key": key},
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(write, range(8)))
    statuses = sorted(a.status_code for a in answers)
    made = [a for a in answers if a.status_code == 201 and "Idempotent-Replayed" not in a.headers]
    assert len(made) == 1, statuses
    if same_body:
        assert set(statuses) == {201}, statuses  # replays answer as the first, marked replayed
        assert {a.json()["id"] for a in answers} == {made[0].json()["id"]}
    else:
        for answer in answers:
            if answer.status_code != 201:
                problem(answer, 409, "idempotency_key_reused")
    assert len(doctor.get("/prescriptions").json()["items"]) == 1


def test_the_full_lifecycle_to_dispensed_and_then_frozen(stack, admin, visit):
    doctor, patient, patient_user, appointment_id = visit
    rx = _write(doctor, appointment_id).json()
    pharmacy_uid, pharmacy = _pharmacy(stack, admin)
    problem(pharmacy.get(f"/prescriptions/{rx['id']}"), 404)  # not sent to it yet

    sent = patient.post(f"/prescriptions/{rx['id']}/send", json={"pharmacyUid": pharmacy_uid})
    assert sent.json()["status"] == "sent"
    queue = pharmacy.get("/prescriptions", params={"status": "sent"}).json()["items"]
    assert [q["id"] for q in queue] == [rx["id"]]
    problem(pharmacy.post(f"/prescriptions/{rx['id']}/ready"), 409, "illegal_transition")
    for step, status in (("receive", "received"), ("ready", "ready"), ("dispense", "dispensed")):
        moved = pharmacy.post(f"/prescriptions/{rx['id']}/{step}")
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == status
    problem(doctor.post(f"/prescriptions/{rx['id']}/cancel", json={}), 409, "prescription_final")
    problem(
        pharmacy.post(f"/prescriptions/{rx['id']}/reject", json={"reason": "too late"}),
        409,
        "prescription_final",
    )
    history = patient.get(f"/prescriptions/{rx['id']}").json()["history"]
    assert [h["status"] for h in history] == ["issued", "sent", "received", "ready", "dispensed"]
    assert patient_user.uid in {h["by"] for h in history}


def test_rejection_lets_the_patient_choose_another_pharmacy(stack, admin, visit):
    doctor, patient, _, appointment_id = visit
    rx = _write(doctor, appointment_id).json()
    first_uid, first = _pharmacy(stack, admin)
    second_uid, second = _pharmacy(stack, admin)
    patient.post(
        f"/prescriptions/{rx['id']}/send", json={"pharmacyUid": first_uid}
    ).raise_for_status()
    problem(first.post(f"/prescriptions/{rx['id']}/reject", json={}), 400, "validation_failed")
    rejected = first.post(f"/prescriptions/{rx['id']}/reject", json={"reason": "out of stock"})
    assert rejected.json()["history"][-1]["reason"] == "out of stock"

    patient.post(
        f"/prescriptions/{rx['id']}/send", json={"pharmacyUid": second_uid}
    ).raise_for_status()

    problem(first.get(f"/prescriptions/{rx['id']}"), 404)  # no longer theirs
    assert second.get(f"/prescriptions/{rx['id']}").json()["status"] == "sent"


def test_only_approved_pharmacies_can_be_chosen(stack, visit):
    doctor, patient, _, appointment_id = visit
    rx = _write(doctor, appointment_id).json()
    unapproved = create_user(stack, Role.PHARMACY, approved=False)
    from shared.identity import profiles
    from shared.platform import store

    store.update(profiles.ref(unapproved.uid), {"approved": False}, by="test")
    problem(
        patient.post(f"/prescriptions/{rx['id']}/send", json={"pharmacyUid": unapproved.uid}),
        404,
        "pharmacy_not_found",
    )
    problem(patient.post(f"/prescriptions/{rx['id']}/send", json={"pharmacyUid": "nobody"}), 404)


def test_doctor_cancels_before_dispensing(stack, visit):
    doctor, patient, _, appointment_id = visit
    rx = _write(doctor, appointment_id).json()
    cancelled = doctor.post(f"/prescriptions/{rx['id']}/cancel", json={"reason": "wrong dose"})
    assert cancelled.json()["status"] == "cancelled"
    problem(patient.post(f"/prescriptions/{rx['id']}/cancel", json={}), 403)


def test_who_sees_what_and_every_read_is_recorded(stack, admin, visit):
    doctor, patient, patient_user, appointment_id = visit
    rx = _write(doctor, appointment_id).json()
    path = f"prescriptions/{rx['id']}"
    stranger = bearer(stack, create_user(stack, Role.PATIENT))
    _, other_pharmacy = _pharmacy(stack, admin)

    problem(stranger.get(f"/prescriptions/{rx['id']}"), 404)
    problem(other_pharmacy.get(f"/prescriptions/{rx['id']}"), 404)
    assert stranger.get("/prescriptions").json()["items"] == []
    assert patient.get(f"/prescriptions/{rx['id']}").status_code == 200
    assert patient.get(f"/prescriptions/{rx['id']}").status_code == 200
    assert [p["id"] for p in patient.get("/prescriptions").json()["items"]] == [rx["id"]]
    admin_uid = admin.get("/session").json()["uid"]
    assert admin.get(f"/prescriptions/{rx['id']}").status_code == 200

    assert reads_of(path, patient_user.uid) == 3  # two reads and one list
    assert reads_of(path, admin_uid) == 1
    stranger_uid = stranger.get("/session").json()["uid"]
    assert reads_of(path, stranger_uid) == 0  # refused reads read nothing
    problem(bearer(stack, create_user(stack, Role.CLINIC)).get("/prescriptions"), 403)


def test_every_transition_writes_the_movers_read_before_answering(stack, admin, visit):
    """Each move answers the prescription, items and notes: a `read` entry of that
    prescription by whoever moved it is written before the answer is sent."""
    doctor, patient, patient_user, appointment_id = visit
    doctor_uid = doctor.get("/session").json()["uid"]
    pharmacy_uid, pharmacy = _pharmacy(stack, admin)
    rx = _write(doctor, appointment_id).json()
    withdrawn = _write(doctor, appointment_id).json()
    assert reads_of(f"prescriptions/{rx['id']}", doctor_uid) == 1  # handed back to its writer

    moves = [
        (rx, patient, patient_user.uid, "send", {"pharmacyUid": pharmacy_uid}),
        (rx, pharmacy, pharmacy_uid, "receive", None),
        (rx, pharmacy, pharmacy_uid, "reject", {"reason": "out of stock"}),
        (rx, patient, patient_user.uid, "send", {"pharmacyUid": pharmacy_uid}),
        (rx, pharmacy, pharmacy_uid, "receive", None),
        (rx, pharmacy, pharmacy_uid, "ready", None),
        (rx, pharmacy, pharmacy_uid, "dispense", None),
        (withdrawn, doctor, doctor_uid, "cancel", {"reason": "wrong dose"}),
    ]
    for prescription, api, actor, step, body in moves:
        path = f"prescriptions/{prescription['id']}"
        before = reads_of(path, actor)
        moved = api.post(f"/{path}/{step}", **({"json": body} if body is not None else {}))
        assert moved.status_code == 200, (step, moved.text)
        assert moved.json()["items"][0]["medication"] == "Amoxicillin"
        assert reads_of(path, actor) == before + 1, step
    [entry] = [
        e
        for e in read_entries(f"prescriptions/{withdrawn['id']}", doctor_uid)
        if e["reason"] != "POST /"
    ]
    assert (entry["function"], entry["reason"]) == ("prescriptions", "POST /<id>/cancel")
    # A refused move hands nothing out and reads nothing.
    before = reads_of(f"prescriptions/{rx['id']}", pharmacy_uid)
    problem(pharmacy.post(f"/prescriptions/{rx['id']}/ready"), 409)
    assert reads_of(f"prescriptions/{rx['id']}", pharmacy_uid) == before
