"""The request pipeline of shared/web/http.py, in-process, with a throwaway function.

Requests are built with Flask's test request context and handed to `Function.handle`, as
functions-framework would; no emulator is involved.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
import pytest
from google.api_core import exceptions as google_exceptions
from pydantic import Field

from shared.identity import auth
from shared.platform import logs, models, settings
from shared.platform.context import Principal, Role
from shared.web import policy
from shared.web.http import Call, Function

PROJECT = "alodoktor-pipeline-test"
NAME = "pipeline-test"
SECRET = "db password is hunter2"  # in an exception message; must never reach a client
TRACE_ID = "105445aa7843bc8bf206b12000100000"

THINGS = {"mine": {"patientId": "alice"}, "theirs": {"patientId": "bob"}}


class Greeting(models.Body):
    name: str = Field(max_length=10)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Function]:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(
        policy,
        "POLICY",
        {
            **policy.POLICY,
            (NAME, "GET", "/openapi.json"): policy.PUBLIC,
            (NAME, "GET", "/ok"): policy.PUBLIC,
            (NAME, "DELETE", "/ok"): policy.PUBLIC,
            (NAME, "GET", "/boom"): policy.PUBLIC,
            (NAME, "GET", "/down"): policy.PUBLIC,
            (NAME, "POST", "/greet"): policy.PUBLIC,
            (NAME, "GET", "/me"): policy.signed_in(),
            (NAME, "GET", "/things/<id>"): policy.allow(
                Role.PATIENT, owner=policy.Owner(("patientId",))
            ),
        },
    )
    settings.get.cache_clear()
    fn = Function(NAME, title="Pipeline test")

    @fn.route("GET", "/ok")
    def ok(call: Call) -> Any:
        return {"ok": True}

    @fn.route("DELETE", "/ok")
    def gone(call: Call) -> Any:
        return None

    @fn.route("GET", "/boom")
    def boom(call: Call) -> Any:
        raise RuntimeError(SECRET)

    @fn.route("GET", "/down")
    def down(call: Call) -> Any:
        raise DOWN[0]("firestore is down")

    @fn.route("POST", "/greet", body=Greeting)
    def greet(call: Call) -> Any:
        return {"hello": call.body.name}

    @fn.route("GET", "/me")
    def me(call: Call) -> Any:
        return {"uid": call.principal.uid}

    @fn.route("GET", "/things/<id>")
    def thing(call: Call) -> Any:
        return call.authorize(THINGS.get(call.params["id"]))

    yield fn
    settings.get.cache_clear()


def send(api: Function, path: str, method: str = "GET", **kw: Any) -> flask.Response:
    with flask.Flask(__name__).test_request_context(path, method=method, **kw):
        return api.handle(flask.request)


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def problem(response: flask.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = json.loads(response.get_data())
    assert body["status"] == status
    assert body["code"] == code
    assert body["requestId"] == response.headers["X-Request-Id"]
    return body


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """The JSON lines the stdout handler of shared.platform.logs writes, parsed one by one."""
    logs.setup()
    stream = io.StringIO()
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler)
        and isinstance(h.formatter, logs.CloudLoggingFormatter)
    ]
    assert handlers, "shared.platform.logs.setup() installed no JSON handler"
    for handler in handlers:
        monkeypatch.setattr(handler, "stream", stream)
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_route_without_a_policy_entry_cannot_be_registered(api):
    with pytest.raises(policy.PolicyMissing):
        api.route("GET", "/not-in-the-policy")
    with pytest.raises(policy.PolicyMissing):
        Function("no-policy-at-all", title="t")  # even its /openapi.json needs an entry


def test_an_unexpected_error_is_a_bare_500_and_one_error_report(api, log_lines):
    response = send(api, "/boom")

    body = problem(response, 500, "internal")
    text = response.get_data(as_text=True)
    assert SECRET not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    request_id = response.headers["X-Request-Id"]
    [error] = [line for line in log_lines() if line["severity"] == "ERROR"]
    assert error["requestId"] == request_id == body["requestId"]
    assert error["@type"] == logs.ERROR_EVENT_TYPE
    assert "Traceback (most recent call last)" in error["message"]
    assert f"RuntimeError: {SECRET}" in error["message"]
    assert error["serviceContext"] == {"service": NAME}


# What the /down route raises (a test may set another).
DOWN: list[type[Exception]] = [google_exceptions.ServiceUnavailable]


@pytest.mark.parametrize(
    "failure",
    [
        google_exceptions.ServiceUnavailable,
        google_exceptions.DeadlineExceeded,
        google_exceptions.Unknown,  # a dropped stream, an overloaded emulator or backend
        google_exceptions.Aborted,  # contention that outlasted the client's retries
        google_exceptions.ResourceExhausted,
    ],
)
def test_a_failing_dependency_answers_503(api, log_lines, monkeypatch, failure):
    monkeypatch.setattr(sys.modules[__name__], "DOWN", [failure])
    response = send(api, "/down")

    problem(response, 503, "dependency_unavailable")
    assert "firestore is down" not in response.get_data(as_text=True)
    assert not [line for line in log_lines() if line["severity"] == "ERROR"]


def test_an_unreachable_token_key_server_answers_503_not_401(api, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/certs"
    monkeypatch.setenv("ID_TOKEN_CERTS_URL", closed)
    settings.get.cache_clear()
    token = f"{_b64({'alg': 'RS256', 'kid': 'k', 'typ': 'JWT'})}.{_b64({'sub': 'u'})}.c2ln"

    response = send(api, "/me", headers={"Authorization": f"Bearer {token}"})

    problem(response, 503, "dependency_unavailable")


def test_the_access_log_carries_the_cloud_trace(api, log_lines):
    response = send(api, "/ok", headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/1234;o=1"})

    assert response.status_code == 200
    [access] = [line for line in log_lines() if "httpRequest" in line]
    assert access["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert access["logging.googleapis.com/spanId"] == "1234"
    assert access["requestId"] == response.headers["X-Request-Id"]
    assert access["httpRequest"]["status"] == 200


def test_an_over_long_field_answers_400_naming_the_field(api):
    assert send(api, "/greet", "POST", json={"name": "Ada"}).get_json() == {"hello": "Ada"}

    body = problem(send(api, "/greet", "POST", json={"name": "x" * 11}), 400, "validation_failed")

    assert [e["field"] for e in body["errors"]] == ["name"]


def test_someone_elses_resource_answers_404_like_a_missing_one(api, monkeypatch):
    # Targets the policy step, not authentication: any bearer token is taken to be alice.
    alice = Principal(
        uid="alice",
        email="alice@test.alodoktor.test",
        role=Role.PATIENT,
        approved=True,
        session_id=None,
        auth_time=int(time.time()),
    )
    monkeypatch.setattr(auth, "authenticate", lambda creds, function: alice)
    bearer = {"Authorization": "Bearer anything"}

    assert send(api, "/things/mine", headers=bearer).get_json() == THINGS["mine"]
    theirs = problem(send(api, "/things/theirs", headers=bearer), 404, "not_found")
    missing = problem(send(api, "/things/nothing", headers=bearer), 404, "not_found")

    drop = ("instance", "requestId")
    assert {k: v for k, v in theirs.items() if k not in drop} == {
        k: v for k, v in missing.items() if k not in drop
    }


def test_every_answer_carries_the_security_headers_and_an_empty_one_no_type(api):
    """Called at the function's own URL, not through the hosting origin that adds them to the
    front end's files: JSON, problems and empty answers alike."""
    for response in (send(api, "/ok"), send(api, "/nowhere"), send(api, "/ok", "DELETE")):
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer"
    empty = send(api, "/ok", "DELETE")
    assert empty.status_code == 204
    assert "Content-Type" not in empty.headers
    assert send(api, "/nowhere").mimetype == "application/problem+json"
