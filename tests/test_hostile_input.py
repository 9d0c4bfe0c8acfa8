"""Hostile input anywhere gets a problem, never a 500: far dates, crafted cursors, odd ids."""

from __future__ import annotations

import base64
import json
import re

import pytest

from shared.platform.context import Role, Service
from tests.support import (
    Api,
    approved_doctor,
    bearer,
    create_user,
    problem,
    service_api,
    slot_in,
)


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


@pytest.mark.parametrize(
    "value",
    [
        10**20,
        -(2**63) - 1,
        {"a": 1},
        [1, 2],
        float("inf"),
        # Times whose UTC falls outside years 1 to 9999: Firestore's client cannot encode them.
        {"t": "0001-01-01T00:00:00+14:00"},
        {"t": "9999-12-31T23:59:59-14:00"},
    ],
)
def test_cursors_with_values_no_listing_returns_are_refused(stack, value):
    """A crafted cursor's sort value past int64, a time Firestore cannot hold, or a value that
    is not a scalar never reaches a query."""
    api = bearer(stack, create_user(stack, Role.PATIENT))
    cursor = _cursor([value], "a1")
    problem(api.get("/appointments", params={"cursor": cursor}), 400, "invalid_cursor")
    problem(api.get("/session/sessions", params={"cursor": cursor}), 400, "invalid_cursor")
    problem(api.get("/users/directory/doctors", params={"cursor": cursor}), 400, "invalid_cursor")


def test_a_cursor_naming_an_id_with_a_line_break_is_refused(stack):
    """`$` in a Python pattern also matches before a final newline: an id check must match
    the whole id."""
    api = bearer(stack, create_user(stack, Role.PATIENT))
    cursor = _cursor([{"t": "2026-01-01T00:00:00+00:00"}], "a1\n")
    problem(api.get("/appointments", params={"cursor": cursor}), 400, "invalid_cursor")


def test_every_anchored_pattern_of_the_code_matches_the_whole_value() -> None:
    """`PATTERN.match(value)` with `^...$` lets `value + "\\n"` through; the code's module
    patterns are all applied with fullmatch."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    partial = re.compile(r"\b_?[A-Z][A-Z0-9_]*\.match\(")
    found = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("shared", "functions")
        for path in sorted((root / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if partial.search(line)
    ]
    assert found == []


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


def _routes_with_a_body() -> list[tuple[str, str, str, Role | Service | None]]:
    """(function, method, path, a role or service the policy lets call it, None when public)
    of every route taking a body."""
    from tests.functions_index import load
    from tools.bundle import function_names

    found: list[tuple[str, str, str, Role | Service | None]] = []
    for name in function_names():
        api = getattr(load(name), "api", None)
        for route in api.routes.values() if api is not None else ():
            if route.body is not None:
                rule = route.rule
                caller: Role | Service | None = None
                if rule.roles:
                    caller = min(rule.roles, key=lambda r: r.value)
                elif rule.services:
                    caller = min(rule.services, key=lambda s: s.value)
                found.append((name, route.method, route.path, caller))
    return found


def test_deeply_nested_json_is_refused_on_every_route_that_takes_a_body(stack):
    routes = _routes_with_a_body()
    assert any(role is None for *_, role in routes)  # public ones too: POST /session, webhook
    assert any(isinstance(c, Service) for *_, c in routes)  # Cloud Tasks' worker too
    people = {c: bearer(stack, create_user(stack, c)) for *_, c in routes if isinstance(c, Role)}
    deep = b"[" * 50_000
    for name, method, path, caller in routes:
        if isinstance(caller, Service):
            api = service_api(stack, caller, name)
        elif isinstance(caller, Role):
            api = people[caller]
        else:
            api = Api(stack.gateway_url)
        url = f"/{name}" + re.sub(r"<[^>]+>", "x1", path).rstrip("/")
        answer = api.request(
            method, url or "/", data=deep, headers={"Content-Type": "application/json"}
        )
        problem(answer, 400, "json_too_deep")
    # As deep as allowed still parses: the refusal is about depth, not brackets.
    shallow = json.dumps({"idToken": [[[[1]]]]})
    session = bearer(stack, create_user(stack, Role.PATIENT))
    session.bearer = None
    answer = session.post("/session", data=shallow, headers={"Content-Type": "application/json"})
    problem(answer, 400, "validation_failed")


@pytest.mark.parametrize(
    "raw_path",
    [
        "/appointments/%0A",
        "/appointments/a%0Db",
        "/bookings/%01",
        "/prescriptions/%7F/send",
        "/session/%09",
        "/appointments/robots.txt",
        "/%0A",
        "/%01appointments",
        "/appointments%0A",
        "/api/appointments/%0A",
    ],
)
def test_paths_with_control_characters_answer_problem_json(stack, raw_path):
    api = bearer(stack, create_user(stack, Role.PATIENT))
    for method in ("GET", "POST"):
        answer = api.request(method, raw_path)
        assert 400 <= answer.status_code < 500, (raw_path, answer.status_code, answer.text)
        problem(answer, answer.status_code)


def test_raw_control_bytes_in_the_request_line_answer_problem_json(stack):
    # Unencoded: what a hand-written client or a fuzzer can put on the wire.
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(stack.gateway_url)
    for path in (b"/appointments/\x01", b"/\x7f", b"/bookings/a\x1bb"):
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        try:
            conn.putrequest("GET", "/", skip_host=True)  # replaced below, byte for byte
            conn._buffer[0] = b"GET " + path + b" HTTP/1.1"  # type: ignore[attr-defined]
            conn.putheader("Host", f"{where.hostname}:{where.port}")
            conn.endheaders()
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
        assert 400 <= answer.status < 500, (path, answer.status, body[:200])
        assert answer.getheader("Content-Type", "").startswith("application/problem+json"), (
            path,
            answer.getheader("Content-Type"),
            body[:200],
        )


@pytest.mark.parametrize("bad_id", ["a/b", ".", "..", "__reserved__", "_x", "x" * 300])
def test_ids_in_bodies_and_queries_that_cannot_name_a_document_are_refused(stack, admin, bad_id):
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    _, doctor = approved_doctor(stack, admin)
    calls = [
        (patient, "POST", "/appointments", {"doctorUid": bad_id, "start": slot_in(30)}),
        (patient, "POST", "/paypal-create", {"appointmentId": bad_id}),
        (patient, "POST", "/paypal-capture", {"orderId": bad_id}),
        (
            patient,
            "POST",
            "/bookings",
            {"clinicUid": bad_id, "serviceId": "checkup", "windowStart": slot_in(30)},
        ),
        (doctor, "POST", "/prescriptions", {"appointmentId": bad_id, "items": []}),
        (admin, "POST", "/payments/refunds", {"orderId": bad_id}),
    ]
    for api, method, path, body in calls:
        problem(api.request(method, path, json=body), 400, "validation_failed")
    for path, params in (
        ("/appointments", {"doctorUid": bad_id}),
        ("/payments/orders", {"patientUid": bad_id}),
        ("/payments/ledger", {"orderId": bad_id}),
        ("/bookings/unanswered", {"clinicUid": bad_id}),
    ):
        problem(admin.get(path, params=params), 400, "validation_failed")


@pytest.mark.parametrize("bad_day", ["2030-02-30", "0000-01-01", "2031-13-01", "2100-01-01"])
def test_dates_that_are_not_days_are_refused_wherever_they_are_nested(stack, admin, bad_day):
    user, doctor = approved_doctor(stack, admin)
    availability = {
        "timeZone": "UTC",
        "slotMinutes": 30,
        "weekly": {"mon": [{"start": "09:00", "end": "10:00"}]},
        "exceptions": [{"date": "2030-01-01", "off": True}, {"date": bad_day, "off": True}],
    }
    errors = problem(doctor.request("PUT", "/appointments/availability", json=availability), 400)
    assert any(e["field"].startswith("exceptions.1.date") for e in errors["errors"]), errors
    clinic = bearer(stack, create_user(stack, Role.CLINIC))
    setup = {
        "timeZone": "UTC",
        "windowMinutes": 30,
        "weekly": [{"day": "mon", "opens": "08:00", "closes": "09:00", "capacity": 1}],
        "closedDates": ["2030-01-01", bad_day],
        "services": [
            {
                "id": "checkup",
                "name": "Check-up",
                "durationMinutes": 20,
                "price": {"currency": "USD", "value": "1.00"},
            }
        ],
    }
    errors = problem(clinic.request("PUT", "/bookings/clinics/me", json=setup), 400)
    assert any(e["field"].startswith("closedDates.1") for e in errors["errors"]), errors
    problem(clinic.get("/bookings/clinics/me/day", params={"day": bad_day}), 400)
    # Nothing was stored: the doctor's availability still reads.
    assert doctor.get(f"/appointments/doctors/{user.uid}/availability").status_code == 200


@pytest.mark.parametrize("currency", ["XXX", "usd", "US", "€€€"])
def test_unsupported_currencies_in_queries_are_a_validation_error(stack, admin, currency):
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    problem(
        patient.get("/users/directory/doctors", params={"currency": currency}),
        400,
        "validation_failed",
    )
    problem(admin.get("/payments/balance", params={"currency": currency}), 400, "validation_failed")


def test_a_stored_record_that_no_longer_parses_costs_only_its_own_readers(stack, admin):
    from shared.appointments import service as appointments
    from shared.platform import clients

    broken, broken_api = approved_doctor(stack, admin)
    fine, _ = approved_doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booked = patient.post("/appointments", json={"doctorUid": broken.uid, "start": slot_in(30)})
    assert booked.status_code == 201, booked.text
    booked_too = patient.post("/appointments", json={"doctorUid": fine.uid, "start": slot_in(30)})
    assert booked_too.status_code == 201, booked_too.text
    # A hand edit in the console (or data older than today's rules): not a day, not a zone.
    db = clients.db()
    db.collection(appointments.AVAILABILITY).document(broken.uid).update(
        {"exceptions": [{"date": "2030-02-30", "off": True}], "timeZone": "Mars/Olympus"}
    )
    db.collection(appointments.APPOINTMENTS).document(booked.json()["id"]).update(
        {"status": "no-such-status"}
    )

    for path, params in (
        (f"/appointments/doctors/{broken.uid}/availability", None),
        (f"/appointments/doctors/{broken.uid}/slots", {"from": slot_in(1), "to": slot_in(20)}),
        (f"/appointments/{booked.json()['id']}", None),
    ):
        problem(patient.get(path, params=params), 409, "record_unreadable")
    problem(
        patient.post("/appointments", json={"doctorUid": broken.uid, "start": slot_in(40)}),
        409,
        "record_unreadable",
    )
    # Everyone and everything else reads as before; the list leaves the bad record out.
    assert patient.get(f"/appointments/doctors/{fine.uid}/availability").status_code == 200
    listed = patient.get("/appointments")
    assert listed.status_code == 200, listed.text
    assert [a["id"] for a in listed.json()["items"]] == [booked_too.json()["id"]]
    # The owner repairs it by publishing again.
    repaired = broken_api.request(
        "PUT",
        "/appointments/availability",
        json={"timeZone": "UTC", "slotMinutes": 30, "weekly": {"mon": []}},
    )
    assert repaired.status_code == 200, repaired.text
    assert patient.get(f"/appointments/doctors/{broken.uid}/availability").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/appointments//cancel"),
        ("POST", "/appointments/%2F/cancel"),
        ("POST", "/appointments/a%2fb/cancel"),
        ("POST", "/prescriptions//send"),
        ("POST", "/admin-users//approval"),
        ("DELETE", "/admin-users//"),
        ("PUT", "/bookings/clinics//"),
        ("GET", "/payments/orders//"),
    ],
)
def test_an_empty_id_or_one_holding_a_slash_names_no_route(stack, admin, method, path):
    # Read or merged, `//` and `%2F` would land on another route (a 405, or a list's 200).
    problem(admin.request(method, path, json={}), 404, "route_not_found")
