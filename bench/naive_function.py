"""The naive function: the floor's work with every library of the card imported at module top.

Deployed by the benchmarks as a one-file function (this file as `main.py`, target `floor`). It
does exactly what bench/floor_function.py does, request for request; only its imports differ:
functions-framework, firebase-admin, google-cloud-firestore, google-cloud-tasks,
google-cloud-logging, pydantic and requests are all imported when the module loads, as a
function written without regard to cold starts would. The distance between the two is what
deferring imports is worth.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import threading
import time
from typing import Any

import firebase_admin  # noqa: F401  (imported for its cost, as a naive function would)
import functions_framework
import pydantic  # noqa: F401
import requests  # noqa: F401
from firebase_admin import auth as firebase_auth  # noqa: F401
from google.auth.transport import requests as google_requests
from google.cloud import firestore
from google.oauth2 import id_token

# The card's bench-only libraries (bench/requirements.txt), imported at the top for their cost
# like the rest; by name, as the dev venv that mypy checks with does not have them.
for _library in ("google.cloud.tasks_v2", "google.cloud.logging"):
    importlib.import_module(_library)

SKEW_SECONDS = 5
_lock = threading.Lock()
_db: Any = None
_transport: Any = None


class Refused(Exception):
    pass


def _segment(raw: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    if not isinstance(value, dict):
        raise Refused("malformed")
    return value


def _time(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Refused(f"no {name} claim")
    return float(value)


def _claims_of_unsigned(token: str, project: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused("malformed")
    claims = _segment(parts[1])
    now = time.time()
    if claims.get("aud") != project or claims.get("iss") != (
        f"https://securetoken.google.com/{project}"
    ):
        raise Refused("wrong audience or issuer")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 128:
        raise Refused("no subject")
    exp, iat, auth_time = (_time(claims, k) for k in ("exp", "iat", "auth_time"))
    if exp <= now - SKEW_SECONDS or max(iat, auth_time) > now + SKEW_SECONDS:
        raise Refused("expired or from the future")
    return claims


def _claims_of_signed(token: str, project: str) -> dict[str, Any]:
    global _transport
    if _transport is None:
        _transport = google_requests.Request()
    try:
        claims: dict[str, Any] = id_token.verify_firebase_token(  # type: ignore[no-untyped-call]
            token, _transport, audience=project, clock_skew_in_seconds=SKEW_SECONDS
        )
    except ValueError as exc:
        raise Refused(str(exc)) from None
    return claims


def _firestore() -> Any:
    global _db
    if _db is None:
        with _lock:
            if _db is None:
                _db = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    return _db


@functions_framework.http
def floor(request: Any) -> tuple[dict[str, Any], int]:
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return {"error": "unauthenticated"}, 401
    try:
        if os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"):
            claims = _claims_of_unsigned(token.strip(), project)
        else:
            claims = _claims_of_signed(token.strip(), project)
    except (Refused, ValueError):
        return {"error": "invalid_token"}, 401
    db = _firestore()
    profile = db.collection("users").document(claims["sub"]).get()
    # ?reads=N: N document reads one after another, as a route reading its own documents
    # besides the caller's would (the benches compare such a route with this too).
    extra = min(max(int(request.args.get("reads", "1") or 1), 1), 10) - 1
    for _ in range(extra):
        db.collection("users").document(claims["sub"]).get()
    if request.method == "POST":
        db.collection("benchFloor").document(claims["sub"]).set({"at": time.time()})
    return {"uid": claims["sub"], "profile": profile.exists}, 200
