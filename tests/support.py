"""Helpers for tests that talk to the local stack: users, tokens and HTTP clients."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any, TypeVar

import requests

from shared.identity import profiles
from shared.platform import clients, store
from shared.platform.context import Role, Service
from tests import openapi_support


@dataclass
class User:
    uid: str
    email: str
    password: str
    role: Role | None


def create_user(
    stack: Any, role: Role | None = Role.PATIENT, *, approved: bool = True, profile: bool = True
) -> User:
    """An Auth emulator account with role claims (and a profile), as an admin would make it."""
    from firebase_admin import auth

    email = f"{(role.value if role else 'new')}-{uuid.uuid4().hex[:10]}@test.alodoktor.test"
    password = "pw-" + uuid.uuid4().hex
    record = auth.create_user(email=email, password=password, app=clients.firebase_app())
    if role is not None:
        auth.set_custom_user_claims(
            record.uid, {"role": role.value, "approved": approved}, app=clients.firebase_app()
        )
        if profile:
            store.set(
                profiles.ref(record.uid),
                {
                    "uid": record.uid,
                    "email": email,
                    "role": role.value,
                    "approved": approved,
                    "disabled": False,
                    "createdAt": datetime.now(UTC),
                },
                by="test",
            )
    return User(record.uid, email, password, role)


_last_token_at: dict[str, float] = {}


def id_token(stack: Any, user: User) -> str:
    """A fresh ID token; never two in the same second for one user, as they would be identical
    (and so would the session cookies minted from them)."""
    wait = _last_token_at.get(user.uid, 0) + 1.05 - time.time()
    if wait > 0:
        time.sleep(wait)
    _last_token_at[user.uid] = time.time()
    response = requests.post(
        f"{stack.auth_url}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=test",
        json={"email": user.email, "password": user.password, "returnSecureToken": True},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["idToken"])


def unsigned_token(claims: dict[str, Any]) -> str:
    """A token shaped like the Auth emulator's (alg none), with claims of the test's choosing."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def emulator_claims(project_id: str, uid: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{project_id}",
        "aud": project_id,
        "sub": uid,
        "user_id": uid,
        "auth_time": now,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return claims


@dataclass
class Api:
    """An HTTP client of the gateway that carries a session cookie the way a browser would.

    requests will not send a Secure cookie over http://, so the cookie is kept here. Every
    response is checked against the gateway's merged OpenAPI document (tests/openapi_support.py).
    """

    base: str
    cookie: str | None = None
    csrf: str | None = None
    bearer: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        if self.cookie is not None:
            headers.setdefault("Cookie", f"__session={self.cookie}")
        if self.csrf is not None and method not in ("GET", "HEAD", "OPTIONS"):
            headers.setdefault("X-CSRF-Token", self.csrf)
        if self.bearer is not None:
            headers.setdefault("Authorization", f"Bearer {self.bearer}")
        response = requests.request(method, self.base + path, headers=headers, timeout=30, **kw)
        openapi_support.check(self.base, response)
        return response

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)


def session_cookie(response: requests.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.raw.headers.getlist("Set-Cookie"):
        jar.load(header)
    return jar


def sign_in(stack: Any, user: User) -> Api:
    """A browser-like client holding a fresh session of `user`."""
    token = id_token(stack, user)
    response = requests.post(f"{stack.gateway_url}/session", json={"idToken": token}, timeout=30)
    openapi_support.check(stack.gateway_url, response)
    assert response.status_code == 201, response.text
    cookie = session_cookie(response)["__session"].value
    return Api(stack.gateway_url, cookie=cookie, csrf=response.json()["csrfToken"])


def bearer(stack: Any, user: User) -> Api:
    return Api(stack.gateway_url, bearer=id_token(stack, user))


def service_account(service: Service) -> str:
    from dev import stack as local

    emails = {
        Service.SCHEDULER: local.SCHEDULER_SERVICE_ACCOUNT,
        Service.TASKS: local.TASKS_SERVICE_ACCOUNT,
    }
    return emails[service]


def google_token(
    stack: Any,
    *,
    email: str,
    audience: str,
    expires_in: int = 3600,
    claims: dict[str, Any] | None = None,
) -> str:
    """An OIDC token signed by the local stand-in for Google (dev/google_sim.py)."""
    response = requests.post(
        f"{stack.google_url}/_sim/oidc-token",
        json={
            "email": email,
            "audience": audience,
            "expiresIn": expires_in,
            "claims": claims or {},
        },
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["token"])


def service_api(stack: Any, service: Service, function: str) -> Api:
    """A client calling as Cloud Scheduler or Cloud Tasks calls `function`: with a Google OIDC
    token of that service's account, for that function's URL."""
    token = google_token(
        stack,
        email=service_account(service),
        audience=f"{stack.gateway_url}/{function}",
    )
    return Api(stack.gateway_url, bearer=token)


def problem(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the response is an RFC 9457 problem with this status (and code); return it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    assert "Traceback" not in response.text
    return body


# One line of a prescription, as a doctor writes it.
PRESCRIPTION_ITEM = {
    "medication": "Amoxicillin",
    "strength": "500 mg",
    "form": "capsule",
    "dose": "1 capsule",
    "frequency": "3 times a day",
    "durationDays": 7,
    "quantity": 21,
    "refills": 0,
    "instructions": "After meals.",
}

EVERY_DAY = {
    d: [{"start": "00:00", "end": "23:30"}]
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}


CHECKUP = {
    "id": "checkup",
    "name": "General check-up",
    "durationMinutes": 20,
    "price": {"currency": "USD", "value": "12.50"},
}


def clinic_setup(time_zone: str, capacity: int = 4) -> dict[str, Any]:
    """A clinic's bookings setup: 30-minute windows from 08:00 to 10:00 every day in
    `time_zone`, `capacity` places each, and one service (CHECKUP)."""
    return {
        "timeZone": time_zone,
        "windowMinutes": 30,
        "weekly": [
            {"day": d, "opens": "08:00", "closes": "10:00", "capacity": capacity}
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        ],
        "services": [dict(CHECKUP)],
    }


def approved_doctor(
    stack: Any, admin: Api, price: str = "20.00", **profile: Any
) -> tuple[User, Api]:
    """A doctor approved by `admin`, priced, with 30-minute slots all day every day (UTC);
    `profile` adds or overrides profile fields (camelCase)."""
    user = create_user(stack, Role.DOCTOR, approved=False)
    api = bearer(stack, user)
    api.request(
        "PATCH",
        "/users/me",
        json={
            "licenseNumber": "SIP-" + uuid.uuid4().hex[:6],
            "specialty": "general",
            "consultationPrice": {"currency": "USD", "value": price},
            **profile,
        },
    ).raise_for_status()
    admin.post(f"/admin-users/{user.uid}/approval", json={"decision": "approve"}).raise_for_status()
    api = bearer(stack, user)  # approval ended the earlier sign-in
    published = api.request(
        "PUT",
        "/appointments/availability",
        json={"timeZone": "UTC", "slotMinutes": 30, "weekly": EVERY_DAY},
    )
    assert published.status_code == 200, published.text
    return user, api


def erasure_due_now(request_id: str) -> None:
    """The erasure request as if its cooling-off had ended, so the next run carries it out."""
    store.update(
        clients.db().collection("privacyRequests").document(request_id),
        {"eraseAfter": datetime.now(UTC) - timedelta(seconds=1)},
        by="test",
    )


def slot_in(hours_ahead: float) -> str:
    """The start of a 30-minute slot about `hours_ahead` from now, as an ISO UTC string."""
    from datetime import UTC, datetime, timedelta

    t = datetime.now(UTC) + timedelta(hours=hours_ahead)
    t = t.replace(minute=0 if t.minute < 30 else 30, second=0, microsecond=0)
    t += timedelta(minutes=30)
    if (t.hour, t.minute) == (23, 30):  # EVERY_DAY's last slot starts at 23:00
        t -= timedelta(minutes=30)
    return t.isoformat().replace("+00:00", "Z")


T = TypeVar("T")
EVENTUALLY_SECONDS = 90.0  # to wait for asynchronous delivery on a busy machine


def eventually(probe: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
    """Poll `probe` until `done` says its value is what the test waits for."""
    deadline = time.monotonic() + EVENTUALLY_SECONDS
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r}")
        time.sleep(0.2)
