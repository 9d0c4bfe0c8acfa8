"""A local FCM HTTP v1 endpoint: FCM has no emulator, so the stack points the Admin SDK here.

    python -m dev.fcm_sim --port 8098

`POST /v1/projects/{project}/messages:send` answers as FCM does: `{"name": ...}` for a
delivered message, or Google's error shape with the FcmError detail the Admin SDK reads
(UNREGISTERED 404, QUOTA_EXCEEDED 429, INVALID_ARGUMENT 400, UNAVAILABLE 503). Each request is
checked against FCM v1's published message shape (a bearer token; exactly one target; data
values strings and no reserved keys; notification title/body/image only), and a request that
breaks it is answered 400 and recorded for `GET /_sim/violations`.

Test-only controls under /_sim/:
  GET    /_sim/health
  GET    /_sim/messages                 every message accepted, oldest first
  DELETE /_sim/messages
  POST   /_sim/tokens {"token": ..., "error": "UNREGISTERED"|"QUOTA_EXCEEDED"|..., "count": n|null}
                                        how FCM answers for that token (null: until cleared)
  DELETE /_sim/tokens
  GET | DELETE /_sim/violations
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

import flask

from dev import sim_controls

log = logging.getLogger("alodoktor.fcm_sim")

# FCM v1's error codes: HTTP status, canonical status, message.
ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for this device."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "The registration token is not valid."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
}
RESERVED_DATA = re.compile(r"^(from|notification|message_type)$|^(google|gcm)")
TARGETS = ("token", "topic", "condition")
MESSAGE_FIELDS = {
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    *TARGETS,
}


@dataclass
class TokenRule:
    error: str
    count: int | None


@dataclass
class State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list[dict[str, Any]] = field(default_factory=list)
    rules: dict[str, TokenRule] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)

    def rule_for(self, token: str) -> str | None:
        with self.lock:
            rule = self.rules.get(token)
            if rule is None:
                return None
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    del self.rules[token]
            return rule.error


def problems_of(body: Any) -> list[str]:
    """What breaks FCM v1's `messages:send` request shape."""
    if not isinstance(body, dict):
        return ["body: not a JSON object"]
    problems = [f"body.{k}: unknown field" for k in body if k not in ("message", "validate_only")]
    message = body.get("message")
    if not isinstance(message, dict):
        return [*problems, "body.message: required object"]
    problems += [f"message.{k}: unknown field" for k in message if k not in MESSAGE_FIELDS]
    targets = [t for t in TARGETS if t in message]
    if len(targets) != 1:
        problems.append(f"message: exactly one of token, topic, condition (got {targets})")
    token = message.get("token")
    if "token" in message and (not isinstance(token, str) or not token):
        problems.append("message.token: a non-empty string")
    data = message.get("data", {})
    if not isinstance(data, dict):
        problems.append("message.data: a map of strings")
    else:
        for key, value in data.items():
            if not isinstance(value, str):
                problems.append(f"message.data.{key}: values are strings")
            if RESERVED_DATA.match(key):
                problems.append(f"message.data.{key}: a reserved key")
    notification = message.get("notification", {})
    if not isinstance(notification, dict):
        problems.append("message.notification: an object")
    else:
        for key, value in notification.items():
            if key not in ("title", "body", "image"):
                problems.append(f"message.notification.{key}: unknown field")
            elif not isinstance(value, str):
                problems.append(f"message.notification.{key}: a string")
    return problems


def google_error(code: str, detail: str | None = None) -> tuple[int, dict[str, Any]]:
    status, canonical, message = ERRORS[code]
    error: dict[str, Any] = {"code": status, "message": detail or message, "status": canonical}
    if code not in ("UNAVAILABLE", "INTERNAL"):
        error["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        ]
    return status, {"error": error}


def create_app(project_id: str | None = None) -> flask.Flask:
    state = State()
    app = flask.Flask("fcm_sim")
    app.config["state"] = state

    def reply(status: int, body: Any) -> flask.Response:
        return flask.Response(json.dumps(body), status=status, mimetype="application/json")

    @app.post("/v1/projects/<project>/messages:send")
    def send(project: str) -> flask.Response:
        request = flask.request
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return reply(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Missing credentials",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        body = request.get_json(silent=True)
        problems = problems_of(body)
        if project_id and project != project_id:
            problems.append(f"project {project}: not this project ({project_id})")
        if problems:
            with state.lock:
                state.violations.append({"path": request.path, "problems": problems})
            log.error("FCM request breaks the v1 shape: %s", problems)
            status, error = google_error("INVALID_ARGUMENT", "; ".join(problems)[:500])
            return reply(status, error)
        assert isinstance(body, dict)
        message = body["message"]
        rule = state.rule_for(message.get("token", ""))
        if rule is not None:
            status, error = google_error(rule)
            return reply(status, error)
        name = f"projects/{project}/messages/{secrets.token_hex(8)}"
        with state.lock:
            state.messages.append({"name": name, "message": message})
        return reply(200, {"name": name})

    @app.get("/_sim/health")
    def health() -> flask.Response:
        return reply(200, {"ok": True})

    @app.get("/_sim/messages")
    def messages() -> flask.Response:
        with state.lock:
            return reply(200, {"messages": list(state.messages)})

    @app.delete("/_sim/messages")
    def clear_messages() -> flask.Response:
        with state.lock:
            state.messages.clear()
        return reply(200, {"ok": True})

    @app.post("/_sim/tokens")
    def token_rule() -> flask.Response:
        spec = flask.request.get_json(force=True)
        if spec.get("error") not in ERRORS:
            return reply(400, {"error": f"error is one of {sorted(ERRORS)}"})
        with state.lock:
            state.rules[str(spec["token"])] = TokenRule(spec["error"], spec.get("count"))
        return reply(200, {"ok": True})

    @app.delete("/_sim/tokens")
    def clear_rules() -> flask.Response:
        with state.lock:
            state.rules.clear()
        return reply(200, {"ok": True})

    sim_controls.add_violation_routes(app, state.lock, state.violations)

    return app


def main() -> None:
    import os

    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description="The local FCM HTTP v1 endpoint.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="fcm-sim %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    run_simple(
        args.host, args.port, create_app(os.environ.get("GOOGLE_CLOUD_PROJECT")), threaded=True
    )


if __name__ == "__main__":
    main()
