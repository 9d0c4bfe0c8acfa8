"""PayPal Payouts v1 in the local PayPal simulator (mounted by dev/paypal_sim.py).

What it does as PayPal does (developer.paypal.com/docs/api/payments.payouts-batch/v1):

- `POST /v1/payments/payouts` takes a batch: a `sender_batch_id` used in the last 30 days is
  refused (400 USER_BUSINESS_ERROR, a detail on SENDER_BATCH_ID and a HATEOAS link to the
  original batch); `PayPal-Request-Id` replays the first answer (the simulator's pipeline);
  the sandbox's test values in `items[0].note` (ERRPYO005 INSUFFICIENT_FUNDS, ...) answer their
  errors; receivers and amounts are checked (a JPY amount with decimals is refused).
- The batch moves PENDING -> PROCESSING -> SUCCESS (or DENIED); each item PENDING -> SUCCESS,
  FAILED, UNCLAIMED, ONHOLD, BLOCKED, RETURNED; UNCLAIMED -> SUCCESS (claimed) or RETURNED
  (cancelled, or 30 days unclaimed); SUCCESS -> REVERSED or REFUNDED. New batches are
  processed at once (items SUCCESS, or the outcome set for their receiver) unless processing
  is held.
- `GET /v1/payments/payouts/{id}`, `GET /v1/payments/payouts-item/{id}`, and
  `POST /v1/payments/payouts-item/{id}/cancel` (UNCLAIMED items only).
- Signed PAYMENT.PAYOUTSBATCH.* and PAYMENT.PAYOUTS-ITEM.* webhooks, to the payouts webhook
  (its own webhook id and URL, as a second registration of the same REST app), delivered in
  order by one thread. PayPal has no webhook for a REVERSED item: only polling sees it.

Test controls under `/_sim/payouts/`: `outcomes` (what the next batches' items to a receiver
become), `processing` (hold or process new batches), `items/<id>` (move an item, sending its
webhook), `batches/<id>/deny`, `errors` (the next batches answer a sandbox test value, for a
caller that cannot put it in the note itself), `forget-request-ids` (PayPal no longer
recognises our PayPal-Request-Ids: a retry meets the sender_batch_id check instead),
`webhooks` (GET: what was sent; POST {"mode": "send"|"hold"|"drop"}), `webhooks/release`.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import flask
import requests

from dev.paypal_sim import (
    AUTH_ALGO,
    Answer,
    State,
    _json,
    canonical,
    now_iso,
    paypal_id,
    signed_message,
)
from shared.platform import clock
from shared.platform.money import EXPONENTS

DEFAULT_PAYOUTS_WEBHOOK_ID = "SIMPAYOUTSWEBHOOK0001"
DUPLICATE_WINDOW = timedelta(days=30)
FEE_BPS = 200  # the sandbox's domestic payout fee: 2 % of the item
DOCS = "https://developer.paypal.com/docs/api/payments.payouts-batch/v1/#errors"

# The sandbox's test values for POST /v1/payments/payouts (items[0].note): status, name,
# message. developer.paypal.com "Payouts API - test values".
TEST_VALUES: dict[str, tuple[int, str, str]] = {
    "ERRPYO001": (403, "SENDER_RESTRICTED", "Sender is restricted from sending payouts."),
    "ERRPYO002": (403, "SENDER_EMAIL_UNCONFIRMED", "Authorization error occurred"),
    "ERRPYO003": (403, "AUTHORIZATION_ERROR", "Authorization error occurred"),
    "ERRPYO005": (
        422,
        "INSUFFICIENT_FUNDS",
        "Sender does not have sufficient funds. Please add funds and retry.",
    ),
    "ERRPYO006": (500, "INTERNAL_ERROR", "An internal error occurred."),
    "ERRPYO010": (400, "VALIDATION_ERROR", "Invalid request - see details"),
    "ERRPYO011": (403, "REQUIRED_SCOPE_MISSING", "Access token does not have required scope."),
    "ERRPYO012": (403, "SENDER_LOCKED", "Sender account is locked or inactive."),
    "ERRPYO014": (400, "USER_BUSINESS_ERROR", "User business error."),
}

# Which item moves PayPal makes, and the webhook each sends (None: PayPal sends none).
ITEM_MOVES: dict[str, frozenset[str]] = {
    "PENDING": frozenset({"SUCCESS", "FAILED", "UNCLAIMED", "ONHOLD", "BLOCKED", "RETURNED"}),
    "ONHOLD": frozenset({"SUCCESS", "FAILED", "BLOCKED"}),
    "UNCLAIMED": frozenset({"SUCCESS", "RETURNED"}),
    "SUCCESS": frozenset({"REVERSED", "REFUNDED"}),
}
ITEM_EVENTS: dict[str, str | None] = {
    "SUCCESS": "PAYMENT.PAYOUTS-ITEM.SUCCEEDED",
    "FAILED": "PAYMENT.PAYOUTS-ITEM.FAILED",
    "UNCLAIMED": "PAYMENT.PAYOUTS-ITEM.UNCLAIMED",
    "ONHOLD": "PAYMENT.PAYOUTS-ITEM.HELD",
    "BLOCKED": "PAYMENT.PAYOUTS-ITEM.BLOCKED",
    "RETURNED": "PAYMENT.PAYOUTS-ITEM.RETURNED",
    "REFUNDED": "PAYMENT.PAYOUTS-ITEM.REFUNDED",
    "REVERSED": None,
}
SETTLED = frozenset({"SUCCESS", "FAILED", "UNCLAIMED", "RETURNED", "BLOCKED", "REFUNDED"})


@dataclass
class Payouts:
    webhook_id: str
    webhook_url: str | None
    lock: threading.RLock = field(default_factory=threading.RLock)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_sender_batch: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # receiver -> first outcome
    process_at_once: bool = True
    next_errors: list[str] = field(default_factory=list)  # test values for the next batches
    webhook_mode: str = "send"  # send | hold | drop
    waiting: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    outbox: queue.Queue[tuple[dict[str, Any], str] | None] = field(default_factory=queue.Queue)


def _error(
    status: int,
    name: str,
    message: str,
    *,
    details: list[dict[str, str]] | None = None,
    links: list[dict[str, str]] | None = None,
) -> Answer:
    """An error in the Payouts API's shape (its `error` schema: name, message, debug_id)."""
    body: dict[str, Any] = {
        "name": name,
        "message": message,
        "debug_id": secrets.token_hex(7),
        "information_link": DOCS,
    }
    if details:
        body["details"] = details
    if links:
        body["links"] = links
    return Answer(status, body)


def _decimal_problem(currency: str, value: str) -> str | None:
    exponent = EXPONENTS.get(currency)
    if exponent is None:
        return "CURRENCY_NOT_SUPPORTED"
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return "INVALID_AMOUNT"
    if not amount.is_finite() or amount <= 0:
        return "INVALID_AMOUNT"
    places = len(value.partition(".")[2]) if "." in value else 0
    if places > exponent:
        return "DECIMALS_NOT_SUPPORTED"
    return None


def _receiver_problem(recipient_type: str, receiver: str) -> bool:
    if recipient_type == "EMAIL":
        local, at, domain = receiver.partition("@")
        return not (local and at and "." in domain and len(receiver) <= 127)
    if recipient_type == "PAYPAL_ID":
        return not (len(receiver) == 13 and receiver.isalnum() and receiver.isupper())
    return True  # PHONE: the sandbox does not support it


def register(app: flask.Flask, state: State, *, webhook_id: str, webhook_url: str | None) -> None:
    """Add Payouts v1 and its controls to the simulator's app (its pipeline covers them)."""
    payouts = Payouts(webhook_id, webhook_url)
    app.config["payouts"] = payouts

    # Run as `python -m dev.paypal_sim`, that module is `__main__` and its Answer another class
    # than the one imported here: answer ours too.
    @app.errorhandler(Answer)
    def answer(exc: Answer) -> flask.Response:
        return _json(exc.status, exc.body)

    app.config.setdefault("extra_webhook_ids", []).append(webhook_id)

    def base() -> str:
        return flask.request.host_url.rstrip("/")

    def link(href: str, rel: str, method: str = "GET") -> dict[str, str]:
        return {"href": href, "rel": rel, "method": method}

    # -- views ------------------------------------------------------------------------------

    def item_view(item_id: str, host: str) -> dict[str, Any]:
        with payouts.lock:
            stored = payouts.items.get(item_id)
            if stored is None:
                raise _error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.")
            shown = {k: v for k, v in stored.items() if not k.startswith("_")}
            shown = json.loads(json.dumps(shown))
        shown["links"] = [
            link(f"{host}/v1/payments/payouts-item/{item_id}", "item"),
            link(f"{host}/v1/payments/payouts/{shown['payout_batch_id']}", "batch"),
        ]
        return dict(shown)

    def header_view(batch_id: str) -> dict[str, Any]:
        with payouts.lock:
            batch = payouts.batches[batch_id]
            header = {k: v for k, v in batch.items() if not k.startswith("_")}
            return dict(json.loads(json.dumps(header)))

    def batch_view(batch_id: str, host: str) -> dict[str, Any]:
        with payouts.lock:
            if batch_id not in payouts.batches:
                raise _error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.")
            item_ids = list(payouts.batches[batch_id]["_items"])
        items = []
        for item_id in item_ids:
            shown = item_view(item_id, host)
            shown.pop("sender_batch_id", None)  # the batch's items do not repeat it
            items.append(shown)
        return {
            "batch_header": header_view(batch_id),
            "items": items,
            "links": [link(f"{host}/v1/payments/payouts/{batch_id}", "self")],
        }

    # -- webhooks -----------------------------------------------------------------------------

    def event(event_type: str, resource: dict[str, Any], host: str) -> dict[str, Any]:
        return {
            "id": "WH-" + paypal_id(17) + "-" + paypal_id(17),
            "event_version": "1.0",
            "create_time": clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "resource_type": "payouts_item" if "ITEM" in event_type else "payouts",
            "event_type": event_type,
            "summary": event_type.rsplit(".", 1)[1].replace("-", " ").capitalize(),
            "resource": resource,
            "links": [link(f"{host}/v1/notifications/webhooks-events/x", "self")],
        }

    def signed_headers(body: bytes, host: str) -> dict[str, str]:
        while True:
            transmission_id = str(uuid.uuid4())
            when = now_iso()
            signature = state.signer.sign(
                signed_message(transmission_id, when, payouts.webhook_id, body)
            )
            if signature[0].isalnum():  # PayPal's pattern for transmission_sig (see paypal_sim)
                break
        return {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": when,
            "PAYPAL-TRANSMISSION-SIG": signature,
            # One signer and certificate for every webhook of the app, as PayPal's.
            "PAYPAL-CERT-URL": f"{host}/v1/notifications/certs/CERT-SIM-{state.webhook_id}",
            "PAYPAL-AUTH-ALGO": AUTH_ALGO,
            "Content-Type": "application/json",
        }

    def deliver(evt: dict[str, Any], host: str) -> dict[str, Any]:
        body = canonical(evt)
        headers = signed_headers(body, host)
        delivery: dict[str, Any] = {
            "event": evt,
            "headers": headers,
            "url": payouts.webhook_url,
            "status": None,
        }
        if payouts.webhook_url:
            try:
                delivery["status"] = requests.post(
                    payouts.webhook_url, data=body, headers=headers, timeout=30
                ).status_code
            except requests.RequestException as exc:
                delivery["status"] = f"unreachable: {type(exc).__name__}"
        with payouts.lock:
            payouts.sent.append(delivery)
        return delivery

    def courier() -> None:
        while True:
            job = payouts.outbox.get()
            if job is None:
                return
            try:
                deliver(*job)
            except Exception:  # a delivery that broke must not stop the ones after it
                app.logger.exception("payout webhook delivery failed")

    threading.Thread(target=courier, name="payouts-webhooks", daemon=True).start()

    def notify(event_type: str | None, resource: dict[str, Any], host: str) -> None:
        if event_type is None:
            return
        evt = event(event_type, resource, host)
        with payouts.lock:
            if payouts.webhook_mode == "drop":
                # Never delivered, but kept signed: a test may deliver it late, in any order.
                headers = signed_headers(canonical(evt), host)
                payouts.sent.append(
                    {"event": evt, "headers": headers, "url": None, "status": "dropped"}
                )
                return
            if payouts.webhook_mode == "hold":
                payouts.waiting.append((evt, host))
                return
        payouts.outbox.put((evt, host))

    # -- state changes ------------------------------------------------------------------------

    def refresh_batch(batch_id: str, host: str) -> None:
        """The batch is SUCCESS once every item is settled (an unclaimed one counts)."""
        with payouts.lock:
            batch = payouts.batches[batch_id]
            if batch["batch_status"] not in ("PENDING", "PROCESSING"):
                return
            statuses = [payouts.items[i]["transaction_status"] for i in batch["_items"]]
            if not all(s in SETTLED for s in statuses):
                return
            batch["batch_status"] = "SUCCESS"
            batch["time_completed"] = now_iso()
        notify("PAYMENT.PAYOUTSBATCH.SUCCESS", {**header_view(batch_id)}, host)

    def move_item(item_id: str, status: str, host: str, *, cancelled: bool = False) -> None:
        with payouts.lock:
            item = payouts.items[item_id]
            current = item["transaction_status"]
            if status not in ITEM_MOVES.get(current, frozenset()):
                raise Answer(409, {"error": f"an item that is {current} cannot become {status}"})
            item["transaction_status"] = status
            item["time_processed"] = now_iso()
            if status in ("FAILED", "BLOCKED"):
                item["errors"] = {
                    "name": "RECEIVER_UNREGISTERED" if status == "FAILED" else "ITEM_BLOCKED",
                    "message": "The payout could not be completed.",
                    "debug_id": secrets.token_hex(7),
                }
            batch_id = item["payout_batch_id"]
        kind = "PAYMENT.PAYOUTS-ITEM.CANCELED" if cancelled else ITEM_EVENTS.get(status)
        notify(kind, item_view(item_id, host), host)
        refresh_batch(batch_id, host)

    def process(batch_id: str, host: str) -> None:
        with payouts.lock:
            batch = payouts.batches[batch_id]
            if batch["batch_status"] != "PENDING":
                return
            batch["batch_status"] = "PROCESSING"
            fee_total = Decimal(0)
            for item_id in batch["_items"]:
                item = payouts.items[item_id]
                fee_total += Decimal(item["payout_item_fee"]["value"])
            currency = batch["amount"]["currency"]
            batch["fees"] = {"currency": currency, "value": _format(currency, fee_total)}
            targets = [
                (i, payouts.outcomes.get(payouts.items[i]["payout_item"]["receiver"], "SUCCESS"))
                for i in batch["_items"]
            ]
        notify("PAYMENT.PAYOUTSBATCH.PROCESSING", header_view(batch_id), host)
        for item_id, status in targets:
            move_item(item_id, status, host)

    # -- the API ------------------------------------------------------------------------------

    @app.post("/v1/payments/payouts")
    def create_batch() -> flask.Response:
        body = flask.request.get_json(force=True)
        host = base()
        header = dict(body.get("sender_batch_header") or {})
        items_in: list[dict[str, Any]] = body["items"]
        with payouts.lock:
            forced = payouts.next_errors.pop(0) if payouts.next_errors else None
        code = forced or str(items_in[0].get("note", ""))
        if code in TEST_VALUES:
            status, name, message = TEST_VALUES[code]
            raise _error(status, name, message)
        problems: list[dict[str, str]] = []
        currencies = set()
        for n, item in enumerate(items_in):
            recipient_type = item.get("recipient_type") or header.get("recipient_type") or ""
            if _receiver_problem(str(recipient_type), str(item["receiver"])):
                problems.append(
                    {
                        "field": f"items[{n}].receiver",
                        "location": "body",
                        "issue": "Receiver is invalid or does not match with type",
                    }
                )
            amount = item["amount"]
            issue = _decimal_problem(str(amount["currency"]), str(amount["value"]))
            if issue:
                problems.append({"field": f"items[{n}].amount", "location": "body", "issue": issue})
            currencies.add(amount["currency"])
        if len(currencies) > 1:
            problems.append(
                {"field": "items", "location": "body", "issue": "One currency per batch here."}
            )
        if problems:
            raise _error(400, "VALIDATION_ERROR", "Invalid request - see details", details=problems)
        sender_batch_id = str(header.get("sender_batch_id") or paypal_id(20))
        now = clock.now()
        with payouts.lock:
            earlier = payouts.by_sender_batch.get(sender_batch_id)
            if earlier is not None and now - earlier[1] < DUPLICATE_WINDOW:
                raise _error(
                    400,
                    "USER_BUSINESS_ERROR",
                    "User business error.",
                    details=[
                        {
                            "field": "SENDER_BATCH_ID",
                            "location": "body",
                            "issue": "Duplicate batch request",
                            "value": sender_batch_id,
                        }
                    ],
                    links=[link(f"{host}/v1/payments/payouts/{earlier[0]}", "self")],
                )
            batch_id = paypal_id(13)
            currency = next(iter(currencies))
            total = Decimal(0)
            item_ids = []
            for item in items_in:
                item_id = paypal_id(13)
                value = Decimal(str(item["amount"]["value"]))
                total += value
                fee = (value * FEE_BPS / Decimal(10_000)).quantize(
                    Decimal(1).scaleb(-EXPONENTS[currency])
                )
                recipient_type = item.get("recipient_type") or header.get("recipient_type")
                payouts.items[item_id] = {
                    "payout_item_id": item_id,
                    "transaction_id": paypal_id(17),
                    "activity_id": paypal_id(17),
                    "transaction_status": "PENDING",
                    "payout_item_fee": {"currency": currency, "value": _format(currency, fee)},
                    "payout_batch_id": batch_id,
                    "sender_batch_id": sender_batch_id,
                    "payout_item": {
                        k: v
                        for k, v in {
                            **item,
                            "recipient_type": recipient_type,
                            "recipient_wallet": "PAYPAL",
                        }.items()
                        if k
                        in (
                            "recipient_type",
                            "amount",
                            "note",
                            "receiver",
                            "sender_item_id",
                            "recipient_wallet",
                        )
                    },
                    "time_processed": now_iso(),
                }
                item_ids.append(item_id)
            sender_header = {
                k: v
                for k, v in header.items()
                if k in ("sender_batch_id", "email_subject", "email_message", "recipient_type")
            }
            sender_header["sender_batch_id"] = sender_batch_id
            payouts.batches[batch_id] = {
                "payout_batch_id": batch_id,
                "batch_status": "PENDING",
                "time_created": now_iso(),
                "sender_batch_header": sender_header,
                "amount": {"currency": currency, "value": _format(currency, total)},
                "fees": {"currency": currency, "value": _format(currency, Decimal(0))},
                "_items": item_ids,
            }
            payouts.by_sender_batch[sender_batch_id] = (batch_id, now)
            at_once = payouts.process_at_once
        if at_once:
            threading.Thread(target=process, args=(batch_id, host), daemon=True).start()
        answer = {
            "batch_header": {
                "payout_batch_id": batch_id,
                "batch_status": "PENDING",
                "sender_batch_header": sender_header,
            },
            "links": [link(f"{host}/v1/payments/payouts/{batch_id}", "self")],
        }
        return _json(201, answer)

    @app.get("/v1/payments/payouts/<batch_id>")
    def get_batch(batch_id: str) -> flask.Response:
        return _json(200, batch_view(batch_id, base()))

    @app.get("/v1/payments/payouts-item/<item_id>")
    def get_item(item_id: str) -> flask.Response:
        return _json(200, item_view(item_id, base()))

    @app.post("/v1/payments/payouts-item/<item_id>/cancel")
    def cancel_item(item_id: str) -> flask.Response:
        host = base()
        with payouts.lock:
            item = payouts.items.get(item_id)
            if item is None:
                raise _error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.")
            status = item["transaction_status"]
        if status == "RETURNED":
            raise _error(400, "ITEM_ALREADY_CANCELLED", "The requested item is already cancelled.")
        if status != "UNCLAIMED":
            raise _error(
                400, "ITEM_INCORRECT_STATUS", "You can only cancel items that are unclaimed."
            )
        move_item(item_id, "RETURNED", host, cancelled=True)
        return _json(200, item_view(item_id, host))

    # -- test controls ------------------------------------------------------------------------

    @app.post("/_sim/payouts/outcomes")
    def set_outcome() -> flask.Response:
        """{"receiver", "status"}: what new items to this receiver become when processed."""
        body = flask.request.get_json(force=True)
        status = str(body["status"])
        if status not in ITEM_MOVES["PENDING"]:
            return _json(400, {"error": f"a new item cannot become {status}"})
        with payouts.lock:
            payouts.outcomes[str(body["receiver"])] = status
        return _json(200, {"receiver": body["receiver"], "status": status})

    @app.post("/_sim/payouts/processing")
    def set_processing() -> flask.Response:
        """{"atOnce": bool}: process new batches at once (PayPal's way) or leave them PENDING
        until a test moves their items."""
        at_once = bool(flask.request.get_json(force=True).get("atOnce", True))
        with payouts.lock:
            payouts.process_at_once = at_once
        return _json(200, {"atOnce": at_once})

    @app.post("/_sim/payouts/items/<item_id>")
    def move(item_id: str) -> flask.Response:
        """{"status"}: PayPal moves the item (sending the webhook PayPal sends for it)."""
        status = str(flask.request.get_json(force=True)["status"])
        host = base()
        with payouts.lock:
            item = payouts.items.get(item_id)
            if item is None:
                return _json(404, {"error": f"no item {item_id}"})
            batch = payouts.batches[item["payout_batch_id"]]
            if batch["batch_status"] == "PENDING":
                batch["batch_status"] = "PROCESSING"
        move_item(item_id, status, host)
        return _json(200, item_view(item_id, host))

    @app.post("/_sim/payouts/batches/<batch_id>/deny")
    def deny(batch_id: str) -> flask.Response:
        host = base()
        with payouts.lock:
            batch = payouts.batches.get(batch_id)
            if batch is None:
                return _json(404, {"error": f"no batch {batch_id}"})
            batch["batch_status"] = "DENIED"
            for item_id in batch["_items"]:
                payouts.items[item_id]["transaction_status"] = "FAILED"
        notify("PAYMENT.PAYOUTSBATCH.DENIED", header_view(batch_id), host)
        return _json(200, batch_view(batch_id, host))

    @app.post("/_sim/payouts/errors")
    def next_errors() -> flask.Response:
        """{"testValue": "ERRPYO005", "count": n}: the next n batches answer that test value."""
        body = flask.request.get_json(force=True)
        value = str(body["testValue"])
        if value not in TEST_VALUES:
            return _json(400, {"error": f"unknown test value {value}"})
        with payouts.lock:
            payouts.next_errors.extend([value] * int(body.get("count", 1)))
        return _json(200, {"queued": len(payouts.next_errors)})

    @app.post("/_sim/payouts/forget-request-ids")
    def forget_request_ids() -> flask.Response:
        with state.lock:
            gone = [k for k in state.idempotency if k[2] == "/v1/payments/payouts"]
            for key in gone:
                del state.idempotency[key]
        return _json(200, {"forgotten": len(gone)})

    @app.get("/_sim/payouts/webhooks")
    def list_webhooks() -> flask.Response:
        with payouts.lock:
            return _json(200, {"webhooks": list(payouts.sent)})

    @app.post("/_sim/payouts/webhooks")
    def webhook_mode() -> flask.Response:
        mode = str(flask.request.get_json(force=True).get("mode", "send"))
        if mode not in ("send", "hold", "drop"):
            return _json(400, {"error": "mode is send, hold or drop"})
        with payouts.lock:
            payouts.webhook_mode = mode
        return _json(200, {"mode": mode})

    @app.post("/_sim/payouts/webhooks/release")
    def release() -> flask.Response:
        """Send what was held, in order, before answering; then send as they come."""
        with payouts.lock:
            payouts.webhook_mode = "send"
            waiting, payouts.waiting = payouts.waiting, []
        sent = [deliver(evt, host) for evt, host in waiting]
        return _json(200, {"sent": [{"id": d["event"]["id"], "status": d["status"]} for d in sent]})

    @app.delete("/_sim/payouts")
    def reset_controls() -> flask.Response:
        """Back to PayPal's plain behaviour (the batches stay)."""
        with payouts.lock:
            payouts.outcomes.clear()
            payouts.process_at_once = True
            payouts.next_errors.clear()
            payouts.webhook_mode = "send"
            payouts.waiting.clear()
        return _json(200, {"reset": True})


def _format(currency: str, value: Decimal) -> str:
    exponent = EXPONENTS[currency]
    return f"{value:.{exponent}f}"
