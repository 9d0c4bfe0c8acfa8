"""The `privacy` function: an account's rights over its data (issue 27).

Routes (under /privacy); the consent gate lets every signed-in account in here, consents or not:
  GET  /notices                      the notices in force, their texts in a locale
  GET  /consents                     what the caller must accept, and has accepted
  POST /consents                     accept a version of a notice
  POST /consents/withdraw            withdraw the health-data consent
  POST /exports                      ask for an export of everything held about the caller
  GET  /exports/{id}                 the request: state, deadline, progress
  GET  /exports/{id}/data            a page of the export as JSON (cursor)
  GET  /exports/{id}/fhir            a page of the clinical records as a FHIR R4 Bundle
  GET  /exports/{id}/parts/{n}       a built part of the export (once its build is done)
  POST /tasks/export                 build one part of an export (Cloud Tasks only)
  POST /erasure                      ask for the account's erasure (after the cooling-off)
  GET  /erasure/{id}                 the request: state, when it takes effect, what blocks it
  POST /erasure/{id}/cancel          take it back during the cooling-off (or while blocked)
  POST /erasure/run                  erase what is due (Cloud Scheduler; admins by hand)
  POST /holds/sweep                  erase held records whose retention is over (Cloud Scheduler)
  GET  /requests?state=             every request, its deadline, state and handler (admins)
"""

from datetime import datetime
from typing import Annotated, Any, Literal

import flask
import functions_framework
from pydantic import Field

from shared.identity import consent
from shared.platform import stored
from shared.platform.disclosure import Health, ResourceId
from shared.platform.errors import DependencyUnavailable, NotFound
from shared.platform.fields import DocId, Int
from shared.platform.models import Body, Page, SweepQuery, View
from shared.privacy import consents, erasure, holds, rules, service
from shared.web.http import Call, Function, Reply

api = Function(
    "privacy",
    title="Alo Doktor personal data",
    description="Consent to the privacy notice and to health data, export, and erasure.",
)

Document = Literal["privacy", "health"]
Locale = Literal["en", "tr"]


# -- consent ------------------------------------------------------------------------------------


class NoticeQuery(Body):
    locale: Locale = "en"


class Notice(View):
    document: str
    version: int
    locale: str
    text: str


class Notices(View):
    items: list[Notice]


@api.route("GET", "/notices", query=NoticeQuery, response=Notices, problems=(404,))
def notices(call: Call) -> Notices:
    """The notices in force for the caller's role, with their texts."""
    locale = call.query.locale
    return Notices(
        items=[
            Notice(document=d, version=v, locale=locale, text=consents.text(d, v, locale))
            for d, v in sorted(consent.required(call.principal.role).items())
        ]
    )


class Version(View):
    document: str
    version: int


class Accepted(View):
    document: str
    version: int = Field(description="0: withdrawn")
    accepted_at: datetime | None = None
    withdrawn_at: datetime | None = None


class ConsentState(View):
    required: list[Version]
    missing: list[Version]
    accepted: list[Accepted]


class Acceptance(Body):
    document: Document
    version: Int = Field(ge=1, le=1000)
    locale: Locale = "en"


class Withdrawal(Body):
    document: Document


@api.route("GET", "/consents", response=ConsentState)
def get_consents(call: Call) -> ConsentState:
    """What you must accept, and what you accepted."""
    return ConsentState.model_validate(consents.view(call.principal.uid, call.principal.role))


@api.route("POST", "/consents", body=Acceptance, response=ConsentState, problems=(409,))
def accept(call: Call) -> ConsentState:
    """Accept a version of a notice; the next request sees it."""
    p, body = call.principal, call.body
    consents.accept(p.uid, p.role, body.document, body.version, body.locale)
    return ConsentState.model_validate(consents.view(p.uid, p.role))


@api.route("POST", "/consents/withdraw", body=Withdrawal, response=ConsentState, problems=(409,))
def withdraw(call: Call) -> ConsentState:
    """Withdraw your health-data consent: care notices stop, and the product asks again."""
    p = call.principal
    consents.withdraw(p.uid, call.body.document)
    return ConsentState.model_validate(consents.view(p.uid, p.role))


# -- requests -----------------------------------------------------------------------------------


class Progress(View):
    step: int
    steps: int


class BuildView(View):
    """An export's build: one part at a time (a Cloud Task each), then the download."""

    state: str = Field(description="queued, building, done, not_queued (download the pages)")
    parts: int = Field(description="parts built so far")
    records: int = Field(description="records in them")
    step: int
    steps: int
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="the download ends then")
    download: str | None = Field(default=None, description="the first part, once done")


class RequestView(View):
    id: str
    uid: str
    kind: str
    state: str
    requested_at: datetime
    due_at: datetime = Field(description="the legal deadline of the answer (30 days)")
    erase_after: datetime | None = None
    handled_by: str | None = None
    completed_at: datetime | None = None
    progress: Progress | None = None
    blocked_by: list[str] | None = Field(
        default=None,
        description="erasure: what the account must settle first (its role when the run came: "
        "open_appointments, open_bookings, payouts_in_transit, money_owed); the run looks again",
    )
    blocked_at: datetime | None = None
    build: BuildView | None = None

    @classmethod
    def of(cls, d: dict[str, Any]) -> "RequestView":
        build = d.get("build")
        if isinstance(build, dict):
            done = build.get("state") == rules.BuildState.DONE.value
            link = f"/privacy/exports/{d['id']}/parts/0" if done else None
            d = {**d, "build": {**build, "download": link}}
        return cls.model_validate(d)


def _own_request(call: Call, kind: str) -> dict[str, Any]:
    found = service.get_request(call.params["request_id"])
    if found is not None and found.get("kind") != kind:
        found = None
    return call.authorize(found)


@api.route("POST", "/exports", response=RequestView, status=201)
def create_export(call: Call) -> RequestView:
    """Ask for everything held about you: it is built in parts (see `build` on the request),
    then downloaded part by part; its pages can be downloaded as they are made meanwhile."""
    req = service.new_request(call.principal, rules.RequestKind.EXPORT, rules.RequestState.READY)
    return RequestView.of(service.start_build(req, call.principal.uid))


@api.route("GET", "/exports/<request_id>", response=RequestView)
def get_export(call: Call) -> RequestView:
    """Your export request: its state, deadline and how far its download got."""
    return RequestView.of(_own_request(call, "export"))


class PageQuery(Body):
    cursor: str | None = Field(default=None, max_length=512)


class Record(View):
    collection: str
    id: str
    data: dict[str, Any]


# A record holding the account's own health data: shown as a Record, marked so its read entry
# is written (the pipeline finds the subclass' marks on the instance). One for every holding
# personal data counts as health (shared/privacy/rules.py HOLDINGS; a test holds them equal).
class AppointmentRecord(Record):
    collection: str = "appointments"
    id: Annotated[str, ResourceId("appointments")]
    data: Health[dict[str, Any]]


class PrescriptionRecord(Record):
    collection: str = "prescriptions"
    id: Annotated[str, ResourceId("prescriptions")]
    data: Health[dict[str, Any]]


class BookingRecord(Record):
    collection: str = "bookings"
    id: Annotated[str, ResourceId("bookings")]
    data: Health[dict[str, Any]]


HEALTH_RECORDS: dict[str, type[Record]] = {
    "appointments": AppointmentRecord,
    "prescriptions": PrescriptionRecord,
    "bookings": BookingRecord,
}


class ExportPage(View):
    request_id: str
    items: list[Record]
    next_cursor: str | None
    progress: Progress


def _record(r: service.Record) -> Record:
    if r.health:
        return HEALTH_RECORDS[r.collection].model_validate({"id": r.id, "data": r.data})
    return Record(collection=r.collection, id=r.id, data=r.data)


@api.route("GET", "/exports/<request_id>/data", query=PageQuery, response=ExportPage)
def export_data(call: Call) -> ExportPage:
    """A page of your export, as stored (follow nextCursor until it is null)."""
    req = _own_request(call, "export")
    page = service.export_page(req["uid"], call.query.cursor)
    service.record_progress(req["id"], page, call.principal.uid)
    return ExportPage(
        request_id=req["id"],
        items=[_record(r) for r in page.records],
        next_cursor=page.next_cursor,
        progress=Progress(step=page.step, steps=page.steps),
    )


class PartView(View):
    request_id: str
    part: int
    parts: int
    items: list[Record]
    next: str | None = Field(description="the next part's address; null: the last")


_PART = 6  # digits of a part's number, at most


@api.route("GET", "/exports/<request_id>/parts/<part>", response=PartView, problems=(404,))
def export_part(call: Call) -> PartView:
    """A built part of your export, as stored (follow `next` until it is null)."""
    req = _own_request(call, "export")
    raw = call.params["part"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _PART):
        raise NotFound("No such part.", code="export_part_missing")
    part = int(raw)
    records, parts = service.read_part(req, part)
    nxt = f"/privacy/exports/{req['id']}/parts/{part + 1}" if part + 1 < parts else None
    return PartView(
        request_id=req["id"],
        part=part,
        parts=parts,
        items=[_record(r) for r in records],
        next=nxt,
    )


class ExportTask(Body):
    request_id: DocId
    part: Int = Field(ge=0, le=10**_PART - 1)


@api.route("POST", "/tasks/export", body=ExportTask, response=BuildView, problems=(404, 409, 503))
def build_export(call: Call) -> BuildView:
    """Build one part of an export, then queue the next (the Cloud Task's target)."""
    b = call.body
    build = service.build_part(b.request_id, b.part, call.caller.uid)
    if build.get("state") == rules.BuildState.BUILDING.value:
        try:
            service.enqueue_part(b.request_id, int(build["parts"]))
        except Exception as exc:  # this delivery is retried, and queues the next one then
            raise DependencyUnavailable("The next part could not be queued.") from exc
    return BuildView.model_validate(build)


class FhirEntry(View):
    full_url: str
    resource: dict[str, Any]


class HealthFhirEntry(FhirEntry):
    # Which record the entry shows (not sent: a Bundle entry has no such field), so its read
    # entry is written as for any answer carrying health data.
    source: Annotated[str, ResourceId("prescriptions")] = Field(default="", exclude=True)
    resource: Health[dict[str, Any]]


class VisitFhirEntry(FhirEntry):
    source: Annotated[str, ResourceId("appointments")] = Field(default="", exclude=True)
    resource: Health[dict[str, Any]]


class FhirBundle(View):
    resource_type: Literal["Bundle"] = "Bundle"
    type: Literal["collection"] = "collection"
    timestamp: str
    entry: list[FhirEntry]
    link: list[dict[str, str]]


@api.route("GET", "/exports/<request_id>/fhir", query=PageQuery, response=FhirBundle)
def export_fhir(call: Call) -> FhirBundle:
    """A page of your clinical records as a FHIR R4 Bundle (its `next` link: the next page)."""
    req = _own_request(call, "export")
    page = service.export_page(req["uid"], call.query.cursor, clinical_only=True)
    entries: list[FhirEntry] = []
    sources = {r.id: r for r in page.records}
    for resource in service.fhir_resources(req["uid"], str(req.get("role")), page.records):
        e = rules.entry(resource)
        kind = resource["resourceType"]
        if kind == "MedicationRequest":
            group = resource["groupIdentifier"]["value"]
            entries.append(
                HealthFhirEntry(full_url=e["fullUrl"], resource=e["resource"], source=group)
            )
        elif kind == "Appointment" and resource["identifier"][0]["value"] in sources:
            entries.append(
                VisitFhirEntry(
                    full_url=e["fullUrl"],
                    resource=e["resource"],
                    source=resource["identifier"][0]["value"],
                )
            )
        else:
            entries.append(FhirEntry(full_url=e["fullUrl"], resource=e["resource"]))
    link = [{"relation": "self", "url": f"/privacy/exports/{req['id']}/fhir"}]
    if page.next_cursor:
        link.append(
            {
                "relation": "next",
                "url": f"/privacy/exports/{req['id']}/fhir?cursor={page.next_cursor}",
            }
        )
    from shared.platform import clock

    return FhirBundle(
        timestamp=clock.now().isoformat().replace("+00:00", "Z"), entry=entries, link=link
    )


@api.route("POST", "/erasure", response=RequestView, status=201, also=(200,), problems=(401, 409))
def request_erasure(call: Call) -> Reply:
    """Close your account: it is erased after the cooling-off period, unless you cancel.

    It needs a sign-in from the last few minutes (else 401 `reauthenticate`: sign in again and
    repeat); the owner is told by e-mail when it takes effect and how to cancel it."""
    req, new = erasure.request(call.principal)
    return Reply(RequestView.of(req), 201 if new else 200)


@api.route("GET", "/erasure/<request_id>", response=RequestView)
def get_erasure(call: Call) -> RequestView:
    """Your erasure request: its state, when it takes effect, and what blocks it, if anything."""
    return RequestView.of(_own_request(call, "erasure"))


@api.route("POST", "/erasure/<request_id>/cancel", response=RequestView, problems=(409,))
def cancel_erasure(call: Call) -> RequestView:
    """Take back your erasure request while it waits."""
    return RequestView.of(erasure.cancel(call.principal, _own_request(call, "erasure")))


class RunView(View):
    erased: list[str]
    blocked: list[str]
    continuing: list[str]


@api.route("POST", "/erasure/run", query=SweepQuery, response=RunView)
def run_erasure(call: Call) -> RunView:
    """Erase the accounts whose cooling-off period is over."""
    return RunView(**erasure.run(call.query.limit, call.caller.uid))


class HoldSweepQuery(Body):
    """How many held records one call may erase or strip, at most."""

    limit: Int = Field(default=500, ge=1, le=2000)


class HoldSweepView(View):
    holds: list[str] = Field(description="the holds worked on (by uid)")
    closed: list[str] = Field(description="holds with nothing left to erase")
    continuing: list[str] = Field(description="holds with more due: the next call goes on")
    erased: int = Field(description="records deleted")
    stripped: int = Field(description="records kept for others, the account taken out")


@api.route("POST", "/holds/sweep", query=HoldSweepQuery, response=HoldSweepView)
def sweep_holds(call: Call) -> HoldSweepView:
    """Erase what erased accounts' legal holds kept, once its retention period is over."""
    return HoldSweepView(**holds.sweep(call.query.limit, call.caller.uid))


class RequestList(View):
    items: list[RequestView]
    next_cursor: str | None


class RequestQuery(Page):
    state: rules.RequestState | None = Field(
        default=None, description="only the requests in this state (the blocked ones, say)"
    )


@api.route("GET", "/requests", query=RequestQuery, response=RequestList)
def list_requests(call: Call) -> RequestList:
    """Every request, newest first: its legal deadline, state and who handled it."""
    state = call.query.state.value if call.query.state is not None else None
    items, cursor = service.list_requests(
        state=state, limit=call.query.limit, cursor=call.query.cursor
    )
    return RequestList(items=stored.readable(RequestView.of, items), next_cursor=cursor)


# -- the entry point ----------------------------------------------------------------------


@functions_framework.http
def privacy(request: flask.Request) -> flask.Response:
    return api.handle(request)
