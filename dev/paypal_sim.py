"""A small, stateful PayPal simulator for the local stack and the tests.

Speaks PayPal's REST shapes: OAuth2 client-credentials tokens, Orders v2 create/get/capture,
captures get/refund, refunds get, verify-webhook-signature, and outgoing webhooks signed the way
PayPal signs them (SHA256withRSA over `transmission_id|time|webhook_id|crc32(body)`, with the
certificate served at PAYPAL-CERT-URL). It honours `PayPal-Request-Id` (same id and body replay
the first answer) and the sandbox's negative-testing header `PayPal-Mock-Response`.

What PayPal does with an id reused after a 4xx is not documented: its idempotency guide says
calls may be retried with the same id after "network timeouts or HTTP 5xx status codes" and
that a reused id "returns the latest status of the previous request". The simulator takes the
strict reading: a 2xx or 4xx answer (but a 400, which PayPal never stores as work done, and a
401, refused before PayPal knew whose request it was) is replayed for the same id and body, so
a client that reuses an id after a refusal is caught here rather than in production. 5xx
answers are not stored: a retry is processed anew.

Every request and response of a documented operation is checked against PayPal's OpenAPI files
(dev/paypal_contract.py). A request that breaks the contract is answered 400 INVALID_REQUEST and
recorded, as is a response of ours that breaks it; `GET /_sim/violations` lists them so a test
fixture can fail on any.

A buyer approves (or cancels) in the window at an order's `approve` link: the page shows the
amount with Approve and Cancel buttons (a form post), then sends the buyer to the order's
`experience_context.return_url` (with `token` and `PayerID`) or `cancel_url` (with `token`).
It asks a CREATED order's buyer, and the buyer of an APPROVED order whose capture was declined
(INSTRUMENT_DECLINED): PayPal's documented recovery redirects that buyer to the approve link to
choose another funding source, and the capture after they approve again goes through.

Test-only controls live under `/_sim/`: faults (delay or fail the next N responses), webhooks
(send one now, list those sent), violations, and the request log.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import flask
import requests
from werkzeug.wrappers import Response as WerkzeugResponse

from dev import openapi_files, sim_controls
from dev.paypal_contract import Contract, ContractUnavailable, Operation, issue_descriptions
from shared.platform import clock

log = logging.getLogger("alodoktor.paypal_sim")

DEFAULT_CLIENT_ID = "sim-client-id"
DEFAULT_CLIENT_SECRET = "sim-client-secret"
DEFAULT_WEBHOOK_ID = "SIMWEBHOOK0000000001"
SIM_PAYER_ID = "DEMBUYER23456"  # the one buyer who approves in the simulator's window
TOKEN_SECONDS = 32400  # what the sandbox hands out
AUTH_ALGO = "SHA256withRSA"
DOCS = "https://developer.paypal.com/docs/api"

GENERIC_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
    ),
    401: (
        "AUTHENTICATION_FAILURE",
        "Authentication failed due to missing authorization header, or invalid authentication "
        "credentials.",
    ),
    403: ("NOT_AUTHORIZED", "Authorization failed due to insufficient permissions."),
    404: ("RESOURCE_NOT_FOUND", "The specified resource does not exist."),
    409: ("RESOURCE_CONFLICT", "The server has detected a conflict while processing this request."),
    415: (
        "UNSUPPORTED_MEDIA_TYPE",
        "The server does not support the request payload's media type.",
    ),
    422: (
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed business "
        "validation.",
    ),
    # Not in the OpenAPI files: PayPal's rate-limiting guide documents "429 Unprocessable
    # Entity - RATE_LIMIT_REACHED" (developer.paypal.com/api/rest/reference/rate-limiting).
    429: ("RATE_LIMIT_REACHED", "Too many requests. Blocked due to rate limiting."),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error occurred."),
    503: ("SERVICE_UNAVAILABLE", "Service Unavailable."),
}
# Negative-testing codes answered with a status's generic error (no details), as PayPal answers
# them: its own two, and a rate limit (which the sandbox has no code for).
GENERIC_MOCKS: dict[str, int] = {
    "INTERNAL_SERVER_ERROR": 500,
    "SERVICE_UNAVAILABLE": 503,
    "RATE_LIMIT_REACHED": 429,
}
# Answers PayPal documents outside its OpenAPI files, so not held to them.
UNDOCUMENTED_STATUSES = frozenset({429})


def now_iso() -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def paypal_id(length: int = 17) -> str:
    alphabet = "ABCDEFGHJKLMNPRSTUVWXY0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def canonical(obj: Any) -> bytes:
    """The one serialization of a webhook event, so its CRC survives a parse and re-dump."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


class Answer(Exception):
    """Stop handling and answer this (an error in PayPal's shape, usually)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def error_body(
    status: int, issue: str | None = None, description: str | None = None, **detail: str
) -> dict[str, Any]:
    name, message = GENERIC_ERRORS.get(status, GENERIC_ERRORS[500])
    body: dict[str, Any] = {"name": name, "message": message, "debug_id": secrets.token_hex(7)}
    if issue:
        item = {"issue": issue, **detail}
        if description:
            item["description"] = description
        body["details"] = [item]
        body["links"] = [
            {"href": f"{DOCS}/orders/v2/#error-{issue}", "rel": "information_link", "method": "GET"}
        ]
    return body


@dataclass
class Fault:
    delay: float = 0.0
    status: int | None = None
    count: int = 1
    path_contains: str = ""
    # Only requests whose body contains this (a payout's sender_batch_id): a fault meant for
    # one payout is not taken by another caller's request to the same path.
    body_contains: str = ""
    # A negative-testing code (as PayPal-Mock-Response would ask) answered before any work:
    # for a caller that cannot send the header itself, such as a function under test.
    mock: str = ""


@dataclass
class Signer:
    """An RSA key and self-signed certificate, as PayPal signs webhooks."""

    key: Any
    cert_pem: bytes

    @classmethod
    def create(cls) -> Signer:
        from dev.keys import self_signed

        pair = self_signed("messageverificationcerts")
        return cls(pair.key, pair.cert_pem)

    def sign(self, message: bytes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return base64.b64encode(
            self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        ).decode()

    def verify(self, message: bytes, signature: str) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            raw = base64.b64decode(signature, validate=True)
            self.key.public_key().verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True


def signed_message(transmission_id: str, time_: str, webhook_id: str, body: bytes) -> bytes:
    return f"{transmission_id}|{time_}|{webhook_id}|{zlib.crc32(body)}".encode()


@dataclass
class State:
    client_id: str
    client_secret: str
    webhook_id: str
    webhook_url: str | None
    contract: Contract | None
    contract_reason: str
    signer: Signer = field(default_factory=Signer.create)
    lock: threading.RLock = field(default_factory=threading.RLock)
    tokens: dict[str, float] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    capture_order: dict[str, str] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str, str], tuple[str, int, bytes]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    requests_seen: list[dict[str, Any]] = field(default_factory=list)
    webhooks_sent: list[dict[str, Any]] = field(default_factory=list)
    # While held, outgoing webhooks wait (as when PayPal is slow to notify) until released.
    webhooks_held: bool = False
    # Captures left PENDING (as an eCheck is) until a COMPLETED or DENIED webhook settles them.
    pending_captures: int = 0
    # Refunds left PENDING (an eCheck's: `status_details.reason` ECHECK) until a control
    # completes or fails them.
    pending_refunds: int = 0
    webhooks_waiting: list[dict[str, Any]] = field(default_factory=list)


def create_app(
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    webhook_id: str = DEFAULT_WEBHOOK_ID,
    webhook_url: str | None = None,
    contract: Contract | None = None,
    validate: bool = True,
    payouts_webhook_id: str | None = None,
    payouts_webhook_url: str | None = None,
) -> flask.Flask:
    contract, reason = openapi_files.contract_or_reason(
        Contract, contract, validate=validate, unavailable=ContractUnavailable
    )
    state = State(client_id, client_secret, webhook_id, webhook_url, contract, reason)
    app = flask.Flask("paypal_sim")
    app.config["state"] = state

    def base() -> str:
        return flask.request.host_url.rstrip("/")

    def fail(status: int, issue: str, **detail: str) -> Answer:
        """PayPal's error for `issue`, worded as PayPal's contract words it for this operation
        (its schemas enumerate the descriptions); an issue the operation does not list goes
        without details rather than break the contract."""
        found = documented()
        issues = issue_descriptions(state.contract, found[0]) if state.contract and found else {}
        if state.contract is not None and found is not None and issue not in issues:
            return Answer(status, error_body(status))
        description = issues[issue][1] if issue in issues else _ISSUE_TEXT.get(issue)
        return Answer(status, error_body(status, issue, description, **detail))

    def link(href: str, rel: str, method: str = "GET") -> dict[str, str]:
        return {"href": href, "rel": rel, "method": method}

    # -- the pipeline: auth, contract, idempotency, negative testing, faults ---------------

    def documented() -> tuple[Operation, dict[str, str]] | None:
        if state.contract is None:
            return None
        return state.contract.find(flask.request.method, flask.request.path)

    def record(kind: str, problems: list[str], op: Operation | None) -> None:
        with state.lock:
            state.violations.append(
                {
                    "kind": kind,
                    "operation": op.operation_id if op else None,
                    "method": flask.request.method,
                    "path": flask.request.path,
                    "problems": problems,
                }
            )
        log.error(
            "contract violation (%s) %s %s: %s",
            kind,
            flask.request.method,
            flask.request.path,
            "; ".join(problems),
        )

    @app.before_request
    def before() -> Any:
        request = flask.request
        if request.path.startswith("/_sim/") or request.path.startswith("/checkoutnow"):
            return None
        with state.lock:
            state.requests_seen.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "requestId": request.headers.get("PayPal-Request-Id"),
                }
            )
        if request.path.startswith("/v1/notifications/certs/"):
            return None
        found = documented()
        if found is not None:
            op, params = found
            assert state.contract is not None
            problems = state.contract.check_request(
                op, params, dict(request.headers), request.args.to_dict(), request.get_data()
            )
            if problems:
                record("request", problems, op)
                where = problems[0].split(":")[0]
                issue = (
                    "MISSING_REQUIRED_PARAMETER"
                    if "required" in problems[0]
                    else ("INVALID_PARAMETER_SYNTAX")
                )
                answer = fail(400, issue, field=where, value=problems[0][:300])
                return _json(answer.status, answer.body)
        if request.path != "/v1/oauth2/token":
            header = request.headers.get("Authorization", "")
            token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
            with state.lock:
                expires = state.tokens.get(token)
            if expires is None or expires < time.time():
                return _json(401, error_body(401))
        mock = request.headers.get("PayPal-Mock-Response")
        queued = take_fault(request.path, mock=True)
        if not mock and queued is not None:
            mock = json.dumps({"mock_application_codes": queued.mock})
        if mock:
            flask.g.mocked = True  # a negative test's answer is not remembered for replays
            return negative_test(mock, found[0] if found else None)
        key = request.headers.get("PayPal-Request-Id")
        if key and request.method == "POST":
            digest = hashlib.sha256(request.get_data()).hexdigest()
            with state.lock:
                stored = state.idempotency.get((key, request.method, request.path))
            if stored is not None:
                if stored[0] != digest:
                    answer = fail(422, "DUPLICATE_REQUEST_ID")
                    return _json(answer.status, answer.body)
                flask.g.replayed = True
                return flask.Response(stored[2], status=stored[1], mimetype="application/json")
        return None

    def negative_test(raw: str, op: Operation | None) -> flask.Response:
        try:
            code = str(json.loads(raw)["mock_application_codes"])
        except (ValueError, KeyError, TypeError):
            answer = fail(400, "INVALID_PARAMETER_VALUE", field="PayPal-Mock-Response")
            return _json(answer.status, answer.body)
        if code in GENERIC_MOCKS:
            status = GENERIC_MOCKS[code]
            return _json(status, error_body(status))
        issues = issue_descriptions(state.contract, op) if state.contract and op else {}
        if code in issues:
            status, description = issues[code]
        elif code in _KNOWN_ISSUES:
            status, description = _KNOWN_ISSUES[code]
        else:
            answer = fail(400, "INVALID_PARAMETER_VALUE", field="PayPal-Mock-Response", value=code)
            return _json(answer.status, answer.body)
        if code == "INSTRUMENT_DECLINED":
            declined(flask.request.path)
        return _json(status, error_body(status, code, description))

    def declined(path: str) -> None:
        """A capture declined the approved order's funding source: its approve link asks the
        buyer again (to choose another), as PayPal's recovery for INSTRUMENT_DECLINED has it."""
        parts = path.strip("/").split("/")
        if len(parts) != 5 or parts[:3] != ["v2", "checkout", "orders"] or parts[4] != "capture":
            return
        with state.lock:
            order = state.orders.get(parts[3])
            if order is not None and order["status"] == "APPROVED":
                order["_declined"] = True

    @app.after_request
    def after(response: flask.Response) -> flask.Response:
        request = flask.request
        if request.path.startswith("/_sim/"):
            return response
        found = documented()
        if (
            found is not None
            and response.mimetype == "application/json"
            and response.status_code not in UNDOCUMENTED_STATUSES
        ):
            assert state.contract is not None
            problems = state.contract.check_response(
                found[0], response.status_code, response.get_data()
            )
            if problems:
                record("response", problems, found[0])
        key = request.headers.get("PayPal-Request-Id")
        if (
            key
            and request.method == "POST"
            and not getattr(flask.g, "replayed", False)
            and not getattr(flask.g, "mocked", False)
            and response.status_code < 500
            # 401: refused before any work, for an unknown caller; the retry with a renewed
            # token is processed, not answered 401 again
            and response.status_code not in (400, 401)
        ):
            digest = hashlib.sha256(request.get_data()).hexdigest()
            with state.lock:
                state.idempotency[(key, request.method, request.path)] = (
                    digest,
                    replay_status(found[0] if found else None, response.status_code),
                    response.get_data(),
                )
        fault = take_fault(request.path)
        if fault is not None:
            # The work above is done and remembered, as when PayPal's answer is lost on the way.
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status:
                return _json(fault.status, error_body(fault.status))
        return response

    def replay_status(op: Operation | None, status: int) -> int:
        # Orders answer a replayed create or capture 200 (documented); refunds document only 201.
        if status != 201 or state.contract is None or op is None:
            return status
        return 200 if state.contract.documents_status(op, 200) else status

    def take_fault(path: str, *, mock: bool = False) -> Fault | None:
        with state.lock:
            for fault in state.faults:
                if (
                    fault.path_contains in path
                    and fault.count > 0
                    and bool(fault.mock) == mock
                    and fault.body_contains in flask.request.get_data(as_text=True)
                ):
                    fault.count -= 1
                    if fault.count == 0:
                        state.faults.remove(fault)
                    return fault
        return None

    # -- OAuth2 ---------------------------------------------------------------------------

    @app.post("/v1/oauth2/token")
    def token() -> flask.Response:
        auth = flask.request.authorization
        if auth is None or (auth.username, auth.password) != (state.client_id, state.client_secret):
            return _json(
                401,
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
            )
        if flask.request.form.get("grant_type") != "client_credentials":
            return _json(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Grant Type is NULL or not supported",
                },
            )
        access = "A21AA" + secrets.token_urlsafe(48)
        with state.lock:
            state.tokens[access] = time.time() + TOKEN_SECONDS
        return _json(
            200,
            {
                "scope": "https://uri.paypal.com/services/payments/payment "
                "https://uri.paypal.com/services/payments/refund",
                "access_token": access,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": TOKEN_SECONDS,
                "nonce": f"{now_iso()}{secrets.token_hex(8)}",
            },
        )

    # -- Orders v2 --------------------------------------------------------------------------

    def order_links(order_id: str) -> list[dict[str, str]]:
        href = f"{base()}/v2/checkout/orders/{order_id}"
        return [
            link(href, "self"),
            link(f"{base()}/checkoutnow?token={order_id}", "approve"),
            link(href, "update", "PATCH"),
            link(f"{href}/capture", "capture", "POST"),
        ]

    def representation(order: dict[str, Any]) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(
            json.dumps({k: v for k, v in order.items() if not k.startswith("_")})
        )
        if shown["status"] == "COMPLETED":
            shown["links"] = [link(f"{base()}/v2/checkout/orders/{order['id']}", "self")]
        else:
            shown["links"] = order_links(order["id"])
        return shown

    def minimal(order: dict[str, Any]) -> dict[str, Any]:
        full = representation(order)
        return {"id": full["id"], "status": full["status"], "links": full["links"]}

    def wants_full() -> bool:
        return "return=representation" in flask.request.headers.get("Prefer", "")

    @app.post("/v2/checkout/orders")
    def create_order() -> flask.Response:
        body = flask.request.get_json(force=True)
        if body.get("intent") != "CAPTURE":
            raise fail(422, "UNSUPPORTED_INTENT")
        order_id = paypal_id()
        units = []
        for i, unit in enumerate(body["purchase_units"]):
            shown = {
                k: v
                for k, v in unit.items()
                if k in ("reference_id", "amount", "custom_id", "invoice_id", "description")
            }
            shown.setdefault("reference_id", "default" if i == 0 else f"unit-{i}")
            shown["payee"] = {
                "email_address": "merchant@alodoktor.test",
                "merchant_id": "DEMMERCHANT23",
            }
            units.append(shown)
        order = {
            "id": order_id,
            "intent": "CAPTURE",
            "status": "CREATED",
            "purchase_units": units,
            "create_time": now_iso(),
        }
        # Where the approval page sends the buyer back (kept, as PayPal keeps it, not shown).
        context = body.get("payment_source", {}).get("paypal", {}).get("experience_context", {})
        for key in ("return_url", "cancel_url"):
            if context.get(key):
                order[f"_{key}"] = context[key]
        with state.lock:
            state.orders[order_id] = order
        return _json(201, representation(order) if wants_full() else minimal(order))

    def load_order(order_id: str) -> dict[str, Any]:
        with state.lock:
            order = state.orders.get(order_id)
        if order is None:
            raise fail(404, "INVALID_RESOURCE_ID")
        return order

    @app.get("/v2/checkout/orders/<order_id>")
    def get_order(order_id: str) -> flask.Response:
        return _json(200, representation(load_order(order_id)))

    def asks_buyer(order: dict[str, Any]) -> bool:
        """Whether the approve link asks the buyer: an order not approved yet, or an approved
        one whose capture declined the funding source the buyer chose."""
        return order["status"] == "CREATED" or (
            order["status"] == "APPROVED" and bool(order.get("_declined"))
        )

    @app.get("/checkoutnow")
    def checkout() -> flask.Response:
        """PayPal's window: what the buyer is asked to pay, with Approve and Cancel. Seeing it
        changes nothing; only the buyer's choice (a form post) does."""
        order_id = flask.request.args.get("token", "")
        with state.lock:
            order = state.orders.get(order_id)
            if order is None:
                return _page(404, "No such order", "<p>This payment does not exist.</p>")
            status = order["status"]
            unit = order["purchase_units"][0]
            asking = asks_buyer(order)
            again = bool(order.get("_declined"))
        if not asking:
            return _page(200, "PayPal", f"<p>Order {_esc(order_id)}: {_esc(status)}.</p>")
        amount = f"{unit['amount']['value']} {unit['amount']['currency_code']}"
        what = unit.get("description") or "your purchase"
        form = (
            ("<p>Your payment method was declined: choose another way to pay.</p>" if again else "")
            + f"<p>Pay <strong>{_esc(amount)}</strong> to Alo Doktor for {_esc(what)}.</p>"
            f'<form method="post" action="/checkoutnow?token={_esc(order_id)}">'
            '<button name="action" value="approve">Approve</button> '
            '<button name="action" value="cancel">Cancel</button></form>'
        )
        return _page(200, "PayPal: approve your payment", form)

    @app.post("/checkoutnow")
    def consent() -> WerkzeugResponse:
        """The buyer approved or cancelled: back to the merchant's return or cancel URL, with
        `token` (the order) and, on approval, `PayerID` added as PayPal adds them; an order
        made without them ends here, on a page saying what happened."""
        order_id = flask.request.args.get("token", "")
        action = flask.request.form.get("action", "")
        if action not in ("approve", "cancel"):
            return _page(400, "PayPal", "<p>Choose Approve or Cancel.</p>")
        with state.lock:
            order = state.orders.get(order_id)
            if order is None:
                return _page(404, "No such order", "<p>This payment does not exist.</p>")
            if action == "approve" and order["status"] == "CREATED":
                order["status"] = "APPROVED"
                order["payer"] = {
                    "name": {"given_name": "Sim", "surname": "Buyer"},
                    "email_address": "buyer@alodoktor.test",
                    "payer_id": SIM_PAYER_ID,
                }
            elif action == "approve" and asks_buyer(order):
                order.pop("_declined")  # another funding source chosen: captures may go on
            status = order["status"]
            back = order.get("_return_url" if action == "approve" else "_cancel_url")
        if back:
            added = {"token": order_id}
            if action == "approve":
                added["PayerID"] = SIM_PAYER_ID
            return flask.redirect(_with_query(back, added), code=303)
        said = status if action == "approve" else "cancelled by the buyer, nothing was charged"
        return _page(200, "PayPal", f"<p>Order {_esc(order_id)}: {_esc(said)}.</p>")

    @app.post("/v2/checkout/orders/<order_id>/capture")
    def capture(order_id: str) -> flask.Response:
        with state.lock:
            order = load_order(order_id)
            if order["status"] == "COMPLETED":
                raise fail(422, "ORDER_ALREADY_CAPTURED")
            if order["status"] != "APPROVED":
                raise fail(422, "ORDER_NOT_APPROVED")
            order["status"] = "COMPLETED"
            captures: list[dict[str, Any]] = []
            pending = state.pending_captures > 0
            state.pending_captures = max(state.pending_captures - 1, 0)
            for unit in order["purchase_units"]:
                capture_id = paypal_id()
                fee = (
                    (Decimal(unit["amount"]["value"]) * Decimal("0.0349")).quantize(Decimal("0.01"))
                    if "." in unit["amount"]["value"]
                    else Decimal(0)
                )
                cap: dict[str, Any] = {
                    "id": capture_id,
                    "status": "COMPLETED",
                    "amount": dict(unit["amount"]),
                    "final_capture": True,
                    "seller_protection": {"status": "NOT_ELIGIBLE"},
                    "seller_receivable_breakdown": {
                        "gross_amount": dict(unit["amount"]),
                        "paypal_fee": {
                            "currency_code": unit["amount"]["currency_code"],
                            "value": str(fee),
                        },
                    },
                    "create_time": now_iso(),
                    "update_time": now_iso(),
                }
                for k in ("custom_id", "invoice_id"):
                    if k in unit:
                        cap[k] = unit[k]
                if pending:
                    cap["status"] = "PENDING"
                    cap["status_details"] = {"reason": "ECHECK"}
                state.captures[capture_id] = cap
                state.capture_order[capture_id] = order_id
                unit["payments"] = {"captures": [cap]}
                captures.append(cap)
        for cap in captures:
            event = "PAYMENT.CAPTURE.PENDING" if pending else "PAYMENT.CAPTURE.COMPLETED"
            deliver_later(event, capture_view(cap["id"]))
        return _json(201, representation(order))

    # -- Payments v2 ------------------------------------------------------------------------

    def capture_view(capture_id: str) -> dict[str, Any]:
        with state.lock:
            cap = state.captures.get(capture_id)
            if cap is None:
                raise fail(404, "INVALID_RESOURCE_ID")
            shown: dict[str, Any] = json.loads(json.dumps(cap))
            order_id = state.capture_order[capture_id]
        href = f"{base()}/v2/payments/captures/{capture_id}"
        shown["supplementary_data"] = {"related_ids": {"order_id": order_id}}
        shown["links"] = [
            link(href, "self"),
            link(f"{href}/refund", "refund", "POST"),
            link(f"{base()}/v2/checkout/orders/{order_id}", "up"),
        ]
        return shown

    @app.get("/v2/payments/captures/<capture_id>")
    def get_capture(capture_id: str) -> flask.Response:
        return _json(200, capture_view(capture_id))

    @app.post("/v2/payments/captures/<capture_id>/refund")
    def refund(capture_id: str) -> flask.Response:
        raw = flask.request.get_data()
        body = json.loads(raw) if raw.strip() else {}
        with state.lock:
            cap = state.captures.get(capture_id)
            if cap is None:
                raise fail(404, "INVALID_RESOURCE_ID")
            if cap["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
                issue = (
                    "CAPTURE_FULLY_REFUNDED"
                    if cap["status"] == "REFUNDED"
                    else "REFUND_NOT_ALLOWED"
                )
                raise fail(422, issue)
            currency = cap["amount"]["currency_code"]
            captured = Decimal(cap["amount"]["value"])
            refunded = sum(
                (Decimal(state.refunds[r]["amount"]["value"]) for r in cap.get("_refunds", [])),
                Decimal(0),
            )
            remaining = captured - refunded
            amount = body.get("amount")
            if amount is None:
                value = remaining
            else:
                if amount["currency_code"] != currency:
                    raise fail(422, "REFUND_CAPTURE_CURRENCY_MISMATCH")
                value = Decimal(amount["value"])
                if value <= 0:
                    raise fail(422, "CANNOT_BE_ZERO_OR_NEGATIVE")
                if value > remaining:
                    raise fail(422, "REFUND_AMOUNT_EXCEEDED")
            places = len(cap["amount"]["value"].partition(".")[2])
            refund_id = paypal_id()
            pending = state.pending_refunds > 0
            state.pending_refunds = max(state.pending_refunds - 1, 0)
            item: dict[str, Any] = {
                "id": refund_id,
                "status": "PENDING" if pending else "COMPLETED",
                "amount": {"currency_code": currency, "value": f"{value:.{places}f}"},
                "create_time": now_iso(),
                "update_time": now_iso(),
            }
            if pending:
                item["status_details"] = {"reason": "ECHECK"}
            for k in ("invoice_id", "custom_id", "note_to_payer"):
                if k in body:
                    item[k] = body[k]
            state.refunds[refund_id] = {**item, "_capture": capture_id}
            cap.setdefault("_refunds", []).append(refund_id)
            cap["status"] = "REFUNDED" if value == remaining else "PARTIALLY_REFUNDED"
            cap["update_time"] = now_iso()
        shown = refund_view(refund_id)
        if not pending:  # a pending refund's news comes when it completes
            deliver_later("PAYMENT.CAPTURE.REFUNDED", shown)
        return _json(201, shown)

    @app.post("/_sim/refunds/pending")
    def pend_refunds() -> flask.Response:
        """Leave the next `count` refunds PENDING, as PayPal does for an eCheck's."""
        count = int(flask.request.get_json(force=True).get("count", 1))
        with state.lock:
            state.pending_refunds = count
        return _json(200, {"pending": count})

    @app.post("/_sim/refunds/<refund_id>")
    def settle_refund(refund_id: str) -> flask.Response:
        """PayPal finishes a PENDING refund: COMPLETED (its PAYMENT.CAPTURE.REFUNDED webhook is
        sent) or FAILED (the capture has that amount again)."""
        status = str(flask.request.get_json(force=True).get("status", ""))
        if status not in ("COMPLETED", "FAILED"):
            return _json(400, {"error": "status must be COMPLETED or FAILED"})
        with state.lock:
            stored = state.refunds.get(refund_id)
            if stored is None or stored["status"] != "PENDING":
                return _json(409, {"error": "no such pending refund"})
            stored["status"] = status
            stored["update_time"] = now_iso()
            if status == "COMPLETED":
                stored.pop("status_details", None)
            else:
                cap = state.captures[stored["_capture"]]
                cap["_refunds"].remove(refund_id)
                cap["status"] = "PARTIALLY_REFUNDED" if cap["_refunds"] else "COMPLETED"
                cap["update_time"] = now_iso()
        shown = refund_view(refund_id)
        if status == "COMPLETED":
            deliver_later("PAYMENT.CAPTURE.REFUNDED", shown)
        return _json(200, shown)

    def refund_view(refund_id: str) -> dict[str, Any]:
        with state.lock:
            stored = state.refunds.get(refund_id)
            if stored is None:
                raise fail(404, "INVALID_RESOURCE_ID")
            shown = {k: v for k, v in stored.items() if not k.startswith("_")}
            capture_id = stored["_capture"]
        href = f"{base()}/v2/payments/refunds/{refund_id}"
        shown["links"] = [
            link(href, "self"),
            link(f"{base()}/v2/payments/captures/{capture_id}", "up"),
        ]
        return shown

    @app.get("/v2/payments/refunds/<refund_id>")
    def get_refund(refund_id: str) -> flask.Response:
        return _json(200, refund_view(refund_id))

    # -- webhooks ---------------------------------------------------------------------------

    def cert_url(host: str) -> str:
        return f"{host}/v1/notifications/certs/CERT-SIM-{state.webhook_id}"

    @app.get("/v1/notifications/certs/<name>")
    def cert(name: str) -> flask.Response:
        return flask.Response(state.signer.cert_pem, mimetype="application/x-pem-file")

    def build_event(event_type: str, resource: dict[str, Any]) -> dict[str, Any]:
        summaries = {
            "PAYMENT.CAPTURE.COMPLETED": "Payment completed",
            "PAYMENT.CAPTURE.PENDING": "Payment pending",
            "PAYMENT.CAPTURE.DENIED": "Payment denied",
            "PAYMENT.CAPTURE.REFUNDED": "A capture was refunded",
            "PAYMENT.CAPTURE.REVERSED": "A capture was reversed",
        }
        return {
            "id": "WH-" + paypal_id(17) + "-" + paypal_id(17),
            "event_version": "1.0",
            "create_time": clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            # A refund's event, or a reversal PayPal describes as a refund (it names its amount).
            "resource_type": "refund" if "/refunds/" in _self_href(resource) else "capture",
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summaries.get(event_type, event_type),
            "resource": resource,
            "links": [link(f"{base()}/v1/notifications/webhooks-events/x", "self")],
        }

    def sign(body: bytes, host: str) -> dict[str, str]:
        while True:
            transmission_id = str(uuid.uuid4())
            when = now_iso()
            signature = state.signer.sign(
                signed_message(transmission_id, when, state.webhook_id, body)
            )
            # PayPal's own pattern for transmission_sig wants a word character first, which a
            # base64 signature lacks 1 time in 32; draw another id rather than break the contract.
            if signature[0].isalnum():
                break
        return {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": when,
            "PAYPAL-TRANSMISSION-SIG": signature,
            "PAYPAL-CERT-URL": cert_url(host),
            "PAYPAL-AUTH-ALGO": AUTH_ALGO,
            "Content-Type": "application/json",
        }

    def send(event: dict[str, Any], url: str | None, host: str) -> dict[str, Any]:
        body = canonical(event)
        headers = sign(body, host)
        delivery: dict[str, Any] = {"event": event, "headers": headers, "url": url, "status": None}
        with state.lock:
            state.webhooks_sent.append(delivery)
        if url:
            try:
                delivery["status"] = requests.post(
                    url, data=body, headers=headers, timeout=10
                ).status_code
            except requests.RequestException as exc:
                delivery["status"] = f"unreachable: {type(exc).__name__}"
            log.info("webhook %s %s -> %s", event["event_type"], event["id"], delivery["status"])
        return delivery

    def deliver_later(event_type: str, resource: dict[str, Any]) -> None:
        event = build_event(event_type, resource)  # built now: it needs the request's host
        with state.lock:
            if state.webhooks_held:
                state.webhooks_waiting.append(event)
                return
        threading.Thread(target=send, args=(event, state.webhook_url, base()), daemon=True).start()

    @app.post("/_sim/orders/<order_id>/expire")
    def expire_order(order_id: str) -> flask.Response:
        """PayPal forgets an order left unapproved (after three hours): 404 from then on."""
        with state.lock:
            gone = state.orders.pop(order_id, None)
        return _json(200 if gone else 404, {"expired": gone is not None})

    @app.post("/_sim/captures/pending")
    def pend_captures() -> flask.Response:
        """Leave the next `count` captures PENDING, as PayPal does for an eCheck."""
        count = int(flask.request.get_json(force=True).get("count", 1))
        with state.lock:
            state.pending_captures = count
        return _json(200, {"pending": count})

    @app.post("/_sim/webhooks/hold")
    def hold_webhooks() -> flask.Response:
        with state.lock:
            state.webhooks_held = True
        return _json(200, {"held": True})

    @app.post("/_sim/webhooks/release")
    def release_webhooks() -> flask.Response:
        """Stop holding, and send what waited, in order, before answering."""
        with state.lock:
            state.webhooks_held = False
            waiting, state.webhooks_waiting = state.webhooks_waiting, []
        sent = [send(event, state.webhook_url, base()) for event in waiting]
        return _json(200, {"sent": [{"id": d["event"]["id"], "status": d["status"]} for d in sent]})

    @app.post("/v1/notifications/verify-webhook-signature")
    def verify() -> flask.Response:
        body = flask.request.get_json(force=True)
        ok = (
            body["auth_algo"] == AUTH_ALGO
            and body["cert_url"] == cert_url(base())
            # The payments webhook, or another registration of the app (payouts').
            and body["webhook_id"] in (state.webhook_id, *app.config.get("extra_webhook_ids", ()))
            and state.signer.verify(
                signed_message(
                    body["transmission_id"],
                    body["transmission_time"],
                    body["webhook_id"],
                    canonical(body["webhook_event"]),
                ),
                body["transmission_sig"],
            )
        )
        return _json(200, {"verification_status": "SUCCESS" if ok else "FAILURE"})

    # -- test-only controls -----------------------------------------------------------------

    @app.get("/_sim/health")
    def health() -> flask.Response:
        return _json(
            200,
            {
                "ok": True,
                "contract": state.contract is not None,
                "contractReason": state.contract_reason,
            },
        )

    @app.post("/_sim/faults")
    def add_fault() -> flask.Response:
        body = flask.request.get_json(force=True)
        fault = Fault(
            delay=float(body.get("delay", 0)),
            status=int(body["status"]) if body.get("status") else None,
            count=int(body.get("count", 1)),
            path_contains=str(body.get("pathContains", "")),
            body_contains=str(body.get("bodyContains", "")),
            mock=str(body.get("mock", "")),
        )
        with state.lock:
            state.faults.append(fault)
        return _json(201, {"queued": len(state.faults)})

    @app.delete("/_sim/faults")
    def clear_faults() -> flask.Response:
        with state.lock:
            state.faults.clear()
            state.pending_captures = 0
            state.pending_refunds = 0
            state.webhooks_held = False
            state.webhooks_waiting.clear()
        return _json(200, {"queued": 0})

    sim_controls.add_violation_routes(app, state.lock, state.violations)

    @app.get("/_sim/requests")
    def requests_seen() -> flask.Response:
        with state.lock:
            return _json(200, {"requests": list(state.requests_seen)})

    @app.get("/_sim/webhooks")
    def webhooks() -> flask.Response:
        with state.lock:
            return _json(200, {"webhooks": list(state.webhooks_sent)})

    @app.post("/_sim/webhooks")
    def trigger_webhook() -> flask.Response:
        """Send one event now: {eventType, captureId, url?, amount?}. DENIED and REVERSED change
        the capture as PayPal would (declined; refunded after a chargeback). A REVERSED with an
        `amount` ({currency_code, value}) is a chargeback of that much alone: PayPal then sends
        a refund-shaped resource naming it, and the capture keeps the rest (refundable)."""
        body = flask.request.get_json(force=True)
        event_type = body["eventType"]
        capture_id = body["captureId"]
        if event_type == "PAYMENT.CAPTURE.REVERSED" and body.get("amount"):
            with state.lock:
                if capture_id not in state.captures:
                    return _json(404, {"error": f"no capture {capture_id}"})
                refund_id = charge_back(state.captures[capture_id], capture_id, body["amount"])
            resource = refund_view(refund_id)
            sent = send(
                build_event(event_type, resource), body.get("url", state.webhook_url), base()
            )
            return _json(200, sent)
        with state.lock:
            cap = state.captures.get(capture_id)
            if cap is None:
                return _json(404, {"error": f"no capture {capture_id}"})
            if event_type == "PAYMENT.CAPTURE.COMPLETED" and cap["status"] == "PENDING":
                cap["status"] = "COMPLETED"
                cap.pop("status_details", None)
            elif event_type == "PAYMENT.CAPTURE.DENIED":
                cap["status"] = "DECLINED"
            elif event_type == "PAYMENT.CAPTURE.REVERSED":
                cap["status"] = "REFUNDED"
                cap["status_details"] = {"reason": "CHARGEBACK"}
        resource = capture_view(capture_id)
        if event_type == "PAYMENT.CAPTURE.REFUNDED" and cap.get("_refunds"):
            resource = refund_view(cap["_refunds"][-1])
        delivery = send(
            build_event(event_type, resource), body.get("url", state.webhook_url), base()
        )
        return _json(200, delivery)

    def charge_back(cap: dict[str, Any], capture_id: str, amount: dict[str, str]) -> str:
        """Part of a capture taken back by a chargeback (under state.lock): kept as one of
        its refunds, as PayPal counts it, so what is left to refund shrinks by it."""
        refund_id = paypal_id()
        state.refunds[refund_id] = {
            "id": refund_id,
            "status": "COMPLETED",  # (a refund's status_details names ECHECK alone)
            "amount": {"currency_code": amount["currency_code"], "value": amount["value"]},
            "create_time": now_iso(),
            "update_time": now_iso(),
            "_capture": capture_id,
        }
        cap.setdefault("_refunds", []).append(refund_id)
        taken = sum(Decimal(state.refunds[r]["amount"]["value"]) for r in cap["_refunds"])
        whole = taken >= Decimal(cap["amount"]["value"])
        cap["status"] = "REFUNDED" if whole else "PARTIALLY_REFUNDED"
        cap["update_time"] = now_iso()
        return refund_id

    @app.errorhandler(Answer)
    def answer(exc: Answer) -> flask.Response:
        return _json(exc.status, exc.body)

    # Payouts v1 (issue 15): batches, items and their webhooks, in their own module.
    from dev import paypal_payouts_sim

    paypal_payouts_sim.register(
        app,
        state,
        webhook_id=payouts_webhook_id or paypal_payouts_sim.DEFAULT_PAYOUTS_WEBHOOK_ID,
        webhook_url=payouts_webhook_url,
    )
    return app


def _json(status: int, body: Any) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


def _self_href(resource: dict[str, Any]) -> str:
    for item in resource.get("links") or []:
        if item.get("rel") == "self":
            return str(item.get("href", ""))
    return ""


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def _page(status: int, title: str, body: str) -> flask.Response:
    """A small page of PayPal's window (no script: a plain form is all the buyer needs)."""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'  # no favicon request (a 404 in the console)
        f"<title>{_esc(title)}</title></head>"
        f"<body><h1>PayPal (simulator)</h1>{body}</body></html>"
    )
    return flask.Response(page, status=status, mimetype="text/html")


def _with_query(url: str, added: dict[str, str]) -> str:
    """`url` with `added` appended to its query (what it had is kept)."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(added)) if q)
    return urlunsplit(parts._replace(query=query))


# Issues that are not listed for the operation at hand (the simulator still answers them).
_KNOWN_ISSUES: dict[str, tuple[int, str]] = {
    "INSTRUMENT_DECLINED": (
        422,
        "The instrument presented was either declined by the processor "
        "or bank, or it can't be used for this payment.",
    ),
    "ORDER_ALREADY_CAPTURED": (422, "Order already captured."),
    # The Payments API documents it for refunds (payments_payment_v2.json); PayPal may answer it
    # to any call on a resource another call is still working on (a payout batch's, too).
    "PREVIOUS_REQUEST_IN_PROGRESS": (
        409,
        "A previous request on this resource is currently in progress. Please wait for "
        "sometime and try again. It is best to space out the initial and the subsequent "
        "request(s) to avoid receiving this error.",
    ),
    # PayPal's wording (checkout_orders_v2.json's capture errors), for the negative test of a
    # refused payer when the contract is off (its files not beside the repository).
    "PAYER_ACCOUNT_LOCKED_OR_CLOSED": (
        422,
        "The payer account cannot be used for this transaction.",
    ),
}
_ISSUE_TEXT: dict[str, str] = {
    "ORDER_ALREADY_CAPTURED": "Order already captured.If 'intent=CAPTURE' only one capture per "
    "order is allowed.",
    "ORDER_NOT_APPROVED": "Payer has not yet approved the Order for payment. Please redirect the "
    "payer to the 'rel':'approve' url returned as part of the HATEOAS links "
    "within the Create Order call or provide a valid payment_source in the "
    "request.",
}


def main() -> None:
    import os

    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description="The local PayPal simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--webhook-url", default=os.environ.get("PAYPAL_SIM_WEBHOOK_URL"))
    parser.add_argument("--payouts-webhook-url", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="paypal-sim %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(
        client_id=os.environ.get("PAYPAL_CLIENT_ID") or DEFAULT_CLIENT_ID,
        client_secret=os.environ.get("PAYPAL_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET,
        webhook_id=os.environ.get("PAYPAL_WEBHOOK_ID") or DEFAULT_WEBHOOK_ID,
        webhook_url=args.webhook_url or None,
        payouts_webhook_id=os.environ.get("PAYPAL_PAYOUTS_WEBHOOK_ID") or None,
        payouts_webhook_url=args.payouts_webhook_url or None,
    )
    state: State = app.config["state"]
    if state.contract is not None:
        state.contract.find("GET", "/")  # warm: the first validation pays for the crawl
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
