"""Personal data (issue 27): the consent gate, the export (JSON and a FHIR R4 Bundle) and the
erasure, on the local stack.

The shared test stack runs without the consent gate (CONSENT_REQUIRED unset against the
emulators: its other tests predate consent); the gate's tests run a second gateway with it on,
over the same emulators.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from dev.stack import LOCAL_NOTIFY_SIGNING_KEY
from shared.audit import service as audit
from shared.identity import consent
from shared.notify import rules as notify_rules
from shared.platform import clients, store
from shared.platform.context import Role, Service
from shared.privacy import rules
from tests.support import (
    PRESCRIPTION_ITEM,
    Api,
    bearer,
    create_user,
    erasure_due_now,
    id_token,
    problem,
    service_api,
    sign_in,
)


@pytest.fixture(scope="module")
def gated(stack):
    """A gateway with the consent gate on, over the same emulators."""
    os.environ["CONSENT_REQUIRED"] = "true"
    try:
        url = stack.spawn_extra_gateway()
    finally:
        os.environ.pop("CONSENT_REQUIRED", None)
    yield url
    stack.stop_extra_gateways()


def _accept_all(api: Api, role: Role) -> None:
    for document, version in consent.required(role).items():
        done = api.post("/privacy/consents", json={"document": document, "version": version})
        assert done.status_code == 200, done.text


def test_the_gate_asks_for_consent_and_lets_the_privacy_routes_in(stack, gated):
    user = create_user(stack, Role.PATIENT)
    api = Api(gated, bearer=id_token(stack, user))
    refused = problem(api.get("/users/me"), 403, "consent_required")
    assert refused["required"] == [
        {"document": "health", "version": 1},
        {"document": "privacy", "version": 1},
    ]
    notices = api.get("/privacy/notices", params={"locale": "tr"})
    assert notices.status_code == 200, notices.text
    assert {n["document"] for n in notices.json()["items"]} == {"privacy", "health"}
    assert all("KVKK" in n["text"] for n in notices.json()["items"])

    stale = api.post("/privacy/consents", json={"document": "privacy", "version": 7})
    problem(stale, 409, "consent_version_stale")
    assert api.post("/privacy/consents", json={"document": "privacy", "version": 1}).ok
    problem(api.get("/users/me"), 403, "consent_required")  # health still missing
    assert api.post("/privacy/consents", json={"document": "health", "version": 1}).ok
    assert api.get("/users/me").status_code == 200

    # A session made now carries the consents; one made before learns them in place.
    browser = sign_in(stack, user)
    browser.base = gated
    assert browser.get("/users/me").status_code == 200

    # Withdrawal: asked again, care notices off, the rights routes still open.
    withdrawn = browser.post("/privacy/consents/withdraw", json={"document": "health"})
    assert withdrawn.status_code == 200, withdrawn.text
    assert {"document": "health", "version": 1} in withdrawn.json()["missing"]
    problem(browser.get("/users/me"), 403, "consent_required")
    problem(api.get("/users/me"), 403, "consent_required")
    assert browser.get("/privacy/consents").status_code == 200
    prefs = clients.db().collection("notificationPreferences").document(user.uid).get()
    channels = prefs.to_dict()["channels"]
    assert channels["reminders"] == {"email": False, "sms": False, "push": False}
    assert channels["bookings"] == {"email": False, "sms": False, "push": False}
    # The privacy notice is information, not consent: only the account can be closed.
    problem(api.post("/privacy/consents/withdraw", json={"document": "privacy"}), 400)


def test_a_doctor_is_asked_for_the_privacy_notice_only(stack, gated):
    doctor = create_user(stack, Role.DOCTOR)
    api = Api(gated, bearer=id_token(stack, doctor))
    assert problem(api.get("/users/me"), 403, "consent_required")["required"] == [
        {"document": "privacy", "version": 1}
    ]
    problem(api.post("/privacy/consents", json={"document": "health", "version": 1}), 400)
    _accept_all(api, Role.DOCTOR)
    assert api.get("/users/me").status_code == 200


def test_service_callers_and_the_sign_out_are_never_asked(stack, gated):
    user = create_user(stack, Role.ADMIN)
    browser = sign_in(stack, user)
    browser.base = gated
    assert browser.delete("/session").status_code in (200, 204)
    token = service_api(stack, Service.SCHEDULER, "privacy").bearer
    ran = requests.post(
        f"{gated}/privacy/erasure/run", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert ran.status_code == 401 or ran.ok  # the extra gateway's audience differs: not 403


# -- the data of one account ------------------------------------------------------------------


def _seed(patient: str, doctor: str) -> dict[str, str]:
    """Records of `patient` with `doctor` across the collections, as the features write them."""
    db = clients.db()
    now = datetime.now(UTC)
    appointment = db.collection("appointments").document()
    store.create(
        appointment,
        {
            "patientUid": patient,
            "doctorUid": doctor,
            "clinicUid": None,
            "start": now + timedelta(days=2),
            "end": now + timedelta(days=2, minutes=20),
            "status": "completed",
            "note": "headache for a week",
            "createdAt": now,
        },
        by=patient,
    )
    prescription = db.collection("prescriptions").document()
    store.create(
        prescription,
        {
            "patientUid": patient,
            "doctorUid": doctor,
            "pharmacyUid": None,
            "appointmentId": appointment.id,
            "items": [PRESCRIPTION_ITEM],
            "notes": "rest",
            "status": "issued",
            "createdAt": now,
        },
        by=doctor,
    )
    order = db.collection("orders").document()
    store.create(
        order,
        {
            "patientUid": patient,
            "providerUid": doctor,
            "status": "captured",
            "amount": {"currency": "USD", "minor": 1250},
            "createdAt": now,
        },
        by=patient,
    )
    store.set(
        db.collection("deviceTokens").document(uuid.uuid4().hex),
        {"uid": patient, "token": "tok-" + patient, "platform": "web"},
        by=patient,
    )
    store.set(
        db.collection("notificationPreferences").document(patient),
        {"uid": patient, "locale": "tr"},
        by=patient,
    )
    notice = db.collection("notifications").document()
    store.create(
        notice,
        {
            "uid": patient,
            "to": "",
            "kind": "appointment_reminder",
            "data": {"appointmentId": appointment.id},
            "status": "queued",
            "createdAt": now,
            "dueAt": now + timedelta(days=1),
        },
        by=patient,
    )
    store.create(
        db.collection("ledgerEntries").document(),
        {
            "account": f"patient_payments:{patient}",
            "amountMinor": 1250,
            "currency": "USD",
            "orderId": order.id,
            "at": now,
        },
        by=patient,
    )
    return {
        "appointment": appointment.id,
        "prescription": prescription.id,
        "order": order.id,
        "notice": notice.id,
    }


def _holds_uid(value: Any, uid: str) -> bool:
    if isinstance(value, str):
        return uid in value
    if isinstance(value, dict):
        return any(_holds_uid(v, uid) for k, v in value.items() if k != "_meta")
    if isinstance(value, list):
        return any(_holds_uid(v, uid) for v in value)
    return False


def _walk() -> dict[str, dict[str, Any]]:
    """Every document of every collection (the rules test's walk, over what is stored)."""
    found: dict[str, dict[str, Any]] = {}
    for collection in clients.db().collections():
        for snap in collection.stream():
            found[snap.reference.path] = snap.to_dict() or {}
    return found


def _download(api: Api, request_id: str, part: str) -> list[dict[str, Any]]:
    pages, cursor = [], None
    for _ in range(100):
        page = api.get(
            f"/privacy/exports/{request_id}/{part}", params={"cursor": cursor} if cursor else {}
        )
        assert page.status_code == 200, page.text
        pages.append(page.json())
        cursor = (
            page.json()["nextCursor"]
            if part == "data"
            else next(
                (
                    link["url"].split("cursor=")[1]
                    for link in page.json()["link"]
                    if link["relation"] == "next"
                ),
                None,
            )
        )
        if cursor is None:
            return pages
    raise AssertionError("the export never ended")


def test_an_export_holds_all_of_the_account_and_nothing_of_anyone_else(stack):
    patient, doctor, other = (
        create_user(stack, r) for r in (Role.PATIENT, Role.DOCTOR, Role.PATIENT)
    )
    api = bearer(stack, patient)
    mine = _seed(patient.uid, doctor.uid)
    _seed(other.uid, doctor.uid)
    assert api.post("/privacy/consents", json={"document": "privacy", "version": 1}).ok
    # A read of the patient's prescription by its doctor: in the export's read log.
    audit.record_read(f"prescriptions/{mine['prescription']}", "GET /<id>", actor=doctor.uid)

    created = api.post("/privacy/exports")
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    pages = _download(api, request_id, "data")
    items = [i for p in pages for i in p["items"]]
    exported = {f"{i['collection']}/{i['id']}" for i in items}

    stored = _walk()
    expected = {
        path
        for path, data in stored.items()
        if path.split("/")[0] not in rules.NOT_SEARCHED
        and (_holds_uid(data, patient.uid) or path.split("/")[1] == patient.uid)
    }
    assert expected - exported == set(), "held about the account, not exported"
    reads = [i for i in items if i["collection"] == "audit" and i["data"]["action"] == "read"]
    assert any(
        r["data"]["resource"] == f"prescriptions/{mine['prescription']}"
        and r["data"]["actor"] == doctor.uid
        for r in reads
    )
    for item in items:
        if item["collection"] != "audit":
            assert not _holds_uid(item["data"], other.uid), item
    status = api.get(f"/privacy/exports/{request_id}").json()
    assert status["state"] == "done"
    assert status["progress"]["steps"] > 0

    # Someone else's export is not there for them.
    problem(bearer(stack, other).get(f"/privacy/exports/{request_id}/data"), 404)
    problem(api.get(f"/privacy/exports/{request_id}/data", params={"cursor": "zz"}), 400)


def test_the_clinical_export_is_a_valid_fhir_r4_bundle(stack):
    from fhir.resources.R4B.bundle import Bundle

    patient, doctor = create_user(stack, Role.PATIENT), create_user(stack, Role.DOCTOR)
    mine = _seed(patient.uid, doctor.uid)
    api = bearer(stack, patient)
    request_id = api.post("/privacy/exports").json()["id"]
    bundles = _download(api, request_id, "fhir")
    kinds = set()
    for body in bundles:
        Bundle.model_validate(body)  # raises on anything FHIR does not allow
        kinds |= {e["resource"]["resourceType"] for e in body["entry"]}
    assert {"Patient", "Practitioner", "Appointment", "MedicationRequest"} <= kinds
    med = next(
        e["resource"]
        for b in bundles
        for e in b["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    )
    assert med["groupIdentifier"]["value"] == mine["prescription"]


# -- erasure --------------------------------------------------------------------------------------


def test_an_erased_account_leaves_only_held_pseudonymous_records(stack, admin):
    patient, doctor = create_user(stack, Role.PATIENT), create_user(stack, Role.DOCTOR)
    store.set(
        clients.db().collection("users").document(patient.uid),
        {"displayName": "Ayse Yilmazoglu", "phone": "+905551112233"},
        merge=True,
        by="test",
    )
    mine = _seed(patient.uid, doctor.uid)
    browser = sign_in(stack, patient)
    api = bearer(stack, patient)
    link_token = notify_rules.unsubscribe_token(
        LOCAL_NOTIFY_SIGNING_KEY.encode(),
        patient.uid,
        notify_rules.Category.PAYMENTS,
        datetime.now(UTC) + timedelta(days=3),
    )

    asked = browser.post("/privacy/erasure")
    assert asked.status_code == 201, asked.text
    again = api.post("/privacy/erasure")
    assert again.status_code == 200
    assert again.json()["id"] == asked.json()["id"]
    scheduler = service_api(stack, Service.SCHEDULER, "privacy")
    assert scheduler.post("/privacy/erasure/run").json()["erased"] == []  # cooling off
    erasure_due_now(asked.json()["id"])
    ran = scheduler.post("/privacy/erasure/run")
    assert ran.status_code == 200, ran.text
    assert ran.json()["erased"] == [asked.json()["id"]], ran.text

    problem(browser.get("/users/me"), 401)
    problem(api.get("/users/me"), 401)
    unsubscribe = requests.get(
        f"{stack.gateway_url}/notifications/unsubscribe", params={"token": link_token}, timeout=30
    )
    problem(unsubscribe, 400, "unsubscribe_token_invalid")

    personal = (patient.email, "Ayse Yilmazoglu", "+905551112233", "tok-" + patient.uid)
    time.sleep(1)  # the audit trigger's entries of the erasure
    held = clients.db().collection("legalHolds").document(patient.uid).get().to_dict()
    assert set(held["collections"]) >= {"appointments", "prescriptions", "orders"}
    assert held["collections"]["prescriptions"]["until"] > datetime.now(UTC) + timedelta(days=365)
    for path, data in _walk().items():
        collection = path.split("/")[0]
        if collection in rules.HOLDS:
            continue
        text = repr({k: v for k, v in data.items() if k != "_meta"})
        assert not any(p in text for p in personal), (path, data)
    profile = clients.db().collection("users").document(patient.uid).get().to_dict()
    assert profile["erased"] is True
    assert "email" not in profile
    notice = clients.db().collection("notifications").document(mine["notice"]).get().to_dict()
    assert notice["cancelled"] is True
    assert notice["data"] is None
    listed = admin.get("/privacy/requests", params={"limit": 100}).json()["items"]
    done = next(r for r in listed if r["id"] == asked.json()["id"])
    assert done["state"] == "done"
    assert done["handledBy"] == "service:scheduler"
    assert done["dueAt"] > done["requestedAt"]

    # The audit log still verifies once the erasure's entries are sealed.
    assert admin.post("/audit/seal").status_code == 200
    verified = admin.get("/audit/verify").json()
    assert verified["ok"] is True, verified


def test_a_provider_with_open_visits_cannot_be_erased(stack):
    patient, doctor = create_user(stack, Role.PATIENT), create_user(stack, Role.DOCTOR)
    now = datetime.now(UTC)
    store.create(
        clients.db().collection("appointments").document(),
        {
            "patientUid": patient.uid,
            "doctorUid": doctor.uid,
            "status": "confirmed",
            "start": now + timedelta(days=1),
            "end": now + timedelta(days=1, minutes=20),
        },
        by="test",
    )
    refused = problem(bearer(stack, doctor).post("/privacy/erasure"), 409, "erasure_blocked")
    assert refused["reasons"] == ["open_appointments"]


def test_an_erasure_can_be_taken_back_while_it_waits(stack):
    patient, stranger = create_user(stack, Role.PATIENT), create_user(stack, Role.PATIENT)
    api = bearer(stack, patient)
    asked = api.post("/privacy/erasure").json()
    problem(bearer(stack, stranger).post(f"/privacy/erasure/{asked['id']}/cancel"), 404)
    cancelled = api.post(f"/privacy/erasure/{asked['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    problem(api.post(f"/privacy/erasure/{asked['id']}/cancel"), 409, "erasure_started")


def test_a_providers_export_holds_their_visits_without_their_patients_health(stack):
    """A doctor's export carries the visits and prescriptions they are party to, as what
    concerns them (times, status, money), never the patients' notes or medicines, which the
    API shows a provider only under its own rules; nor any session's secret digest or CSRF
    token, which the audit log redacts too."""
    patient, doctor = create_user(stack, Role.PATIENT), create_user(stack, Role.DOCTOR)
    mine = _seed(patient.uid, doctor.uid)
    api = bearer(stack, doctor)
    assert api.post("/privacy/consents", json={"document": "privacy", "version": 1}).ok
    sign_in(stack, doctor)  # a live cookie session of the doctor's own
    request_id = api.post("/privacy/exports").json()["id"]
    items = [i for p in _download(api, request_id, "data") for i in p["items"]]
    by_path = {f"{i['collection']}/{i['id']}": i["data"] for i in items}

    visit = by_path[f"appointments/{mine['appointment']}"]
    assert visit["status"] == "completed"
    assert "note" not in visit
    prescription = by_path[f"prescriptions/{mine['prescription']}"]
    assert prescription["status"] == "issued"
    assert "items" not in prescription
    assert "notes" not in prescription
    sessions = [i["data"] for i in items if i["collection"] == "sessions"]
    assert sessions
    assert all("secretHash" not in s and "csrfToken" not in s for s in sessions)
    # The patient's own export keeps their own health data.
    own = bearer(stack, patient)
    assert own.post("/privacy/consents", json={"document": "privacy", "version": 1}).ok
    own_id = own.post("/privacy/exports").json()["id"]
    own_items = [i for p in _download(own, own_id, "data") for i in p["items"]]
    (own_visit,) = [
        i["data"]
        for i in own_items
        if i["collection"] == "appointments" and i["id"] == mine["appointment"]
    ]
    assert own_visit["note"] == "headache for a week"


@pytest.mark.parametrize("after", ["a/b", "", "a/b/c", "x" * 300, "__x__"])
def test_a_crafted_export_cursor_is_refused(stack, after):
    import base64
    import json

    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    assert api.post("/privacy/consents", json={"document": "privacy", "version": 1}).ok
    request_id = api.post("/privacy/exports").json()["id"]
    for step in (18, 36, 0):
        raw = json.dumps([step, after]).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        answer = api.get(f"/privacy/exports/{request_id}/data", params={"cursor": cursor})
        problem(answer, 400, "invalid_cursor")


def test_an_erasure_ends_however_many_records_the_law_holds(stack, monkeypatch):
    """Held records are counted, not read: an account with more of them than one run's budget
    is erased in a run all the same, its hold written (it ran forever before)."""
    from shared.privacy import erasure

    patient, doctor = create_user(stack, Role.PATIENT), create_user(stack, Role.DOCTOR)
    for _ in range(6):
        _seed(patient.uid, doctor.uid)
    asked = bearer(stack, patient).post("/privacy/erasure")
    assert asked.status_code == 201, asked.text
    # Room for what is deleted or scrubbed (13 documents, and its notices read once more: made
    # in the minute before the erasure began, they are also where a late notice is looked
    # for), not for the 18 held beside them.
    monkeypatch.setattr(erasure, "MAX_DOCUMENTS_PER_RUN", 26)

    assert erasure.erase(patient.uid, "patient", asked.json()["id"], "test") is True
    held = clients.db().collection("legalHolds").document(patient.uid).get().to_dict()
    assert held["collections"]["appointments"]["count"] == 6
    assert held["collections"]["prescriptions"]["count"] == 6


def test_a_clinics_export_holds_its_bookings_without_the_patients_notes(stack):
    """A booking's note is the patient's health, as the bookings API marks it: a clinic's
    export carries the booking without it, and the patient's own export, which holds it, writes
    the read entry of it as any answer with health data does."""
    from tests.test_prescriptions import reads_of

    patient, clinic = create_user(stack, Role.PATIENT), create_user(stack, Role.CLINIC)
    now = datetime.now(UTC)
    booking = clients.db().collection("bookings").document()
    store.create(
        booking,
        {
            "patientUid": patient.uid,
            "clinicUid": clinic.uid,
            "status": "requested",
            "note": "sore throat since Monday",
            "requestedAt": now,
        },
        by=patient.uid,
    )
    path = f"bookings/{booking.id}"

    def exported(user: Any) -> dict[str, Any]:
        api = bearer(stack, user)
        assert api.post("/privacy/consents", json={"document": "privacy", "version": 1}).ok
        request_id = api.post("/privacy/exports").json()["id"]
        items = [i for p in _download(api, request_id, "data") for i in p["items"]]
        (record,) = [i["data"] for i in items if f"{i['collection']}/{i['id']}" == path]
        return record

    theirs = exported(clinic)
    assert theirs["status"] == "requested"
    assert "note" not in theirs
    assert reads_of(path, clinic.uid) == 0
    own = exported(patient)
    assert own["note"] == "sore throat since Monday"
    assert reads_of(path, patient.uid) >= 1
