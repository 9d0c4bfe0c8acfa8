"""The `notifications` function: devices, preferences, unsubscribe, Twilio's reports, and the
admin's view of notices, the event log and its dashboards.

Routes (under /notifications):
  POST   /devices                   register this device's push token (signed in)
  GET    /devices                   the caller's devices
  DELETE /devices/{deviceId}        forget one of the caller's devices
  GET    /preferences               the caller's preferences (defaults filled in)
  PUT    /preferences               change them: locale, time zone, quiet hours, per category
                                    and channel on/off (security and account notices stay on)
  GET    /unsubscribe?token=        what a one-click unsubscribe link would turn off (public;
                                    a browser gets a page with one button that does it)
  POST   /unsubscribe?token=        RFC 8058 one-click unsubscribe (public: the signed,
                                    expiring token is the credential; a browser gets a page)
  POST   /twilio/status?n=          Twilio's status callback (public: X-Twilio-Signature)
  GET    /notices                   admin: notices, newest first, by user and/or status
  GET    /notices/{noticeId}        admin: one notice's delivery history
  POST   /notices/{noticeId}/retry  admin: retry what failed, now
  GET    /events                    admin: the domain event log, newest first
  GET    /analytics?start=&end=     admin: daily aggregates
  POST   /sweep                     Cloud Scheduler (and admins): deliver what is due

Twilio, mail providers and the unsubscribe page post forms (urlencoded, or multipart as RFC 8058
prefers): those two routes take a form as well as JSON (`form=True`, shared/web/forms.py),
validated as the same model.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.notify import activity, rules, templates
from shared.notify import service as notify
from shared.platform import settings, stored
from shared.platform.errors import BadRequest, Forbidden, NotFound
from shared.platform.fields import Day, DocId
from shared.platform.models import Body, Page, SweepQuery, View
from shared.web import pages
from shared.web.http import Call, Function
from shared.web.pages import Html

api = Function(
    "notifications",
    title="Alo Doktor notifications",
    description=(
        "Push devices, notification preferences and one-click unsubscribe; Twilio's delivery "
        "reports; notices' delivery history, the domain event log and daily analytics."
    ),
)

# -- devices -----------------------------------------------------------------------------


class DeviceBody(Body):
    token: str = Field(min_length=16, max_length=4096, description="the FCM registration token")
    platform: Literal["android", "ios", "web"]


class DeviceView(View):
    id: str
    platform: str
    token_end: str = Field(description="the last characters of the token, to tell devices apart")
    created_at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> DeviceView:
        return cls(
            id=doc["id"],
            platform=doc["platform"],
            token_end=str(doc["token"])[-6:],
            created_at=doc["createdAt"],
        )


class DeviceList(View):
    items: list[DeviceView]


@api.route("POST", "/devices", body=DeviceBody, response=DeviceView, status=201)
def register_device(call: Call) -> DeviceView:
    """Register this device's push token for the caller (re-registering is harmless)."""
    body: DeviceBody = call.body
    return DeviceView.of(notify.register_device(call.principal.uid, body.token, body.platform))


@api.route("GET", "/devices", response=DeviceList)
def list_devices(call: Call) -> DeviceList:
    """The caller's registered devices."""
    docs = notify.devices_of(call.principal.uid)
    return DeviceList(items=stored.readable(DeviceView.of, docs))


@api.route("DELETE", "/devices/<device_id>", status=204, problems=(404,))
def delete_device(call: Call) -> None:
    """Forget one of the caller's devices: it gets no more push."""
    device = call.authorize(notify.device(call.params["device_id"]))
    notify.delete_device(device["id"], call.principal.uid)


# -- preferences -------------------------------------------------------------------------

Switches = dict[rules.Channel, bool]


class QuietHours(Body):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, local time")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, local time")


class PreferencesBody(Body):
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Za-z]{2})?$")
    time_zone: str | None = Field(default=None, min_length=1, max_length=64)
    quiet_hours: QuietHours | None = Field(
        default=None, description="null turns quiet hours off; leave it out to keep them"
    )
    channels: dict[rules.Category, Switches] | None = Field(
        default=None, description="per category, per channel: on or off"
    )


class PreferencesView(View):
    locale: str
    time_zone: str
    quiet_hours: dict[str, str] | None
    channels: dict[str, dict[str, bool]]


@api.route("GET", "/preferences", response=PreferencesView)
def get_preferences(call: Call) -> PreferencesView:
    """The caller's notification preferences."""
    return PreferencesView.model_validate(notify.preferences(call.principal.uid))


@api.route("PUT", "/preferences", body=PreferencesBody, response=PreferencesView, problems=(400,))
def put_preferences(call: Call) -> PreferencesView:
    """Change the caller's preferences; what the body leaves out stays as it was."""
    body: PreferencesBody = call.body
    channels = (
        {c.value: {ch.value: on for ch, on in s.items()} for c, s in body.channels.items()}
        if body.channels
        else None
    )
    saved = notify.save_preferences(
        call.principal.uid,
        locale=body.locale,
        time_zone=body.time_zone,
        quiet_hours=body.quiet_hours.model_dump() if body.quiet_hours else None,
        channels=channels,
        replace_quiet_hours="quiet_hours" in body.model_fields_set,
    )
    return PreferencesView.model_validate(saved)


# -- one-click unsubscribe ---------------------------------------------------------------


class TokenQuery(Body):
    token: str = Field(min_length=10, max_length=1024, pattern=r"^[A-Za-z0-9_.-]+$")


class OneClick(BaseModel):
    """RFC 8058's body, as the mail provider posts it (a form; JSON here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    list_unsubscribe: Literal["One-Click"] = Field(alias="List-Unsubscribe")


class Unsubscribed(View):
    category: str
    channel: str
    unsubscribed: bool


@api.route(
    "GET", "/unsubscribe", query=TokenQuery, response=Unsubscribed, problems=(400,), html=True
)
def unsubscribe_preview(call: Call) -> Unsubscribed | Html:
    """What this unsubscribe link turns off; a browser gets a page with the one button that
    does it (a GET changes nothing: mail scanners follow links)."""
    return _unsubscribe(call, apply=False)


@api.route(
    "POST",
    "/unsubscribe",
    query=TokenQuery,
    body=OneClick,
    form=True,
    response=Unsubscribed,
    problems=(400,),
    html=True,
)
def unsubscribe(call: Call) -> Unsubscribed | Html:
    """One-click unsubscribe (RFC 8058; the page's button posts the same form): e-mail of the
    link's category off for its user."""
    return _unsubscribe(call, apply=True)


def _unsubscribe(call: Call, *, apply: bool) -> Unsubscribed | Html:
    token = call.query.token
    page = pages.wanted(call.request)
    try:
        uid, category = notify.unsubscribe(token) if apply else notify.read_unsubscribe(token)
    except BadRequest as refused:
        if not page:
            raise
        # A link that names no one we can trust: the browser's language.
        locale = pages.language(call.request, rules.LOCALES, rules.DEFAULT_LOCALE)
        state = "expired" if refused.code == "unsubscribe_token_expired" else "invalid"
        body = templates.page("unsubscribe", locale, state=state, category=None, token=None)
        return Html(body, status=refused.status)
    if not page:
        return Unsubscribed(category=category.value, channel="email", unsubscribed=apply)
    # The locale the user's mail comes in.
    locale = notify.preferences(uid)["locale"]
    state = "done" if apply else "ask"
    return Html(
        templates.page("unsubscribe", locale, state=state, category=category.value, token=token)
    )


# -- Twilio's status callback ------------------------------------------------------------


class StatusQuery(Body):
    n: DocId = Field(description="the notice the message belongs to")


class TwilioStatus(BaseModel):
    """Twilio's status callback parameters (it sends more than these, and may add some)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    message_sid: str = Field(alias="MessageSid", pattern=r"^(SM|MM)[0-9a-fA-F]{32}$")
    message_status: str = Field(alias="MessageStatus", min_length=1, max_length=32)
    account_sid: str = Field(alias="AccountSid", pattern=r"^AC[0-9a-fA-F]{32}$")
    error_code: str | None = Field(default=None, alias="ErrorCode", max_length=16)

    @model_validator(mode="before")
    @classmethod
    def _strings_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and not all(
            isinstance(v, str) and len(v) <= 2048 for v in data.values()
        ):
            raise ValueError("Twilio sends form fields: every value is a short string")
        return data


@api.route(
    "POST",
    "/twilio/status",
    query=StatusQuery,
    body=TwilioStatus,
    form=True,
    status=204,
    problems=(400, 403, 404),
)
def twilio_status(call: Call) -> None:
    """Twilio's report on a message (queued, sent, delivered, undelivered, failed)."""
    from shared.integrations import twilio

    s = settings.get()
    params: dict[str, str] = call.sent
    url = notify.status_callback_url(call.query.n) or ""
    given = call.request.headers.get(twilio.SIGNATURE_HEADER, "")
    if not twilio.valid_signature(s.twilio_auth_token, url, params, given):
        raise Forbidden("The request is not signed by Twilio.", code="signature_invalid")
    if params.get("AccountSid") != s.twilio_account_sid:
        raise Forbidden("The report is for another account.", code="signature_invalid")
    notify.record_receipt(call.query.n, params)


# -- admin: notices ----------------------------------------------------------------------


class NoticesQuery(Page):
    uid: DocId | None = None
    status: rules.Notice | None = None


class ChannelView(View):
    state: str
    attempts: int = 0
    next_at: datetime | None = None
    sent_at: datetime | None = None
    reason: str | None = None
    last_error: str | None = None
    provider_id: str | None = None


class NoticeView(View):
    id: str
    uid: str | None
    kind: str | None
    status: str | None
    outcome: str | None = None
    created_at: datetime | None
    due_at: datetime | None = None
    cancelled: bool = False
    data_keys: list[str] = Field(description="what the notice carries (values are not shown)")
    channels: dict[str, ChannelView]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> NoticeView:
        return cls(
            id=doc["id"],
            uid=doc.get("uid"),
            kind=doc.get("kind"),
            status=doc.get("status") or ("cancelled" if doc.get("cancelled") else None),
            outcome=doc.get("outcome"),
            created_at=doc.get("createdAt"),
            due_at=doc.get("dueAt"),
            cancelled=bool(doc.get("cancelled")),
            data_keys=sorted(doc.get("data") or {}),
            channels={
                name: ChannelView.model_validate(c)
                for name, c in (doc.get("channels") or {}).items()
            },
        )


class NoticeList(View):
    items: list[NoticeView]
    next_cursor: str | None


class AttemptView(View):
    channel: str
    attempt: int
    at: datetime
    outcome: str
    detail: str
    provider_id: str | None = None


class ReceiptView(View):
    sid: str
    status: str
    error_code: int | None = None
    at: datetime


class NoticeHistory(View):
    notice: NoticeView
    attempts: list[AttemptView]
    receipts: list[ReceiptView]


@api.route("GET", "/notices", query=NoticesQuery, response=NoticeList)
def list_notices(call: Call) -> NoticeList:
    """Notices, newest first, of one user and/or in one status."""
    q: NoticesQuery = call.query
    items, cursor = notify.list_notices(
        uid=q.uid, status=q.status.value if q.status else None, limit=q.limit, cursor=q.cursor
    )
    return NoticeList(items=stored.readable(NoticeView.of, items), next_cursor=cursor)


def _history(notice_id: str) -> NoticeHistory:
    notice = call_notice(notice_id)
    attempts, receipts = notify.history(notice_id)
    return NoticeHistory(
        notice=NoticeView.of(notice),
        attempts=stored.readable(AttemptView.model_validate, attempts),
        receipts=stored.readable(ReceiptView.model_validate, receipts),
    )


def call_notice(notice_id: str) -> dict[str, Any]:
    notice = notify.get_notice(notice_id)
    if notice is None:
        raise NotFound("No such notice.", code="notice_not_found")
    return notice


@api.route("GET", "/notices/<notice_id>", response=NoticeHistory, problems=(404,))
def notice_history(call: Call) -> NoticeHistory:
    """One notice: its channels' states, every attempt, and Twilio's reports."""
    return _history(call.params["notice_id"])


@api.route("POST", "/notices/<notice_id>/retry", response=NoticeHistory, problems=(404, 409))
def retry_notice(call: Call) -> NoticeHistory:
    """Retry a notice's failed channels now (a fresh round of attempts)."""
    notice_id = call.params["notice_id"]
    call_notice(notice_id)
    notify.retry(notice_id, call.principal.uid)
    return _history(notice_id)


# -- admin: the event log and analytics --------------------------------------------------


class EventsQuery(Page):
    kind: str | None = Field(default=None, pattern=r"^[a-z_]{3,40}$")
    uid: DocId | None = None


class EventView(View):
    id: str
    kind: str
    subject: str
    uid: str | None
    actor: str
    at: datetime
    day: str
    data: dict[str, Any]
    amount_minor: int | None = None
    currency: str | None = None


class EventList(View):
    items: list[EventView]
    next_cursor: str | None


@api.route("GET", "/events", query=EventsQuery, response=EventList)
def list_events(call: Call) -> EventList:
    """The domain event log, newest first, of one kind and/or about one user."""
    q: EventsQuery = call.query
    items, cursor = activity.feed(kind=q.kind, uid=q.uid, limit=q.limit, cursor=q.cursor)
    return EventList(items=stored.readable(EventView.model_validate, items), next_cursor=cursor)


class AnalyticsQuery(Body):
    start: Day
    end: Day

    @model_validator(mode="after")
    def _a_range(self) -> AnalyticsQuery:
        if self.end < self.start:
            raise ValueError("end is before start")
        if (self.end - self.start).days >= activity.MAX_DAYS:
            raise ValueError(f"at most {activity.MAX_DAYS} days at once")
        return self


class DayView(View):
    day: str
    bookings: int
    payments: int
    revenue_minor: dict[str, int]
    refunds: int
    refunded_minor: dict[str, int]
    conversion: float | None = Field(description="payments / bookings that day")
    no_shows: int
    sign_ups: int = Field(description="accounts made that day (self sign-up or by an admin)")
    payouts_sent: int = Field(description="payouts PayPal paid to providers that day")
    paid_out_minor: dict[str, int]
    counts: dict[str, int]


class Analytics(View):
    days: list[DayView]


@api.route("GET", "/analytics", query=AnalyticsQuery, response=Analytics)
def analytics(call: Call) -> Analytics:
    """Daily aggregates (UTC days): bookings, payments and revenue, refunds, conversion from
    booked to paid, no-shows, sign-ups, payouts sent."""
    q: AnalyticsQuery = call.query
    start: date = q.start
    end: date = q.end
    return Analytics(days=[DayView.model_validate(d) for d in activity.days(start, end)])


# -- the sweep ---------------------------------------------------------------------------


class SweepView(View):
    examined: int
    delivered: int
    sent: int
    waiting: int
    failed: int
    more: bool = Field(description="the batch was full: call again")


@api.route("POST", "/sweep", query=SweepQuery, response=SweepView)
def sweep(call: Call) -> SweepView:
    """Deliver what is due: missed triggers, retries whose time came, leases that ran out."""
    limit = call.query.limit
    result = notify.sweep(limit=limit)
    return SweepView(**vars(result), more=result.examined >= limit)


# -- the entry point ---------------------------------------------------------------------


@functions_framework.http
def notifications(request: flask.Request) -> flask.Response:
    return api.handle(request)
