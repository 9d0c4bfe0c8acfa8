"""The `appointments` function: availability, free slots, booking and the appointment lifecycle.

Routes (under /appointments):
  PUT  /availability                  a doctor publishes their weekly schedule
  GET  /doctors/{uid}/availability    a doctor's schedule and price
  GET  /doctors/{uid}/slots           free slots over a bounded range
  POST /                              a patient books a slot (Idempotency-Key honoured)
  GET  /                              the caller's appointments (all for admins)
  GET  /{id}                          one appointment
  POST /{id}/cancel                   cancel (patient before the cut-off; doctor, admin always)
  POST /{id}/complete | /{id}/no-show the doctor records the outcome
  POST /{id}/reschedule               a patient moves a confirmed appointment
  POST /sweep                         expire unpaid holds (scheduler; admins)

The reason for a visit (`note`) is health data: every answer that hands one out, whatever the
route, has its `read` entry written first, by the pipeline (shared.platform.disclosure).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import flask
import functions_framework
from pydantic import Field, field_validator, model_validator

from shared.appointments import service
from shared.appointments.rules import Status
from shared.appointments.schedule import MAX_RANGE_DAYS
from shared.identity import profiles
from shared.identity.profile_fields import HHMM, Weekday, price_view
from shared.payments.views import PaymentSummary
from shared.platform import idempotency, stored
from shared.platform.context import Role
from shared.platform.disclosure import Health, ResourceId
from shared.platform.errors import BadRequest
from shared.platform.fields import Day, DocId, Instant, Int
from shared.platform.models import Body, Page, View
from shared.web.http import Call, Function, Reply
from shared.workflows.cancellations import REFUND

api = Function(
    "appointments",
    title="Alo Doktor appointments",
    description="Doctors' availability, booking without double booking, and the lifecycle.",
)


class IntervalIn(Body):
    start: HHMM
    end: HHMM

    @model_validator(mode="after")
    def _ordered(self) -> IntervalIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class DayExceptionIn(Body):
    date: Day
    off: bool = False
    intervals: list[IntervalIn] = Field(default_factory=list, max_length=6)


class AvailabilityIn(Body):
    time_zone: str = Field(max_length=64, description="IANA time zone, e.g. Asia/Jakarta")
    slot_minutes: Int = Field(ge=10, le=240)
    weekly: dict[Weekday, list[IntervalIn]] = Field(max_length=7)
    exceptions: list[DayExceptionIn] = Field(default_factory=list, max_length=90)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return v

    @field_validator("weekly")
    @classmethod
    def _bounded_days(cls, v: dict[Weekday, list[IntervalIn]]) -> dict[Weekday, list[IntervalIn]]:
        if any(len(items) > 6 for items in v.values()):
            raise ValueError("at most 6 intervals a day")
        return v


class AvailabilityOut(View):
    doctor_uid: str
    time_zone: str
    slot_minutes: int
    weekly: dict[str, list[dict[str, str]]]
    exceptions: list[dict[str, Any]]
    consultation_price: dict[str, str] | None


class SlotsQuery(Body):
    start_from: Instant = Field(alias="from")
    start_to: Instant = Field(alias="to")


class SlotList(View):
    doctor_uid: str
    slot_minutes: int
    slots: list[datetime]


class BookIn(Body):
    doctor_uid: DocId
    start: Instant
    note: str | None = Field(default=None, max_length=1000, description="Reason for the visit")


class Cancellation(View):
    by: str
    role: str
    reason: str | None
    at: datetime
    was_confirmed: bool
    hours_before_start: float
    refund: str | None = Field(
        default=None, description="full or none, by the refund policy; absent if unpaid"
    )


class AppointmentOut(View):
    id: Annotated[str, ResourceId(service.APPOINTMENTS)]
    patient_uid: str
    doctor_uid: str
    clinic_uid: str | None
    start: datetime
    end: datetime
    status: Status
    price: dict[str, str]
    hold_expires_at: datetime | None
    note: Health[str | None]
    cancellation: Cancellation | None
    patient_name: str | None = Field(
        default=None, description="the patient's display name, in a doctor's or admin's list"
    )
    rescheduled_from: datetime | None = None
    created_at: datetime
    payment: PaymentSummary | None = None

    @classmethod
    def of(cls, doc: dict[str, Any], viewer: Role) -> AppointmentOut:
        return cls(
            id=doc["id"],
            patient_uid=doc["patientUid"],
            doctor_uid=doc["doctorUid"],
            clinic_uid=doc.get("clinicUid"),
            start=doc["start"],
            end=doc["end"],
            status=Status(doc["status"]),
            price=price_view(doc["price"]) or {},
            hold_expires_at=doc.get("holdExpiresAt"),
            # The reason for the visit is for the patient and their doctor (and admins).
            note=None if viewer is Role.CLINIC else doc.get("note"),
            cancellation=doc.get("cancellation"),
            rescheduled_from=doc.get("rescheduledFrom"),
            created_at=doc["createdAt"],
            payment=PaymentSummary.of(doc.get("payment")),
        )


class AppointmentQuery(Page):
    status: Status | None = None
    start_from: Instant | None = Field(default=None, alias="from")
    start_to: Instant | None = Field(default=None, alias="to")
    doctor_uid: DocId | None = Field(default=None, description="admins only")
    patient_uid: DocId | None = Field(default=None, description="admins only")


class AppointmentList(View):
    items: list[AppointmentOut]
    next_cursor: str | None


class CancelIn(Body):
    reason: str | None = Field(default=None, min_length=3, max_length=500)


class RescheduleIn(Body):
    start: Instant


class Swept(View):
    expired: int


@api.route("PUT", "/availability", body=AvailabilityIn, response=AvailabilityOut)
def publish_availability(call: Call) -> AvailabilityOut:
    """Publish your weekly schedule, slot length and exceptions (doctors)."""
    b: AvailabilityIn = call.body
    doc = b.model_dump(by_alias=True, mode="json")
    service.save_availability(call.principal.uid, doc)
    return _availability_out(call.principal.uid)


def _availability_out(doctor_uid: str) -> AvailabilityOut:
    profile, _ = service.bookable_doctor(doctor_uid)
    doc = service.availability(doctor_uid) or {}
    return AvailabilityOut(
        doctor_uid=doctor_uid,
        time_zone=doc["timeZone"],
        slot_minutes=doc["slotMinutes"],
        weekly=doc.get("weekly", {}),
        exceptions=doc.get("exceptions", []),
        consultation_price=price_view(profile.get("consultationPrice")),
    )


@api.route("GET", "/doctors/<uid>/availability", response=AvailabilityOut)
def get_availability(call: Call) -> AvailabilityOut:
    """A bookable doctor's schedule and consultation price."""
    return _availability_out(call.params["uid"])


@api.route("GET", "/doctors/<uid>/slots", query=SlotsQuery, response=SlotList)
def list_slots(call: Call) -> SlotList:
    """Free slots of a doctor in [from, to), at most 31 days."""
    q: SlotsQuery = call.query
    start, end = q.start_from.astimezone(UTC), q.start_to.astimezone(UTC)
    if end <= start or end - start > timedelta(days=MAX_RANGE_DAYS):
        raise BadRequest(
            f"'to' must follow 'from' by at most {MAX_RANGE_DAYS} days.", code="invalid_range"
        )
    slots = service.free_slots(call.params["uid"], start, end)
    _, schedule = service.bookable_doctor(call.params["uid"])
    return SlotList(doctor_uid=call.params["uid"], slot_minutes=schedule.slot_minutes, slots=slots)


@api.route(
    "POST",
    "/",
    body=BookIn,
    response=AppointmentOut,
    status=201,
    problems=(404, 409),
    headers=(idempotency.HEADER,),
)
def book(call: Call) -> Reply:
    """Book a free slot: the appointment holds it, pending payment, for a limited time."""
    b: BookIn = call.body
    key = call.idempotency_key("service.book")
    doc, replayed = service.book(
        call.principal, service.Booking(b.doctor_uid, b.start, b.note), key
    )
    if replayed:
        call.headers["Idempotent-Replayed"] = "true"
    return Reply(AppointmentOut.of(doc, call.principal.role))


@api.route("GET", "/", query=AppointmentQuery, response=AppointmentList)
def list_appointments(call: Call) -> AppointmentList:
    """Your appointments, latest first; admins see all and may filter by doctor or patient."""
    q: AppointmentQuery = call.query
    if call.principal.role is not Role.ADMIN and (q.doctor_uid or q.patient_uid):
        raise BadRequest("Only admins filter by doctor or patient.", code="filter_not_allowed")
    items, cursor = service.list_for(
        call.principal,
        service.ListFilter(q.status, q.start_from, q.start_to, q.doctor_uid, q.patient_uid),
        limit=q.limit,
        cursor=q.cursor,
    )
    shown = stored.readable(lambda i: AppointmentOut.of(i, call.principal.role), items)
    if call.principal.role in (Role.DOCTOR, Role.ADMIN):
        # A doctor's day reads as people, not uids: the page's patients' names, one read.
        names = profiles.display_names([a.patient_uid for a in shown])
        shown = [a.model_copy(update={"patient_name": names.get(a.patient_uid)}) for a in shown]
    return AppointmentList(items=shown, next_cursor=cursor)


@api.route("GET", "/<id>", response=AppointmentOut)
def get_appointment(call: Call) -> AppointmentOut:
    """One appointment: its patient's, its doctor's, its clinic's, or any for an admin."""
    doc = call.authorize(service.get(call.params["id"]))
    return AppointmentOut.of(doc, call.principal.role)


@api.route("POST", "/<id>/cancel", body=CancelIn, response=AppointmentOut, problems=(409,))
def cancel(call: Call) -> AppointmentOut:
    """Cancel: patients until the cut-off before the start; doctors and admins with a reason."""
    doc = service.cancel(
        call.params["id"], call.principal, call.body.reason, call.authorize, ending=REFUND
    )
    return AppointmentOut.of(doc, call.principal.role)


@api.route("POST", "/<id>/complete", response=AppointmentOut, problems=(409,))
def complete(call: Call) -> AppointmentOut:
    """Record that the consultation took place (its doctor, once it started)."""
    doc = service.record_outcome(call.params["id"], Status.COMPLETED, call.authorize)
    return AppointmentOut.of(doc, call.principal.role)


@api.route("POST", "/<id>/no-show", response=AppointmentOut, problems=(409,))
def no_show(call: Call) -> AppointmentOut:
    """Record that the patient did not come (its doctor, once it started)."""
    doc = service.record_outcome(call.params["id"], Status.NO_SHOW, call.authorize)
    return AppointmentOut.of(doc, call.principal.role)


@api.route("POST", "/<id>/reschedule", body=RescheduleIn, response=AppointmentOut, problems=(409,))
def reschedule(call: Call) -> AppointmentOut:
    """Move a confirmed appointment to another free slot of the same doctor."""
    doc = service.reschedule(call.params["id"], call.body.start, call.authorize)
    return AppointmentOut.of(doc, call.principal.role)


@api.route("POST", "/sweep", response=Swept)
def sweep(call: Call) -> Swept:
    """Expire unpaid holds that ran out and free their slots."""
    return Swept(expired=service.sweep_expired_holds())


@functions_framework.http
def appointments(request: flask.Request) -> flask.Response:
    return api.handle(request)
