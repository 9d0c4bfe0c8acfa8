"""The `prescriptions` function: the prescription lifecycle from doctor to pharmacy.

Routes (under /prescriptions):
  POST /                 the appointment's doctor writes one (Idempotency-Key honoured)
  GET  /                 the caller's: a patient's, a doctor's written, a pharmacy's queue
  GET  /{id}             one prescription
  POST /{id}/send        the patient sends it to an approved pharmacy
  POST /{id}/receive | /{id}/ready | /{id}/dispense | /{id}/reject   the pharmacy works it
  POST /{id}/cancel      the doctor cancels it before it is dispensed

Every answer that hands out a prescription (items and notes, health data) has its `read`
entry written first, by the pipeline (shared.platform.disclosure): reads, lists and moves alike.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import flask
import functions_framework
from pydantic import Field

from shared.platform import idempotency, stored
from shared.platform.disclosure import Health, ResourceId
from shared.platform.errors import NotFound
from shared.platform.fields import DocId, Int
from shared.platform.models import Body, Page, View
from shared.prescriptions import service
from shared.prescriptions.rules import Status
from shared.web.http import Call, Function, Reply
from shared.workflows import prescribing

api = Function(
    "prescriptions",
    title="Alo Doktor prescriptions",
    description="Doctors write, patients send to a pharmacy, pharmacies fill. Reads are logged.",
)


class Form(StrEnum):
    TABLET = "tablet"
    CAPSULE = "capsule"
    SYRUP = "syrup"
    SUSPENSION = "suspension"
    INJECTION = "injection"
    CREAM = "cream"
    OINTMENT = "ointment"
    DROPS = "drops"
    INHALER = "inhaler"
    PATCH = "patch"
    OTHER = "other"


class Item(Body):
    medication: str = Field(min_length=2, max_length=120)
    strength: str = Field(min_length=1, max_length=40, description="e.g. 500 mg")
    form: Form
    dose: str = Field(min_length=1, max_length=60, description="e.g. 1 tablet")
    frequency: str = Field(min_length=1, max_length=60, description="e.g. 3 times a day")
    duration_days: Int = Field(ge=1, le=365)
    quantity: Int = Field(ge=1, le=1000)
    refills: Int = Field(default=0, ge=0, le=12)
    instructions: str | None = Field(default=None, max_length=500)


class WriteIn(Body):
    appointment_id: DocId
    items: list[Item] = Field(min_length=1, max_length=30)
    notes: str | None = Field(default=None, max_length=2000)


class Step(View):
    status: Status
    by: str
    at: datetime
    reason: str | None = None


class PrescriptionOut(View):
    id: Annotated[str, ResourceId(service.COLLECTION)]
    appointment_id: str
    patient_uid: str
    doctor_uid: str
    pharmacy_uid: str | None
    status: Status
    items: Health[list[dict[str, Any]]]
    notes: Health[str | None]
    history: list[Step]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> PrescriptionOut:
        return cls.model_validate({k: v for k, v in doc.items() if not k.startswith("_")})


class PrescriptionList(View):
    items: list[PrescriptionOut]
    next_cursor: str | None


class ListQuery(Page):
    status: Status | None = None


class SendIn(Body):
    pharmacy_uid: DocId


class ReasonIn(Body):
    reason: str = Field(min_length=3, max_length=500)


class OptionalReasonIn(Body):
    reason: str | None = Field(default=None, min_length=3, max_length=500)


@api.route(
    "POST",
    "/",
    body=WriteIn,
    response=PrescriptionOut,
    status=201,
    problems=(404, 409),
    headers=(idempotency.HEADER,),
)
def write(call: Call) -> Reply:
    """Write a prescription for your appointment's patient (confirmed or completed only)."""
    b: WriteIn = call.body
    key = call.idempotency_key("prescriptions.write")
    items = [i.model_dump(by_alias=True, mode="json") for i in b.items]
    doc, replayed = prescribing.write(call.principal, b.appointment_id, items, b.notes, key)
    if replayed:
        call.headers["Idempotent-Replayed"] = "true"
    return Reply(PrescriptionOut.of(doc))


@api.route("GET", "/", query=ListQuery, response=PrescriptionList)
def list_prescriptions(call: Call) -> PrescriptionList:
    """Yours: a patient's, the ones a doctor wrote, a pharmacy's queue (admins: all)."""
    q: ListQuery = call.query
    docs, cursor = service.list_for(call.principal, status=q.status, limit=q.limit, cursor=q.cursor)
    return PrescriptionList(items=stored.readable(PrescriptionOut.of, docs), next_cursor=cursor)


@api.route("GET", "/<id>", response=PrescriptionOut)
def get_prescription(call: Call) -> PrescriptionOut:
    """One prescription: its patient's, its doctor's, its pharmacy's (admins: any)."""
    return PrescriptionOut.of(call.authorize(_load(call)))


def _load(call: Call) -> dict[str, Any] | None:
    try:
        return service.load(call.params["id"])
    except NotFound:
        return None


def _move(call: Call, target: Status, **kw: Any) -> PrescriptionOut:
    return PrescriptionOut.of(
        service.move(call.params["id"], call.principal, target, call.authorize, **kw)
    )


@api.route("POST", "/<id>/send", body=SendIn, response=PrescriptionOut, problems=(409,))
def send(call: Call) -> PrescriptionOut:
    """Send your prescription to an approved pharmacy (again, after a rejection)."""
    return _move(call, Status.SENT, pharmacy_uid=call.body.pharmacy_uid)


@api.route("POST", "/<id>/receive", response=PrescriptionOut, problems=(409,))
def receive(call: Call) -> PrescriptionOut:
    """The pharmacy acknowledges a prescription sent to it."""
    return _move(call, Status.RECEIVED)


@api.route("POST", "/<id>/ready", response=PrescriptionOut, problems=(409,))
def ready(call: Call) -> PrescriptionOut:
    """The pharmacy has it ready for pick-up or delivery."""
    return _move(call, Status.READY)


@api.route("POST", "/<id>/dispense", response=PrescriptionOut, problems=(409,))
def dispense(call: Call) -> PrescriptionOut:
    """The pharmacy handed it over; it can no longer change."""
    return _move(call, Status.DISPENSED)


@api.route("POST", "/<id>/reject", body=ReasonIn, response=PrescriptionOut, problems=(409,))
def reject(call: Call) -> PrescriptionOut:
    """The pharmacy cannot fill it, with a reason; the patient may send it elsewhere."""
    return _move(call, Status.REJECTED, reason=call.body.reason)


@api.route("POST", "/<id>/cancel", body=OptionalReasonIn, response=PrescriptionOut, problems=(409,))
def cancel(call: Call) -> PrescriptionOut:
    """The doctor withdraws it, before it is dispensed."""
    return _move(call, Status.CANCELLED, reason=call.body.reason)


@functions_framework.http
def prescriptions(request: flask.Request) -> flask.Response:
    return api.handle(request)
