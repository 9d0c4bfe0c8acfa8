"""The `paypal-create` function: a patient asks to pay for their appointment or clinic booking.

Routes (under /paypal-create):
  POST /   patient, for their own appointment or booking: the PayPal order to approve

The amount is the one stored on the appointment or booking when it was made; the client names
only what it pays for. Asking again answers the same order (200 instead of 201).
"""

from __future__ import annotations

import flask
import functions_framework
from pydantic import model_validator

from shared.payments import orders
from shared.payments.rules import Kind
from shared.payments.views import OrderView
from shared.platform.fields import DocId
from shared.platform.models import Body
from shared.web.http import Call, Function, Reply
from shared.workflows.payment_subjects import SUBJECTS

api = Function(
    "paypal-create",
    title="Alo Doktor: start a PayPal payment",
    description="Creates (or finds) the PayPal order for an appointment or a clinic booking.",
)


class PayFor(Body):
    appointment_id: DocId | None = None
    booking_id: DocId | None = None

    @model_validator(mode="after")
    def _one(self) -> PayFor:
        if (self.appointment_id is None) == (self.booking_id is None):
            raise ValueError("give appointmentId or bookingId, not both")
        return self

    def subject(self) -> tuple[Kind, str]:
        if self.appointment_id is not None:
            return Kind.APPOINTMENT, self.appointment_id
        assert self.booking_id is not None
        return Kind.BOOKING, self.booking_id


@api.route(
    "POST",
    "/",
    body=PayFor,
    response=OrderView,
    status=201,
    also=(200,),  # the subject's order exists already: the same order again
    problems=(404, 409, 422, 502, 503),  # 422, 502: PayPal refused the order (PayPalRefused)
)
def create(call: Call) -> Reply:
    """The PayPal order for one's appointment or booking: approve it at `approveLink`."""
    kind, subject_id = call.body.subject()
    order, made = orders.create(
        kind, subject_id, call.authorize, subjects=SUBJECTS, payer_email=call.principal.email
    )
    return Reply(OrderView.of(order), status=201 if made else 200)


@functions_framework.http
def paypal_create(request: flask.Request) -> flask.Response:
    return api.handle(request)
