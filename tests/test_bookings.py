"""Clinic bookings through the gateway, against the Firestore and Auth emulators."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from google.cloud.firestore import FieldFilter

from shared.bookings import rules as booking_rules
from shared.bookings import service as bookings
from shared.platform import clients, settings, store
from shared.platform.context import Role
from shared.platform.errors import Conflict
from shared.workflows.cancellations import REFUND
from tests.support import CHECKUP, Api, bearer, clinic_setup, create_user, problem

ZONE = "Asia/Jakarta"


def _setup(capacity: int) -> dict:
    setup = clinic_setup(ZONE, capacity)
    retired = {**CHECKUP, "id": "retired", "name": "Old service", "active": False}
    retired["price"] = {"currency": "USD", "value": "1.00"}
    setup["services"].append(retired)
    return setup


class Clinic:
    def __init__(self, stack, capacity: int = 4) -> None:
        self.user = create_user(stack, Role.CLINIC)
        self.api = bearer(stack, self.user)
        response = self.api.request("PUT", "/bookings/clinics/me", json=_setup(capacity))
        assert response.status_code == 200, response.text

    @property
    def uid(self) -> str:
        return self.user.uid

    def act(self, booking_id: str, action: str, **kw) -> dict:
        response = self.api.post(f"/bookings/{booking_id}/{action}", **kw)
        assert response.status_code == 200, response.text
        return response.json()


# Fixed once, so a test that spans the clinic's midnight still speaks of the same days.
TODAY = datetime.now(ZoneInfo(ZONE)).date()


def _day(offset: int) -> date:
    """A local date at the clinic, `offset` days from the run's first day there."""
    return TODAY + timedelta(days=offset)


def _window(offset: int = 2, hhmm: str = "08:00") -> str:
    return f"{_day(offset).isoformat()}T{hhmm}:00+07:00"


def _ask(patient: Api, clinic: Clinic, start: str | None = None, **kw):
    body = {"clinicUid": clinic.uid, "serviceId": "checkup", "windowStart": start or _window()}
    body.update(kw.pop("extra", {}))
    return patient.post("/bookings", json=body, **kw)


def _book(patient: Api, clinic: Clinic, start: str | None = None) -> dict:
    response = _ask(patient, clinic, start)
    assert response.status_code == 201, response.text
    return response.json()


def _patient(stack) -> Api:
    return bearer(stack, create_user(stack, Role.PATIENT))


@pytest.fixture
def clinic(stack) -> Clinic:
    return Clinic(stack)


@pytest.fixture
def patient(stack) -> Api:
    return _patient(stack)


def _stored(booking_id: str) -> dict:
    return clients.db().collection("bookings").document(booking_id).get().to_dict()


def _started(booking_id: str) -> None:
    """Time travel for a test: the booking as it stands once its window has begun (a minute
    ago). A patient can only ask for a window still to come, and the emulators' clock cannot
    move. Its window's counters stay where they were: tests that read them use `_during`."""
    now = datetime.now(UTC)
    ref = clients.db().collection("bookings").document(booking_id)
    store.update(
        ref,
        {"windowStart": now - timedelta(minutes=1), "windowEnd": now + timedelta(minutes=29)},
        by="test",
    )


def _during(clinic: Clinic, booking: dict, action: str) -> dict:
    """The clinic's move on a booking as made during its window (the service at that time),
    keeping every counter of the window and the day in step."""
    at = datetime.fromisoformat(booking["windowStart"]) + timedelta(minutes=1)
    return bookings.apply(
        booking["id"], booking_rules.Action(action), actor=clinic.uid, ending=REFUND, now=at
    )


def _notifications(uid: str) -> list[dict]:
    query = clients.db().collection("notifications").where(filter=FieldFilter("uid", "==", uid))
    return [s.to_dict() for s in query.stream()]


# -- setup -----------------------------------------------------------------------------


def test_a_clinic_sets_up_services_and_capacity_that_patients_read(stack, clinic, patient):
    seen = patient.get(f"/bookings/clinics/{clinic.uid}").json()
    assert seen["timeZone"] == ZONE
    assert seen["weekly"][0] == {"day": "mon", "opens": "08:00", "closes": "10:00", "capacity": 4}
    assert seen["services"][0]["price"] == {"currency": "USD", "value": "12.50"}
    stored = clients.db().collection("clinics").document(clinic.uid).get().to_dict()
    assert stored["services"][0]["price"] == {"currency": "USD", "amountMinor": 1250}


def test_a_patient_picks_from_the_windows_a_day_still_has_with_their_places_left(
    stack, clinic, patient
):
    day = _day(2).isoformat()
    seen = patient.get(f"/bookings/clinics/{clinic.uid}/windows", params={"day": day}).json()
    assert seen["date"] == day
    # 08:00 to 10:00 in 30-minute windows, in the clinic's zone, each with its 4 places.
    starts = [w["start"] for w in seen["windows"]]
    local = [datetime.fromisoformat(s).astimezone(ZoneInfo(ZONE)) for s in starts]
    assert [t.strftime("%H:%M") for t in local] == ["08:00", "08:30", "09:00", "09:30"]
    assert {w["free"] for w in seen["windows"]} == {4}

    # Each window's start is what a request takes; a place is taken once the clinic accepts.
    first = starts[0]
    asked = [_book(patient, clinic, first), _book(_patient(stack), clinic, first)]
    again = patient.get(f"/bookings/clinics/{clinic.uid}/windows", params={"day": day}).json()
    assert [w["free"] for w in again["windows"]] == [4, 4, 4, 4]
    for booking in asked:
        clinic.act(booking["id"], "accept")
    again = patient.get(f"/bookings/clinics/{clinic.uid}/windows", params={"day": day}).json()
    assert [w["free"] for w in again["windows"]] == [2, 4, 4, 4]


def test_windows_already_started_and_clinics_not_taking_bookings_are_not_offered(
    stack, clinic, patient
):
    yesterday = _day(-1).isoformat()
    seen = patient.get(f"/bookings/clinics/{clinic.uid}/windows", params={"day": yesterday})
    assert seen.json()["windows"] == []
    pending = create_user(stack, Role.CLINIC, approved=False)
    problem(patient.get(f"/bookings/clinics/{pending.uid}/windows"), 404, "clinic_not_found")
    pharmacy = bearer(stack, create_user(stack, Role.PHARMACY))
    problem(pharmacy.get(f"/bookings/clinics/{clinic.uid}/windows"), 403)
    problem(
        patient.get(f"/bookings/clinics/{clinic.uid}/windows", params={"day": "2026-13-01"}), 400
    )


def test_a_clinic_cannot_change_another_clinics_setup(stack, clinic):
    other = Clinic(stack)
    response = other.api.request("PUT", f"/bookings/clinics/{clinic.uid}", json=_setup(9))
    problem(response, 404)


def test_an_unapproved_clinic_cannot_set_up_or_work_a_queue(stack, clinic, patient):
    pending = create_user(stack, Role.CLINIC, approved=False)
    api = bearer(stack, pending)
    problem(api.request("PUT", "/bookings/clinics/me", json=_setup(4)), 403, "not_approved")
    booking = _book(patient, clinic)
    problem(api.post(f"/bookings/{booking['id']}/accept"), 403, "not_approved")


def test_setup_is_validated(stack, clinic):
    bad_zone = {**_setup(4), "timeZone": "Mars/Olympus"}
    errors = problem(clinic.api.request("PUT", "/bookings/clinics/me", json=bad_zone), 400)
    assert [e["field"] for e in errors["errors"]] == ["timeZone"]
    overlapping = _setup(4)
    overlapping["weekly"].append({"day": "mon", "opens": "09:00", "closes": "11:00", "capacity": 2})
    errors = problem(clinic.api.request("PUT", "/bookings/clinics/me", json=overlapping), 400)
    assert "overlap on mon" in errors["errors"][0]["message"]
    assert clinic.api.get("/bookings/clinics/me").json()["weekly"] == _setup(4)["weekly"]


# -- requests ----------------------------------------------------------------------------


def test_a_request_copies_the_price_and_queues_first_come_first_served(stack, clinic):
    patients = [_patient(stack) for _ in range(3)]
    made = [_book(p, clinic) for p in patients]

    assert [b["queuePosition"] for b in made] == [1, 2, 3]
    assert made[0]["status"] == "requested"
    assert made[0]["price"] == {"currency": "USD", "value": "12.50"}
    assert _stored(made[0]["id"])["price"] == {"currency": "USD", "amountMinor": 1250}
    queue = clinic.api.get(f"/bookings/clinics/{clinic.uid}/requests").json()["items"]
    assert [b["id"] for b in queue] == [b["id"] for b in made]
    assert [b["queuePosition"] for b in queue] == [1, 2, 3]
    page = clinic.api.get("/bookings/clinics/me/requests", params={"limit": 2}).json()
    rest = clinic.api.get(
        "/bookings/clinics/me/requests", params={"limit": 2, "cursor": page["nextCursor"]}
    ).json()
    assert [b["queuePosition"] for b in page["items"] + rest["items"]] == [1, 2, 3]
    assert rest["nextCursor"] is None

    clinic.act(made[0]["id"], "accept")
    second = patients[1].get(f"/bookings/{made[1]['id']}").json()
    assert second["queuePosition"] == 1
    assert patients[0].get(f"/bookings/{made[0]['id']}").json()["queuePosition"] is None


def test_the_price_of_a_booking_does_not_follow_later_price_changes(stack, clinic, patient):
    booking = _book(patient, clinic)
    cheaper = _setup(4)
    cheaper["services"][0]["price"] = {"currency": "USD", "value": "5.00"}
    assert clinic.api.request("PUT", "/bookings/clinics/me", json=cheaper).status_code == 200
    again = patient.get(f"/bookings/{booking['id']}").json()
    assert again["price"] == {"currency": "USD", "value": "12.50"}


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"windowStart": _window(2, "08:15")}, 400, "not_a_window"),
        ({"windowStart": _window(2, "11:00")}, 400, "not_a_window"),
        ({"serviceId": "retired"}, 404, "service_not_found"),
        ({"clinicUid": "no-such-clinic"}, 404, "clinic_not_found"),
        ({"price": {"currency": "USD", "value": "0.01"}}, 400, "validation_failed"),
    ],
)
def test_requests_outside_what_the_clinic_offers_are_refused(
    stack, clinic, patient, change, status, code
):
    problem(_ask(patient, clinic, extra=change), status, code)


def test_a_window_that_started_takes_no_request(stack, clinic, patient):
    yesterday = _window(-1, "08:00")
    problem(_ask(patient, clinic, yesterday), 409, "window_started")


def test_an_idempotency_key_replays_the_first_answer(stack, clinic, patient):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = _ask(patient, clinic, headers=key)
    again = _ask(patient, clinic, headers=key)

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    mine = patient.get("/bookings").json()["items"]
    assert [b["id"] for b in mine] == [first.json()["id"]]
    problem(_ask(patient, clinic, _window(2, "08:30"), headers=key), 409, "idempotency_key_reused")
    # the same key from someone else is their own key
    other = _ask(_patient(stack), clinic, headers=key)
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    problem(_ask(patient, clinic, headers={"Idempotency-Key": "has space"}), 400)


def test_concurrent_retries_with_one_key_make_one_booking(stack, clinic, patient):
    key = {"Idempotency-Key": uuid.uuid4().hex}

    def ask(_: int) -> str:
        response = _ask(patient, clinic, headers=key)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(ask, range(8)))

    assert len(ids) == 1
    assert [b["id"] for b in patient.get("/bookings").json()["items"]] == list(ids)
    day = clinic.api.get("/bookings/clinics/me/day", params={"day": _day(2).isoformat()}).json()
    assert day["totals"]["requested"] == 1


# -- transitions -----------------------------------------------------------------------


def test_a_booking_goes_from_request_to_completed(stack, clinic, patient):
    booking = _book(patient, clinic)
    accepted = clinic.act(booking["id"], "accept")
    assert accepted["status"] == "accepted"
    _started(booking["id"])
    assert clinic.act(booking["id"], "check-in")["status"] == "checked_in"
    assert clinic.act(booking["id"], "complete")["status"] == "completed"
    assert patient.get(f"/bookings/{booking['id']}").json()["status"] == "completed"
    kinds = [n["kind"] for n in _notifications(patient_uid(booking))]
    assert kinds == ["booking_accepted"]


def patient_uid(booking: dict) -> str:
    return str(booking["patientUid"])


def test_an_accepted_patient_who_does_not_come_is_a_no_show(stack, clinic, patient):
    booking = _book(patient, clinic)
    clinic.act(booking["id"], "accept")
    _started(booking["id"])
    assert clinic.act(booking["id"], "no-show")["status"] == "no_show"
    problem(clinic.api.post(f"/bookings/{booking['id']}/check-in"), 409, "illegal_transition")


@pytest.mark.parametrize("action", ["check-in", "no-show", "complete"])
def test_nothing_is_recorded_of_a_visit_before_its_window_starts(stack, clinic, patient, action):
    """Issue 23: marked days ahead, a paid booking could no longer be cancelled for its refund,
    and counted as delivered for the clinic's payout."""
    booking = _book(patient, clinic, _window(3))
    clinic.act(booking["id"], "accept")
    if action == "complete":  # checked in early, as the service allowed before this rule
        ref = clients.db().collection("bookings").document(booking["id"])
        store.update(ref, {"status": "checked_in"}, by="test")
    before = _stored(booking["id"])

    problem(clinic.api.post(f"/bookings/{booking['id']}/{action}"), 409, "not_started")
    after = _stored(booking["id"])
    assert (after["status"], after["_meta"]) == (before["status"], before["_meta"])
    if action != "complete":
        cancelled = patient.post(f"/bookings/{booking['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text  # the patient's to cancel still


def test_a_decline_tells_the_patient_why(stack, clinic, patient):
    booking = _book(patient, clinic)
    declined = clinic.act(booking["id"], "decline", json={"reason": "Doctor away that day."})
    assert declined["status"] == "declined"
    assert declined["declineReason"] == "Doctor away that day."
    told = _notifications(patient_uid(booking))
    assert [(n["kind"], n["data"]["reason"]) for n in told] == [
        ("booking_declined", "Doctor away that day.")
    ]
    problem(clinic.api.post(f"/bookings/{booking['id']}/decline", json={}), 400)


@pytest.mark.parametrize(
    ("steps", "action"),
    [
        ([], "check-in"),
        ([], "complete"),
        ([], "no-show"),
        (["accept"], "accept"),
        (["accept", "check-in"], "no-show"),
        (["accept", "check-in", "complete"], "complete"),
    ],
)
def test_illegal_transitions_are_refused(stack, clinic, patient, steps, action):
    booking = _book(patient, clinic)
    for step in steps:
        if step == "check-in":
            _started(booking["id"])
        clinic.act(booking["id"], step)
    problem(clinic.api.post(f"/bookings/{booking['id']}/{action}"), 409, "illegal_transition")


def test_only_the_bookings_clinic_and_patient_see_it(stack, clinic, patient, admin):
    booking = _book(patient, clinic)
    other_clinic = Clinic(stack)
    stranger = _patient(stack)

    problem(other_clinic.api.post(f"/bookings/{booking['id']}/accept"), 404)
    problem(other_clinic.api.get(f"/bookings/{booking['id']}"), 404)
    problem(stranger.get(f"/bookings/{booking['id']}"), 404)
    problem(stranger.post(f"/bookings/{booking['id']}/cancel"), 404)
    problem(patient.post(f"/bookings/{booking['id']}/accept"), 403, "role_not_allowed")
    problem(clinic.api.post(f"/bookings/{booking['id']}/cancel"), 403, "role_not_allowed")
    assert admin.get(f"/bookings/{booking['id']}").status_code == 200
    assert clinic.api.get(f"/bookings/{booking['id']}").status_code == 200
    assert _stored(booking["id"])["status"] == "requested"


def test_accepting_into_a_full_window_is_a_conflict_until_a_place_frees(stack, patient):
    clinic = Clinic(stack, capacity=2)
    made = [_book(patient, clinic) for _ in range(3)]
    clinic.act(made[0]["id"], "accept")
    clinic.act(made[1]["id"], "accept")

    problem(clinic.api.post(f"/bookings/{made[2]['id']}/accept"), 409, "window_full")
    assert patient.post(f"/bookings/{made[0]['id']}/cancel").json()["status"] == "cancelled"
    assert clinic.act(made[2]["id"], "accept")["status"] == "accepted"


def test_lowering_capacity_never_lets_a_window_exceed_it(stack):
    clinic = Clinic(stack, capacity=5)
    patients = [_patient(stack), _patient(stack)]  # 7 open bookings: more than one patient's cap
    made = [_book(patients[i % 2], clinic) for i in range(7)]
    owner = {b["id"]: patients[i % 2] for i, b in enumerate(made)}
    held = {b["id"]: clinic.act(b["id"], "accept") for b in made[:5]}
    places = {bid: store_place(bid) for bid in held}
    response = clinic.api.request("PUT", "/bookings/clinics/me", json=_setup(3))
    assert response.status_code == 200, response.text
    for bid, place in places.items():  # free the places a capacity of 3 can still use
        if place < 3:
            assert owner[bid].post(f"/bookings/{bid}/cancel").json()["status"] == "cancelled"

    # Places 3 and 4 are still held, so one of the three places is left.
    assert clinic.act(made[5]["id"], "accept")["status"] == "accepted"
    problem(clinic.api.post(f"/bookings/{made[6]['id']}/accept"), 409, "window_full")


def store_place(booking_id: str) -> int:
    return int(clients.db().collection("bookings").document(booking_id).get().to_dict()["place"])


def test_the_patient_may_cancel_until_the_window_starts(stack, clinic, patient):
    waiting = _book(patient, clinic)
    assert patient.post(f"/bookings/{waiting['id']}/cancel").json()["status"] == "cancelled"
    problem(patient.post(f"/bookings/{waiting['id']}/cancel"), 409, "illegal_transition")

    started = _book(patient, clinic)
    clinic.act(started["id"], "accept")
    ref = clients.db().collection("bookings").document(started["id"])
    store.update(ref, {"windowStart": datetime.now(UTC) - timedelta(minutes=1)}, by="test")
    problem(patient.post(f"/bookings/{started['id']}/cancel"), 409, "window_started")
    assert _stored(started["id"])["status"] == "accepted"


def test_thirty_concurrent_accepts_on_four_places_accept_exactly_four(stack):
    clinic = Clinic(stack, capacity=4)
    patients = [_patient(stack) for _ in range(10)]  # 3 open requests each, within the cap
    made = [_book(patients[i % 10], clinic) for i in range(30)]

    def accept(booking: dict) -> tuple[int, str]:
        response = requests.post(
            f"{clinic.api.base}/bookings/{booking['id']}/accept",
            headers={"Authorization": f"Bearer {clinic.api.bearer}"},
            timeout=300,
        )
        return response.status_code, response.json().get("code", "")

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(accept, made))  # 30 requests in flight at once

    assert sorted(s for s, _ in answers).count(200) == 4, answers
    assert {(s, c) for s, c in answers if s != 200} == {(409, "window_full")}
    statuses = [_stored(b["id"])["status"] for b in made]
    assert statuses.count("accepted") == 4
    assert statuses.count("requested") == 26
    load = clinic.api.get(
        "/bookings/clinics/me/load", params={"fromDate": _day(2).isoformat(), "days": 1}
    ).json()["windows"][0]
    assert (load["held"], load["free"], load["counts"]["requested"]) == (4, 0, 26)


# -- the cap on open requests -------------------------------------------------------------

CAP = 5  # MAX_OPEN_BOOKING_REQUESTS_PER_PATIENT's default; the test stack keeps it
WINDOWS = [_window(2, t) for t in ("08:00", "08:30", "09:00", "09:30")] + [
    _window(3, t) for t in ("08:00", "08:30", "09:00", "09:30")
]


@pytest.mark.parametrize(("raw", "cap"), [(None, 5), ("2", 2), ("0", 1), ("-3", 1)])
def test_the_cap_is_a_setting_of_at_least_one(monkeypatch, raw, cap):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-test")
    if raw is None:
        monkeypatch.delenv("MAX_OPEN_BOOKING_REQUESTS_PER_PATIENT", raising=False)
    else:
        monkeypatch.setenv("MAX_OPEN_BOOKING_REQUESTS_PER_PATIENT", raw)
    assert settings.load().max_open_booking_requests_per_patient == cap


def _open_entries(patient_uid: str) -> dict:
    snap = clients.db().collection("bookingPatients").document(patient_uid).get()
    return dict((snap.to_dict() or {}).get("open") or {}) if snap.exists else {}


def _refused_at_the_cap(patient: Api, clinic: Clinic, start: str | None = None) -> None:
    body = problem(_ask(patient, clinic, start), 409, "too_many_open_requests")
    assert body["limit"] == CAP
    assert str(CAP) in body["detail"]


def test_a_patient_may_hold_only_so_many_open_bookings_across_clinics(stack, clinic, patient):
    other = Clinic(stack)
    made = [_book(patient, clinic, w) for w in WINDOWS[:3]]
    made += [_book(patient, other, w) for w in WINDOWS[3:CAP]]
    clinic.act(made[0]["id"], "accept")  # accepted and still to come: still open

    _refused_at_the_cap(patient, clinic, WINDOWS[CAP])
    _refused_at_the_cap(patient, other, WINDOWS[CAP])
    mine = patient.get("/bookings", params={"limit": 50}).json()["items"]
    assert sorted(b["id"] for b in mine) == sorted(b["id"] for b in made)
    assert set(_open_entries(patient_uid(made[0]))) == {b["id"] for b in made}
    assert _book(_patient(stack), clinic, WINDOWS[CAP])["status"] == "requested"  # per patient


def test_declining_cancelling_expiring_or_checking_in_frees_a_place_under_the_cap(
    stack, clinic, patient, admin
):
    made = [_book(patient, clinic, w) for w in WINDOWS[:CAP]]
    uid = patient_uid(made[0])
    _refused_at_the_cap(patient, clinic)

    clinic.act(made[0]["id"], "decline", json={"reason": "No doctor that day."})
    made.append(_book(patient, clinic, WINDOWS[CAP]))
    _refused_at_the_cap(patient, clinic)

    patient.post(f"/bookings/{made[1]['id']}/cancel")
    made.append(_book(patient, clinic, WINDOWS[CAP]))
    _refused_at_the_cap(patient, clinic)

    ref = clients.db().collection("bookings").document(made[2]["id"])
    store.update(ref, {"answerBy": datetime.now(UTC) - timedelta(minutes=1)}, by="test")
    for _ in range(20):  # the sweep runs until nothing is due (other tests' requests too)
        if not admin.post("/bookings/sweep", params={"limit": 50}).json()["more"]:
            break
    assert _stored(made[2]["id"])["status"] == "declined"
    made.append(_book(patient, clinic, WINDOWS[CAP]))
    _refused_at_the_cap(patient, clinic)

    clinic.act(made[3]["id"], "accept")
    _refused_at_the_cap(patient, clinic)  # an accept keeps it open
    _during(clinic, made[3], "check-in")
    made.append(_book(patient, clinic, WINDOWS[CAP]))
    _refused_at_the_cap(patient, clinic)

    still_open = [b["id"] for b in made if _stored(b["id"])["status"] in ("requested", "accepted")]
    assert len(still_open) == CAP
    assert set(_open_entries(uid)) == set(still_open)


def test_an_accepted_booking_whose_window_has_ended_no_longer_counts(stack, clinic, patient):
    made = [_book(patient, clinic, w) for w in WINDOWS[:CAP]]
    uid = patient_uid(made[0])
    clinic.act(made[0]["id"], "accept")
    _refused_at_the_cap(patient, clinic)
    # As if its window had ended with the clinic never checking the patient in.
    mine = clients.db().collection("bookingPatients").document(uid)
    store.set(mine, {"open": {made[0]["id"]: datetime.now(UTC) - timedelta(minutes=1)}}, merge=True)

    later = _book(patient, clinic, WINDOWS[CAP])
    assert set(_open_entries(uid)) == {b["id"] for b in made[1:]} | {later["id"]}  # dropped
    _refused_at_the_cap(patient, clinic)
    assert _during(clinic, made[0], "no-show")["status"] == "no_show"  # its entry is gone
    assert len(_open_entries(uid)) == CAP


def _ask_raw(patient: Api, clinic: Clinic, start: str, key: str | None = None) -> tuple[int, dict]:
    """A request straight through requests, for many in flight at once from threads."""
    headers = {"Authorization": f"Bearer {patient.bearer}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = {"clinicUid": clinic.uid, "serviceId": "checkup", "windowStart": start}
    response = requests.post(f"{patient.base}/bookings", json=body, headers=headers, timeout=300)
    return response.status_code, response.json()


def test_concurrent_requests_for_the_last_place_under_the_cap_make_one_booking(stack, clinic):
    patient = _patient(stack)
    made = [_book(patient, clinic, w) for w in WINDOWS[: CAP - 1]]
    uid = patient_uid(made[0])

    for round_ in range(2):  # then again once a place is freed
        starts = [WINDOWS[(CAP - 1 + i) % len(WINDOWS)] for i in range(10)]
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(lambda w: _ask_raw(patient, clinic, w), starts))

        won = [body for status, body in answers if status == 201]
        assert len(won) == 1, answers
        refused = [(s, b.get("code"), b.get("limit")) for s, b in answers if s != 201]
        assert set(refused) == {(409, "too_many_open_requests", CAP)}, answers
        made.append(won[0])
        mine = patient.get("/bookings", params={"limit": 50}).json()["items"]
        assert sum(b["status"] == "requested" for b in mine) == CAP
        assert len(mine) == CAP + round_
        assert len(_open_entries(uid)) == CAP
        patient.post(f"/bookings/{made[0]['id']}/cancel")
        made.pop(0)


def test_racers_that_all_read_before_any_commits_still_make_one_booking(
    stack, clinic, patient, monkeypatch
):
    """The worst interleaving, forced: every request has counted the patient's open bookings
    (one place left) before any of them commits. Only one may land."""
    made = [_book(patient, clinic, w) for w in WINDOWS[: CAP - 1]]
    uid = patient_uid(made[0])
    racers = 6
    all_counted = threading.Barrier(racers, timeout=60)
    counted_once = threading.local()
    real_still_open = booking_rules.still_open

    def still_open(recorded, now):
        result = real_still_open(recorded, now)
        if not getattr(counted_once, "done", False):  # a racer's retry does not wait again
            counted_once.done = True
            all_counted.wait()
        return result

    monkeypatch.setattr(booking_rules, "still_open", still_open)
    start = datetime.fromisoformat(WINDOWS[CAP - 1])
    outcomes: list[str] = []

    def ask() -> None:
        new = bookings.NewBooking(uid, None, clinic.uid, "checkup", start, None)
        try:
            bookings.request(new, None)
            outcomes.append("made")
        except Conflict as refused:
            outcomes.append(refused.code)

    threads = [threading.Thread(target=ask) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(outcomes) == ["made"] + ["too_many_open_requests"] * (racers - 1), outcomes
    assert len(_open_entries(uid)) == CAP
    mine = patient.get("/bookings", params={"limit": 50}).json()["items"]
    assert len(mine) == CAP


def test_idempotent_retries_count_once_against_the_cap(stack, clinic, patient):
    key = uuid.uuid4().hex
    first = _ask(patient, clinic, WINDOWS[0], headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    for _ in range(3):
        again = _ask(patient, clinic, WINDOWS[0], headers={"Idempotency-Key": key})
        assert again.json()["id"] == first.json()["id"]
    rest = [_book(patient, clinic, w) for w in WINDOWS[1:CAP]]  # four more fit under the cap
    uid = patient_uid(rest[0])
    assert len(_open_entries(uid)) == CAP

    # At the cap, a replay still answers the booking it made; a new request is refused.
    again = _ask(patient, clinic, WINDOWS[0], headers={"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    _refused_at_the_cap(patient, clinic, WINDOWS[CAP])

    # Retries of one request racing for the last place: every one answers the one booking.
    patient.post(f"/bookings/{rest[0]['id']}/cancel")
    racing = uuid.uuid4().hex
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda _: _ask_raw(patient, clinic, WINDOWS[CAP], racing), range(8))
        )
    assert {status for status, _ in answers} == {201}, answers
    assert len({body["id"] for _, body in answers}) == 1
    assert len(_open_entries(uid)) == CAP
    _refused_at_the_cap(patient, clinic, WINDOWS[CAP + 1])


# -- the sweep ----------------------------------------------------------------------------


def test_the_sweep_declines_unanswered_requests_and_tells_the_patient(
    stack, clinic, patient, admin
):
    overdue = _book(patient, clinic)
    fresh = _book(patient, clinic)
    ref = clients.db().collection("bookings").document(overdue["id"])
    store.update(ref, {"answerBy": datetime.now(UTC) - timedelta(minutes=1)}, by="test")

    problem(clinic.api.post("/bookings/sweep"), 403, "role_not_allowed")
    declined = 0
    for _ in range(20):  # batch-bounded: run until nothing is due
        result = admin.post("/bookings/sweep", params={"limit": 5}).json()
        declined += result["declined"]
        if not result["more"]:
            break
    assert declined >= 1

    swept = patient.get(f"/bookings/{overdue['id']}").json()
    assert swept["status"] == "declined"
    assert swept["declineReason"] == "The clinic did not answer in time."
    assert patient.get(f"/bookings/{fresh['id']}").json()["status"] == "requested"
    told = _notifications(patient_uid(overdue))
    assert [(n["kind"], n["data"]["bookingId"]) for n in told] == [
        ("booking_declined", overdue["id"])
    ]
    again = admin.post("/bookings/sweep").json()
    assert _stored(overdue["id"])["_meta"]["by"] == "system"
    assert again["more"] is False


# -- dashboards ---------------------------------------------------------------------------


@pytest.fixture
def known(stack):
    """A known data set: a clinic with 2 places per window, over two days.

    day 2, 08:00: 3 requests; 2 accepted, 1 declined (full)
    day 2, 08:30: 2 requests; 1 waiting, 1 cancelled
    day 3, 08:00: 1 request, accepted, checked in, completed
    """
    clinic = Clinic(stack, capacity=2)
    patient = _patient(stack)
    a = [_book(patient, clinic, _window(2, "08:00")) for _ in range(3)]
    b = [_book(patient, clinic, _window(2, "08:30")) for _ in range(2)]
    clinic.act(a[0]["id"], "accept")
    clinic.act(a[1]["id"], "accept")
    clinic.act(a[2]["id"], "decline", json={"reason": "Full that morning."})
    patient.post(f"/bookings/{b[1]['id']}/cancel")
    c = _book(patient, clinic, _window(3, "08:00"))  # after the decline and the cancel: the cap
    clinic.act(c["id"], "accept")
    for step in ("check-in", "complete"):
        _during(clinic, c, step)
    return clinic, patient, b[0]


def test_the_day_view_groups_a_days_windows_by_status(stack, known):
    clinic, _, _ = known
    day = clinic.api.get("/bookings/clinics/me/day", params={"day": _day(2).isoformat()}).json()
    assert day["date"] == _day(2).isoformat()
    windows = {w["start"][11:16]: w for w in day["windows"]}
    assert len(day["windows"]) == 4  # 08:00 to 10:00 in 30 minutes
    first, second = windows["01:00"], windows["01:30"]  # 08:00 and 08:30 in Jakarta, as UTC
    assert (first["counts"]["accepted"], first["counts"]["declined"]) == (2, 1)
    assert (first["held"], first["free"]) == (2, 0)
    assert (second["counts"]["requested"], second["counts"]["cancelled"]) == (1, 1)
    assert (second["held"], second["free"]) == (0, 2)
    assert day["totals"] == {
        "requested": 1,
        "accepted": 2,
        "declined": 1,
        "cancelled": 1,
        "checked_in": 0,
        "completed": 0,
        "no_show": 0,
    }


def test_the_load_shows_places_held_against_capacity(stack, known):
    clinic, _, _ = known
    rows = clinic.api.get(
        "/bookings/clinics/me/load", params={"fromDate": _day(2).isoformat(), "days": 2}
    ).json()["windows"]
    assert len(rows) == 8
    assert [(r["date"], r["held"], r["capacity"]) for r in rows if r["held"]] == [
        (_day(2).isoformat(), 2, 2),
        (_day(3).isoformat(), 1, 2),
    ]
    problem(clinic.api.get("/bookings/clinics/me/load", params={"days": 15}), 400)


def test_a_clinic_lists_a_days_bookings_to_work_them(stack, known):
    clinic, _, waiting = known
    params = {"day": _day(2).isoformat()}
    everything = clinic.api.get("/bookings/clinics/me/bookings", params=params).json()["items"]
    assert [b["status"] for b in everything] == [
        "accepted",
        "accepted",
        "declined",
        "requested",
        "cancelled",
    ]
    accepted = clinic.api.get(
        "/bookings/clinics/me/bookings", params={**params, "status": "accepted", "limit": 1}
    ).json()
    more = clinic.api.get(
        "/bookings/clinics/me/bookings",
        params={**params, "status": "accepted", "limit": 1, "cursor": accepted["nextCursor"]},
    ).json()
    assert len(accepted["items"] + more["items"]) == 2
    assert more["nextCursor"] is None
    assert waiting["id"] in [b["id"] for b in everything]


def test_the_stats_count_by_status_and_by_day_for_clinic_and_admin(stack, known, admin):
    clinic, _, _ = known
    params = {"fromDate": _day(1).isoformat(), "toDate": _day(3).isoformat()}
    own = clinic.api.get("/bookings/clinics/me/stats", params=params).json()
    theirs = admin.get(f"/bookings/clinics/{clinic.uid}/stats", params=params).json()

    assert own == theirs
    assert own["totals"] == {
        "requested": 1,
        "accepted": 2,
        "declined": 1,
        "cancelled": 1,
        "checked_in": 0,
        "completed": 1,
        "no_show": 0,
    }
    by_day = {d["date"]: d["counts"] for d in own["byDay"]}
    assert list(by_day) == [_day(i).isoformat() for i in (1, 2, 3)]
    assert sum(by_day[_day(1).isoformat()].values()) == 0
    assert by_day[_day(3).isoformat()]["completed"] == 1
    problem(Clinic(stack).api.get(f"/bookings/clinics/{clinic.uid}/stats", params=params), 404)
    too_long = {"fromDate": _day(0).isoformat(), "toDate": _day(200).isoformat()}
    problem(clinic.api.get("/bookings/clinics/me/stats", params=too_long), 400, "invalid_range")


def test_admins_see_the_oldest_unanswered_requests(stack, known, admin):
    clinic, patient, waiting = known
    newer = _book(patient, clinic, _window(3, "09:00"))
    found = admin.get("/bookings/unanswered", params={"clinicUid": clinic.uid}).json()["items"]
    assert [b["id"] for b in found] == [waiting["id"], newer["id"]]
    everyone = admin.get("/bookings/unanswered", params={"limit": 100}).json()["items"]
    keys = [b["requestedAt"] for b in everyone]
    assert keys == sorted(keys)


def test_a_patient_lists_their_bookings_newest_first_with_queue_positions(stack, known):
    clinic, patient, waiting = known
    newer = _book(patient, clinic, _window(3, "09:00"))
    page = patient.get("/bookings", params={"limit": 2}).json()
    assert page["items"][0]["id"] == newer["id"]
    assert page["items"][0]["queuePosition"] == 2  # behind the 08:30 request still waiting
    everything = page["items"]
    cursor = page["nextCursor"]
    while cursor:
        more = patient.get("/bookings", params={"limit": 2, "cursor": cursor}).json()
        everything += more["items"]
        cursor = more["nextCursor"]
    assert len(everything) == 7
    times = [b["requestedAt"] for b in everything]
    assert times == sorted(times, reverse=True)
    positions = {b["id"]: b["queuePosition"] for b in everything}
    assert positions[waiting["id"]] == 1
    assert sum(p is not None for p in positions.values()) == 2


def test_a_patient_cannot_see_a_clinics_dashboards(stack, known, patient):
    clinic, _, _ = known
    problem(patient.get(f"/bookings/clinics/{clinic.uid}/day"), 403, "role_not_allowed")


def test_the_openapi_document_names_the_idempotency_header(stack):
    doc = requests.get(f"{stack.gateway_url}/bookings/openapi.json", timeout=30).json()
    params = doc["paths"]["/bookings"]["post"]["parameters"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= params[0].items()
