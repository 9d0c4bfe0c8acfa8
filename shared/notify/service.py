"""Delivering the outbox: claims, sends and their records in Firestore.

`deliver(notice_id)` is the one path a notice takes out, whoever calls it (the trigger for a new
notice, the sweep for what is due, an admin's retry):

1. claim: read the notice and, if some channel is due, write a lease on it with a precondition
   on what was read (the first writer wins; a racer re-reads and finds it leased). The first
   claim also plans the channels from the recipient's profile, preferences, devices and the
   suppression list.
2. send each claimed channel, outside any transaction.
3. record each attempt as it ends, again with a precondition: a worker whose lease ran out and
   was taken over records nothing and stops.

E-mail keeps one Message-ID per notice, so the rare resend after a lost answer or a crash is
recognisably the same message; an SMS whose answer was lost is looked up at Twilio before it
is sent again; push remembers which devices took the message and never sends to them twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from shared.identity import profiles
from shared.notify import rules, templates
from shared.notify.rules import Category, Channel, Notice, Outcome, Result, State
from shared.platform import clients, clock, logs, outbox, pagination, settings, store
from shared.platform.errors import BadRequest, Conflict, NotFound

log = logs.get("alodoktor.notify")

NOTIFICATIONS = outbox.NOTIFICATIONS
PREFERENCES = "notificationPreferences"
DEVICES = "deviceTokens"
SUPPRESSIONS = "suppressions"
MAX_HISTORY = 60  # attempts kept on a notice (8 per channel and round, and admins' retries)
RECEIPTS = "receipts"  # a notice's subcollection: Twilio's delivery reports
CLAIM_TRIES = 3
SWEEP_WORKERS = 8
MAX_PUSH_TOKENS = 500  # FCM's multicast limit
HARD_BOUNCES = frozenset({550, 551, 553})


def _db() -> Any:
    return clients.db()


def notices() -> Any:
    return _db().collection(NOTIFICATIONS)


def preferences_ref(uid: str) -> Any:
    return _db().collection(PREFERENCES).document(uid)


def suppression_ref(channel: Channel, address: str) -> Any:
    return _db().collection(SUPPRESSIONS).document(rules.address_id(channel, address))


class LeaseLost(Exception):
    """Our lease ran out and another worker took the notice over: stop, record nothing."""


@dataclass
class Lease:
    ref: Any
    id: str
    doc: dict[str, Any]
    update_time: Any
    channels: list[Channel]
    writes: int = 0


# -- recipients --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str | None
    phone: str | None
    locale: str
    time_zone: str
    has_devices: bool
    suppressed: frozenset[Channel] = field(default_factory=frozenset)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "locale": self.locale,
            "timeZone": self.time_zone,
        }


def _recipient(uid: str, to: str | None, kind: rules.Kind) -> tuple[Recipient, rules.Preferences]:
    """Who a notice goes to, read in as few round trips as the kind allows: the profile, the
    preferences and the suppression of the address we were given in one; the phone number's
    suppression when the kind texts and the profile has one; whether any device is registered
    when the kind pushes."""
    from google.cloud.firestore import FieldFilter

    profile_ref, prefs_ref = profiles.ref(uid), preferences_ref(uid)
    first = [profile_ref, prefs_ref]
    if to:
        first.append(suppression_ref(Channel.EMAIL, to))
    snaps = {s.reference.path: s for s in _db().get_all(first)}
    profile = _data(snaps.get(profile_ref.path))
    prefs = rules.Preferences.from_doc(_data(snaps.get(prefs_ref.path)))
    email = to or profile.get("email") or None
    phone = profile.get("phone") or None if Channel.SMS in kind.channels else None
    suppressed: set[Channel] = set()
    later = [(c, a) for c, a in ((Channel.EMAIL, email if not to else None), (Channel.SMS, phone))]
    if to and _data(snaps.get(suppression_ref(Channel.EMAIL, to).path)):
        suppressed.add(Channel.EMAIL)
    checks = [(c, a) for c, a in later if a]
    if checks:
        refs = [suppression_ref(c, a) for c, a in checks]
        found = {s.reference.path for s in _db().get_all(refs) if s.exists}
        suppressed |= {c for (c, _), r in zip(checks, refs, strict=True) if r.path in found}
    has_devices = False
    if Channel.PUSH in kind.channels:
        devices = (
            _db()
            .collection(DEVICES)
            .where(filter=FieldFilter("uid", "==", uid))
            .limit(1)
            .select(["uid"])
            .stream()
        )
        has_devices = any(True for _ in devices)
    name = str(profile.get("displayName") or (email or "").split("@")[0])
    return (
        Recipient(
            name=name[:100],
            email=email,
            phone=phone,
            locale=prefs.locale,
            time_zone=prefs.time_zone,
            has_devices=has_devices,
            suppressed=frozenset(suppressed),
        ),
        prefs,
    )


def _data(snap: Any) -> dict[str, Any]:
    if snap is None or not snap.exists:
        return {}
    data: dict[str, Any] = snap.to_dict() or {}
    return data


# -- claiming ----------------------------------------------------------------------------


def _plan_channels(doc: dict[str, Any], now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first claim of a queued notice: its channels, and who it goes to."""
    kind = rules.KINDS.get(str(doc.get("kind")))
    if kind is None:
        failed = {
            "state": State.FAILED.value,
            "attempts": 0,
            "nextAt": None,
            "lastError": f"unknown kind {doc.get('kind')!r}",
        }
        return {Channel.EMAIL.value: failed}, {}
    recipient, prefs = _recipient(str(doc.get("uid") or ""), doc.get("to") or None, kind)
    reachable = {
        Channel.EMAIL: bool(recipient.email),
        Channel.SMS: bool(recipient.phone),
        Channel.PUSH: recipient.has_devices,
    }
    plans = rules.plan(kind, prefs, reachable, recipient.suppressed, now, doc.get("notBefore"))
    channels = {
        channel.value: {
            "state": p.state.value,
            "attempts": 0,
            "nextAt": p.next_at,
            "reason": p.reason,
            "lastError": None,
        }
        for channel, p in plans.items()
    }
    return channels, recipient.record()


def _claim_update(
    doc: dict[str, Any], now: datetime, standing: Standing | None = None
) -> tuple[dict[str, Any], list[Channel]]:
    """The write that claims `doc` at `now` and the channels it takes ({}: nothing to do).
    `standing`, read now for a notice planned earlier: a due channel the first send's rule
    would now refuse (turned off since, its address suppressed since) is skipped, not sent."""
    status = doc.get("status")
    if doc.get("cancelled"):
        if status == Notice.CANCELLED:
            return {}, []
        if status == Notice.SENDING and not rules.due_channels(doc, now):
            return {}, []  # its worker is still at it; the sweep closes it after
        channels = {
            name: (
                {**c, "state": State.CANCELLED.value, "nextAt": None}
                if c.get("state") in rules.OPEN
                else c
            )
            for name, c in (doc.get("channels") or {}).items()
        }
        return {
            "status": Notice.CANCELLED.value,
            "channels": channels,
            "dueAt": None,
            "lease": None,
        }, []
    update: dict[str, Any] = {}
    if status == Notice.QUEUED:
        # Planned at first sight, even when not due yet (a reminder): it then waits as
        # `pending` until its channels' time.
        channels, recipient = _plan_channels(doc, now)
        doc = {**doc, "channels": channels}
        update.update(channels=channels, recipient=recipient)
    elif status not in (Notice.PENDING, Notice.SENDING):
        return {}, []
    lease = doc.get("lease") or {}
    if status == Notice.SENDING and lease.get("until") is not None and lease["until"] > now:
        return {}, []  # another worker holds it
    due = rules.due_channels(doc, now)
    kind = rules.KINDS.get(str(doc.get("kind")))
    refused = {
        c: why
        for c in due
        if standing is not None and kind is not None and (why := rules.refusal(kind, c, *standing))
    }
    if refused:
        channels = dict(doc.get("channels") or {})
        for channel, why in refused.items():
            channels[channel.value] = {
                **channels[channel.value],
                "state": State.SKIPPED.value,
                "nextAt": None,
                "reason": why,
            }
        doc = {**doc, "channels": channels}
        update["channels"] = channels
        due = [c for c in due if c not in refused]
    if not due:
        if update:  # planned, nothing due yet (quiet hours, all skipped)
            state, due_at = rules.summary(update["channels"])
            update.update(status=state.value, dueAt=due_at, updatedAt=now)
            if state is Notice.DONE:
                update["outcome"] = rules.outcome_of(update["channels"])
        return update, []
    lease_until = now + timedelta(seconds=settings.get().notify_lease_seconds)
    channels = dict(doc.get("channels") or {})
    for channel in due:
        current = channels[channel.value]
        # A lease that ran out mid-send, like an answer that was lost: that attempt may have
        # gone out. The first such attempt's start is where a lookup begins.
        taken_over = current.get("state") == State.SENDING
        unknown = bool(current.get("unknown")) or taken_over
        lost_at = current.get("lostAttemptAt")
        if unknown and lost_at is None:
            lost_at = current.get("attemptStartedAt")
        channels[channel.value] = {
            **current,
            "state": State.SENDING.value,
            "attempts": int(current.get("attempts", 0)) + 1,
            "attemptStartedAt": now,
            "unknown": unknown,
            "lostAttemptAt": lost_at if unknown else None,
        }
    update.update(
        channels=channels,
        status=Notice.SENDING.value,
        lease={"id": uuid.uuid4().hex, "until": lease_until},
        dueAt=lease_until,
        updatedAt=now,
    )
    return update, due


class Standing(NamedTuple):
    """What `rules.refusal` judges a later send on, as it is at the claim."""

    prefs: rules.Preferences
    reachable: Mapping[Channel, bool]
    suppressed: frozenset[Channel]


def _standing_now(doc: dict[str, Any], now: datetime) -> Standing | None:
    """For a notice planned earlier whose time came (a reminder, a backoff retry, an admin's
    retry): the recipient's preferences and the suppression of the due channels' addresses
    now, in one read."""
    if (
        doc.get("status") not in (Notice.PENDING, Notice.SENDING)
        or doc.get("kind") not in rules.KINDS
    ):
        return None
    due = rules.due_channels(doc, now)
    if not due:
        return None
    recipient = doc.get("recipient") or {}
    addresses = {
        Channel.EMAIL: doc.get("to") or recipient.get("email"),
        Channel.SMS: recipient.get("phone"),
    }
    checks = {c: suppression_ref(c, a) for c in due if (a := addresses.get(c))}
    prefs_ref = preferences_ref(str(doc.get("uid") or ""))
    snaps = {s.reference.path: s for s in _db().get_all([prefs_ref, *checks.values()])}
    return Standing(
        prefs=rules.Preferences.from_doc(_data(snaps.get(prefs_ref.path))),
        # Push's addresses are the devices, which its sender reads as it sends.
        reachable={Channel.PUSH: True, **{c: bool(a) for c, a in addresses.items()}},
        suppressed=frozenset(c for c, ref in checks.items() if _data(snaps.get(ref.path))),
    )


def claim(notice_id: str, now: datetime, snap: Any = None) -> Lease | None:
    """Lease notice `notice_id` if some channel of it is due; None when nothing is (or
    another worker holds it). `snap` is a fresh read of it, when the caller has one."""
    from google.api_core.exceptions import FailedPrecondition
    from google.api_core.exceptions import NotFound as Missing

    ref = notices().document(notice_id)
    for _ in range(CLAIM_TRIES):
        snap = snap if snap is not None else ref.get()
        if not snap.exists:
            return None
        doc = snap.to_dict() or {}
        update, due = _claim_update(doc, now, _standing_now(doc, now))
        if not update:
            return None
        batch = _db().batch()
        store.update(ref, update, tx=batch, by="system", unchanged_since=snap.update_time)
        try:
            (result,) = batch.commit()
        except (FailedPrecondition, Missing):
            snap = None  # someone else wrote it first: read what they did
            continue
        if not due:
            return None
        return Lease(ref, update["lease"]["id"], {**doc, **update}, result.update_time, due)
    return None


def _commit(
    lease: Lease, change: Callable[[dict[str, Any]], dict[str, Any]], extra: Any = None
) -> None:
    """Write `change(doc)` on the leased notice, only while the lease is still ours."""
    from google.api_core.exceptions import FailedPrecondition

    for _ in range(CLAIM_TRIES + 2):
        update = change(lease.doc)
        batch = _db().batch()
        store.update(lease.ref, update, tx=batch, by="system", unchanged_since=lease.update_time)
        if extra is not None:
            extra(batch)
        try:
            results = batch.commit()
        except FailedPrecondition:
            snap = lease.ref.get()  # written meanwhile (a cancellation, or a takeover)
            doc = snap.to_dict() or {}
            if (doc.get("lease") or {}).get("id") != lease.id:
                raise LeaseLost(lease.ref.id) from None
            lease.doc, lease.update_time = doc, snap.update_time
            continue
        lease.doc = {**lease.doc, **update}
        lease.update_time = results[0].update_time
        lease.writes += 1
        return
    raise LeaseLost(lease.ref.id)


# -- delivering --------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    notice_id: str
    claimed: bool
    results: dict[str, str] = field(default_factory=dict)  # channel -> state after
    lost: bool = False


def deliver(notice_id: str, snap: Any = None) -> Delivery:
    """Send whatever of this notice is due now (nothing if another worker holds it)."""
    lease = claim(notice_id, clock.now(), snap)
    if lease is None:
        return Delivery(notice_id, claimed=False)
    results: dict[str, str] = {}
    try:
        content, error = _content(lease.doc)
        for channel in lease.channels:
            if error is not None:
                result: Result | None = Result(Outcome.PERMANENT, error)
            else:
                assert content is not None
                result = SENDERS[channel](lease, content)
            results[channel.value] = _finish(lease, channel, result)
    except LeaseLost:
        log.warning("notice %s: lease lost to another worker", notice_id)
        return Delivery(notice_id, claimed=True, results=results, lost=True)
    return Delivery(notice_id, claimed=True, results=results)


@dataclass(frozen=True)
class Content:
    rendered: templates.Rendered
    kind: rules.Kind
    recipient: dict[str, Any]


def _content(doc: dict[str, Any]) -> tuple[Content | None, str | None]:
    """The notice rendered for its recipient, or why it cannot be (sending cannot help)."""
    import jinja2

    kind_name = str(doc.get("kind"))
    kind = rules.KINDS.get(kind_name)
    if kind is None:
        return None, f"unknown kind {kind_name!r}"
    recipient = doc.get("recipient") or {}
    try:
        rendered = templates.render(
            kind_name,
            recipient.get("locale") or rules.DEFAULT_LOCALE,
            doc.get("data") or {},
            name=recipient.get("name") or "",
            time_zone=recipient.get("timeZone") or "UTC",
            unsubscribe_url=_unsubscribe_url(doc, kind),
        )
    except (jinja2.TemplateError, LookupError, TypeError, ValueError) as exc:
        log.error("notice %s (%s) does not render: %r", doc.get("uid"), kind_name, exc)
        return None, f"template: {type(exc).__name__}: {exc}"[:300]
    return Content(rendered, kind, recipient), None


def _unsubscribe_url(doc: dict[str, Any], kind: rules.Kind) -> str | None:
    s = settings.get()
    if (
        kind.category in rules.IGNORES_OPT_OUT
        or not s.notify_signing_key
        or not s.notifications_url
    ):
        return None
    token = rules.unsubscribe_token(
        s.notify_signing_key.encode(),
        str(doc.get("uid")),
        kind.category,
        clock.now() + timedelta(days=rules.UNSUBSCRIBE_DAYS),
    )
    return f"{s.notifications_url}/unsubscribe?token={token}"


def _finish(lease: Lease, channel: Channel, result: Result | None) -> str:
    """Record one attempt's end on the notice (its channel and its history), under our
    lease: one write."""
    now = clock.now()
    name = channel.value
    seed = f"{lease.ref.id}:{name}"

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        channels = dict(doc.get("channels") or {})
        current = channels[name]
        if result is None:  # nowhere to send it any more (no device left)
            after = {**current, "state": State.SKIPPED.value, "nextAt": None}
            after["reason"] = "no_device"
        else:
            after = rules.after_attempt(current, result, now, seed)
            if result.sent_tokens:
                after["sentTokens"] = sorted(
                    set(current.get("sentTokens") or []) | set(result.sent_tokens)
                )
        channels[name] = after
        state, due_at = rules.summary(channels)
        history = [*(doc.get("history") or []), attempt][-MAX_HISTORY:]
        update: dict[str, Any] = {"channels": channels, "history": history, "updatedAt": now}
        if state is not Notice.SENDING:  # the last claimed channel: the lease ends
            update.update(status=state.value, dueAt=due_at, lease=None)
            if state is Notice.DONE:
                update["outcome"] = rules.outcome_of(channels)
        return update

    current = (lease.doc.get("channels") or {}).get(name) or {}
    attempt_no = int(current.get("attempts", 0))
    attempt = {
        "channel": name,
        "attempt": attempt_no,
        "at": now,
        "startedAt": current.get("attemptStartedAt"),
        "outcome": result.outcome.value if result else "skipped",
        "detail": (result.detail if result else "no registered device")[:500],
        "providerId": result.provider_id if result else None,
        "leaseId": lease.id,
    }
    # What the answer means beyond this notice is written in the same commit as the attempt:
    # whoever sees the attempt recorded also sees the address suppressed or the token gone,
    # and a crash cannot keep one without the other.
    effects = (lambda batch: _after_effects(batch, lease, channel, result)) if result else None
    _commit(lease, change, effects)
    final = lease.doc["channels"][name]["state"]
    _log_attempt(lease, channel, attempt, final)
    if final == State.FAILED:
        # An admin should hear of it (a log-based alert in terraform/monitoring.tf).
        log.error("notice %s failed for good on %s: %s", lease.ref.id, name, attempt["detail"])
    return str(final)


def _log_attempt(lease: Lease, channel: Channel, attempt: dict[str, Any], state: str) -> None:
    """One structured line per attempt: what a BigQuery log sink and log-based metrics read
    (`notification.outcome` by `notification.channel` and `kind`)."""
    log.info(
        "notify %s %s %s: %s",
        lease.doc.get("kind"),
        channel.value,
        lease.ref.id,
        state,
        extra={
            "fields": {
                "notification": {
                    "id": lease.ref.id,
                    "kind": lease.doc.get("kind"),
                    "uid": lease.doc.get("uid"),
                    "channel": channel.value,
                    "attempt": attempt["attempt"],
                    "outcome": attempt["outcome"],
                    "state": state,
                }
            }
        },
    )


def _after_effects(batch: Any, lease: Lease, channel: Channel, result: Result) -> None:
    """What an answer means beyond this notice, written in `batch`: a hard bounce or a STOP
    suppresses the address; FCM's UNREGISTERED deletes the device token."""
    recipient = lease.doc.get("recipient") or {}
    if result.suppress:
        address = (
            (lease.doc.get("to") or recipient.get("email"))
            if channel is Channel.EMAIL
            else recipient.get("phone")
        )
        if address:
            store.set(
                suppression_ref(channel, address),
                {
                    "channel": channel.value,
                    "address": address,
                    "reason": result.detail[:300],
                    "noticeId": lease.ref.id,
                    "at": clock.now(),
                },
                tx=batch,
                by="system",
            )
    for token in result.dead_tokens:
        ref = _db().collection(DEVICES).document(rules.token_id(token))
        store.delete(ref, tx=batch, by="system")


# -- the channels ------------------------------------------------------------------------


def _send_email(lease: Lease, content: Content) -> Result:
    from shared.integrations import smtp

    s = settings.get()
    to = lease.doc.get("to") or content.recipient.get("email")
    if not to:
        return Result(Outcome.PERMANENT, "no e-mail address")
    headers = {"X-Alodoktor-Notice": str(content.kind.category.value)}
    unsubscribe = _unsubscribe_url(lease.doc, content.kind)
    if unsubscribe:
        headers["List-Unsubscribe"] = f"<{unsubscribe}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    message_id = message_id_of(lease.ref.id)
    mail = smtp.Mail(
        sender=s.mail_from,
        to=str(to),
        subject=content.rendered.subject,
        text=content.rendered.text,
        html=content.rendered.html,
        message_id=message_id,
        headers=headers,
    )
    relay = smtp.Relay(
        s.smtp_host,
        s.smtp_port,
        starttls=s.smtp_starttls,
        username=s.smtp_username,
        password=s.smtp_password,
        timeout=s.notify_timeout_seconds,
    )
    answer = relay.send(mail)
    if answer.accepted:
        return Result(Outcome.SENT, answer.detail, provider_id=message_id)
    if answer.lost:
        return Result(Outcome.UNKNOWN, answer.detail)
    if answer.code == 0:
        return Result(Outcome.TEMPORARY, answer.detail)
    outcome = rules.smtp_outcome(answer.code)
    return Result(
        outcome,
        f"{answer.code} {answer.detail}",
        suppress=outcome is Outcome.PERMANENT and answer.code in HARD_BOUNCES,
    )


def message_id_of(notice_id: str) -> str:
    """One Message-ID per notice, on every attempt: a duplicate is recognisably one."""
    domain = settings.get().mail_from.rpartition("@")[2].strip("> ") or "alodoktor.com"
    return f"<{notice_id}@{domain}>"


def _twilio() -> Any:
    from shared.integrations.twilio import Twilio

    s = settings.get()
    return Twilio(
        s.twilio_api_base,
        s.twilio_account_sid,
        s.twilio_auth_token,
        timeout=s.notify_timeout_seconds,
    )


def status_callback_url(notice_id: str) -> str | None:
    base = settings.get().notifications_url
    return f"{base}/twilio/status?n={notice_id}" if base else None


def _send_sms(lease: Lease, content: Content) -> Result:
    s = settings.get()
    phone = content.recipient.get("phone")
    if not phone:
        return Result(Outcome.PERMANENT, "no phone number")
    if not (s.twilio_account_sid and s.twilio_auth_token and s.twilio_from):
        return Result(Outcome.TEMPORARY, "Twilio is not configured")
    client = _twilio()
    body = content.rendered.sms
    current = lease.doc["channels"][Channel.SMS.value]
    if current.get("unknown"):
        # An earlier attempt's answer was lost: it may have gone out. Look before sending.
        since = current.get("lostAttemptAt")
        try:
            messages = client.recent_messages(phone, s.twilio_from)
        except Exception as exc:  # cannot tell: sending now could text twice
            return Result(Outcome.TEMPORARY, f"lookup failed: {type(exc).__name__}")
        found = rules.matching_message(messages, body, since) if since else None
        if found is not None:
            return Result(Outcome.SENT, "found at Twilio", provider_id=str(found.get("sid")))
    answer = client.send(phone, s.twilio_from, body, status_callback_url(lease.ref.id))
    if 200 <= answer.status < 300:
        return Result(Outcome.SENT, "queued", provider_id=str(answer.body.get("sid")))
    if answer.lost:
        return Result(Outcome.UNKNOWN, f"answer lost: {answer.detail}")
    if answer.status == 0:
        return Result(Outcome.TEMPORARY, answer.detail)
    detail = f"{answer.status} {answer.error_code or ''} {answer.body.get('message') or ''}"
    return Result(
        rules.twilio_outcome(answer.status),
        detail.strip(),
        retry_after=answer.retry_after,
        suppress=answer.error_code in rules.TWILIO_SUPPRESS,
    )


def _send_push(lease: Lease, content: Content) -> Result | None:
    from google.cloud.firestore import FieldFilter

    from shared.integrations import fcm

    uid = str(lease.doc.get("uid") or "")
    current = lease.doc["channels"][Channel.PUSH.value]
    done = set(current.get("sentTokens") or [])
    snaps = (
        _db()
        .collection(DEVICES)
        .where(filter=FieldFilter("uid", "==", uid))
        .limit(MAX_PUSH_TOKENS)
        .stream()
    )
    tokens = [str(t) for s in snaps if (t := (s.to_dict() or {}).get("token")) and s.id not in done]
    if not tokens:
        return Result(Outcome.SENT, "every device has it") if done else None
    data = {"kind": str(lease.doc.get("kind")), "noticeId": lease.ref.id}
    for key in ("orderId", "bookingId", "appointmentId"):
        value = (lease.doc.get("data") or {}).get(key)
        if isinstance(value, str):
            data[key] = value
    try:
        answers = fcm.send(tokens, content.rendered.push_title, content.rendered.push_body, data)
    except Exception as exc:
        log.warning("push to %s failed: %r", uid, exc)
        return Result(Outcome.TEMPORARY, f"{type(exc).__name__}"[:200])
    sent = tuple(rules.token_id(a.token) for a in answers if a.error is None)
    dead = tuple(a.token for a in answers if a.error in rules.FCM_DEAD_TOKEN)
    retry = tuple(
        a.token for a in answers if a.error and rules.fcm_outcome(a.error) is Outcome.TEMPORARY
    )
    errors = sorted({a.error for a in answers if a.error})
    detail = f"{len(sent)} of {len(tokens)} devices" + (f"; {', '.join(errors)}" if errors else "")
    if retry:
        outcome = Outcome.TEMPORARY
    elif sent or done:
        outcome = Outcome.SENT
    else:
        outcome = Outcome.PERMANENT
    return Result(
        outcome,
        detail,
        provider_id=next((a.message_id for a in answers if a.message_id), None),
        dead_tokens=dead,
        sent_tokens=sent,
        retry_tokens=retry,
    )


SENDERS: Mapping[Channel, Callable[[Lease, Content], Result | None]] = {
    Channel.EMAIL: _send_email,
    Channel.SMS: _send_sms,
    Channel.PUSH: _send_push,
}


# -- the sweep ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    examined: int
    delivered: int
    sent: int
    waiting: int
    failed: int


def _deliver_isolated(snap: Any) -> Any:
    """One notice of a sweep: a notice that cannot be delivered (a record that no longer
    parses, a template that refuses its data) must not stop the others. Its lease runs out and
    a later sweep tries it again; the error line names it."""
    try:
        return deliver(snap.id, snap)
    except Exception:
        log.exception("notice %s could not be delivered by the sweep", snap.id)
        return None


def sweep(limit: int = 100) -> SweepResult:
    """Deliver what is due: notices whose trigger never came, retries whose time came,
    leases that ran out. Safe to run concurrently with itself and with the trigger."""
    from google.cloud.firestore import FieldFilter

    now = clock.now()
    query = (
        notices()
        .where(filter=FieldFilter("status", "in", list(rules.SWEPT)))
        .where(filter=FieldFilter("dueAt", "<=", now))
        .order_by("dueAt")
        .limit(limit)
    )
    snaps = list(query.stream())
    with ThreadPoolExecutor(max_workers=SWEEP_WORKERS) as pool:
        done = [d for d in pool.map(_deliver_isolated, snaps) if d is not None]
    states = [state for d in done for state in d.results.values()]
    return SweepResult(
        examined=len(snaps),
        delivered=sum(1 for d in done if d.claimed),
        sent=states.count(State.SENT.value),
        waiting=states.count(State.RETRY.value),
        failed=states.count(State.FAILED.value),
    )


# -- receipts, preferences, devices, suppressions ----------------------------------------


def record_receipt(notice_id: str, params: Mapping[str, str]) -> bool:
    """Keep one Twilio status report (a replay of it writes nothing); returns whether it
    was new. A permanent refusal by the recipient (STOP) suppresses the number."""
    from google.api_core.exceptions import AlreadyExists

    notice = notices().document(notice_id)
    if not notice.get().exists:
        raise NotFound("No such notice.", code="notice_not_found")
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    raw_code = params.get("ErrorCode") or ""
    code = int(raw_code) if raw_code.isdigit() else None
    receipt = {
        "sid": sid,
        "status": status,
        "errorCode": code,
        "to": params.get("To"),
        "at": clock.now(),
    }
    try:
        store.create(notice.collection(RECEIPTS).document(f"{sid}-{status}"), receipt, by="twilio")
    except AlreadyExists:
        return False
    if status in ("failed", "undelivered") and code in rules.TWILIO_SUPPRESS and params.get("To"):
        store.set(
            suppression_ref(Channel.SMS, params["To"]),
            {
                "channel": Channel.SMS.value,
                "address": params["To"],
                "reason": f"Twilio {code}",
                "noticeId": notice_id,
                "at": clock.now(),
            },
            by="twilio",
        )
    return True


def preferences(uid: str) -> dict[str, Any]:
    """A user's stored preferences, with the defaults for what they never set."""
    snap = preferences_ref(uid).get()
    doc = (snap.to_dict() or {}) if snap.exists else {}
    prefs = rules.Preferences.from_doc(doc)
    channels = {
        category.value: {
            channel.value: prefs.wants(category, channel) or category in rules.IGNORES_OPT_OUT
            for channel in Channel
        }
        for category in Category
    }
    quiet = None
    if prefs.quiet_start and prefs.quiet_end:
        quiet = {
            "start": prefs.quiet_start.strftime("%H:%M"),
            "end": prefs.quiet_end.strftime("%H:%M"),
        }
    return {
        "uid": uid,
        "locale": prefs.locale,
        "timeZone": prefs.time_zone,
        "quietHours": quiet,
        "channels": channels,
        "updatedAt": doc.get("updatedAt"),
    }


def save_preferences(
    uid: str,
    *,
    locale: str | None,
    time_zone: str | None,
    quiet_hours: dict[str, str] | None,
    channels: dict[str, dict[str, bool]] | None,
    replace_quiet_hours: bool,
) -> dict[str, Any]:
    if time_zone is not None and not rules.valid_zone(time_zone):
        raise BadRequest(f"Unknown time zone {time_zone!r}.", code="unknown_time_zone")
    for category, per_channel in (channels or {}).items():
        if Category(category) in rules.IGNORES_OPT_OUT and not all(per_channel.values()):
            raise BadRequest(
                f"{category} notices cannot be turned off.", code="category_always_sent"
            )
    data: dict[str, Any] = {"uid": uid, "updatedAt": clock.now()}
    if locale is not None:
        data["locale"] = rules.locale_of(locale)
    if time_zone is not None:
        data["timeZone"] = time_zone
    if replace_quiet_hours:
        data["quietHours"] = quiet_hours
    if channels:
        data["channels"] = channels
    store.set(preferences_ref(uid), data, merge=True, by=uid)
    return preferences(uid)


def unsubscribe(token: str) -> tuple[str, Category]:
    """Apply a one-click unsubscribe link: e-mail of that category off for its user."""
    key = settings.get().notify_signing_key.encode()
    try:
        uid, category = rules.read_unsubscribe_token(key, token, clock.now())
    except rules.TokenRefused as exc:
        raise BadRequest(str(exc), code=exc.code) from None
    _refuse_erased(uid)
    if category in rules.IGNORES_OPT_OUT:
        raise BadRequest("This kind of notice cannot be turned off.", code="category_always_sent")
    store.set(
        preferences_ref(uid),
        {
            "uid": uid,
            "channels": {category.value: {Channel.EMAIL.value: False}},
            "updatedAt": clock.now(),
        },
        merge=True,
        by=f"unsubscribe:{uid}",
    )
    return uid, category


def read_unsubscribe(token: str) -> tuple[str, Category]:
    key = settings.get().notify_signing_key.encode()
    try:
        uid, category = rules.read_unsubscribe_token(key, token, clock.now())
    except rules.TokenRefused as exc:
        raise BadRequest(str(exc), code=exc.code) from None
    _refuse_erased(uid)
    return uid, category


def _refuse_erased(uid: str) -> None:
    """An erased account's links name nobody any more (issue 27): refused as not valid."""
    from shared.identity import access

    state = access.get(uid)
    if state is not None and state.deleted:
        raise BadRequest("This link is not valid.", code="unsubscribe_token_invalid")


def register_device(uid: str, token: str, platform: str) -> dict[str, Any]:
    """Register (or take over: a device that changed hands) a push token for `uid`."""
    now = clock.now()
    device_id = rules.token_id(token)
    ref = _db().collection(DEVICES).document(device_id)
    record = {
        "id": device_id,
        "uid": uid,
        "token": token,
        "platform": platform,
        "createdAt": now,
        "updatedAt": now,
    }
    store.set(ref, record, by=uid)
    return record


def device(device_id: str) -> dict[str, Any] | None:
    snap = _db().collection(DEVICES).document(device_id).get()
    return (snap.to_dict() or None) if snap.exists else None


def devices_of(uid: str) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    snaps = (
        _db()
        .collection(DEVICES)
        .where(filter=FieldFilter("uid", "==", uid))
        .limit(MAX_PUSH_TOKENS)
        .stream()
    )
    return [s.to_dict() or {} for s in snaps]


def delete_device(device_id: str, actor: str) -> None:
    store.delete(_db().collection(DEVICES).document(device_id), by=actor)


# -- admin: notices, their history, retries -----------------------------------------------


def get_notice(notice_id: str) -> dict[str, Any] | None:
    snap = notices().document(notice_id).get()
    return {**(snap.to_dict() or {}), "id": snap.id} if snap.exists else None


def list_notices(
    *, uid: str | None, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    from google.cloud.firestore import FieldFilter

    query = notices()
    if uid:
        query = query.where(filter=FieldFilter("uid", "==", uid))
    if status:
        query = query.where(filter=FieldFilter("status", "==", status))
    snaps, next_cursor = pagination.run_page(
        notices(), query, [("createdAt", "DESCENDING")], limit=limit, cursor=cursor
    )
    return [{**(s.to_dict() or {}), "id": s.id} for s in snaps], next_cursor


def history(notice_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A notice's attempts and Twilio's reports on it, oldest first."""
    ref = notices().document(notice_id)
    snap = ref.get()
    attempts = list(((snap.to_dict() or {}) if snap.exists else {}).get("history") or [])
    receipts = [s.to_dict() or {} for s in ref.collection(RECEIPTS).stream()]
    epoch = datetime.min.replace(tzinfo=UTC)
    attempts.sort(key=lambda a: a.get("at") or epoch)
    receipts.sort(key=lambda r: r.get("at") or epoch)
    return attempts, receipts


def retry(notice_id: str, actor: str) -> Delivery:
    """An admin's retry of a notice's failed channels: a fresh round of attempts, now. It
    takes the one way out (`deliver`), whose claim judges each channel again by the rule of a
    first send: an address suppressed by the very failure retried, or a category turned off
    since, is skipped with its reason, not sent."""
    from google.api_core.exceptions import FailedPrecondition

    ref = notices().document(notice_id)
    for _ in range(CLAIM_TRIES):
        snap = ref.get()
        if not snap.exists:
            raise NotFound("No such notice.", code="notice_not_found")
        doc = snap.to_dict() or {}
        channels = dict(doc.get("channels") or {})
        failed = [n for n, c in channels.items() if c.get("state") == State.FAILED]
        if not failed or doc.get("cancelled"):
            raise Conflict("Nothing of this notice failed.", code="nothing_to_retry")
        if doc.get("status") == Notice.SENDING:
            raise Conflict("This notice is being sent right now.", code="notice_busy")
        now = clock.now()
        for name in failed:
            rules.check_transition(State.FAILED, State.RETRY)
            channels[name] = {
                **channels[name],
                "state": State.RETRY.value,
                "attempts": 0,
                "nextAt": now,
                "retriedBy": actor,
            }
        batch = _db().batch()
        store.update(
            ref,
            {
                "channels": channels,
                "status": Notice.PENDING.value,
                "dueAt": now,
                "outcome": None,
                "updatedAt": now,
            },
            tx=batch,
            by=actor,
            unchanged_since=snap.update_time,
        )
        try:
            batch.commit()
        except FailedPrecondition:
            continue
        return deliver(notice_id)
    raise Conflict("The notice changed meanwhile; try again.", code="contention")
