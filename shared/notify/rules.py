"""The pure rules of notification delivery: no I/O here, all of it tested without emulators.

A notice (one `notifications` document, queued by shared/platform/outbox.py in the commit of
its cause) goes out on up to three channels. Each channel has its own state:

    pending  --claim-->  sending  --accepted-->  sent
    sending  --temporary failure-->  retry (at T: backoff with jitter)  --claim-->  sending
    sending  --permanent failure, or attempts used up-->  failed  --an admin's retry-->  retry
    sending  --its lease ran out (a crash)-->  sending, claimed by the next worker
    pending waits out quiet hours or a reminder's time; skipped and cancelled never go out.

A claim is a lease: the notice is `sending` until `lease.until`, and a lease that runs out is
claimed again, so a crashed worker never strands a notice; claims are lock-free (one
precondition write, the first wins) so two sweeps or a redelivered event never send twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class Category(StrEnum):
    """What a notice is about: preferences are per category and channel."""

    SECURITY = "security"  # password links: always sent, never held for quiet hours
    ACCOUNT = "account"  # an approval decision: sent despite opt-outs
    PAYMENTS = "payments"
    BOOKINGS = "bookings"
    REMINDERS = "reminders"
    PAYOUTS = "payouts"
    OPERATIONS = "operations"  # alerts to admins: always sent, at once


# Security, account and operations notices ignore opt-outs; security and operations ones
# ignore quiet hours too.
IGNORES_OPT_OUT = frozenset({Category.SECURITY, Category.ACCOUNT, Category.OPERATIONS})
IGNORES_QUIET_HOURS = frozenset({Category.SECURITY, Category.OPERATIONS})


@dataclass(frozen=True)
class Kind:
    """One kind of notice: its category, the channels it may use, and the data its templates
    read (anything else in the notice's data never reaches a template)."""

    category: Category
    channels: tuple[Channel, ...]
    variables: frozenset[str]
    # Variables a notice of this kind may leave out (a template sees None for them); any
    # other missing one is refused when rendering.
    optional: frozenset[str] = frozenset()


KINDS: Mapping[str, Kind] = {
    # Links that sign someone in go by e-mail only: never in an SMS or a lock-screen push.
    "set_password": Kind(Category.SECURITY, (Channel.EMAIL,), frozenset({"link"})),
    "password_reset": Kind(Category.SECURITY, (Channel.EMAIL,), frozenset({"link"})),
    "approval_decided": Kind(
        Category.ACCOUNT, (Channel.EMAIL, Channel.PUSH), frozenset({"approved", "reason"})
    ),
    "payment_received": Kind(
        Category.PAYMENTS,
        (Channel.EMAIL, Channel.PUSH),
        frozenset({"orderId", "currency", "amount"}),
    ),
    "refund_completed": Kind(
        Category.PAYMENTS,
        (Channel.EMAIL, Channel.PUSH),
        frozenset({"orderId", "currency", "amount", "refundId"}),
    ),
    "booking_accepted": Kind(
        Category.BOOKINGS,
        (Channel.EMAIL, Channel.SMS, Channel.PUSH),
        frozenset({"bookingId", "windowStart"}),
    ),
    "booking_declined": Kind(
        Category.BOOKINGS,
        (Channel.EMAIL, Channel.SMS, Channel.PUSH),
        frozenset({"bookingId", "windowStart", "reason"}),
    ),
    "appointment_reminder": Kind(
        Category.REMINDERS,
        (Channel.EMAIL, Channel.SMS, Channel.PUSH),
        frozenset({"appointmentId", "start"}),
    ),
    # Payouts (shared/payouts/notices.py): to the provider, and alerts to every admin.
    "payout_sent": Kind(
        Category.PAYOUTS,
        (Channel.EMAIL, Channel.PUSH),
        frozenset({"payoutId", "currency", "amount"}),
    ),
    "payout_returned": Kind(
        Category.PAYOUTS,
        (Channel.EMAIL, Channel.PUSH),
        frozenset({"payoutId", "currency", "amount", "reason"}),
    ),
    "payout_unclaimed": Kind(
        Category.PAYOUTS,
        (Channel.EMAIL, Channel.PUSH),
        frozenset({"payoutId", "currency", "amount", "receiver"}),
    ),
    # To a new payout address (its verification code) and to the account (the change).
    "payout_address_code": Kind(Category.SECURITY, (Channel.EMAIL,), frozenset({"code"})),
    "payout_address_changed": Kind(
        Category.SECURITY,
        (Channel.EMAIL,),
        frozenset({"receiver", "recipientType", "coolingOffUntil"}),
    ),
    "payout_alert": Kind(
        Category.OPERATIONS,
        (Channel.EMAIL,),
        frozenset({"alert", "message", "payoutId"}),
        optional=frozenset({"payoutId"}),
    ),
    # The audit log does not verify (shared/audit/alerts.py): to every admin.
    "audit_alert": Kind(Category.OPERATIONS, (Channel.EMAIL,), frozenset({"where", "reason"})),
    # An account asked to be closed (shared/privacy/erasure.py): to its owner, whatever their
    # preferences, so a closure they did not ask for can be cancelled in time.
    "erasure_requested": Kind(
        Category.SECURITY,
        (Channel.EMAIL,),
        frozenset({"requestId", "eraseAfter", "cancelUrl"}),
        optional=frozenset({"cancelUrl"}),
    ),
}

LOCALES = ("en", "tr")
DEFAULT_LOCALE = "en"


def locale_of(requested: str | None) -> str:
    """The locale we have templates for: the requested one, its language, or English."""
    if not requested:
        return DEFAULT_LOCALE
    wanted = requested.replace("_", "-").lower()
    if wanted in LOCALES:
        return wanted
    language = wanted.split("-")[0]
    return language if language in LOCALES else DEFAULT_LOCALE


# -- delivery states ----------------------------------------------------------------------


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


OPEN = frozenset({State.PENDING, State.SENDING, State.RETRY})
FINAL = frozenset({State.SENT, State.FAILED, State.SKIPPED, State.CANCELLED})

TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.PENDING: frozenset({State.SENDING, State.SKIPPED, State.CANCELLED}),
    State.RETRY: frozenset({State.SENDING, State.SKIPPED, State.CANCELLED}),
    # SENDING -> SENDING: a lease that ran out, claimed again.
    State.SENDING: frozenset({State.SENT, State.RETRY, State.FAILED, State.SENDING}),
    State.FAILED: frozenset({State.RETRY}),  # an admin's retry
    State.SENT: frozenset(),
    State.SKIPPED: frozenset(),
    State.CANCELLED: frozenset(),
}


class TransitionRefused(ValueError):
    pass


def check_transition(current: State, target: State) -> None:
    if target not in TRANSITIONS[current]:
        raise TransitionRefused(f"a {current} delivery cannot become {target}")


class Notice(StrEnum):
    """A whole notice's status (the sweep's index): the summary of its channels."""

    QUEUED = "queued"  # written by the outbox; no channel planned yet
    PENDING = "pending"  # some channel waits (retry, quiet hours, a reminder's time)
    SENDING = "sending"  # leased
    DONE = "done"
    CANCELLED = "cancelled"


SWEPT = (Notice.QUEUED.value, Notice.PENDING.value, Notice.SENDING.value)


def summary(channels: Mapping[str, Mapping[str, Any]]) -> tuple[Notice, datetime | None]:
    """The notice's status and when the sweep should next look at it."""
    if any(c.get("state") == State.SENDING for c in channels.values()):
        return Notice.SENDING, None  # the lease's end is the caller's to set
    waiting = [c["nextAt"] for c in channels.values() if c.get("state") in OPEN]
    if waiting:
        return Notice.PENDING, min(waiting)
    if channels and all(c.get("state") == State.CANCELLED for c in channels.values()):
        return Notice.CANCELLED, None
    return Notice.DONE, None


def outcome_of(channels: Mapping[str, Mapping[str, Any]]) -> str:
    """How a finished notice went: sent, partial, failed or skipped (none to send)."""
    states = {c.get("state") for c in channels.values()}
    if not states or states <= {State.SKIPPED, State.CANCELLED}:
        return "skipped"
    if State.SENT in states:
        return "sent" if State.FAILED not in states else "partial"
    return "failed"


def due_channels(doc: Mapping[str, Any], now: datetime) -> list[Channel]:
    """The channels a claim at `now` takes: waiting ones whose time came, and ones left
    `sending` by a lease that ran out (their worker died or stalled)."""
    lease_over = _before_or_at((doc.get("lease") or {}).get("until"), now)
    due = []
    for name, channel in (doc.get("channels") or {}).items():
        state = channel.get("state")
        waiting = state in (State.PENDING, State.RETRY)
        if (waiting and _before_or_at(channel.get("nextAt"), now)) or (
            state == State.SENDING and lease_over
        ):
            due.append(Channel(name))
    return due


def _before_or_at(moment: datetime | None, now: datetime) -> bool:
    return moment is None or moment <= now


# -- failures and retries -----------------------------------------------------------------


class Outcome(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"  # try again later
    PERMANENT = "permanent"  # trying again cannot help
    UNKNOWN = "unknown"  # the request went out and its answer was lost: it may have been sent


@dataclass(frozen=True)
class Result:
    """What one attempt on one channel came to."""

    outcome: Outcome
    detail: str = ""
    provider_id: str | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait
    suppress: bool = False  # a hard bounce / the recipient blocked us: stop using the address
    dead_tokens: tuple[str, ...] = ()  # push tokens FCM says are unregistered
    sent_tokens: tuple[str, ...] = ()  # push tokens that took the message
    retry_tokens: tuple[str, ...] = ()  # push tokens to try again


def smtp_outcome(code: int) -> Outcome:
    """SMTP reply codes: 2xx/3xx accepted, 4xx transient (421, 450, 451, 452), 5xx permanent."""
    if code < 400:
        return Outcome.SENT
    return Outcome.TEMPORARY if code < 500 else Outcome.PERMANENT


# Twilio error codes after which the number must not be texted again: the recipient replied
# STOP (21610), or the number cannot receive SMS (21614).
TWILIO_SUPPRESS = frozenset({21610, 21614})


def twilio_outcome(status: int) -> Outcome:
    """Twilio's HTTP answers: 2xx taken; 429 and 5xx transient; 401/403 are our credentials
    (transient from the recipient's view: fixing them sends the backlog); other 4xx refuse
    this message for good."""
    if 200 <= status < 300:
        return Outcome.SENT
    if status in (401, 403, 408, 429) or status >= 500:
        return Outcome.TEMPORARY
    return Outcome.PERMANENT


# FCM v1 error codes (google.firebase.fcm.v1.FcmError / the canonical status).
FCM_TEMPORARY = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"})
FCM_DEAD_TOKEN = frozenset({"UNREGISTERED"})


def fcm_outcome(code: str) -> Outcome:
    if code in FCM_TEMPORARY:
        return Outcome.TEMPORARY
    return Outcome.PERMANENT  # UNREGISTERED, INVALID_ARGUMENT, SENDER_ID_MISMATCH, ...


BASE_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 6 * 3600.0
MAX_ATTEMPTS = 8


def retry_delay(attempt: int, seed: str, *, retry_after: float | None = None) -> timedelta:
    """Exponential backoff with jitter after failed attempt number `attempt` (1-based).

    The ceiling doubles from 30 s up to 6 h; the delay is drawn from its upper half, so
    notices failing together spread out instead of returning together. The draw comes from
    `seed` (the notice and channel) and the attempt, so it is reproducible. A provider's
    Retry-After is honoured when longer.
    """
    ceiling = min(MAX_RETRY_SECONDS, BASE_RETRY_SECONDS * 2 ** max(attempt - 1, 0))
    digest = hashlib.sha256(f"{seed}:{attempt}".encode()).digest()
    fraction = int.from_bytes(digest[:4], "big") / 0xFFFFFFFF
    seconds = ceiling * (0.5 + fraction / 2)
    if retry_after is not None:
        seconds = max(seconds, min(retry_after, MAX_RETRY_SECONDS))
    return timedelta(seconds=seconds)


def after_attempt(
    channel: Mapping[str, Any], result: Result, now: datetime, seed: str
) -> dict[str, Any]:
    """The channel's record after an attempt that came to `result`."""
    attempts = int(channel.get("attempts", 0))
    record: dict[str, Any] = {**channel, "lastAttemptAt": now, "lastError": None}
    if result.outcome is Outcome.SENT:
        check_transition(State.SENDING, State.SENT)
        return {
            **record,
            "state": State.SENT.value,
            "sentAt": now,
            "nextAt": None,
            "providerId": result.provider_id or channel.get("providerId"),
            "unknown": False,
        }
    record["lastError"] = result.detail[:500]
    if result.outcome is Outcome.PERMANENT or attempts >= MAX_ATTEMPTS:
        return {**record, "state": State.FAILED.value, "nextAt": None, "unknown": False}
    delay = retry_delay(attempts, seed, retry_after=result.retry_after)
    return {
        **record,
        "state": State.RETRY.value,
        "nextAt": now + delay,
        # An answer lost after the request went out: the next attempt looks before it sends.
        "unknown": result.outcome is Outcome.UNKNOWN or bool(channel.get("unknown")),
    }


# -- preferences and quiet hours ----------------------------------------------------------


@dataclass(frozen=True)
class Preferences:
    locale: str = DEFAULT_LOCALE
    time_zone: str = "UTC"
    quiet_start: time | None = None
    quiet_end: time | None = None
    opted_out: frozenset[tuple[Category, Channel]] = field(default_factory=frozenset)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> Preferences:
        """Stored preferences; anything unreadable falls back to the default for it."""
        if not doc:
            return cls()
        quiet = doc.get("quietHours") or {}
        opted: set[tuple[Category, Channel]] = set()
        for category, channels in (doc.get("channels") or {}).items():
            if category not in Category.__members__.values() or not isinstance(channels, dict):
                continue
            for channel, on in channels.items():
                if channel in Channel.__members__.values() and on is False:
                    opted.add((Category(category), Channel(channel)))
        zone = doc.get("timeZone")
        return cls(
            locale=locale_of(doc.get("locale")),
            time_zone=zone if isinstance(zone, str) and valid_zone(zone) else "UTC",
            quiet_start=_clock(quiet.get("start")),
            quiet_end=_clock(quiet.get("end")),
            opted_out=frozenset(opted),
        )

    def wants(self, category: Category, channel: Channel) -> bool:
        return category in IGNORES_OPT_OUT or (category, channel) not in self.opted_out


def valid_zone(name: Any) -> bool:
    if not isinstance(name, str) or not name or len(name) > 64:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _clock(value: Any) -> time | None:
    if not isinstance(value, str):
        return None
    try:
        return time.fromisoformat(value)
    except ValueError:
        return None


def quiet_until(now: datetime, zone: str, start: time | None, end: time | None) -> datetime | None:
    """When the quiet hours around `now` end (in UTC), or None when `now` is not in them.

    Hours are wall-clock times in the user's zone and may run across midnight (22:00-07:00).
    An end that does not exist that day (inside a DST gap) falls after the gap; an end that
    occurs twice (a DST fold) is its first occurrence.
    """
    if start is None or end is None or start == end:
        return None
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_day = local.date()
    else:
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return wall_time(end_day, end, tz)


def wall_time(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The UTC moment a wall clock in `tz` shows `clock` on `day` (first if twice; just
    after the gap if never)."""
    return datetime.combine(day, clock).replace(tzinfo=tz, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class ChannelPlan:
    state: State
    next_at: datetime | None = None
    reason: str | None = None  # why skipped, or why it waits


def plan(
    kind: Kind,
    prefs: Preferences,
    reachable: Mapping[Channel, bool],
    suppressed: frozenset[Channel],
    now: datetime,
    not_before: datetime | None = None,
) -> dict[Channel, ChannelPlan]:
    """Which channels a notice goes out on, and when.

    Per channel of its kind: skipped when the user opted out (unless the category ignores
    opt-outs), when we have no address for it, or when the address is suppressed (a hard
    bounce, a STOP); otherwise pending from `not_before` (a reminder's time), held to the
    end of the user's quiet hours unless the category ignores them.
    """
    start = max(now, not_before) if not_before else now
    quiet_end = quiet_hold(kind, prefs, start)
    plans: dict[Channel, ChannelPlan] = {}
    for channel in kind.channels:
        if refused := refusal(kind, channel, prefs, reachable, suppressed):
            plans[channel] = ChannelPlan(State.SKIPPED, reason=refused)
        elif quiet_end is not None:
            plans[channel] = ChannelPlan(State.PENDING, quiet_end, reason="quiet_hours")
        else:
            plans[channel] = ChannelPlan(State.PENDING, start)
    return plans


def quiet_hold(kind: Kind, prefs: Preferences, at: datetime) -> datetime | None:
    """When the quiet hours that hold a send of a notice of `kind` at `at` end, or None when
    nothing holds it (`at` is outside them, or its category ignores them). The one rule of
    every send: the first (`plan`) and each later one (`held`)."""
    if kind.category in IGNORES_QUIET_HOURS:
        return None
    return quiet_until(at, prefs.time_zone, prefs.quiet_start, prefs.quiet_end)


def held(channel: Mapping[str, Any], until: datetime) -> dict[str, Any]:
    """A due channel of a later send (a backoff retry, an admin's retry, a reminder whose time
    came) that `quiet_hold` holds: it waits until `until`, as a first send would, and the wait
    is no attempt. One left `sending` by a lease that ran out (its attempt may have gone out)
    waits as a retry whose answer was lost, so the send after the quiet hours looks first."""
    record = {**channel, "nextAt": until, "reason": "quiet_hours"}
    if channel.get("state") == State.SENDING:
        check_transition(State.SENDING, State.RETRY)
        record.update(
            state=State.RETRY.value,
            unknown=True,
            lostAttemptAt=channel.get("lostAttemptAt") or channel.get("attemptStartedAt"),
        )
    return record


# Why a notice of an erased account (its access record a tombstone) was stopped: nothing is
# ever sent to one, whatever queued the notice, with whatever address, in whatever category.
RECIPIENT_ERASED = "recipient_erased"


def stopped(
    channels: Mapping[str, Mapping[str, Any]], kind: Kind | None, reason: str
) -> dict[str, dict[str, Any]]:
    """A notice's channels once it is stopped for `reason`: each one still open cancelled with
    that reason, those that ended kept; a notice never planned gets each channel of its kind,
    cancelled."""
    if not channels:
        fresh = {"attempts": 0, "nextAt": None, "lastError": None}
        return {
            c.value: {**fresh, "state": State.CANCELLED.value, "reason": reason}
            for c in (kind.channels if kind else (Channel.EMAIL,))
        }
    return {
        name: (
            {**c, "state": State.CANCELLED.value, "nextAt": None, "reason": reason}
            if c.get("state") in OPEN
            else dict(c)
        )
        for name, c in channels.items()
    }


def refusal(
    kind: Kind,
    channel: Channel,
    prefs: Preferences,
    reachable: Mapping[Channel, bool],
    suppressed: frozenset[Channel],
) -> str | None:
    """Why `channel` of a notice of `kind` must not go out, or None when it may: the user
    opted out (unless the category ignores opt-outs), we have no address for it, or the address
    is suppressed (a hard bounce, a STOP).

    The one decision for every send: the first (`plan`) and each later one, judged again with
    what holds when it comes due (a backoff retry, an admin's retry, a reminder's time), so a
    later send can never go where a first one would not."""
    if not prefs.wants(kind.category, channel):
        return "opted_out"
    if not reachable.get(channel):
        return "no_address"
    if channel in suppressed:
        return "suppressed"
    return None


# -- one-click unsubscribe ----------------------------------------------------------------

UNSUBSCRIBE_DAYS = 60


class TokenRefused(ValueError):
    """An unsubscribe token that is forged, altered or unreadable (`code` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unsubscribe_token(key: bytes, uid: str, category: Category, expires: datetime) -> str:
    """A signed, expiring token that opts `uid` out of e-mail for `category`."""
    payload = _b64(
        json.dumps(
            {"u": uid, "c": category.value, "e": int(expires.timestamp())}, separators=(",", ":")
        ).encode()
    )
    return f"{payload}.{_b64(_sign(key, payload))}"


def _sign(key: bytes, payload: str) -> bytes:
    return hmac.new(key, b"unsubscribe:" + payload.encode(), hashlib.sha256).digest()


def read_unsubscribe_token(key: bytes, token: str, now: datetime) -> tuple[str, Category]:
    """The (uid, category) a token names; TokenRefused when it is not one we signed, was
    changed, or has expired."""
    if not key:
        raise TokenRefused("unsubscribe_unavailable", "Unsubscribe links are not configured.")
    payload, _, signature = token.partition(".")
    try:
        given = _unb64(signature)
    except ValueError:
        given = b""
    if not payload or not hmac.compare_digest(given, _sign(key, payload)):
        raise TokenRefused("unsubscribe_token_invalid", "This unsubscribe link is not valid.")
    try:
        data = json.loads(_unb64(payload))
        uid, category, expires = str(data["u"]), Category(data["c"]), int(data["e"])
    except (ValueError, KeyError, TypeError):
        raise TokenRefused(
            "unsubscribe_token_invalid", "This unsubscribe link is not valid."
        ) from None
    if expires <= now.timestamp():
        raise TokenRefused("unsubscribe_token_expired", "This unsubscribe link has expired.")
    return uid, category


# -- SMS: the lookup before a resend ------------------------------------------------------


def matching_message(
    messages: list[Mapping[str, Any]], body: str, since: datetime
) -> Mapping[str, Any] | None:
    """Among Twilio messages to the recipient (newest first), the one an attempt whose answer
    was lost had sent: same body, created at or after that attempt began, not failed."""
    for message in messages:
        created = parse_rfc2822(message.get("date_created"))
        if (
            message.get("body") == body
            and created is not None
            and created >= since.replace(microsecond=0) - timedelta(seconds=1)
            and message.get("status") not in ("failed", "canceled")
        ):
            return message
    return None


def parse_rfc2822(value: Any) -> datetime | None:
    from email.utils import parsedate_to_datetime

    if not isinstance(value, str):
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def token_id(token: str) -> str:
    """A push token's document id: its digest (tokens are long and not ours to show)."""
    return hashlib.sha256(token.encode()).hexdigest()[:40]


def address_id(channel: Channel, address: str) -> str:
    """A suppression entry's id: the channel and a digest of the normalised address."""
    normal = address.strip().lower()
    return f"{channel.value}-{hashlib.sha256(normal.encode()).hexdigest()[:40]}"


# -- analytics: a day's aggregates, from its counter shards --------------------------------

BOOKED_KINDS = ("appointment_booked", "booking_requested")
NO_SHOW_KINDS = ("appointment_no_show", "booking_no_show")


def daily_summary(day: str, shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One day's dashboard from its counter shards: bookings, payments and revenue, refunds,
    conversion from booked to paid (that day's payments over that day's bookings), no-shows,
    new accounts, payouts paid to providers, and every raw count."""
    counts: dict[str, int] = {}
    amounts: dict[str, dict[str, int]] = {}
    for shard in shards:
        for kind, n in (shard.get("counts") or {}).items():
            counts[kind] = counts.get(kind, 0) + int(n)
        for kind, per_currency in (shard.get("amounts") or {}).items():
            into = amounts.setdefault(kind, {})
            for currency, minor in (per_currency or {}).items():
                into[currency] = into.get(currency, 0) + int(minor)
    booked = sum(counts.get(k, 0) for k in BOOKED_KINDS)
    paid = counts.get("payment_captured", 0)
    return {
        "day": day,
        "bookings": booked,
        "payments": paid,
        "revenueMinor": dict(sorted(amounts.get("payment_captured", {}).items())),
        "refunds": counts.get("refund_completed", 0),
        "refundedMinor": dict(sorted(amounts.get("refund_completed", {}).items())),
        "conversion": round(paid / booked, 4) if booked else None,
        "noShows": sum(counts.get(k, 0) for k in NO_SHOW_KINDS),
        "signUps": counts.get("user_signed_up", 0),
        "payoutsSent": counts.get("payout_sent", 0),
        "paidOutMinor": dict(sorted(amounts.get("payout_sent", {}).items())),
        "counts": dict(sorted(counts.items())),
    }
