"""Authentication without the Auth API: access records, their reconciliation with Firebase Auth,
session rotation and idle timeout, service identities, and same-origin paths."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from shared.identity import access, sessions
from shared.platform import clients, store
from shared.platform.context import Role, Service
from tests.support import (
    Api,
    bearer,
    create_user,
    google_token,
    id_token,
    problem,
    service_account,
    service_api,
    session_cookie,
    sign_in,
)


def _auth():  # type: ignore[no-untyped-def]
    from firebase_admin import auth

    return auth


def _reconcile(stack) -> dict:  # type: ignore[no-untyped-def]
    """Run the reconciliation to the end of its cycle, as Cloud Scheduler's runs would."""
    scheduler = service_api(stack, Service.SCHEDULER, "admin-users")
    repaired: list[str] = []
    for _ in range(50):
        response = scheduler.post("/admin-users/reconcile", params={"limit": 1000})
        assert response.status_code == 200, response.text
        body = response.json()
        repaired += body["repaired"]
        if body["cycleComplete"]:
            return {"repaired": repaired}
    raise AssertionError("the reconciliation never completed a cycle")


# -- the access record ------------------------------------------------------------------


def test_an_account_deleted_in_the_console_still_works_until_reconciled(stack):
    """No request asks Firebase Auth: the account is gone there, and nothing notices until the
    reconciliation writes the tombstone; from then on its tokens are refused."""
    user = create_user(stack)
    client = bearer(stack, user)
    assert client.get("/session").status_code == 200

    _auth().delete_user(user.uid, app=clients.firebase_app())
    assert client.get("/session").status_code == 200  # one Firestore read, no Auth lookup

    assert user.uid in _reconcile(stack)["repaired"]
    problem(client.get("/session"), 401, "user_not_found")
    assert access.get(user.uid).deleted


def test_an_account_disabled_in_the_console_is_refused_once_reconciled(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    token_client = bearer(stack, user)

    _auth().update_user(user.uid, disabled=True, app=clients.firebase_app())
    assert user.uid in _reconcile(stack)["repaired"]

    problem(browser.get("/session"), 401, "session_revoked")
    problem(token_client.get("/session"), 401, "user_disabled")


def test_reconciling_an_account_in_step_changes_nothing(stack):
    user = create_user(stack)
    bearer(stack, user).get("/session").raise_for_status()
    before = access.ref(user.uid).get().update_time

    assert user.uid not in _reconcile(stack)["repaired"]
    assert access.ref(user.uid).get().update_time == before


def test_reconcile_is_for_admins_and_the_scheduler_only(stack, admin):
    assert admin.post("/admin-users/reconcile", params={"limit": 10}).status_code == 200
    patient = bearer(stack, create_user(stack))
    problem(patient.post("/admin-users/reconcile"), 403, "role_not_allowed")
    tasks = service_api(stack, Service.TASKS, "admin-users")
    problem(tasks.post("/admin-users/reconcile"), 403, "service_not_allowed")


def test_a_role_change_bites_on_the_next_request(stack, admin):
    user = create_user(stack)
    browser = sign_in(stack, user)
    token_client = bearer(stack, user)
    assert token_client.get("/session").json()["role"] == "patient"
    time.sleep(1.1)  # revocation has one-second precision: tokens of that same second stay valid

    changed = admin.request("PATCH", f"/admin-users/{user.uid}", json={"role": "pharmacy"})
    assert changed.status_code == 200, changed.text

    problem(browser.get("/session"), 401, "session_revoked")
    problem(token_client.get("/session"), 401, "token_revoked")
    again = bearer(stack, user).get("/session").json()
    assert (again["role"], again["approved"]) == ("pharmacy", False)


def test_an_approval_bites_on_the_next_request(stack, admin):
    doctor = create_user(stack, Role.DOCTOR, approved=False)
    waiting = bearer(stack, doctor)
    problem(waiting.get("/appointments"), 403, "not_approved")

    admin.post(f"/admin-users/{doctor.uid}/approval", json={"decision": "approve"})

    assert waiting.get("/appointments").status_code == 200  # the same token, no sign-in again


def test_revoke_all_bites_on_bearer_tokens_at_once(stack):
    user = create_user(stack)
    old = bearer(stack, user)
    time.sleep(1.1)  # revocation has one-second precision: tokens of that same second stay valid
    browser = sign_in(stack, user)

    assert browser.post("/session/revoke-all").status_code == 200

    problem(old.get("/session"), 401, "token_revoked")
    assert access.get(user.uid).valid_after_ms > 0


def test_a_deleted_account_leaves_a_tombstone_that_refuses_its_tokens(stack, admin):
    user = create_user(stack)
    client = bearer(stack, user)
    assert admin.delete(f"/admin-users/{user.uid}").status_code == 204
    problem(client.get("/session"), 401)
    assert access.get(user.uid).deleted


def test_a_sign_in_racing_a_disable_never_leaves_a_live_session(stack, admin):
    """The session is made in a transaction that reads the access record, and disabling
    writes that record before it ends the sessions: whichever commits first, no session
    survives the disable."""
    for _ in range(3):
        _race_sign_in_and_disable(stack, admin)


def _race_sign_in_and_disable(stack, admin: Api) -> None:  # type: ignore[no-untyped-def]
    user = create_user(stack)
    token = id_token(stack, user)
    results: dict[str, requests.Response] = {}

    def sign_in_now() -> None:
        results["sign_in"] = requests.post(
            f"{stack.gateway_url}/session", json={"idToken": token}, timeout=30
        )

    def disable_now() -> None:
        results["disable"] = admin.request(
            "PATCH", f"/admin-users/{user.uid}", json={"disabled": True}
        )

    threads = [threading.Thread(target=sign_in_now), threading.Thread(target=disable_now)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["disable"].status_code == 200, results["disable"].text
    signed = results["sign_in"]
    assert signed.status_code in (201, 401), signed.text
    if signed.status_code == 201:
        cookie = session_cookie(signed)["__session"].value
        problem(Api(stack.gateway_url, cookie=cookie).get("/session"), 401)


# -- session rotation and idle timeout --------------------------------------------------


def _refresh(stack, browser: Api, user) -> requests.Response:  # type: ignore[no-untyped-def]
    return browser.post("/session/refresh", json={"idToken": id_token(stack, user)})


def test_refresh_rotates_the_cookie_and_csrf_token_and_keeps_the_expiry(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    first = browser.get("/session").json()

    response = _refresh(stack, browser, user)

    assert response.status_code == 200, response.text
    cookie = session_cookie(response)["__session"]
    assert cookie.value
    assert cookie.value != browser.cookie
    assert cookie["httponly"] is True
    body = response.json()
    assert body["csrfToken"] != browser.csrf
    assert body["expiresAt"] == first["expiresAt"]  # rotation never extends the session
    rotated = Api(stack.gateway_url, cookie=cookie.value, csrf=body["csrfToken"])
    assert rotated.get("/session").json()["csrfToken"] == body["csrfToken"]
    problem(browser.get("/session"), 401, "session_revoked")  # the old cookie, at once
    listed = rotated.get("/session/sessions").json()["items"]
    assert [item["current"] for item in listed] == [True]


def test_refresh_needs_the_old_csrf_token_and_the_same_account(stack):
    user, other = create_user(stack), create_user(stack)
    browser = sign_in(stack, user)
    no_csrf = Api(stack.gateway_url, cookie=browser.cookie)
    problem(_refresh(stack, no_csrf, user), 403, "csrf_token_invalid")
    problem(_refresh(stack, browser, other), 401, "token_mismatch")
    problem(_refresh(stack, bearer(stack, user), user), 409, "not_a_cookie_session")
    assert browser.get("/session").status_code == 200  # refusals leave the session as it was


def test_two_refreshes_of_one_session_at_once_leave_one_live_session(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    tokens = [id_token(stack, user), id_token(stack, user)]
    answers: list[requests.Response] = []

    def refresh(token: str) -> None:
        answers.append(browser.post("/session/refresh", json={"idToken": token}))

    threads = [threading.Thread(target=refresh, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(a.status_code for a in answers) == [200, 401], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 200)
    fresh = Api(stack.gateway_url, cookie=session_cookie(winner)["__session"].value)
    assert len(fresh.get("/session/sessions").json()["items"]) == 1


def _session_id(browser: Api) -> str:
    assert browser.cookie is not None
    return sessions.id_for_cookie(browser.cookie)


def test_a_session_unused_past_the_idle_timeout_has_ended(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    record = clients.db().collection(sessions.COLLECTION).document(_session_id(browser))
    store.update(record, {"lastUsedAt": datetime.now(UTC) - timedelta(minutes=31)})

    problem(browser.get("/session"), 401, "session_idle")
    assert record.get().to_dict()["endReason"] == "idle"
    problem(browser.get("/session"), 401, "session_revoked")


def test_use_is_recorded_at_most_once_per_interval_and_not_audited(stack, admin):
    user = create_user(stack)
    browser = sign_in(stack, user)
    record = clients.db().collection(sessions.COLLECTION).document(_session_id(browser))
    two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
    store.update(record, {"lastUsedAt": two_minutes_ago})

    assert browser.get("/session").status_code == 200
    touched = record.get()
    assert touched.to_dict()["lastUsedAt"] > two_minutes_ago + timedelta(minutes=1)

    for _ in range(3):
        assert browser.get("/session").status_code == 200
    assert record.get().update_time == touched.update_time  # no write within the interval

    entries = admin.get("/audit", params={"resource": f"sessions/{_session_id(browser)}"})
    assert entries.status_code == 200, entries.text
    assert [e["action"] for e in entries.json()["items"]] == ["create"]


# -- service identities -----------------------------------------------------------------


def test_the_scheduler_runs_the_sweeps(stack):
    for function, path in (
        ("appointments", "/appointments/sweep"),
        ("bookings", "/bookings/sweep"),
        ("payments", "/payments/refunds/sweep"),
    ):
        response = service_api(stack, Service.SCHEDULER, function).post(path)
        assert response.status_code == 200, (path, response.text)


def test_a_service_may_call_only_the_routes_named_for_it(stack):
    scheduler = service_api(stack, Service.SCHEDULER, "appointments")
    problem(scheduler.get("/appointments"), 403, "service_not_allowed")
    tasks = service_api(stack, Service.TASKS, "appointments")
    problem(tasks.post("/appointments/sweep"), 403, "service_not_allowed")


def _unsigned(claims: dict) -> str:  # type: ignore[type-arg]
    def part(obj: dict) -> str:  # type: ignore[type-arg]
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'x'})}.{part(claims)}."


def _foreign_key_token(stack, audience: str) -> str:  # type: ignore[no-untyped-def]
    """Right claims, signed by a key Google never published."""
    from dev import google_sim
    from dev.keys import self_signed

    claims = google_sim.claims_for(service_account(Service.SCHEDULER), audience)
    return google_sim.mint(self_signed("not-google"), claims)


@pytest.mark.parametrize(
    "case",
    ["wrong_audience", "wrong_account", "expired", "unsigned", "foreign_key", "unverified_email"],
)
def test_bad_service_tokens_are_refused_with_401(stack, case):
    audience = f"{stack.gateway_url}/appointments"
    scheduler = service_account(Service.SCHEDULER)
    token = {
        "wrong_audience": lambda: google_token(
            stack, email=scheduler, audience=f"{stack.gateway_url}/bookings"
        ),
        "wrong_account": lambda: google_token(
            stack, email="intruder@demo-alodoktor.iam.gserviceaccount.com", audience=audience
        ),
        "expired": lambda: google_token(stack, email=scheduler, audience=audience, expires_in=-600),
        "unsigned": lambda: _unsigned(
            {"iss": "https://accounts.google.com", "aud": audience, "email": scheduler}
        ),
        "foreign_key": lambda: _foreign_key_token(stack, audience),
        "unverified_email": lambda: google_token(
            stack, email=scheduler, audience=audience, claims={"email_verified": False}
        ),
    }[case]()

    response = Api(stack.gateway_url, bearer=token).post("/appointments/sweep")

    problem(response, 401)


# -- same-origin paths ------------------------------------------------------------------


def test_functions_answer_with_and_without_their_api_prefix(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    cookies = {"Cookie": f"__session={browser.cookie}; tracking=1"}

    direct = requests.get(f"{stack.gateway_url}/session", headers=cookies, timeout=30)
    rewritten = requests.get(f"{stack.gateway_url}/api/session", headers=cookies, timeout=30)
    deeper = requests.get(f"{stack.gateway_url}/api/session/sessions", headers=cookies, timeout=30)

    assert direct.status_code == rewritten.status_code == deeper.status_code == 200
    assert direct.json() == rewritten.json()
    assert deeper.json()["items"][0]["current"] is True
    missing = requests.get(f"{stack.gateway_url}/api/session/nope", timeout=30)
    problem(missing, 404, "route_not_found")
    preflight = requests.options(
        f"{stack.gateway_url}/api/session/revoke-all",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
