"""Self-service profiles and the public directory."""

from __future__ import annotations

import uuid

from shared.identity import access
from shared.platform import clients
from shared.platform.context import Role
from tests import counted
from tests.support import Api, approved_doctor, bearer, create_user, id_token, problem

PRIVATE = {"email", "phone", "licenseNumber", "approval", "disabled", "role", "approved"}


def test_everyone_reads_their_own_profile_and_nobody_elses(stack):
    me_user = create_user(stack, Role.PATIENT)
    me = bearer(stack, me_user)
    other = create_user(stack, Role.PATIENT)

    assert me.get("/users/me").json()["uid"] == me_user.uid
    assert me.get(f"/users/{me_user.uid}").json()["uid"] == me_user.uid
    problem(me.get(f"/users/{other.uid}"), 404)
    problem(me.request("PATCH", f"/users/{other.uid}", json={"displayName": "Hacked"}), 404)


def test_admins_read_any_profile_but_edit_through_admin_users(stack, admin):
    other = create_user(stack, Role.PATIENT)
    assert admin.get(f"/users/{other.uid}").json()["uid"] == other.uid
    problem(admin.request("PATCH", f"/users/{other.uid}", json={"displayName": "X"}), 404)


def test_a_patient_edits_name_and_phone_only(stack):
    api = bearer(stack, create_user(stack, Role.PATIENT))
    response = api.request(
        "PATCH", "/users/me", json={"displayName": "Budi", "phone": "+628111222333"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["displayName"] == "Budi"
    assert response.json()["phone"] == "+628111222333"

    problem(api.request("PATCH", "/users/me", json={"role": "admin"}), 400, "validation_failed")
    problem(api.request("PATCH", "/users/me", json={"approved": True}), 400, "validation_failed")
    problem(
        api.request("PATCH", "/users/me", json={"specialty": "cardiology"}),
        400,
        "field_not_applicable",
    )
    assert api.get("/session").json()["role"] == "patient"


def test_a_doctor_fills_in_their_licence_until_approved(stack, admin):
    doctor = create_user(stack, Role.DOCTOR, approved=False)
    api = bearer(stack, doctor)
    filled = api.request(
        "PATCH",
        "/users/me",
        json={
            "licenseNumber": "SIP-001",
            "specialty": "pediatrics",
            "languages": ["id"],
            "consultationPrice": {"currency": "USD", "value": "10.00"},
            "bio": "Kids.",
        },
    )
    assert filled.status_code == 200, filled.text
    assert filled.json()["licenseNumber"] == "SIP-001"

    assert (
        admin.post(f"/admin-users/{doctor.uid}/approval", json={"decision": "approve"}).status_code
        == 200
    )
    api = bearer(stack, doctor)  # approval ended the old sign-in
    problem(
        api.request("PATCH", "/users/me", json={"licenseNumber": "SIP-999"}), 403, "field_locked"
    )
    assert api.request("PATCH", "/users/me", json={"bio": "Children."}).status_code == 200
    # the admin still can correct it
    fixed = admin.request("PATCH", f"/admin-users/{doctor.uid}", json={"licenseNumber": "SIP-002"})
    assert fixed.json()["licenseNumber"] == "SIP-002"


def _approved_doctor(stack, admin, specialty, languages, price):
    user, _ = approved_doctor(
        stack,
        admin,
        price,
        specialty=specialty,
        languages=languages,
        phone="+62" + str(uuid.uuid4().int)[:10],
    )
    return user


def test_directory_of_doctors_filters_and_hides_private_fields(stack, admin):
    spec = "spec-" + uuid.uuid4().hex[:8]
    cheap = _approved_doctor(stack, admin, spec, ["id", "en"], "10.00")
    mid = _approved_doctor(stack, admin, spec, ["id"], "20.00")
    dear = _approved_doctor(stack, admin, spec, ["en"], "40.00")
    unapproved = create_user(stack, Role.DOCTOR, approved=False)
    bearer(stack, unapproved).request(
        "PATCH", "/users/me", json={"specialty": spec}
    ).raise_for_status()

    viewer = bearer(stack, create_user(stack, Role.PATIENT))
    everyone = viewer.get("/users/directory/doctors", params={"specialty": spec}).json()["items"]
    assert {i["uid"] for i in everyone} == {cheap.uid, mid.uid, dear.uid}
    for item in everyone:
        assert not PRIVATE & set(item), item
        assert item["specialty"] == spec

    english = viewer.get(
        "/users/directory/doctors", params={"specialty": spec, "language": "en"}
    ).json()
    assert {i["uid"] for i in english["items"]} == {cheap.uid, dear.uid}

    priced = viewer.get(
        "/users/directory/doctors",
        params={"specialty": spec, "currency": "USD", "minPrice": "15", "maxPrice": "50.00"},
    ).json()
    assert [i["uid"] for i in priced["items"]] == [mid.uid, dear.uid]  # cheapest first
    assert priced["items"][0]["consultationPrice"] == {"currency": "USD", "value": "20.00"}

    paged = viewer.get("/users/directory/doctors", params={"specialty": spec, "limit": 2}).json()
    rest = viewer.get(
        "/users/directory/doctors",
        params={"specialty": spec, "limit": 2, "cursor": paged["nextCursor"]},
    ).json()
    assert len({i["uid"] for i in paged["items"] + rest["items"]}) == 3

    problem(
        viewer.get("/users/directory/doctors", params={"minPrice": "10"}), 400, "validation_failed"
    )


def test_disabled_providers_leave_the_directory(stack, admin):
    spec = "spec-" + uuid.uuid4().hex[:8]
    doctor = _approved_doctor(stack, admin, spec, ["id"], "10.00")
    viewer = bearer(stack, create_user(stack, Role.PATIENT))
    assert (
        len(viewer.get("/users/directory/doctors", params={"specialty": spec}).json()["items"]) == 1
    )
    admin.request("PATCH", f"/admin-users/{doctor.uid}", json={"disabled": True}).raise_for_status()
    assert viewer.get("/users/directory/doctors", params={"specialty": spec}).json()["items"] == []


def _approved_place(stack, admin, role: Role, city: str, **extra):
    user = create_user(stack, role, approved=False)
    bearer(stack, user).request(
        "PATCH",
        "/users/me",
        json={
            "name": f"{role.value} {uuid.uuid4().hex[:4]}",
            "address": {"line1": "Jl. 1", "city": city, "country": "ID"},
            **extra,
        },
    ).raise_for_status()
    admin.post(f"/admin-users/{user.uid}/approval", json={"decision": "approve"}).raise_for_status()
    return user


def test_directory_of_clinics_and_pharmacies_by_city(stack, admin):
    city = "Kota " + uuid.uuid4().hex[:6]
    clinic = _approved_place(stack, admin, Role.CLINIC, city)
    delivers = _approved_place(stack, admin, Role.PHARMACY, city, delivery=True)
    walk_in = _approved_place(stack, admin, Role.PHARMACY, city, delivery=False)
    viewer = bearer(stack, create_user(stack, Role.DOCTOR))

    clinics = viewer.get("/users/directory/clinics", params={"city": city.upper()}).json()["items"]
    assert [c["uid"] for c in clinics] == [clinic.uid]
    pharmacies = viewer.get("/users/directory/pharmacies", params={"city": city}).json()["items"]
    assert {p["uid"] for p in pharmacies} == {delivers.uid, walk_in.uid}
    delivering = viewer.get(
        "/users/directory/pharmacies", params={"city": city, "delivery": "true"}
    ).json()["items"]
    assert [p["uid"] for p in delivering] == [delivers.uid]
    for item in clinics + pharmacies:
        assert not PRIVATE & set(item)


def test_directory_needs_a_signed_in_caller(stack):
    problem(Api(stack.gateway_url).get("/users/directory/doctors"), 401)


def test_a_profile_change_asks_auth_only_for_what_auth_holds(stack):
    user = create_user(stack, Role.PATIENT)
    access.refresh(user.uid, by="test")  # as every account the backend makes has one
    headers = {"Authorization": f"Bearer {id_token(stack, user)}"}

    def patch(body: dict[str, str]) -> dict[str, int]:
        response, counts = counted.call("users", "PATCH", "/me", headers=headers, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        return counts

    renamed = patch({"displayName": "Sari"})
    assert renamed.get("http.auth", 0) == 1  # the name, in Auth; nothing read back
    assert renamed["firestore.reads"] == 2  # the access record, the profile
    from firebase_admin import auth

    assert auth.get_user(user.uid, app=clients.firebase_app()).display_name == "Sari"
    phone = f"+62811{uuid.uuid4().int % 10**7:07d}"  # numbers are unique across accounts
    unchanged = patch({"displayName": "Sari", "phone": phone})
    assert unchanged.get("http.auth", 0) == 1  # the phone alone
    assert patch({"displayName": "Sari"}).get("http.auth", 0) == 0


def test_a_doctors_practice_details_never_touch_auth(stack):
    doctor = create_user(stack, Role.DOCTOR, approved=False)
    access.refresh(doctor.uid, by="test")
    headers = {"Authorization": f"Bearer {id_token(stack, doctor)}"}
    response, counts = counted.call(
        "users", "PATCH", "/me", headers=headers, json={"bio": "Kids.", "specialty": "pediatrics"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert counts.get("http.auth", 0) == 0
