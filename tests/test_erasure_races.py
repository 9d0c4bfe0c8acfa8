"""Closing an account, raced (issue 27, a review's reproductions): repeated requests are one
request told once; no booking lands with an account being erased, a doctor's or a clinic's;
an erased provider's profile is never bookable again."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from google.cloud.firestore import FieldFilter

from shared.platform import clients, store
from shared.platform.context import Role, Service
from shared.privacy import erasure, rules
from tests.payout_support import notices_to
from tests.support import (
    Api,
    approved_doctor,
    bearer,
    clinic_setup,
    create_user,
    erasure_due_now,
    problem,
    service_api,
    slot_in,
)

ZONE = "Asia/Jakarta"


def _mine(collection: str, field: str, uid: str) -> list[dict[str, Any]]:
    query = clients.db().collection(collection).where(filter=FieldFilter(field, "==", uid))
    return [{**(s.to_dict() or {}), "id": s.id} for s in query.stream()]


def _request(request_id: str) -> dict[str, Any]:
    snap = clients.db().collection("privacyRequests").document(request_id).get()
    return snap.to_dict() or {}


# -- one open request per account, told once ------------------------------------------------------


def test_concurrent_requests_to_close_an_account_make_one_request_and_one_notice(stack):
    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: api.post("/privacy/erasure"), range(6)))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    made = [r for r in _mine("privacyRequests", "uid", user.uid) if r.get("kind") == "erasure"]
    assert len(made) == 1, made
    assert len(notices_to(user.uid, "erasure_requested")) == 1

    # Once cancelled, the account may ask again: a new request, told again.
    request_id = answers[0].json()["id"]
    assert api.post(f"/privacy/erasure/{request_id}/cancel").status_code == 200
    again = api.post("/privacy/erasure")
    assert again.status_code == 201, again.text
    assert again.json()["id"] != request_id
    assert len(notices_to(user.uid, "erasure_requested")) == 2


# -- no booking lands with an account being erased ----------------------------------------------


def _during_the_check(monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
    """Run `act` (bookings fired at once) right after the erasure run judged the blockers: the
    moment that used to let a booking in between the check and the erasure."""
    judged = erasure._still_blocked

    def judge_then_act(req: dict[str, Any]) -> tuple[str, list[str]]:
        found = judged(req)
        act()
        return found

    monkeypatch.setattr(erasure, "_still_blocked", judge_then_act)


def _at_once(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def _book_doctor(patient: Api, doctor_uid: str, start: str) -> Callable[[], requests.Response]:
    return lambda: patient.post(
        "/appointments", json={"doctorUid": doctor_uid, "start": start, "note": "cough"}
    )


def test_no_visit_is_booked_with_a_doctor_whose_erasure_has_begun(stack, admin, monkeypatch):
    doctor, doctor_api = approved_doctor(stack, admin)
    patients = [bearer(stack, create_user(stack, Role.PATIENT)) for _ in range(6)]
    asked = doctor_api.post("/privacy/erasure")
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["id"]
    erasure_due_now(request_id)
    answers: list[requests.Response] = []
    calls = [_book_doctor(p, doctor.uid, slot_in(48 + i)) for i, p in enumerate(patients)]
    _during_the_check(monkeypatch, lambda: answers.extend(_at_once(calls)))

    ran = erasure.run(50, "test")

    assert request_id in ran["erased"], ran
    assert len(answers) == 6
    for answer in answers:
        problem(answer, 404, "doctor_not_found")
    open_visits = [
        a
        for a in _mine("appointments", "doctorUid", doctor.uid)
        if a["status"] in rules.OPEN_APPOINTMENTS
    ]
    assert open_visits == [], "erased with visits to come"


def test_a_visit_booked_before_the_fence_blocks_the_erasure(stack, admin):
    """The other side of the race: a booking that made it before the run fenced the account
    is found by the run, which then waits (blocked), and the doctor takes no new booking
    until the request is cancelled."""
    doctor, doctor_api = approved_doctor(stack, admin)
    first, later = (bearer(stack, create_user(stack, Role.PATIENT)) for _ in range(2))
    request_id = doctor_api.post("/privacy/erasure").json()["id"]
    booked = _book_doctor(first, doctor.uid, slot_in(30))()
    assert booked.status_code == 201, booked.text
    erasure_due_now(request_id)

    ran = service_api(stack, Service.SCHEDULER, "privacy").post("/privacy/erasure/run")
    assert ran.status_code == 200, ran.text
    assert request_id in ran.json()["blocked"], ran.text
    assert _request(request_id)["blockedBy"] == ["open_appointments"]
    problem(_book_doctor(later, doctor.uid, slot_in(31))(), 404, "doctor_not_found")

    cancelled = doctor_api.post(f"/privacy/erasure/{request_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert _book_doctor(later, doctor.uid, slot_in(31))().status_code == 201


def test_an_erased_doctor_is_never_bookable_again(stack, admin):
    doctor, doctor_api = approved_doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    request_id = doctor_api.post("/privacy/erasure").json()["id"]
    assert erasure.erase(doctor.uid, "doctor", request_id, "test") is True

    profile = clients.db().collection("users").document(doctor.uid).get().to_dict() or {}
    assert profile["erased"] is True
    assert profile["approved"] is False
    # Even with a schedule put back by hand, nobody can book the erased doctor.
    store.set(
        clients.db().collection("availability").document(doctor.uid),
        {"timeZone": "UTC", "slotMinutes": 30, "weekly": {}, "doctorUid": doctor.uid},
        by="test",
    )
    problem(_book_doctor(patient, doctor.uid, slot_in(30))(), 404, "doctor_not_found")


def _clinic(stack) -> tuple[Any, Api]:
    user = create_user(stack, Role.CLINIC)
    api = bearer(stack, user)
    saved = api.request("PUT", "/bookings/clinics/me", json=clinic_setup(ZONE, 10))
    assert saved.status_code == 200, saved.text
    return user, api


def _window(days: int, hhmm: str = "08:00") -> str:
    day = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=days)
    return f"{day.isoformat()}T{hhmm}:00+07:00"


def _ask_clinic(patient: Api, clinic_uid: str, start: str) -> Callable[[], requests.Response]:
    body = {"clinicUid": clinic_uid, "serviceId": "checkup", "windowStart": start}
    return lambda: patient.post("/bookings", json=body)


def test_no_booking_lands_with_a_clinic_whose_erasure_has_begun(stack, monkeypatch):
    clinic, clinic_api = _clinic(stack)
    patients = [bearer(stack, create_user(stack, Role.PATIENT)) for _ in range(6)]
    request_id = clinic_api.post("/privacy/erasure").json()["id"]
    erasure_due_now(request_id)
    answers: list[requests.Response] = []
    calls = [_ask_clinic(p, clinic.uid, _window(2 + i)) for i, p in enumerate(patients)]
    _during_the_check(monkeypatch, lambda: answers.extend(_at_once(calls)))

    ran = erasure.run(50, "test")

    assert request_id in ran["erased"], ran
    for answer in answers:
        problem(answer, 404, "clinic_not_found")
    open_bookings = [
        b for b in _mine("bookings", "clinicUid", clinic.uid) if b["status"] in rules.OPEN_BOOKINGS
    ]
    assert open_bookings == [], "erased with bookings open"


def test_a_run_and_bookings_fired_together_never_erase_a_doctor_with_visits(stack, admin):
    """No hook: the run and six staggered bookings at once. Whatever the order, a doctor
    erased has no visit to come, and one with a visit to come is not erased."""
    doctor, doctor_api = approved_doctor(stack, admin)
    patients = [bearer(stack, create_user(stack, Role.PATIENT)) for _ in range(6)]
    request_id = doctor_api.post("/privacy/erasure").json()["id"]
    erasure_due_now(request_id)
    scheduler = service_api(stack, Service.SCHEDULER, "privacy")

    def staggered(i: int) -> Callable[[], requests.Response]:
        book = _book_doctor(patients[i], doctor.uid, slot_in(48 + i))

        def later() -> requests.Response:
            time.sleep(0.15 * i)
            return book()

        return later

    run = [lambda: scheduler.post("/privacy/erasure/run")]
    answers = _at_once(run + [staggered(i) for i in range(6)])

    assert answers[0].status_code == 200, answers[0].text
    state = _request(request_id)["state"]
    open_visits = [
        a
        for a in _mine("appointments", "doctorUid", doctor.uid)
        if a["status"] in rules.OPEN_APPOINTMENTS
    ]
    if state == "done":
        assert open_visits == [], "erased with visits to come"
    else:
        assert state == "blocked", state
        assert open_visits, "blocked by nothing"
    for answer in answers[1:]:
        assert answer.status_code in (201, 404), answer.text
    assert sum(a.status_code == 201 for a in answers[1:]) == len(open_visits)
