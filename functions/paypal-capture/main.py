"""The `paypal-capture` function: a patient captures the PayPal order they approved.

Routes (under /paypal-capture):
  POST /   the order's patient: capture; the appointment or booking is confirmed with it

Capturing twice answers the same captured order and books nothing twice. A declined funding
source answers 422 `instrument_declined`: send the buyer back to the approve link to choose
another. PayPal unreachable answers 503 with nothing recorded; try again. A payment that
arrives after its appointment's hold ran out (or its booking was cancelled) is refunded in
full at once and answered 409 with the refund. A capture PayPal holds (an eCheck) answers
202 `capture_pending`; PayPal's COMPLETED webhook confirms it later, its DENIED one lets the
patient pay again.
"""

from __future__ import annotations

import flask
import functions_framework
from pydantic import model_validator

from shared.payments import orders
from shared.payments import records as order_records
from shared.payments.rules import OrderStatus
from shared.payments.views import OrderView, RefundView
from shared.platform.errors import Conflict
from shared.platform.fields import DocId
from shared.platform.models import Body
from shared.web.http import Call, Function, Reply
from shared.workflows.payment_subjects import SUBJECTS

api = Function(
    "paypal-capture",
    title="Alo Doktor: capture a PayPal payment",
    description="Captures an approved PayPal order and confirms what it pays for.",
)


class CaptureBody(Body):
    order_id: DocId | None = None
    paypal_order_id: DocId | None = None

    @model_validator(mode="after")
    def _one(self) -> CaptureBody:
        if (self.order_id is None) == (self.paypal_order_id is None):
            raise ValueError("give orderId or paypalOrderId, not both")
        return self


@api.route(
    "POST",
    "/",
    body=CaptureBody,
    response=OrderView,
    also=(202,),  # capture_pending: PayPal holds the capture until it clears
    problems=(404, 409, 422, 502, 503),
)
def capture(call: Call) -> OrderView | Reply:
    """Capture the approved order; the appointment or booking is then confirmed."""
    body: CaptureBody = call.body
    found = (
        order_records.get(body.order_id)
        if body.order_id is not None
        else order_records.by_paypal_id(str(body.paypal_order_id))
    )
    order = call.authorize(found)
    settled = orders.capture(order, subjects=SUBJECTS)
    if settled.refusal is not None:
        raise Conflict(
            f"{settled.refusal.message} The payment is refunded in full.",
            code=settled.refusal.code,
            order=OrderView.of(settled.order).model_dump(mode="json", by_alias=True),
            refund=(
                RefundView.of(settled.refund).model_dump(mode="json", by_alias=True)
                if settled.refund
                else None
            ),
        )
    view = OrderView.of(settled.order)
    if view.status is OrderStatus.CAPTURE_PENDING:
        return Reply(view, status=202)  # PayPal holds it (an eCheck): confirmed once it clears
    return view


@functions_framework.http
def paypal_capture(request: flask.Request) -> flask.Response:
    return api.handle(request)
