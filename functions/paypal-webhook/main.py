"""The `paypal-webhook` function: PayPal's event notifications.

Routes (under /paypal-webhook):
  POST /   PayPal (no user): verified with PayPal's verify-webhook-signature API first

An unverified event is 400 and changes nothing. A replayed event id is acknowledged (200)
without being applied again. See shared/payments/webhooks.py for what each event does.
"""

from __future__ import annotations

from typing import Any

import flask
import functions_framework

from shared.payments import webhooks as paypal_events
from shared.payments.webhook_envelope import PayPalEvent, Receipt
from shared.web.http import Call, Function
from shared.workflows.payment_subjects import SUBJECTS

api = Function(
    "paypal-webhook",
    title="Alo Doktor: PayPal webhooks",
    description="Receives PayPal's PAYMENT.CAPTURE.* events and reconciles orders with them.",
)


@api.route("POST", "/", body=PayPalEvent, response=Receipt, problems=(400, 503))
def receive(call: Call) -> Receipt:
    """Verify, deduplicate and apply one PayPal event."""
    # As PayPal sent it, unknown fields too: that is what its signature covers.
    event: dict[str, Any] = call.sent
    headers = dict(call.request.headers.items())
    return Receipt.model_validate(paypal_events.receive(headers, event, subjects=SUBJECTS))


@functions_framework.http
def paypal_webhook(request: flask.Request) -> flask.Response:
    return api.handle(request)
