"""The session function against the real Auth and Firestore emulators, through the gateway."""

from __future__ import annotations

import time

import requests

from shared.identity import access, profiles, sessions
from shared.platform import clients
from tests import counted
from tests.support import (
    Api,
    bearer,
    create_user,
    emulator_claims,
    id_token,
    problem,
    session_cookie,
    sign_in,
    unsigned_token,
)


def test_sign_in_sets_a_hardened_cookie_and_answers_the_principal(stack):
    user = create_user(stack, role=None)
    token = id_token(stack, user)

    response = requests.post(f"{stack.gateway_url}/session", json={"idToken": token}, timeout=30)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["uid"] == user.uid
    assert body["email"] == user.email
    assert body["role"] == "patient"
    assert body["approved"] is True
    assert len(body["csrfToken"]) >= 32
    morsel = session_cookie(response)["__session"]
    assert morsel.value
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == 5 * 24 * 3600


def test_first_sign_in_creates_a_patient_profile_stamped_with_meta(stack):
    user = create_user(stack, role=None)
    sign_in(stack, user)

    doc = profiles.ref(user.uid).get().to_dict()
    assert doc["role"] == "patient"
    assert doc["email"] == user.email
    assert doc["_meta"]["by"] == user.uid
    assert doc["_meta"]["function"] == "session"
    assert doc["_meta"]["requestId"]
    from firebase_admin import auth

    assert auth.get_user(user.uid, app=clients.firebase_app()).custom_claims["role"] == "patient"


def test_caller_cannot_choose_a_role_at_sign_in(stack):
    user = create_user(stack, role=None)
    token = id_token(stack, user)

    response = requests.post(
        f"{stack.gateway_url}/session", json={"idToken": token, "role": "admin"}, timeout=30
    )

    body = problem(response, 400, "validation_failed")
    assert any(e["field"] == "role" for e in body["errors"])
    assert not profiles.ref(user.uid).get().exists


def test_sign_in_needs_a_recent_sign_in(stack):
    user = create_user(stack)
    stale = unsigned_token(
        emulator_claims(stack.project_id, user.uid, auth_time=int(time.time()) - 600)
    )

    response = requests.post(f"{stack.gateway_url}/session", json={"idToken": stale}, timeout=30)

    problem(response, 401, "recent_sign_in_required")


def test_sign_in_refuses_garbage_and_missing_tokens(stack):
    url = f"{stack.gateway_url}/session"
    problem(requests.post(url, json={"idToken": "x" * 40}, timeout=30), 401, "invalid_token")
    problem(requests.post(url, json={}, timeout=30), 400, "validation_failed")
    problem(
        requests.post(url, data="{", headers={"Content-Type": "application/json"}, timeout=30),
        400,
        "malformed_json",
    )
    problem(requests.post(url, data="idToken=x", timeout=30), 415, "unsupported_media_type")


def test_whoami_with_cookie_and_with_bearer(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)

    me = browser.get("/session").json()
    assert me["uid"] == user.uid
    assert me["csrfToken"] == browser.csrf
    assert me["expiresAt"]

    via_bearer = bearer(stack, user).get("/session").json()
    assert via_bearer["uid"] == user.uid
    assert via_bearer["csrfToken"] is None


def test_anonymous_and_bad_credentials_are_refused(stack):
    api = Api(stack.gateway_url)
    problem(api.get("/session"), 401, "unauthenticated")
    problem(
        api.get("/session", headers={"Authorization": "Basic abc"}), 401, "invalid_authorization"
    )
    problem(Api(stack.gateway_url, cookie="not-a-cookie").get("/session"), 401, "invalid_token")


def test_signing_in_again_keeps_the_old_session_listed(stack):
    user = create_user(stack)
    first = sign_in(stack, user)
    second = sign_in(stack, user)

    items = second.get("/session/sessions").json()["items"]

    assert len(items) == 2
    current = [i for i in items if i["current"]]
    assert len(current) == 1
    assert {"id", "ip", "userAgent", "createdAt", "expiresAt", "current"} <= set(items[0])
    assert first.get("/session").status_code == 200  # the first is still valid


def test_session_list_pages_with_a_cursor(stack):
    user = create_user(stack)
    for _ in range(3):
        api = sign_in(stack, user)

    page1 = api.get("/session/sessions", params={"limit": 2}).json()
    page2 = api.get("/session/sessions", params={"limit": 2, "cursor": page1["nextCursor"]}).json()

    assert len(page1["items"]) == 2
    assert page1["nextCursor"]
    assert len(page2["items"]) == 1
    assert page2["nextCursor"] is None
    ids = [i["id"] for i in page1["items"] + page2["items"]]
    assert len(set(ids)) == 3
    problem(api.get("/session/sessions", params={"cursor": "@@@"}), 400, "invalid_cursor")
    problem(api.get("/session/sessions", params={"limit": 0}), 400, "validation_failed")
    problem(api.get("/session/sessions", params={"bogus": 1}), 400, "validation_failed")


def test_logout_refuses_the_same_cookie_on_the_next_request_at_every_instance(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    other_instance = stack.spawn_extra_gateway()
    try:
        elsewhere = Api(other_instance, cookie=browser.cookie, csrf=browser.csrf)
        assert elsewhere.get("/session").status_code == 200

        response = browser.delete("/session")

        assert response.status_code == 204
        cleared = session_cookie(response)["__session"]
        assert cleared.value == ""
        assert cleared["max-age"] == "0"
        problem(browser.get("/session"), 401, "session_revoked")
        problem(elsewhere.get("/session"), 401, "session_revoked")
    finally:
        stack.stop_extra_gateways()


def test_cookie_changes_need_the_csrf_token_but_bearer_changes_do_not(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)

    no_token = Api(stack.gateway_url, cookie=browser.cookie)
    problem(no_token.delete("/session"), 403, "csrf_token_invalid")
    wrong = Api(stack.gateway_url, cookie=browser.cookie, csrf="x" * 43)
    problem(wrong.delete("/session"), 403, "csrf_token_invalid")
    assert browser.get("/session").status_code == 200  # nothing was changed

    assert bearer(stack, user).delete("/session").status_code == 204


def test_revoking_one_of_my_other_sessions(stack):
    user = create_user(stack)
    laptop = sign_in(stack, user)
    phone = sign_in(stack, user)
    phone_id = next(i["id"] for i in phone.get("/session/sessions").json()["items"] if i["current"])

    assert laptop.delete(f"/session/sessions/{phone_id}").status_code == 204

    problem(phone.get("/session"), 401, "session_revoked")
    assert laptop.get("/session").status_code == 200
    remaining = laptop.get("/session/sessions").json()["items"]
    remaining_ids = [i["id"] for i in remaining]
    assert remaining_ids
    assert phone_id not in remaining_ids


def test_someone_elses_session_id_is_not_found(stack):
    mine = sign_in(stack, create_user(stack))
    theirs = sign_in(stack, create_user(stack))
    their_id = next(i["id"] for i in theirs.get("/session/sessions").json()["items"])

    problem(mine.delete(f"/session/sessions/{their_id}"), 404, "not_found")
    problem(mine.delete("/session/sessions/" + "0" * 64), 404, "not_found")
    assert theirs.get("/session").status_code == 200


def test_admins_cannot_end_other_peoples_sessions_one_by_one(stack):
    from shared.platform.context import Role

    admin = sign_in(stack, create_user(stack, Role.ADMIN))
    theirs = sign_in(stack, create_user(stack))
    their_id = next(i["id"] for i in theirs.get("/session/sessions").json()["items"])

    problem(admin.delete(f"/session/sessions/{their_id}"), 404)


def test_revoke_all_ends_every_session_and_bearer_token(stack):
    user = create_user(stack)
    one, two = sign_in(stack, user), sign_in(stack, user)
    old_bearer = bearer(stack, user)
    time.sleep(1.1)  # revocation has one-second precision: tokens of that same second stay valid

    response = one.post("/session/revoke-all")

    assert response.status_code == 200, response.text
    assert response.json()["revokedSessions"] == 2
    problem(one.get("/session"), 401)
    problem(two.get("/session"), 401)
    problem(old_bearer.get("/session"), 401, "token_revoked")
    fresh = sign_in(stack, user)
    assert fresh.get("/session").status_code == 200


def test_a_user_disabled_by_an_admin_is_refused_on_the_next_request(stack, admin):
    user = create_user(stack)
    browser = sign_in(stack, user)
    token_client = bearer(stack, user)
    assert token_client.get("/session").status_code == 200

    admin.request("PATCH", f"/admin-users/{user.uid}", json={"disabled": True}).raise_for_status()

    problem(browser.get("/session"), 401, "session_revoked")
    problem(token_client.get("/session"), 401, "user_disabled")


def test_cors_allows_listed_origins_with_credentials_only(stack):
    url = f"{stack.gateway_url}/session"
    allowed = "http://localhost:5173"
    preflight = requests.options(
        url,
        headers={"Origin": allowed, "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "X-CSRF-Token" in preflight.headers["Access-Control-Allow-Headers"]

    evil = "https://evil.example"
    denied = requests.options(
        url, headers={"Origin": evil, "Access-Control-Request-Method": "POST"}, timeout=30
    )
    problem(denied, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in denied.headers

    user = create_user(stack)
    token = id_token(stack, user)
    cross_site = requests.post(url, json={"idToken": token}, headers={"Origin": evil}, timeout=30)
    problem(cross_site, 403, "origin_not_allowed")
    same = requests.post(url, json={"idToken": token}, headers={"Origin": allowed}, timeout=30)
    assert same.status_code == 201
    assert same.headers["Access-Control-Allow-Origin"] == allowed


def test_oversized_bodies_are_refused_with_413(stack):
    big = '{"idToken": "' + "a" * (70 * 1024) + '"}'
    response = requests.post(
        f"{stack.gateway_url}/session",
        data=big,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    problem(response, 413, "payload_too_large")


def test_unknown_routes_and_methods_are_problems(stack):
    problem(requests.get(f"{stack.gateway_url}/session/nope", timeout=30), 404, "route_not_found")
    response = requests.put(f"{stack.gateway_url}/session", timeout=30)
    problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_every_answer_carries_a_request_id(stack):
    response = requests.get(f"{stack.gateway_url}/session", timeout=30)
    body = problem(response, 401)
    assert body["requestId"] == response.headers["X-Request-Id"]
    supplied = requests.get(
        f"{stack.gateway_url}/session", headers={"X-Request-Id": "req-12345678"}, timeout=30
    )
    assert supplied.headers["X-Request-Id"] == "req-12345678"


def test_oversized_chunked_bodies_are_refused_with_413(stack):
    def chunks():
        for _ in range(80):
            yield b"a" * 1024

    response = requests.post(
        f"{stack.gateway_url}/session",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    problem(response, 413, "payload_too_large")


# -- the project's own session credential -----------------------------------------------------


def _exchange(stack, token: str) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.post(f"{stack.gateway_url}/session", json={"idToken": token}, timeout=30)


def test_the_cookie_names_its_session_and_a_wrong_secret_opens_nothing(stack):
    browser = sign_in(stack, create_user(stack))
    assert browser.cookie is not None
    session_id, _, secret = browser.cookie.partition(".")
    listed = browser.get("/session/sessions").json()["items"]
    assert [i["id"] for i in listed] == [session_id]
    assert len(secret) >= 43  # 32 random bytes

    forged = f"{session_id}.{'A' * len(secret)}"
    problem(Api(stack.gateway_url, cookie=forged).get("/session"), 401, "session_unknown")
    problem(Api(stack.gateway_url, cookie=secret).get("/session"), 401, "invalid_token")
    stored = clients.db().collection(sessions.COLLECTION).document(session_id).get().to_dict()
    assert secret not in str(stored)  # only its hash is kept
    assert browser.get("/session").status_code == 200


def test_an_id_token_makes_one_session_and_none_once_it_has_ended(stack):
    user = create_user(stack)
    token = id_token(stack, user)
    first = _exchange(stack, token)
    again = _exchange(stack, token)  # a retry whose first answer was lost, or a double submit

    assert first.status_code == again.status_code == 201, again.text
    old = session_cookie(first)["__session"].value
    new = session_cookie(again)["__session"].value
    assert old.partition(".")[0] == new.partition(".")[0]  # the same session, re-keyed
    problem(Api(stack.gateway_url, cookie=old).get("/session"), 401, "session_unknown")
    browser = Api(stack.gateway_url, cookie=new, csrf=again.json()["csrfToken"])
    assert len(browser.get("/session/sessions").json()["items"]) == 1

    assert browser.delete("/session").status_code == 204
    problem(_exchange(stack, token), 401, "sign_in_reused")


def test_an_id_token_written_another_way_is_no_other_token(stack):
    """A token decoders also read with padding, stray characters or another last character is
    refused as malformed, so after sign-out no variant of the token makes a new session."""
    user = create_user(stack)
    token = id_token(stack, user)
    browser = Api(
        stack.gateway_url, cookie=session_cookie(_exchange(stack, token))["__session"].value
    )
    header, payload, signature = token.split(".")
    variants = [
        token + "==",
        f"{header}.{payload}==.{signature}",
        f"{header}.{payload[:4]}~~{payload[4:]}.{signature}",
        f"{header}.{payload[:4]}\n{payload[4:]}.{signature}",
        f" {token}",
    ]
    for variant in variants:
        problem(_exchange(stack, variant), 401, "invalid_token")
        if variant.strip() == variant and "\n" not in variant:  # what a header can carry
            problem(Api(stack.gateway_url, bearer=variant).get("/session/sessions"), 401)
    csrf = browser.get("/session").json()["csrfToken"]
    assert (
        Api(stack.gateway_url, cookie=browser.cookie, csrf=csrf).delete("/session").status_code
        == 204
    )
    for variant in [token, *variants]:
        assert _exchange(stack, variant).status_code == 401


def test_exchanging_a_token_again_makes_the_session_the_new_holders(stack):
    """A second exchange of a live session's token re-keys it for whoever sent it: their
    address and browser in the list, a CSRF token of their own, the earlier cookie refused."""
    user = create_user(stack)
    token = id_token(stack, user)
    first = requests.post(
        f"{stack.gateway_url}/session",
        json={"idToken": token},
        headers={"User-Agent": "FirstBrowser"},
        timeout=30,
    )
    again = requests.post(
        f"{stack.gateway_url}/session",
        json={"idToken": token},
        headers={"User-Agent": "SecondBrowser"},
        timeout=30,
    )
    assert first.status_code == again.status_code == 201, again.text
    assert first.json()["csrfToken"] != again.json()["csrfToken"]
    browser = Api(stack.gateway_url, cookie=session_cookie(again)["__session"].value)
    (listed,) = browser.get("/session/sessions").json()["items"]
    assert listed["userAgent"] == "SecondBrowser"
    old = Api(stack.gateway_url, cookie=session_cookie(first)["__session"].value)
    problem(old.get("/session"), 401, "session_unknown")


def test_a_sign_in_reads_the_access_record_once_writes_the_session_and_asks_auth_nothing(stack):
    user = create_user(stack)
    access.refresh(user.uid, by="test")  # as every account the backend makes has one
    response, counts = counted.call("session", "POST", "/", json={"idToken": id_token(stack, user)})

    assert response.status_code == 201, response.get_data(as_text=True)
    assert counts.get("http.auth", 0) == 0
    assert counts.get("http.keys", 0) == 0
    assert counts["firestore.reads"] == counts["firestore.reads.access"] == 1
    assert counts["firestore.writes"] == 1
    assert counted.operations(counts) == 2


def test_a_first_sign_in_of_an_account_made_outside_the_backend_asks_auth_once(stack):
    user = create_user(stack)  # claims and profile, but no access record
    response, counts = counted.call("session", "POST", "/", json={"idToken": id_token(stack, user)})

    assert response.status_code == 201, response.get_data(as_text=True)
    assert counts.get("http.auth", 0) == 1  # the account as Auth holds it, recorded
    assert access.get(user.uid) is not None
    response, counts = counted.call("session", "POST", "/", json={"idToken": id_token(stack, user)})
    assert response.status_code == 201
    assert counts.get("http.auth", 0) == 0
    assert counted.operations(counts) == 2


def test_a_refresh_asks_auth_nothing(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    response, counts = counted.call(
        "session",
        "POST",
        "/refresh",
        headers={"Cookie": f"__session={browser.cookie}", "X-CSRF-Token": browser.csrf or ""},
        json={"idToken": id_token(stack, user)},
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert counts.get("http.auth", 0) == 0
    problem(browser.get("/session"), 401, "session_revoked")


def test_a_refresh_takes_an_id_token_once(stack):
    user = create_user(stack)
    browser = sign_in(stack, user)
    token = id_token(stack, user)
    rotated = browser.post("/session/refresh", json={"idToken": token})
    assert rotated.status_code == 200, rotated.text
    again = Api(
        stack.gateway_url,
        cookie=session_cookie(rotated)["__session"].value,
        csrf=rotated.json()["csrfToken"],
    )

    problem(again.post("/session/refresh", json={"idToken": token}), 401, "sign_in_reused")
    assert again.get("/session").status_code == 200  # the refusal leaves the session as it was
