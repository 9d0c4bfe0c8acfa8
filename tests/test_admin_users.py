"""Account administration against the Auth and Firestore emulators."""

from __future__ import annotations

import uuid

import pytest
import requests

from shared.appointments import service as appointments
from shared.identity import profiles
from shared.platform import clients, store
from shared.platform.context import Role
from tests.support import (
    Api,
    User,
    approved_doctor,
    bearer,
    create_user,
    id_token,
    problem,
    sign_in,
    slot_in,
)


def _email(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@test.alodoktor.test"


def _auth_user(uid: str):
    from firebase_admin import auth

    try:
        return auth.get_user(uid, app=clients.firebase_app())
    except auth.UserNotFoundError:
        return None


DOCTOR_PROFILE = {
    "licenseNumber": "STR-12345",
    "specialty": "cardiology",
    "languages": ["id", "en"],
    "consultationPrice": {"currency": "USD", "value": "25.00"},
    "bio": "Heart doctor.",
}


def test_admin_creates_a_doctor_who_starts_unapproved(stack, admin):
    email = _email("doc")
    response = admin.post(
        "/admin-users",
        json={
            "email": email,
            "role": "doctor",
            "displayName": "Dr Sari",
            "phone": "+6281234567890",
            "password": "correct-horse-1",
            "profile": DOCTOR_PROFILE,
        },
    )

    assert response.status_code == 201, response.text
    profile = response.json()["profile"]
    assert profile["role"] == "doctor"
    assert profile["approved"] is False
    assert profile["approval"]["status"] == "pending"
    assert profile["consultationPrice"] == {"currency": "USD", "value": "25.00"}
    assert profile["languages"] == ["id", "en"]
    user = _auth_user(profile["uid"])
    assert user.custom_claims == {"role": "doctor", "approved": False}
    assert user.phone_number == "+6281234567890"
    stored = profiles.get(profile["uid"])
    assert stored["consultationPrice"] == {"currency": "USD", "amountMinor": 2500}
    assert stored["_meta"]["function"] == "admin-users"
    assert not profiles.directory_ref(profile["uid"]).get().exists
    # the new doctor can sign in, but cannot act as a doctor yet
    me = sign_in(stack, User(profile["uid"], email, "correct-horse-1", Role.DOCTOR))
    assert me.get("/session").json()["approved"] is False


def test_a_set_password_link_is_generated_and_queued(stack, admin):
    email = _email("pharm")
    response = admin.post(
        "/admin-users", json={"email": email, "role": "pharmacy", "sendPasswordLink": True}
    )

    assert response.status_code == 201, response.text
    link = response.json()["passwordLink"]
    assert "oobCode=" in link
    codes = requests.get(
        f"{stack.auth_url}/emulator/v1/projects/{stack.project_id}/oobCodes", timeout=10
    ).json()["oobCodes"]
    assert any(c["email"] == email and c["oobCode"] in link for c in codes)
    from google.cloud.firestore import FieldFilter

    queued = list(
        clients.db()
        .collection("notifications")
        .where(filter=FieldFilter("to", "==", email))
        .stream()
    )
    assert [q.to_dict()["kind"] for q in queued] == ["set_password"]


def test_creation_is_all_or_nothing_when_a_later_step_fails(stack, admin):
    # An orphan profile left by the old front end holds the id the admin wants to reuse:
    # the Auth account is made first, then the profile write fails.
    uid = "legacy-" + uuid.uuid4().hex[:12]
    store.set(profiles.ref(uid), {"uid": uid, "note": "orphan"}, by="test")

    response = admin.post(
        "/admin-users",
        json={"email": _email(), "role": "patient", "password": "pw-12345678", "uid": uid},
    )

    problem(response, 409, "profile_exists")
    assert _auth_user(uid) is None  # the Auth account made before the failure is gone
    assert profiles.get(uid)["note"] == "orphan"  # and nothing of ours was written


def test_duplicate_email_is_a_conflict_and_leaves_no_profile(stack, admin):
    email = _email()
    first = admin.post(
        "/admin-users", json={"email": email, "role": "patient", "password": "pw-12345678"}
    )
    assert first.status_code == 201
    again = admin.post(
        "/admin-users", json={"email": email, "role": "clinic", "password": "pw-12345678"}
    )
    problem(again, 409, "email_taken")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "patient", "password": "pw-12345678"}, "email"),
        ({"email": "x@y.co", "role": "superuser", "password": "pw-12345678"}, "role"),
        ({"email": "x@y.co", "role": "patient"}, ""),
        (
            {"email": "x@y.co", "role": "patient", "password": "pw-12345678", "phone": "0812"},
            "phone",
        ),
        (
            {
                "email": "x@y.co",
                "role": "doctor",
                "password": "pw-12345678",
                "profile": {"consultationPrice": {"currency": "USD", "value": "1.005"}},
            },
            "profile",
        ),
        ({"email": "x@y.co", "role": "patient", "password": "pw-12345678", "admin": True}, "admin"),
    ],
)
def test_invalid_creations_list_the_field(stack, admin, body, field):
    response = admin.post("/admin-users", json=body)
    errors = problem(response, 400, "validation_failed")["errors"]
    assert any(e["field"].startswith(field) for e in errors), errors


def test_role_specific_fields_must_fit_the_role(stack, admin):
    response = admin.post(
        "/admin-users",
        json={
            "email": _email(),
            "role": "patient",
            "password": "pw-12345678",
            "profile": {"specialty": "cardiology"},
        },
    )
    problem(response, 400, "field_not_applicable")


def _create(admin: Api, role: str, **extra) -> dict:
    response = admin.post(
        "/admin-users",
        json={"email": _email(role), "role": role, "password": "pw-12345678", **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()["profile"]


def test_listing_filters_pages_and_searches(stack, admin):
    tag = uuid.uuid4().hex[:8]
    made = [
        admin.post(
            "/admin-users",
            json={
                "email": f"list{tag}-{i}@test.alodoktor.test",
                "role": "clinic",
                "password": "pw-12345678",
            },
        ).json()
        for i in range(3)
    ]
    assert all("profile" in m for m in made)

    found = admin.get("/admin-users", params={"emailPrefix": f"list{tag}", "limit": 2}).json()
    more = admin.get(
        "/admin-users",
        params={"emailPrefix": f"LIST{tag}", "limit": 2, "cursor": found["nextCursor"]},
    ).json()
    emails = [i["email"] for i in found["items"] + more["items"]]
    assert emails == sorted(f"list{tag}-{i}@test.alodoktor.test" for i in range(3))
    assert more["nextCursor"] is None

    newest = admin.get(
        "/admin-users", params={"role": "clinic", "approved": "false", "limit": 3}
    ).json()
    assert [i["email"] for i in newest["items"]] == [
        f"list{tag}-{i}@test.alodoktor.test" for i in (2, 1, 0)
    ]
    assert all(i["role"] == "clinic" and i["approved"] is False for i in newest["items"])

    problem(admin.get("/admin-users", params={"role": "wizard"}), 400, "validation_failed")


def test_disabled_filter(stack, admin):
    p = _create(admin, "patient")
    assert (
        admin.request("PATCH", f"/admin-users/{p['uid']}", json={"disabled": True}).status_code
        == 200
    )
    listed = admin.get("/admin-users", params={"disabled": "true", "limit": 100}).json()["items"]
    assert p["uid"] in [i["uid"] for i in listed]
    assert all(i["disabled"] for i in listed)


def test_get_one_account_with_its_auth_record(stack, admin):
    p = _create(admin, "pharmacy")
    detail = admin.get(f"/admin-users/{p['uid']}").json()
    assert detail["auth"]["uid"] == p["uid"]
    assert detail["auth"]["claims"] == {"role": "pharmacy", "approved": False}
    assert detail["profile"]["email"] == p["email"]
    problem(admin.get("/admin-users/nobody-here"), 404)


def test_changing_role_revokes_sessions_at_once(stack, admin):
    user = create_user(stack, Role.PATIENT)
    browser = sign_in(stack, user)

    response = admin.request("PATCH", f"/admin-users/{user.uid}", json={"role": "doctor"})

    assert response.status_code == 200, response.text
    assert response.json()["role"] == "doctor"
    assert response.json()["approved"] is False
    problem(browser.get("/session"), 401)
    fresh = sign_in(stack, user)
    assert fresh.get("/session").json()["role"] == "doctor"


def test_disabling_revokes_sessions_and_refuses_tokens(stack, admin):
    user = create_user(stack, Role.PATIENT)
    browser = sign_in(stack, user)
    token_client = bearer(stack, user)

    assert (
        admin.request("PATCH", f"/admin-users/{user.uid}", json={"disabled": True}).status_code
        == 200
    )

    problem(browser.get("/session"), 401)
    problem(token_client.get("/session"), 401, "user_disabled")


def test_admin_updates_profile_fields_of_a_clinic(stack, admin):
    clinic = _create(admin, "clinic")
    response = admin.request(
        "PATCH",
        f"/admin-users/{clinic['uid']}",
        json={
            "name": "Klinik Sehat",
            "address": {"line1": "Jl. Merdeka 1", "city": "Bandung", "country": "ID"},
            "geo": {"lat": -6.9, "lng": 107.6},
            "openingHours": [{"day": "mon", "opens": "08:00", "closes": "17:00"}],
            "services": ["general", "dental"],
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["address"]["city"] == "Bandung"
    bad_hours = admin.request(
        "PATCH",
        f"/admin-users/{clinic['uid']}",
        json={"openingHours": [{"day": "mon", "opens": "17:00", "closes": "08:00"}]},
    )
    problem(bad_hours, 400, "validation_failed")


def test_approval_lists_and_rejection_unlists_with_a_reason(stack, admin):
    doctor = _create(admin, "doctor", profile=DOCTOR_PROFILE)
    uid = doctor["uid"]

    approved = admin.post(f"/admin-users/{uid}/approval", json={"decision": "approve"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved"] is True
    assert _auth_user(uid).custom_claims["approved"] is True
    assert profiles.directory_ref(uid).get().exists

    problem(admin.post(f"/admin-users/{uid}/approval", json={"decision": "reject"}), 400)
    rejected = admin.post(
        f"/admin-users/{uid}/approval", json={"decision": "reject", "reason": "licence expired"}
    )
    assert rejected.json()["approval"] | {"at": None} == {
        "status": "rejected",
        "reason": "licence expired",
        "by": rejected.json()["approval"]["by"],
        "at": None,
    }
    assert not profiles.directory_ref(uid).get().exists
    patient = _create(admin, "patient")
    problem(
        admin.post(f"/admin-users/{patient['uid']}/approval", json={"decision": "approve"}),
        409,
        "approval_not_applicable",
    )


def test_approval_takes_effect_in_the_sessions_the_doctor_has(stack, admin):
    doctor = create_user(stack, Role.DOCTOR, approved=False)
    browser = sign_in(stack, doctor)
    problem(browser.get("/appointments"), 403, "not_approved")
    admin.post(f"/admin-users/{doctor.uid}/approval", json={"decision": "approve"})
    assert browser.get("/session").json()["approved"] is True
    assert browser.get("/appointments").status_code == 200


def test_rejection_ends_the_sessions_of_an_approved_doctor(stack, admin):
    doctor = create_user(stack, Role.DOCTOR, approved=True)
    browser = sign_in(stack, doctor)
    assert browser.get("/appointments").status_code == 200
    admin.post(
        f"/admin-users/{doctor.uid}/approval", json={"decision": "reject", "reason": "licence"}
    )
    problem(browser.get("/session"), 401, "session_revoked")


def test_deleting_a_doctor_with_upcoming_appointments_needs_force(stack, admin):
    doctor_user, _ = approved_doctor(stack, admin)
    doctor = {"uid": doctor_user.uid}
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booked = patient.post(
        "/appointments", json={"doctorUid": doctor_user.uid, "start": slot_in(48)}
    )
    assert booked.status_code == 201, booked.text
    appointments.confirm(booked.json()["id"])
    appointment = appointments.appointment_ref(booked.json()["id"])

    problem(admin.delete(f"/admin-users/{doctor['uid']}"), 409, "doctor_has_upcoming_appointments")
    assert _auth_user(doctor["uid"]) is not None

    assert (
        admin.delete(f"/admin-users/{doctor['uid']}", params={"force": "true"}).status_code == 204
    )
    assert _auth_user(doctor["uid"]) is None
    assert profiles.get(doctor["uid"]) is None
    assert (
        appointment.get().to_dict()["doctorUid"] == doctor["uid"]
    )  # kept, still pointing at the uid


def test_deleting_an_account_ends_its_sessions(stack, admin):
    user = create_user(stack, Role.PATIENT)
    browser = sign_in(stack, user)
    assert admin.delete(f"/admin-users/{user.uid}").status_code == 204
    problem(browser.get("/session"), 401)
    problem(admin.delete(f"/admin-users/{user.uid}"), 404)


def test_password_reset_link(stack, admin):
    p = _create(admin, "patient")
    response = admin.post(f"/admin-users/{p['uid']}/password-reset")
    assert response.status_code == 200, response.text
    assert response.json()["queued"] is True
    assert "oobCode=" in response.json()["link"]


def test_non_admins_get_403_on_admin_routes(stack):
    for role in (Role.PATIENT, Role.DOCTOR, Role.CLINIC, Role.PHARMACY):
        api = bearer(stack, create_user(stack, role))
        problem(api.get("/admin-users"), 403, "role_not_allowed")
        problem(api.post("/admin-users", json={}), 403, "role_not_allowed")


def test_cookie_admin_needs_csrf_for_changes(stack):
    admin = create_user(stack, Role.ADMIN)
    browser = sign_in(stack, admin)
    no_csrf = Api(stack.gateway_url, cookie=browser.cookie)
    problem(
        no_csrf.post(
            "/admin-users", json={"email": _email(), "role": "patient", "password": "pw-12345678"}
        ),
        403,
        "csrf_token_invalid",
    )
    assert id_token(stack, admin)
