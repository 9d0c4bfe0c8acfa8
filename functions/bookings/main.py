"""The `bookings` function: clinic setup, the clinic booking queue, and its dashboards.

Routes (under /bookings):
  POST /                               patient: request a booking (Idempotency-Key honoured)
  GET  /                               patient: one's bookings, with status and queue position
  GET  /{bookingId}                    its patient, its clinic, or an admin
  POST /{bookingId}/accept|decline|check-in|complete|no-show    the booking's clinic
  POST /{bookingId}/cancel             the booking's patient, until the window starts
  POST /sweep                          admin (later Cloud Scheduler): decline unanswered requests
  GET  /unanswered                     admin: the oldest unanswered requests, per clinic or all
  GET  /clinics/{clinicUid}            services and weekly schedule (any patient, clinic, admin)
  PUT  /clinics/{clinicUid}            the clinic ("me") or an admin: set services and schedule
  GET  /clinics/{clinicUid}/requests   the clinic's queue, first come first served
  GET  /clinics/{clinicUid}/day        a day's windows (default today) by status
  GET  /clinics/{clinicUid}/bookings   a day's bookings (default today), e.g. to check in
  GET  /clinics/{clinicUid}/load       the next days' windows: held places against capacity
  GET  /clinics/{clinicUid}/stats      counts by status for a range of days, and by day
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import flask
import functions_framework
from pydantic import Field, field_validator, model_validator

from shared.bookings import rules, service
from shared.bookings.rules import Action, Status
from shared.identity.profile_fields import Opening, Price, ShortText, Slug, Weekday, price_view
from shared.payments.views import PaymentSummary
from shared.platform import idempotency, stored
from shared.platform.context import Role
from shared.platform.disclosure import Health, ResourceId
from shared.platform.errors import BadRequest, NotFound
from shared.platform.fields import Day, DocId, Instant, Int
from shared.platform.models import Body, Page, SweepQuery, View
from shared.web.http import Call, Function, Reply
from shared.workflows.cancellations import REFUND

api = Function(
    "bookings",
    title="Alo Doktor clinic bookings",
    description="Clinics' services, capacity per window and booking queue; their dashboards.",
)


# -- models -----------------------------------------------------------------------------


class ServiceIn(Body):
    id: Slug
    name: ShortText
    duration_minutes: Int = Field(ge=5, le=480)
    price: Price
    active: bool = True


class WeeklyHours(Opening):
    capacity: Int = Field(ge=1, le=500, description="patients per window")


class ClinicSetup(Body):
    time_zone: str = Field(max_length=64, description="IANA, e.g. Asia/Jakarta")
    window_minutes: Int = Field(ge=5, le=240)
    weekly: list[WeeklyHours] = Field(max_length=28, description="a day not listed is closed")
    closed_dates: list[Day] = Field(default_factory=list, max_length=366)
    services: list[ServiceIn] = Field(min_length=1, max_length=50)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClinicSetup:
        ids = [s.id for s in self.services]
        if len(set(ids)) != len(ids):
            raise ValueError("service ids must be unique")
        for day in Weekday:
            spans = sorted((h.opens, h.closes) for h in self.weekly if h.day is day)
            if any(later[0] < earlier[1] for earlier, later in pairwise(spans)):
                raise ValueError(f"opening hours overlap on {day.value}")
        return self

    def document(self) -> dict[str, Any]:
        return {
            "schedule": {
                "timeZone": self.time_zone,
                "windowMinutes": self.window_minutes,
                "weekly": [h.model_dump(mode="json", by_alias=True) for h in self.weekly],
                "closedDates": sorted({d.isoformat() for d in self.closed_dates}),
            },
            "services": [
                {
                    "id": s.id,
                    "name": s.name,
                    "durationMinutes": s.duration_minutes,
                    "price": {
                        "currency": s.price.money().currency,
                        "amountMinor": s.price.money().amount_minor,
                    },
                    "active": s.active,
                }
                for s in self.services
            ],
        }


class ServiceView(View):
    id: str
    name: str
    duration_minutes: int
    price: dict[str, str]
    active: bool


class ClinicView(View):
    clinic_uid: str
    time_zone: str
    window_minutes: int
    weekly: list[dict[str, Any]]
    closed_dates: list[str]
    services: list[ServiceView]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> ClinicView:
        schedule = doc["schedule"]
        return cls(
            clinic_uid=doc["clinicUid"],
            time_zone=schedule["timeZone"],
            window_minutes=schedule["windowMinutes"],
            weekly=schedule["weekly"],
            closed_dates=schedule.get("closedDates", []),
            services=[
                ServiceView(
                    id=s["id"],
                    name=s["name"],
                    duration_minutes=s["durationMinutes"],
                    price=price_view(s["price"]) or {},
                    active=s.get("active", True),
                )
                for s in doc.get("services", [])
            ],
        )


class BookingRequest(Body):
    clinic_uid: DocId
    service_id: Slug
    window_start: Instant = Field(description="the window's start, with its UTC offset")
    note: str | None = Field(default=None, max_length=500)


class BookingView(View):
    id: Annotated[str, ResourceId(service.BOOKINGS)]
    clinic_uid: str
    patient_uid: str
    service_id: str
    service_name: str
    duration_minutes: int
    price: dict[str, str] = Field(description="at request time: what the payment charges")
    window_start: datetime
    window_end: datetime
    window_date: str = Field(description="the window's local date at the clinic")
    note: Health[str | None] = None  # the pipeline logs each one handed out
    status: Status
    decline_reason: str | None = None
    requested_at: datetime
    answer_by: datetime = Field(description="declined automatically if not answered by then")
    updated_at: datetime | None = None
    queue_position: int | None = Field(
        default=None, description="1 = next to be answered; only while requested"
    )
    payment: PaymentSummary | None = None
    refund: str | None = Field(
        default=None, description="on a paid booking that ended: full or none (refund policy)"
    )

    @classmethod
    def of(cls, doc: dict[str, Any], position: int | None = None) -> BookingView:
        data = {k: v for k, v in doc.items() if k in cls.model_fields or k in _ALIASES}
        data["price"] = price_view(doc["price"])
        data["payment"] = PaymentSummary.of(doc.get("payment"))
        return cls.model_validate({**data, "queuePosition": position})


_ALIASES = {f.alias for f in BookingView.model_fields.values() if f.alias}


class BookingList(View):
    items: list[BookingView]
    next_cursor: str | None


class DeclineBody(Body):
    reason: str = Field(min_length=3, max_length=500)


class SweepResult(View):
    declined: int
    more: bool = Field(description="the batch was full: call again")


class UnansweredQuery(Page):
    clinic_uid: DocId | None = None


class WindowView(View):
    start: datetime
    end: datetime
    date: str
    capacity: int
    held: int
    free: int
    counts: dict[str, int]

    @classmethod
    def of(cls, row: rules.WindowLoad) -> WindowView:
        return cls(
            start=row.window.start,
            end=row.window.end,
            date=row.window.local_date.isoformat(),
            capacity=row.window.capacity,
            held=row.held,
            free=row.free,
            counts=row.counts,
        )


class OpenWindow(View):
    start: datetime
    end: datetime
    free: int = Field(
        description="places not yet taken by accepted bookings (0: full; a request may still "
        "queue for a place that frees)"
    )


class OpenWindows(View):
    clinic_uid: str
    date: str
    windows: list[OpenWindow]


class DayQuery(Body):
    day: Day | None = Field(default=None, description="local date; default today")


class DayListQuery(Page):
    day: Day | None = Field(default=None, description="local date; default today")
    status: Status | None = None


class DayView(View):
    clinic_uid: str
    date: str
    totals: dict[str, int]
    windows: list[WindowView]


class LoadQuery(Body):
    from_date: Day | None = Field(default=None, description="local date; default today")
    days: Int = Field(default=7, ge=1, le=14)


class LoadView(View):
    clinic_uid: str
    windows: list[WindowView]


class StatsQuery(Body):
    from_date: Day
    to_date: Day = Field(description="inclusive")


class DayCounts(View):
    date: str
    counts: dict[str, int]


class StatsView(View):
    clinic_uid: str
    from_date: str
    to_date: str
    totals: dict[str, int]
    by_day: list[DayCounts]


# -- clinic setup -----------------------------------------------------------------------


def _clinic_uid(call: Call) -> str:
    uid: str = call.params["clinic_uid"]
    return call.principal.uid if uid == "me" else uid


def _own_clinic(call: Call) -> dict[str, Any]:
    """The clinic's setup, for its own clinic or an admin (404 for anyone else, or none)."""
    uid = _clinic_uid(call)
    call.authorize({"clinicUid": uid})
    clinic = service.get_clinic(uid)
    if clinic is None:
        raise NotFound("This clinic has not set up bookings.", code="clinic_not_set_up")
    return clinic


@api.route("GET", "/clinics/<clinic_uid>", response=ClinicView)
def get_clinic(call: Call) -> ClinicView:
    """A clinic's services and weekly schedule (`me` for one's own)."""
    uid = _clinic_uid(call)
    if call.principal.role is not Role.ADMIN and uid != call.principal.uid:
        # Others see only clinics that take bookings (approved, enabled), as the directory does.
        return ClinicView.of(service.bookable_clinic(uid))
    clinic = service.get_clinic(uid)
    if clinic is None:
        raise NotFound("This clinic has not set up bookings.", code="clinic_not_set_up")
    return ClinicView.of(clinic)


@api.route("GET", "/clinics/<clinic_uid>/windows", query=DayQuery, response=OpenWindows)
def open_windows(call: Call) -> OpenWindows:
    """A clinic's windows on one local day (default today) that can still be asked for, each
    with its places left: what a patient picks `windowStart` from."""
    clinic, day, rows = service.open_windows(_clinic_uid(call), call.query.day)
    return OpenWindows(
        clinic_uid=clinic["clinicUid"],
        date=day.isoformat(),
        windows=[OpenWindow(start=r.window.start, end=r.window.end, free=r.free) for r in rows],
    )


@api.route("PUT", "/clinics/<clinic_uid>", body=ClinicSetup, response=ClinicView)
def set_clinic(call: Call) -> ClinicView:
    """Set the clinic's services (name, duration, price, active) and capacity per window."""
    uid = _clinic_uid(call)
    call.authorize({"clinicUid": uid})
    body: ClinicSetup = call.body
    return ClinicView.of(service.save_clinic(uid, body.document(), actor=call.principal.uid))


# -- bookings ---------------------------------------------------------------------------


@api.route(
    "POST",
    "/",
    body=BookingRequest,
    response=BookingView,
    status=201,
    problems=(404, 409),
    headers=(idempotency.HEADER,),
)
def request_booking(call: Call) -> Reply:
    """Request a place in a window; the answer tells the place in the clinic's queue."""
    b: BookingRequest = call.body
    key = call.idempotency_key(service.IDEMPOTENCY_SCOPE)
    booking, replayed = service.request(
        service.NewBooking(
            patient_uid=call.principal.uid,
            patient_email=call.principal.email,
            clinic_uid=b.clinic_uid,
            service_id=b.service_id,
            window_start=b.window_start,
            note=b.note,
        ),
        key,
    )
    if replayed:
        call.headers["Idempotent-Replayed"] = "true"
    return Reply(BookingView.of(booking, service.queue_position(booking)))


@api.route("GET", "/", query=Page, response=BookingList)
def my_bookings(call: Call) -> BookingList:
    """Your bookings, newest first, with status and (while requested) queue position."""
    q: Page = call.query
    items, cursor = service.list_for_patient(call.principal.uid, limit=q.limit, cursor=q.cursor)
    return BookingList(
        items=stored.readable(lambda i: BookingView.of(i, service.queue_position(i)), items),
        next_cursor=cursor,
    )


def _booking(call: Call) -> dict[str, Any]:
    return call.authorize(service.get(call.params["booking_id"]))


@api.route("GET", "/<booking_id>", response=BookingView)
def get_booking(call: Call) -> BookingView:
    """One booking, with its queue position while requested."""
    booking = _booking(call)
    return BookingView.of(booking, service.queue_position(booking))


def _transition(action: Action, summary: str) -> None:
    def handler(call: Call) -> BookingView:
        booking = _booking(call)
        reason = call.body.reason if isinstance(call.body, DeclineBody) else None
        moved = service.apply(
            booking["id"], action, actor=call.principal.uid, reason=reason, ending=REFUND
        )
        return BookingView.of(moved)

    handler.__name__ = handler.__qualname__ = f"{action.name.lower()}_booking"
    api.route(
        "POST",
        f"/<booking_id>/{action.value}",
        body=DeclineBody if action is Action.DECLINE else None,
        response=BookingView,
        summary=summary,
        problems=(409,),
    )(handler)


_transition(Action.ACCEPT, "Accept a request, while its window has a free place")
_transition(Action.DECLINE, "Decline a request, with a reason the patient is told")
_transition(Action.CHECK_IN, "The patient arrived")
_transition(Action.COMPLETE, "The visit is over")
_transition(Action.NO_SHOW, "The patient did not come")
_transition(Action.CANCEL, "Cancel one's booking, until its window starts")


@api.route("POST", "/sweep", query=SweepQuery, response=SweepResult)
def sweep(call: Call) -> SweepResult:
    """Decline requests not answered by their deadline, a bounded batch at a time."""
    declined, more = service.sweep(limit=call.query.limit, ending=REFUND)
    return SweepResult(declined=declined, more=more)


@api.route("GET", "/unanswered", query=UnansweredQuery, response=BookingList)
def unanswered(call: Call) -> BookingList:
    """The oldest unanswered requests first, of one clinic or of all."""
    q: UnansweredQuery = call.query
    items, cursor = service.list_unanswered(q.clinic_uid, limit=q.limit, cursor=q.cursor)
    return BookingList(items=stored.readable(BookingView.of, items), next_cursor=cursor)


# -- the clinic's queue and dashboards --------------------------------------------------


@api.route("GET", "/clinics/<clinic_uid>/requests", query=Page, response=BookingList)
def clinic_requests(call: Call) -> BookingList:
    """The clinic's unanswered requests, first come first served, with queue positions."""
    uid = _clinic_uid(call)
    call.authorize({"clinicUid": uid})
    q: Page = call.query
    items, cursor = service.list_unanswered(uid, limit=q.limit, cursor=q.cursor)
    first = service.queue_position(items[0]) if items else None
    return BookingList(
        items=[
            BookingView.of(b, None if first is None else first + i) for i, b in enumerate(items)
        ],
        next_cursor=cursor,
    )


@api.route("GET", "/clinics/<clinic_uid>/day", query=DayQuery, response=DayView)
def day_queue(call: Call) -> DayView:
    """One local day (default today): each window's bookings by status, against capacity."""
    clinic = _own_clinic(call)
    day = call.query.day or service.today(clinic)
    rows = service.day_queue(clinic, day)
    totals = rules.empty_counts()
    for row in rows:
        for status, n in row.counts.items():
            totals[status] += n
    return DayView(
        clinic_uid=clinic["clinicUid"],
        date=day.isoformat(),
        totals=totals,
        windows=[WindowView.of(r) for r in rows],
    )


@api.route("GET", "/clinics/<clinic_uid>/bookings", query=DayListQuery, response=BookingList)
def day_bookings(call: Call) -> BookingList:
    """One local day's bookings (default today), by window, optionally of one status."""
    clinic = _own_clinic(call)
    q: DayListQuery = call.query
    items, cursor = service.list_for_day(
        clinic["clinicUid"],
        q.day or service.today(clinic),
        q.status,
        limit=q.limit,
        cursor=q.cursor,
    )
    return BookingList(items=stored.readable(BookingView.of, items), next_cursor=cursor)


@api.route("GET", "/clinics/<clinic_uid>/load", query=LoadQuery, response=LoadView)
def window_load(call: Call) -> LoadView:
    """The next days' windows (default 7 from today): places held against capacity."""
    clinic = _own_clinic(call)
    q: LoadQuery = call.query
    rows = service.load(clinic, q.from_date or service.today(clinic), q.days)
    return LoadView(clinic_uid=clinic["clinicUid"], windows=[WindowView.of(r) for r in rows])


@api.route("GET", "/clinics/<clinic_uid>/stats", query=StatsQuery, response=StatsView)
def clinic_stats(call: Call) -> StatsView:
    """Counts by status of the bookings in a range of local days, in total and by day."""
    uid = _clinic_uid(call)
    call.authorize({"clinicUid": uid})
    q: StatsQuery = call.query
    if q.to_date < q.from_date:
        raise BadRequest("toDate is before fromDate.", code="invalid_range")
    result = service.stats(uid, q.from_date, q.to_date)
    return StatsView(
        clinic_uid=uid,
        from_date=q.from_date.isoformat(),
        to_date=q.to_date.isoformat(),
        totals=result.totals,
        by_day=[DayCounts(date=d.isoformat(), counts=c) for d, c in result.by_day],
    )


@functions_framework.http
def bookings(request: flask.Request) -> flask.Response:
    return api.handle(request)
