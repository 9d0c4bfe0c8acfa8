"""A small, stateful simulator of Twilio's Messages API (2010-04-01) for SMS.

    python -m dev.twilio_sim --port 8097

Speaks what Twilio's own OpenAPI file describes (dev/twilio_contract.py checks every request
and every answer against it): create a message (form-encoded, HTTP basic auth with the account
SID and auth token), fetch one, list them (newest first, filtered by To and From). A created
message moves queued -> sent -> delivered (or undelivered), and each move is reported to its
StatusCallback URL as Twilio reports it: a form POST signed with X-Twilio-Signature
(HMAC-SHA1 of the URL and the sorted parameters, keyed with the auth token).

Errors are worded as Twilio words them (`{"code", "message", "more_info", "status"}`); its
OpenAPI file does not describe them. A request that breaks the contract is answered 400 and
recorded, as is an answer of ours that breaks it: `GET /_sim/violations` lists them, so a test
fixture can require none.

Test-only controls under /_sim/:
  GET    /_sim/health
  GET    /_sim/messages             every message created, oldest first
  DELETE /_sim/messages
  POST   /_sim/faults  {"to": "+1...", "status": 429|500|503, "count": n}
                       {"to": ..., "delay": seconds, "count": n}   answer late, after the
                        message was made (a client that times out has sent it all the same)
                       {"to": ..., "outcome": "undelivered", "errorCode": 21610}
                        the carrier's later report (21610: the recipient replied STOP)
  DELETE /_sim/faults
  GET    /_sim/callbacks            status callbacks sent and what they were answered
  GET | DELETE /_sim/violations
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import flask
import requests

from dev import openapi_files, sim_controls
from dev.twilio_contract import Contract, ContractUnavailable
from shared.platform import clock

log = logging.getLogger("alodoktor.twilio_sim")

DEFAULT_ACCOUNT_SID = "AC" + "5a" * 16
DEFAULT_AUTH_TOKEN = "sim-twilio-auth-token-0000000000"
API_VERSION = "2010-04-01"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
SIGNATURE_HEADER = "X-Twilio-Signature"


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """How Twilio signs a request to your URL (its security docs, written out here on its
    own rather than shared with the backend, so a mistake there cannot hide here): the URL,
    then each POST parameter's name and value in name order, HMAC-SHA1 with the auth token,
    base64."""
    payload = url
    for name in sorted(params):
        payload += name + params[name]
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass
class Fault:
    to: str
    count: int = 1
    status: int | None = None
    delay: float = 0.0
    outcome: str | None = None
    error_code: int | None = None


@dataclass
class State:
    account_sid: str
    auth_token: str
    contract: Contract | None
    contract_reason: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    callback_urls: dict[str, str] = field(default_factory=dict)

    def take(self, to: str, *, answer: bool) -> Fault | None:
        """The next fault for `to`: answering ones (status, delay) or carrier outcomes."""
        with self.lock:
            for fault in self.faults:
                if fault.to != to or (fault.outcome is None) != answer:
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None


def rfc2822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC))


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": MORE_INFO.format(code=code),
        "status": status,
    }


def create_app(
    *,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    contract: Contract | None = None,
    validate: bool = True,
    step_seconds: float = 0.2,
) -> flask.Flask:
    contract, reason = openapi_files.contract_or_reason(
        Contract, contract, validate=validate, unavailable=ContractUnavailable
    )
    state = State(account_sid, auth_token, contract, reason)
    app = flask.Flask("twilio_sim")
    app.config["state"] = state

    def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> flask.Response:
        response = flask.Response(json.dumps(body), status=status, mimetype="application/json")
        response.headers.update(headers or {})
        return response

    def record(kind: str, problems: list[str], operation: str | None) -> None:
        request = flask.request
        with state.lock:
            state.violations.append(
                {
                    "kind": kind,
                    "operation": operation,
                    "method": request.method,
                    "path": request.path,
                    "problems": problems,
                }
            )
        log.error("contract violation (%s) %s %s: %s", kind, request.method, request.path, problems)

    @app.before_request
    def check() -> Any:
        request = flask.request
        if request.path.startswith("/_sim/"):
            return None
        found = state.contract.find(request.method, request.path) if state.contract else None
        if state.contract is not None and found is not None:
            op, params = found
            problems = state.contract.check_request(
                op,
                params,
                request.args.to_dict(flat=False),
                request.headers.get("Content-Type", ""),
                request.get_data(),
            )
            if problems:
                record("request", problems, op.operation_id)
                return reply(
                    400, twilio_error(400, 21211 if "To" in problems[0] else 20001, problems[0])
                )
        if not _authorized(request.headers.get("Authorization", "")):
            return reply(401, twilio_error(401, 20003, "Authenticate"))
        return None

    def _authorized(header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == state.account_sid and password == state.auth_token

    @app.after_request
    def check_answer(response: flask.Response) -> flask.Response:
        request = flask.request
        if request.path.startswith("/_sim/") or state.contract is None:
            return response
        found = state.contract.find(request.method, request.path)
        if found is not None:
            problems = state.contract.check_response(
                found[0], response.status_code, response.get_data()
            )
            if problems:
                record("response", problems, found[0].operation_id)
        return response

    def account_ok(account: str) -> flask.Response | None:
        if account != state.account_sid:
            return reply(404, twilio_error(404, 20404, "The requested resource was not found"))
        return None

    def view(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if not k.startswith("_")}

    base_uri = f"/{API_VERSION}/Accounts/{{account}}/Messages"

    @app.post(f"/{API_VERSION}/Accounts/<account>/Messages.json")
    def create(account: str) -> flask.Response:
        if (refused := account_ok(account)) is not None:
            return refused
        form = flask.request.form
        to = form["To"]
        fault = state.take(to, answer=True)
        if fault is not None and fault.status is not None:
            code = {429: 20429, 500: 20500, 503: 20503}.get(fault.status, 20001)
            text = "Too Many Requests" if fault.status == 429 else "Service unavailable"
            return reply(fault.status, twilio_error(fault.status, code, text))
        if not form.get("Body"):
            return reply(400, twilio_error(400, 21602, "Message body is required."))
        now = clock.now()
        sid = "SM" + secrets.token_hex(16)
        message = {
            "account_sid": state.account_sid,
            "api_version": API_VERSION,
            "body": form["Body"],
            "date_created": rfc2822(now),
            "date_sent": None,
            "date_updated": rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(max(1, (len(form["Body"]) + 152) // 153)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{base_uri.format(account=account)}/{sid}/Media.json"},
            "to": to,
            "uri": f"{base_uri.format(account=account)}/{sid}.json",
        }
        with state.lock:
            state.messages[sid] = message
            state.order.append(sid)
        callback = form.get("StatusCallback")
        outcome = state.take(to, answer=False)
        threading.Thread(
            target=progress, args=(sid, callback, outcome, step_seconds), daemon=True
        ).start()
        answer = view(message)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)  # made, then answered too late: the answer is lost
        return reply(201, answer)

    def progress(sid: str, callback: str | None, outcome: Fault | None, step: float) -> None:
        """queued -> sent -> delivered (or the carrier's failure), each reported."""
        finals: list[tuple[str, int | None]] = [("sent", None), ("delivered", None)]
        if outcome is not None:
            finals = [("sent", None), (outcome.outcome or "undelivered", outcome.error_code)]
        for status, error in finals:
            time.sleep(step)
            with state.lock:
                message = state.messages.get(sid)
                if message is None:
                    return
                message["status"] = status
                message["date_updated"] = rfc2822(clock.now())
                if status == "sent":
                    message["date_sent"] = message["date_updated"]
                if error is not None:
                    message["error_code"] = error
                    message["error_message"] = "Attempt to send to unsubscribed recipient"
                snapshot = dict(message)
            if callback:
                report(callback, snapshot)

    def report(url: str, message: dict[str, Any]) -> None:
        params = {
            "AccountSid": state.account_sid,
            "ApiVersion": API_VERSION,
            "From": message["from"] or "",
            "MessageSid": message["sid"],
            "MessageStatus": message["status"],
            "SmsSid": message["sid"],
            "SmsStatus": message["status"],
            "To": message["to"],
        }
        if message.get("error_code") is not None:
            params["ErrorCode"] = str(message["error_code"])
        headers = {SIGNATURE_HEADER: twilio_signature(state.auth_token, url, params)}
        try:
            status = requests.post(url, data=params, headers=headers, timeout=30).status_code
        except requests.RequestException as exc:
            status = 0
            log.warning("status callback to %s: %r", url, exc)
        with state.lock:
            state.callbacks.append(
                {"url": url, "params": params, "status": status, "at": time.time()}
            )

    @app.get(f"/{API_VERSION}/Accounts/<account>/Messages/<sid>.json")
    def fetch(account: str, sid: str) -> flask.Response:
        if (refused := account_ok(account)) is not None:
            return refused
        with state.lock:
            message = state.messages.get(sid)
            found = view(message) if message else None
        if found is None:
            return reply(404, twilio_error(404, 20404, "The requested resource was not found"))
        return reply(200, found)

    @app.get(f"/{API_VERSION}/Accounts/<account>/Messages.json")
    def list_messages(account: str) -> flask.Response:
        if (refused := account_ok(account)) is not None:
            return refused
        args = flask.request.args
        size = min(int(args.get("PageSize", 50)), 1000)
        with state.lock:
            found = [
                view(state.messages[sid])
                for sid in reversed(state.order)
                if (not args.get("To") or state.messages[sid]["to"] == args["To"])
                and (not args.get("From") or state.messages[sid]["from"] == args["From"])
            ][:size]
        uri = f"{base_uri.format(account=account)}.json?PageSize={size}&Page=0"
        return reply(
            200,
            {
                "messages": found,
                "end": max(len(found) - 1, 0),
                "first_page_uri": uri,
                "next_page_uri": None,
                "page": 0,
                "page_size": size,
                "previous_page_uri": None,
                "start": 0,
                "uri": uri,
            },
        )

    # -- controls ----------------------------------------------------------------------

    @app.get("/_sim/health")
    def health() -> flask.Response:
        return reply(
            200,
            {
                "ok": True,
                "contract": state.contract is not None,
                "contractReason": state.contract_reason,
                "accountSid": state.account_sid,
            },
        )

    @app.get("/_sim/messages")
    def all_messages() -> flask.Response:
        with state.lock:
            return reply(200, {"messages": [view(state.messages[s]) for s in state.order]})

    @app.delete("/_sim/messages")
    def clear_messages() -> flask.Response:
        with state.lock:
            state.messages.clear()
            state.order.clear()
            state.callbacks.clear()
        return reply(200, {"ok": True})

    @app.post("/_sim/faults")
    def add_fault() -> flask.Response:
        spec = flask.request.get_json(force=True)
        with state.lock:
            state.faults.append(
                Fault(
                    to=str(spec["to"]),
                    count=int(spec.get("count", 1)),
                    status=spec.get("status"),
                    delay=float(spec.get("delay", 0)),
                    outcome=spec.get("outcome"),
                    error_code=spec.get("errorCode"),
                )
            )
        return reply(200, {"ok": True})

    @app.delete("/_sim/faults")
    def clear_faults() -> flask.Response:
        with state.lock:
            state.faults.clear()
        return reply(200, {"ok": True})

    @app.get("/_sim/callbacks")
    def callbacks() -> flask.Response:
        with state.lock:
            return reply(200, {"callbacks": list(state.callbacks)})

    sim_controls.add_violation_routes(app, state.lock, state.violations)

    return app


def main() -> None:
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description="The local Twilio (SMS) simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="twilio-sim %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(
        account_sid=os.environ.get("TWILIO_ACCOUNT_SID") or DEFAULT_ACCOUNT_SID,
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or DEFAULT_AUTH_TOKEN,
    )
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
