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
from pydantic import BaseModel, ConfigDict, Field

from shared.payments import webhooks as paypal_events
from shared.platform.fields import DocId
from shared.platform.models import View
from shared.web.http import Call, Function
from shared.workflows.payment_subjects import SUBJECTS

api = Function(
    "paypal-webhook",
    title="Alo Doktor: PayPal webhooks",
    description="Receives PayPal's PAYMENT.CAPTURE.* events and reconciles orders with them.",
)


class PayPalEvent(BaseModel):
    """PayPal's event envelope: its own snake_case fields, and more than we read."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: DocId
    event_type: str = Field(min_length=1, max_length=128)
    resource: dict[str, Any]


class Receipt(View):
    event_id: str
    outcome: str
    replayed: bool


@api.route("POST", "/", body=PayPalEvent, response=Receipt, problems=(400, 503))
def receive(call: Call) -> Receipt:
    """Verify, deduplicate and apply one PayPal event."""
    # As PayPal sent it, unknown fields too: that is what its signature covers.
    event: dict[str, Any] = call.request.get_json(silent=True) or {}
    headers = dict(call.request.headers.items())
    return Receipt.model_validate(paypal_events.receive(headers, event, subjects=SUBJECTS))


@functions_framework.http
def paypal_webhook(request: flask.Request) -> flask.Response:
    return api.handle(request)
