"""Appointments against the emulators: availability, booking races, holds, lifecycle, lists."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from shared.appointments import service as appointments
from shared.platform import clients, store
from shared.platform.context import Role
from tests.support import (
    EVERY_DAY,
    Api,
    approved_doctor,
    bearer,
    create_user,
    problem,
    slot_in,
)


def _doctor(stack, admin: Api, price: str = "20.00") -> tuple:
    return approved_doctor(stack, admin, price)


def _slot(hours_ahead: float) -> str:
    return slot_in(hours_ahead)


def _book(api: Api, doctor_uid: str, start: str, **headers):
    return api.post(
        "/appointments",
        json={"doctorUid": doctor_uid, "start": start, "note": "cough"},
        headers=headers,
    )


def test_publish_list_slots_and_book_with_the_price_at_booking_time(stack, admin):
    doctor, doctor_api = _doctor(stack, admin, "20.00")
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    start = _slot(48)
    day_after = (datetime.now(UTC) + timedelta(days=2)).date()
    frm = datetime(day_after.year, day_after.month, day_after.day, tzinfo=UTC)

    free = patient.get(
        f"/appointments/doctors/{doctor.uid}/slots",
        params={"from": frm.isoformat(), "to": (frm + timedelta(days=1)).isoformat()},
    )
    assert free.status_code == 200, free.text
    assert len(free.json()["slots"]) == 47  # 00:00 .. 23:00, 30-minute slots ending by 23:30

    booked = _book(patient, doctor.uid, start)
    assert booked.status_code == 201, booked.text
    appt = booked.json()
    assert appt["status"] == "pending_payment"
    assert appt["price"] == {"currency": "USD", "value": "20.00"}
    assert appt["holdExpiresAt"]

    doctor_api.request(
        "PATCH", "/users/me", json={"consultationPrice": {"currency": "USD", "value": "99.00"}}
    )
    again = patient.get(f"/appointments/{appt['id']}").json()
    assert again["price"] == {"currency": "USD", "value": "20.00"}
    after = patient.get(
        f"/appointments/doctors/{doctor.uid}/slots",
        params={"from": frm.isoformat(), "to": (frm + timedelta(days=1)).isoformat()},
    )
    assert start.replace("Z", "+00:00") not in [
        s.replace("Z", "+00:00") for s in after.json()["slots"]
    ]


def test_fifty_patients_racing_for_one_slot_get_one_booking(stack, admin):
    doctor, _ = _doctor(stack, admin)
    patients = [bearer(stack, create_user(stack, Role.PATIENT)) for _ in range(50)]
    start = _slot(72)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda p: _book(p, doctor.uid, start), patients))

    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 49, statuses
    assert all(r.json()["code"] == "slot_taken" for r in results if r.status_code == 409)
    from google.cloud.firestore import FieldFilter

    made = list(
        clients.db()
        .collection("appointments")
        .where(filter=FieldFilter("doctorUid", "==", doctor.uid))
        .stream()
    )
    assert len(made) == 1


def test_idempotency_key_replays_the_first_answer(stack, admin):
    doctor, _ = _doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    start = _slot(30)
    key = uuid.uuid4().hex

    first = _book(patient, doctor.uid, start, **{"Idempotency-Key": key})
    second = _book(patient, doctor.uid, start, **{"Idempotency-Key": key})

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    mine = patient.get("/appointments").json()["items"]
    assert [a["id"] for a in mine] == [first.json()["id"]]
    other = patient.post(
        "/appointments",
        json={"doctorUid": doctor.uid, "start": _slot(40)},
        headers={"Idempotency-Key": key},
    )
    problem(other, 409, "idempotency_key_reused")


def _force(appointment_id: str, **fields) -> None:
    """Move time for one appointment (the emulator has no clock to turn)."""
    store.update(appointments.appointment_ref(appointment_id), fields, by="test")


def _run_out_hold(appointment_id: str) -> None:
    """Let the hold run out, on the appointment and its slot claim alike."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    ref = appointments.appointment_ref(appointment_id)
    store.update(ref, {"holdExpiresAt": past}, by="test")
    slot = clients.db().collection("slots").document(ref.get().to_dict()["slotId"])
    store.update(slot, {"holdExpiresAt": past}, by="test")


def test_an_unpaid_hold_expires_and_frees_the_slot(stack, admin):
    doctor, _ = _doctor(stack, admin)
    first = bearer(stack, create_user(stack, Role.PATIENT))
    second = bearer(stack, create_user(stack, Role.PATIENT))
    start = _slot(50)
    appt = _book(first, doctor.uid, start).json()
    problem(_book(second, doctor.uid, start), 409, "slot_taken")

    _run_out_hold(appt["id"])

    assert first.get(f"/appointments/{appt['id']}").json()["status"] == "expired"  # lazily
    taken = _book(second, doctor.uid, start)
    assert taken.status_code == 201, taken.text
    assert appointments.appointment_ref(appt["id"]).get().to_dict()["status"] == "expired"


def test_the_sweep_expires_run_out_holds(stack, admin):
    doctor, _ = _doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    appt = _book(patient, doctor.uid, _slot(55)).json()
    _run_out_hold(appt["id"])

    swept = admin.post("/appointments/sweep")

    assert swept.status_code == 200
    assert swept.json()["expired"] >= 1
    assert appointments.appointment_ref(appt["id"]).get().to_dict()["status"] == "expired"
    assert not clients.db().collection("slots").document(appt_slot(appt)).get().exists
    problem(patient.post("/appointments/sweep"), 403)


def appt_slot(appt: dict) -> str:
    return appointments.appointment_ref(appt["id"]).get().to_dict()["slotId"]


def test_confirm_then_cancel_by_patient_before_the_cutoff_frees_the_slot(stack, admin):
    doctor, _ = _doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    start = _slot(26)
    appt = _book(patient, doctor.uid, start).json()
    confirmed = appointments.confirm(appt["id"])
    assert confirmed["status"] == "confirmed"
    problem(patient.post(f"/appointments/{appt['id']}/complete"), 403)

    cancelled = patient.post(f"/appointments/{appt['id']}/cancel", json={"reason": "better now"})

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["cancellation"]["role"] == "patient"
    assert body["cancellation"]["wasConfirmed"] is True
    other = bearer(stack, create_user(stack, Role.PATIENT))
    assert _book(other, doctor.uid, start).status_code == 201
    problem(patient.post(f"/appointments/{appt['id']}/cancel", json={}), 409, "illegal_transition")


def test_patients_cannot_cancel_late_but_doctors_can_with_a_reason(stack, admin):
    doctor, doctor_api = _doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    appt = _book(patient, doctor.uid, _slot(1)).json()  # starts within the 2-hour cut-off
    appointments.confirm(appt["id"])

    problem(
        patient.post(f"/appointments/{appt['id']}/cancel", json={}),
        409,
        "cancellation_window_closed",
    )
    problem(doctor_api.post(f"/appointments/{appt['id']}/cancel", json={}), 400, "reason_required")
    done = doctor_api.post(f"/appointments/{appt['id']}/cancel", json={"reason": "doctor unwell"})
    assert done.status_code == 200
    assert done.json()["cancellation"] | {"at": None, "by": None, "hoursBeforeStart": None} == {
        "by": None,
        "role": "doctor",
        "reason": "doctor unwell",
        "at": None,
        "wasConfirmed": True,
        "hoursBeforeStart": None,
        "refund": None,  # nothing was paid through PayPal here: nothing to refund
    }


def test_outcomes_are_recorded_by_the_doctor_once_started(stack, admin):
    doctor, doctor_api = _doctor(stack, admin)
    other_doctor, other_api = _doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    appt = _book(patient, doctor.uid, _slot(5)).json()
    appointments.confirm(appt["id"])
    problem(doctor_api.post(f"/appointments/{appt['id']}/complete"), 409, "not_started")

    _force(appt["id"], start=datetime.now(UTC) - timedelta(minutes=5))

    problem(other_api.post(f"/appointments/{appt['id']}/complete"), 404)
    done = doctor_api.post(f"/appointments/{appt['id']}/no-show")
    assert done.json()["status"] == "no_show"
    problem(doctor_api.post(f"/appointments/{appt['id']}/complete"), 409, "illegal_transition")
    assert other_doctor.uid != doctor.uid


def test_reschedule_moves_atomically(stack, admin):
    doctor, _ = _doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    rival = bearer(stack, create_user(stack, Role.PATIENT))
    old_start, new_start, taken_start = _slot(30), _slot(34), _slot(38)
    appt = _book(patient, doctor.uid, old_start).json()
    problem(
        patient.post(f"/appointments/{appt['id']}/reschedule", json={"start": new_start}),
        409,
        "illegal_transition",
    )  # not confirmed yet
    appointments.confirm(appt["id"])
    assert _book(rival, doctor.uid, taken_start).status_code == 201

    problem(
        patient.post(f"/appointments/{appt['id']}/reschedule", json={"start": taken_start}),
        409,
        "slot_taken",
    )
    assert appointments.appointment_ref(appt["id"]).get().to_dict()["slotId"] == appt_slot(appt)

    moved = patient.post(f"/appointments/{appt['id']}/reschedule", json={"start": new_start})
    assert moved.status_code == 200, moved.text
    assert moved.json()["start"].startswith(new_start[:16])
    assert _book(rival, doctor.uid, old_start).status_code == 201  # the old slot is free again
    problem(_book(rival, doctor.uid, new_start), 409, "slot_taken")


def test_lists_are_scoped_and_filtered(stack, admin):
    doctor, doctor_api = _doctor(stack, admin)
    clinic = create_user(stack, Role.CLINIC)
    problem(
        doctor_api.request("PATCH", "/users/me", json={"clinicUid": clinic.uid}),
        403,
        "field_locked",
    )
    problem(admin.request("PATCH", f"/admin-users/{doctor.uid}", json={"clinicUid": "nope"}), 404)
    tied = admin.request("PATCH", f"/admin-users/{doctor.uid}", json={"clinicUid": clinic.uid})
    assert tied.json()["clinicUid"] == clinic.uid
    alice = bearer(stack, create_user(stack, Role.PATIENT))
    bob = bearer(stack, create_user(stack, Role.PATIENT))
    a1 = _book(alice, doctor.uid, _slot(60)).json()
    a2 = _book(alice, doctor.uid, _slot(90)).json()
    b1 = _book(bob, doctor.uid, _slot(61)).json()
    appointments.confirm(a1["id"])

    assert {a["id"] for a in alice.get("/appointments").json()["items"]} == {a1["id"], a2["id"]}
    problem(alice.get(f"/appointments/{b1['id']}"), 404)
    mine = doctor_api.get("/appointments").json()["items"]
    assert [a["id"] for a in mine] == [a2["id"], b1["id"], a1["id"]]  # latest start first
    confirmed = doctor_api.get("/appointments", params={"status": "confirmed"}).json()["items"]
    assert [a["id"] for a in confirmed] == [a1["id"]]
    day = datetime.fromisoformat(a1["start"].replace("Z", "+00:00"))
    window = doctor_api.get(
        "/appointments",
        params={
            "from": (day - timedelta(minutes=1)).isoformat(),
            "to": (day + timedelta(hours=2)).isoformat(),
        },
    )
    assert {a["id"] for a in window.json()["items"]} == {a1["id"], b1["id"]}
    clinic_view = bearer(stack, clinic).get("/appointments").json()["items"]
    assert {a["id"] for a in clinic_view} == {a1["id"], a2["id"], b1["id"]}
    assert all(a["note"] is None for a in clinic_view)  # the reason for the visit stays private
    by_patient = admin.get(
        "/appointments", params={"patientUid": (alice.get("/session").json()["uid"])}
    )
    assert {a["id"] for a in by_patient.json()["items"]} == {a1["id"], a2["id"]}
    problem(alice.get("/appointments", params={"doctorUid": doctor.uid}), 400, "filter_not_allowed")
    problem(bearer(stack, create_user(stack, Role.PHARMACY)).get("/appointments"), 403)
    page = doctor_api.get("/appointments", params={"limit": 2}).json()
    rest = doctor_api.get("/appointments", params={"limit": 2, "cursor": page["nextCursor"]}).json()
    assert [a["id"] for a in page["items"] + rest["items"]] == [a2["id"], b1["id"], a1["id"]]


def test_booking_refusals(stack, admin):
    doctor, _ = _doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    problem(
        patient.post(
            "/appointments", json={"doctorUid": doctor.uid, "start": "2020-01-01T10:00:00Z"}
        ),
        409,
        "slot_in_past",
    )
    off_grid = _slot(30).replace(":00:00Z", ":10:00Z").replace(":30:00Z", ":40:00Z")
    problem(_book(patient, doctor.uid, off_grid), 400, "not_a_slot")
    problem(_book(patient, "no-such-doctor", _slot(30)), 404, "doctor_not_found")
    problem(
        patient.post(
            "/appointments", json={"doctorUid": doctor.uid, "start": "2030-01-01T10:00:00"}
        ),
        400,
        "validation_failed",
    )  # no time zone
    unapproved = create_user(stack, Role.DOCTOR, approved=False)
    problem(
        bearer(stack, unapproved).request(
            "PUT",
            "/appointments/availability",
            json={"timeZone": "UTC", "slotMinutes": 30, "weekly": EVERY_DAY},
        ),
        403,
        "not_approved",
    )
    problem(
        bearer(stack, create_user(stack, Role.DOCTOR)).request(
            "PUT",
            "/appointments/availability",
            json={"timeZone": "Mars/Olympus", "slotMinutes": 30, "weekly": {}},
        ),
        400,
        "validation_failed",
    )


def test_every_outcome_writes_the_actors_read_of_the_note_before_answering(stack, admin):
    """Cancel, complete, no-show and reschedule answer the appointment with the reason for the
    visit: a `read` entry of that appointment by whoever acted is written before the answer."""
    from tests.test_prescriptions import read_entries, reads_of

    doctor, doctor_api = _doctor(stack, admin)
    patient_user = create_user(stack, Role.PATIENT)
    patient = bearer(stack, patient_user)
    booked = [_book(patient, doctor.uid, _slot(hours)).json() for hours in (70, 72, 74, 76)]
    for appt in booked:
        appointments.confirm(appt["id"])
    moved, cancelled, completed, missed = booked
    for appt in (completed, missed):
        _force(appt["id"], start=datetime.now(UTC) - timedelta(minutes=5))

    outcomes = [
        (moved, patient, patient_user.uid, "reschedule", {"start": _slot(78)}),
        (cancelled, patient, patient_user.uid, "cancel", {"reason": "better now"}),
        (completed, doctor_api, doctor.uid, "complete", None),
        (missed, doctor_api, doctor.uid, "no-show", None),
    ]
    for appt, api, actor, step, body in outcomes:
        path = f"appointments/{appt['id']}"
        before = reads_of(path, actor)
        answered = api.post(f"/{path}/{step}", **({"json": body} if body is not None else {}))
        assert answered.status_code == 200, (step, answered.text)
        assert answered.json()["note"] == "cough"
        assert reads_of(path, actor) == before + 1, step
    [entry] = read_entries(f"appointments/{missed['id']}", doctor.uid)
    assert (entry["function"], entry["reason"]) == ("appointments", "POST /<id>/no-show")
    # A refused outcome hands nothing out and reads nothing.
    problem(doctor_api.post(f"/appointments/{missed['id']}/complete"), 409, "illegal_transition")
    assert reads_of(f"appointments/{missed['id']}", doctor.uid) == 1


def test_a_doctors_list_names_the_patients_and_a_patients_own_does_not_need_to(stack, admin):
    """The doctor's day reads as people: each appointment carries its patient's display name
    (one batched read per page), for the doctor and admins; not for the patient themselves."""
    doctor, doctor_api = approved_doctor(stack, admin)
    named, unnamed = create_user(stack, Role.PATIENT), create_user(stack, Role.PATIENT)
    name = f"Ayşe {uuid.uuid4().hex[:6]}"
    patient = bearer(stack, named)
    assert patient.request("PATCH", "/users/me", json={"displayName": name}).status_code == 200
    for user, hours in ((named, 30), (unnamed, 31)):
        booked = bearer(stack, user).post(
            "/appointments", json={"doctorUid": doctor.uid, "start": slot_in(hours)}
        )
        assert booked.status_code == 201, booked.text
    listed = doctor_api.get("/appointments").json()["items"]
    assert {a["patientUid"]: a["patientName"] for a in listed} == {
        named.uid: name,
        unnamed.uid: None,
    }
    everyone = admin.get("/appointments", params={"doctorUid": doctor.uid}).json()["items"]
    assert {a["patientName"] for a in everyone} == {name, None}
    (own,) = patient.get("/appointments").json()["items"]
    assert own["patientName"] is None
