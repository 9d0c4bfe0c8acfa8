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

import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.identity import access, profiles
from shared.notify import rules, templates
from shared.notify.rules import Category, Channel, Notice, Outcome, Result, State
from shared.platform import clients, clock, logs, outbox, pagination, settings, store
from shared.platform.errors import BadRequest, Conflict, NotFound, is_dependency_failure

if TYPE_CHECKING:
    from shared.integrations import smtp

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
# What a notice of an erased account is stripped of when notify stops it, as the erasure
# strips the notices it finds (shared/privacy/rules.py HOLDINGS; a test holds them equal).
ERASED_SCRUBBED = ("to", "data", "recipient")


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

    def wrote(self, update: dict[str, Any], update_time: Any) -> Lease:
        """Our write of `update` on the notice was applied at `update_time`."""
        self.doc = {**self.doc, **update}
        self.update_time = update_time
        self.writes += 1
        return self


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


class Reading(NamedTuple):
    """What the claim of one notice judges it on, read for it: who a queued notice goes to
    (its first plan), or the standing of a notice planned earlier whose time came; and, for
    either, whether its account was erased (its access record a tombstone)."""

    planned: tuple[Recipient, rules.Preferences] | None = None
    standing: Standing | None = None
    erased: bool = False


class Standing(NamedTuple):
    """What `rules.refusal` judges a later send on, as it is at the claim."""

    prefs: rules.Preferences
    reachable: Mapping[Channel, bool]
    suppressed: frozenset[Channel]


IN_QUERY_VALUES = 30  # Firestore's limit on an `in` filter's values


def _first_reads(doc: dict[str, Any], now: datetime) -> list[Any]:
    """The documents a claim of `doc` reads before anything else: for a queued notice the
    recipient's access record, profile, preferences and the given address's suppression; for
    a later send the access record, the preferences and the due channels' addresses'
    suppressions. Nothing for a cancelled notice or one of an unknown kind, which need none."""
    kind = rules.KINDS.get(str(doc.get("kind")))
    if doc.get("cancelled") or kind is None:
        return []
    uid = str(doc.get("uid") or "")
    if doc.get("status") == Notice.QUEUED:
        to = doc.get("to") or None
        return [access.ref(uid), profiles.ref(uid), preferences_ref(uid)] + (
            [suppression_ref(Channel.EMAIL, to)] if to else []
        )
    due = rules.due_channels(doc, now) if doc.get("status") in LATER else []
    if not due:
        return []
    addresses = _addresses(doc)
    return [
        access.ref(uid),
        preferences_ref(uid),
        *(suppression_ref(c, a) for c in due if (a := addresses.get(c))),
    ]


LATER = (Notice.PENDING, Notice.SENDING)  # planned earlier: a later send judges it again


def _addresses(doc: dict[str, Any]) -> dict[Channel, str | None]:
    """A planned notice's addresses (push's are the devices, which its sender reads as it
    sends)."""
    recipient = doc.get("recipient") or {}
    return {
        Channel.EMAIL: doc.get("to") or recipient.get("email"),
        Channel.SMS: recipient.get("phone"),
    }


@dataclass
class Reads:
    """What one sweep read for its claims: each document, and whether each recipient has a
    device, read once a sweep however many of its notices name them."""

    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> data ({}: none)
    devices: dict[str, bool] = field(default_factory=dict)  # uid -> has one


def _readings(
    docs: Sequence[dict[str, Any]], now: datetime, reads: Reads | None = None
) -> list[Reading]:
    """What the claims of `docs` need, read together, each document once however many
    notices name it (and not again when `reads` has it): one batched read of the profiles,
    preferences and known addresses' suppressions; one more for the addresses only the
    profiles gave (the e-mail when the notice names none, the phone when the kind texts); one
    query per 30 recipients for whether they registered a device, when the kind pushes."""
    reads = reads if reads is not None else Reads()
    found = reads.docs
    _read_all([ref for doc in docs for ref in _first_reads(doc, now)], found)
    queued = {
        i: kind
        for i, doc in enumerate(docs)
        if doc.get("status") == Notice.QUEUED
        and not doc.get("cancelled")
        and (kind := rules.KINDS.get(str(doc.get("kind")))) is not None
    }
    addresses: dict[int, dict[Channel, str | None]] = {}
    for i, kind in queued.items():
        doc = docs[i]
        profile = found.get(profiles.ref(str(doc.get("uid") or "")).path) or {}
        addresses[i] = {
            Channel.EMAIL: doc.get("to") or profile.get("email") or None,
            Channel.SMS: profile.get("phone") or None if Channel.SMS in kind.channels else None,
        }
    later = [suppression_ref(c, a) for each in addresses.values() for c, a in each.items() if a]
    _read_all(later, found)
    pushing = {
        str(docs[i].get("uid") or "") for i, k in queued.items() if Channel.PUSH in k.channels
    }
    _with_devices(pushing, reads.devices)

    def suppressed(each: Mapping[Channel, str | None]) -> frozenset[Channel]:
        return frozenset(c for c, a in each.items() if a and found.get(suppression_ref(c, a).path))

    def erased(uid: str) -> bool:
        return (found.get(access.ref(uid).path) or {}).get("deleted") is True

    readings = []
    for i, doc in enumerate(docs):
        uid = str(doc.get("uid") or "")
        if i in addresses and erased(uid):
            readings.append(Reading(erased=True))
        elif i in addresses:
            profile = found.get(profiles.ref(uid).path) or {}
            prefs = rules.Preferences.from_doc(found.get(preferences_ref(uid).path) or {})
            email, phone = addresses[i][Channel.EMAIL], addresses[i][Channel.SMS]
            name = str(profile.get("displayName") or (email or "").split("@")[0])
            recipient = Recipient(
                name=name[:100],
                email=email,
                phone=phone,
                locale=prefs.locale,
                time_zone=prefs.time_zone,
                has_devices=reads.devices.get(uid, False),
                suppressed=suppressed(addresses[i]),
            )
            readings.append(Reading(planned=(recipient, prefs)))
        elif _first_reads(doc, now) and erased(uid):
            readings.append(Reading(erased=True))
        elif _first_reads(doc, now):
            every = _addresses(doc)
            due = set(rules.due_channels(doc, now))
            standing = Standing(
                prefs=rules.Preferences.from_doc(found.get(preferences_ref(uid).path) or {}),
                reachable={Channel.PUSH: True, **{c: bool(a) for c, a in every.items()}},
                suppressed=suppressed({c: a for c, a in every.items() if c in due}),
            )
            readings.append(Reading(standing=standing))
        else:
            readings.append(Reading())
    return readings


def _read_all(refs: Sequence[Any], found: dict[str, dict[str, Any]]) -> None:
    """Read into `found` (path -> data, {} when missing) each document it lacks, in one
    round trip."""
    unique = {ref.path: ref for ref in refs if ref.path not in found}
    if unique:
        found.update({s.reference.path: _data(s) for s in _db().get_all(list(unique.values()))})


def _with_devices(uids: set[str], found: dict[str, bool]) -> None:
    """Learn into `found` whether each of `uids` it lacks registered a push device."""
    from google.cloud.firestore import FieldFilter

    ordered = sorted(uid for uid in uids if uid not in found)
    for start in range(0, len(ordered), IN_QUERY_VALUES):
        chunk = ordered[start : start + IN_QUERY_VALUES]
        query = _db().collection(DEVICES).where(filter=FieldFilter("uid", "in", chunk))
        query = query.select(["uid"])
        if len(chunk) == 1:
            query = query.limit(1)
        having = {str((s.to_dict() or {}).get("uid")) for s in query.stream()}
        found.update({uid: uid in having for uid in chunk})


def _data(snap: Any) -> dict[str, Any]:
    if snap is None or not snap.exists:
        return {}
    data: dict[str, Any] = snap.to_dict() or {}
    return data


# -- claiming ----------------------------------------------------------------------------


def _plan_channels(
    doc: dict[str, Any], now: datetime, planned: tuple[Recipient, rules.Preferences] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first claim of a queued notice: its channels, and who it goes to (`planned`, read
    for it; None for a kind we do not know)."""
    kind = rules.KINDS.get(str(doc.get("kind")))
    if kind is None or planned is None:
        failed = {
            "state": State.FAILED.value,
            "attempts": 0,
            "nextAt": None,
            "lastError": f"unknown kind {doc.get('kind')!r}",
        }
        return {Channel.EMAIL.value: failed}, {}
    recipient, prefs = planned
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
    doc: dict[str, Any], now: datetime, reading: Reading
) -> tuple[dict[str, Any], list[Channel]]:
    """The write that claims `doc` at `now` and the channels it takes ({}: nothing to do).
    `reading.standing`, read now for a notice planned earlier: a due channel the first send's
    rule would now refuse (turned off since, its address suppressed since) is skipped."""
    standing = reading.standing
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
    if reading.erased:
        if status == Notice.SENDING and not rules.due_channels(doc, now):
            return {}, []  # its worker is still at it; the claim after it stops the rest
        return _stopped_for_erasure(doc, now), []
    update: dict[str, Any] = {}
    if status == Notice.QUEUED:
        # Planned at first sight, even when not due yet (a reminder): it then waits as
        # `pending` until its channels' time.
        channels, recipient = _plan_channels(doc, now, reading.planned)
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
    quiet = rules.quiet_hold(kind, standing.prefs, now) if standing and kind and due else None
    if quiet is not None:
        # A later send inside quiet hours set since: it waits for their end, as a first would.
        channels = dict(doc.get("channels") or {})
        for channel in due:
            channels[channel.value] = rules.held(channels[channel.value], quiet)
        doc = {**doc, "channels": channels}
        update["channels"] = channels
        due = []
    if not due:
        if update:  # planned, nothing due yet (quiet hours, all skipped)
            state, due_at = rules.summary(update["channels"])
            update.update(status=state.value, dueAt=due_at, updatedAt=now)
            if state is not Notice.SENDING:
                update["lease"] = None
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


def _stopped_for_erasure(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The write that stops a notice of an erased account for good: cancelled with the reason
    on each channel still open, and stripped of its address and contents as the erasure strips
    the notices it finds (one queued after the erasure, from a record kept under a legal hold,
    or planned before it and due again before the erasure's walk reached it)."""
    kind = rules.KINDS.get(str(doc.get("kind")))
    channels = rules.stopped(doc.get("channels") or {}, kind, rules.RECIPIENT_ERASED)
    return {
        **dict.fromkeys(ERASED_SCRUBBED),
        "status": Notice.CANCELLED.value,
        "channels": channels,
        "cancelled": True,
        "cancelledAt": now,
        "cancelReason": rules.RECIPIENT_ERASED,
        "dueAt": None,
        "lease": None,
        "updatedAt": now,
    }


def _stopped(notice_id: str, reading: Reading) -> None:
    if reading.erased:
        log.info("notice %s cancelled: its recipient's account was erased", notice_id)


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
        reading = _readings([doc], now)[0]
        update, due = _claim_update(doc, now, reading)
        if not update:
            return None
        batch = _db().batch()
        store.update(ref, update, tx=batch, by="system", unchanged_since=snap.update_time)
        try:
            (result,) = batch.commit()
        except (FailedPrecondition, Missing):
            snap = None  # someone else wrote it first: read what they did
            continue
        _stopped(notice_id, reading)
        if not due:
            return None
        return Lease(ref, update["lease"]["id"], {**doc, **update}, result.update_time, due)
    return None


def _commit(
    lease: Lease, change: Callable[[dict[str, Any]], dict[str, Any]], extra: Any = None
) -> None:
    """Write `change(doc)` on the leased notice, only while the lease is still ours. A write
    Firestore could not take for now (unavailable, a deadline: its fate unknown) is read again
    and tried again while the lease holds, as one refused because the notice was written
    meanwhile: a record dropped would leave its notice to be sent again when the lease runs
    out. `change` records only what the notice does not show recorded yet."""
    from google.api_core.exceptions import FailedPrecondition

    for attempt in range(CLAIM_TRIES + 2):
        update = change(lease.doc)
        batch = _db().batch()
        store.update(lease.ref, update, tx=batch, by="system", unchanged_since=lease.update_time)
        if extra is not None:
            extra(batch)
        try:
            results = batch.commit()
        except FailedPrecondition:
            pass  # written meanwhile (a cancellation, or a takeover)
        except Exception as exc:
            if not is_dependency_failure(exc) or attempt == CLAIM_TRIES + 1:
                raise
            log.warning("notice %s: a write failed, tried again: %r", lease.ref.id, exc)
            time.sleep(COMMIT_BACKOFF * 2**attempt)
        else:
            lease.wrote(update, results[0].update_time)
            return
        snap = lease.ref.get()
        doc = snap.to_dict() or {}
        if (doc.get("lease") or {}).get("id") != lease.id:
            raise LeaseLost(lease.ref.id)
        lease.doc, lease.update_time = doc, snap.update_time
    raise LeaseLost(lease.ref.id)


COMMIT_BACKOFF = 0.2  # seconds before a write that failed for now is tried again, doubling


# -- delivering --------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    notice_id: str
    claimed: bool
    results: dict[str, str] = field(default_factory=dict)  # channel -> state after
    lost: bool = False


class Sending:
    """What one delivery run shares between its notices: one SMTP connection, opened at the
    first mail and closed with the run, and each recipient's unsubscribe link (one token per
    user and category, not one per notice)."""

    def __init__(self) -> None:
        self._mail: smtp.Session | None = None
        self._links: dict[tuple[str, Category], str] = {}
        self.suppressed: set[tuple[Channel, str]] = set()  # addresses refused for good
        self.expires = clock.now() + timedelta(days=rules.UNSUBSCRIBE_DAYS)

    def __enter__(self) -> Sending:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mail is not None:
            self._mail.close()

    def mail(self, mail: smtp.Mail) -> smtp.Answer:
        """Send one mail on the run's connection."""
        if self._mail is None:
            self._mail = _relay().session()
        return self._mail.send(mail)

    def unsubscribe_url(self, doc: dict[str, Any], kind: rules.Kind) -> str | None:
        s = settings.get()
        if (
            kind.category in rules.IGNORES_OPT_OUT
            or not s.notify_signing_key
            or not s.notifications_url
        ):
            return None
        key = (str(doc.get("uid")), kind.category)
        if key not in self._links:
            token = rules.unsubscribe_token(
                s.notify_signing_key.encode(), key[0], kind.category, self.expires
            )
            self._links[key] = f"{s.notifications_url}/unsubscribe?token={token}"
        return self._links[key]


def deliver(notice_id: str, snap: Any = None) -> Delivery:
    """Send whatever of this notice is due now (nothing if another worker holds it)."""
    lease = claim(notice_id, clock.now(), snap)
    if lease is None:
        return Delivery(notice_id, claimed=False)
    results: dict[str, str] = {}
    try:
        with Sending() as sending:
            content, failure = _content(lease, sending)
            for channel in lease.channels:
                if failure is not None:
                    result: Result | None = failure
                else:
                    assert content is not None
                    result = SENDERS[channel](lease, content, sending)
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
    mail: smtp.Mail | None  # when e-mail is claimed and there is an address


def _content(lease: Lease, sending: Sending) -> tuple[Content | None, Result | None]:
    """The notice rendered for its recipient and its mail built, or the attempt it comes to
    instead: a kind, template or address that refuses the notice's data cannot be helped by
    sending again (permanent); anything else unforeseen is tried again later (temporary). Either
    way the attempt is recorded and the lease given up, not held until it runs out."""
    try:
        return _built(lease, sending)
    except Exception as exc:
        log.exception("notice %s could not be prepared", lease.ref.id)
        return None, Result(Outcome.TEMPORARY, f"not prepared: {type(exc).__name__}"[:300])


def _built(lease: Lease, sending: Sending) -> tuple[Content | None, Result | None]:
    import jinja2

    doc = lease.doc
    kind_name = str(doc.get("kind"))
    kind = rules.KINDS.get(kind_name)
    if kind is None:
        return None, Result(Outcome.PERMANENT, f"unknown kind {kind_name!r}")
    recipient = doc.get("recipient") or {}
    unsubscribe_url = sending.unsubscribe_url(doc, kind)
    try:
        rendered = templates.render(
            kind_name,
            recipient.get("locale") or rules.DEFAULT_LOCALE,
            doc.get("data") or {},
            name=recipient.get("name") or "",
            time_zone=recipient.get("timeZone") or "UTC",
            unsubscribe_url=unsubscribe_url,
        )
    except (jinja2.TemplateError, LookupError, TypeError, ValueError) as exc:
        log.error("notice %s (%s) does not render: %r", doc.get("uid"), kind_name, exc)
        return None, Result(Outcome.PERMANENT, f"template: {type(exc).__name__}: {exc}"[:300])
    to = doc.get("to") or recipient.get("email")
    mail = None
    if Channel.EMAIL in lease.channels and to:
        try:
            mail = _mail(lease.ref.id, str(to), kind, rendered, unsubscribe_url)
            mail.data  # noqa: B018 (built now: a sweep builds it off the sender's thread)
        except (LookupError, TypeError, ValueError) as exc:  # a header that cannot be written
            log.error("notice %s: its mail cannot be built: %r", lease.ref.id, exc)
            return None, Result(Outcome.PERMANENT, f"mail: {type(exc).__name__}: {exc}"[:300])
    return Content(rendered, kind, recipient, mail), None


def _mail(
    notice_id: str,
    to: str,
    kind: rules.Kind,
    rendered: templates.Rendered,
    unsubscribe_url: str | None,
) -> smtp.Mail:
    from shared.integrations import smtp

    headers = {"X-Alodoktor-Notice": str(kind.category.value)}
    if unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    return smtp.Mail(
        sender=settings.get().mail_from,
        to=to,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id_of(notice_id),
        headers=headers,
    )


# A claimed channel the sweep gave back unsent: its lease would have run out before the send
# could end (a slow relay behind a long page), and a lease that ran out is another worker's.
UNSENT = Result(Outcome.TEMPORARY, "given back unsent")


@dataclass(frozen=True)
class Attempt:
    channel: Channel
    result: Result | None  # None: nowhere to send it any more (no device left)
    record: dict[str, Any]  # its entry in the notice's history


def _attempt(lease: Lease, channel: Channel, result: Result | None) -> Attempt:
    current = (lease.doc.get("channels") or {}).get(channel.value) or {}
    record = {
        "channel": channel.value,
        "attempt": int(current.get("attempts", 0)),
        "at": clock.now(),
        "startedAt": current.get("attemptStartedAt"),
        "outcome": result.outcome.value if result else "skipped",
        "detail": (result.detail if result else "no registered device")[:500],
        "providerId": result.provider_id if result else None,
        "leaseId": lease.id,
    }
    return Attempt(channel, result, record)


def _recording(
    lease: Lease, attempts: Sequence[Attempt]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The change that records the ends of `attempts` on the leased notice (each channel and
    its history entry); the lease ends with its last claimed channel."""
    now = clock.now()

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        channels = dict(doc.get("channels") or {})
        history = list(doc.get("history") or [])
        for attempt in attempts:
            name, result = attempt.channel.value, attempt.result
            current = channels[name]
            if current.get("state") != State.SENDING:
                continue  # recorded already: our own write, whose answer was lost
            if result is UNSENT:  # not an attempt: the channel is due again, now
                after = {
                    **current,
                    "state": State.RETRY.value,
                    "attempts": max(int(current.get("attempts", 1)) - 1, 0),
                    "nextAt": now,
                }
            elif result is None:
                after = {**current, "state": State.SKIPPED.value, "nextAt": None}
                after["reason"] = "no_device"
            else:
                after = rules.after_attempt(current, result, now, f"{lease.ref.id}:{name}")
                if result.sent_tokens:
                    after["sentTokens"] = sorted(
                        set(current.get("sentTokens") or []) | set(result.sent_tokens)
                    )
                history.append(attempt.record)
            channels[name] = after
        state, due_at = rules.summary(channels)
        update: dict[str, Any] = {
            "channels": channels,
            "history": history[-MAX_HISTORY:],
            "updatedAt": now,
        }
        if state is not Notice.SENDING:  # the last claimed channel: the lease ends
            update.update(status=state.value, dueAt=due_at, lease=None)
            if state is Notice.DONE:
                update["outcome"] = rules.outcome_of(channels)
        return update

    return change


def _effects(lease: Lease, attempts: Sequence[Attempt]) -> Callable[[Any], None] | None:
    """What the answers mean beyond this notice, to be written in the commit that records
    them: whoever sees an attempt recorded also sees the address suppressed or the token
    gone, and a crash cannot keep one without the other. None when they mean nothing more."""
    meaningful = [
        a for a in attempts if a.result is not None and (a.result.suppress or a.result.dead_tokens)
    ]
    if not meaningful:
        return None

    def write(batch: Any) -> None:
        for a in meaningful:
            assert a.result is not None
            _after_effects(batch, lease, a.channel, a.result)

    return write


def _finish(lease: Lease, channel: Channel, result: Result | None) -> str:
    """Record one attempt's end on the notice (its channel and its history), under our
    lease: one write."""
    attempt = _attempt(lease, channel, result)
    _commit(lease, _recording(lease, [attempt]), _effects(lease, [attempt]))
    return _logged(lease, [attempt])[channel.value]


def _logged(lease: Lease, attempts: Sequence[Attempt]) -> dict[str, str]:
    """Each recorded attempt's line, and the state each channel was left in."""
    states = {}
    for attempt in attempts:
        name = attempt.channel.value
        final = str(lease.doc["channels"][name]["state"])
        states[name] = final
        if attempt.result is UNSENT:
            continue
        _log_attempt(lease, attempt.channel, attempt.record, final)
        if final == State.FAILED:
            # An admin should hear of it (a log-based alert in terraform/monitoring.tf).
            log.error(
                "notice %s failed for good on %s: %s",
                lease.ref.id,
                name,
                attempt.record["detail"],
            )
    return states


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
    if result.suppress:
        address = _addresses(lease.doc).get(channel)
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


def _relay() -> Any:
    from shared.integrations import smtp

    s = settings.get()
    return smtp.Relay(
        s.smtp_host,
        s.smtp_port,
        starttls=s.smtp_starttls,
        username=s.smtp_username,
        password=s.smtp_password,
        timeout=s.notify_timeout_seconds,
    )


def _send_email(lease: Lease, content: Content, sending: Sending) -> Result:
    if content.mail is None:
        return Result(Outcome.PERMANENT, "no e-mail address")
    answer = sending.mail(content.mail)
    if answer.accepted:
        return Result(Outcome.SENT, answer.detail, provider_id=content.mail.message_id)
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


def _send_sms(lease: Lease, content: Content, sending: Sending) -> Result:
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


def _send_push(lease: Lease, content: Content, sending: Sending) -> Result | None:
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


SENDERS: Mapping[Channel, Callable[[Lease, Content, Sending], Result | None]] = {
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


FIRST_CLAIMS = 10  # the first request of a sweep's claims: its first mails go out at once
CLAIM_BATCH = 100  # claims one request carries after it
RECORD_BATCH = 100  # notices whose attempts one request records while later mails go out
# A send that raised: its channel is not recorded, so its lease runs out and a later sweep
# takes it over, as one that crashed (an SMS is then looked up at Twilio before a resend).
BROKEN = Result(Outcome.TEMPORARY, "the sender raised")


class Claim(NamedTuple):
    snap: Any
    doc: dict[str, Any]
    update: dict[str, Any]
    due: list[Channel]
    reading: Reading = Reading()


class Claimed(NamedTuple):
    """One request's worth of a sweep's page: how many notices it examined, the leases it
    took (with their contents), and the notices to deliver one by one."""

    examined: int
    leases: list[Lease]
    contents: list[tuple[Content | None, Result | None]]  # each lease's, or what it came to
    alone: list[str]


CLAIMS_AHEAD = 1  # claimed requests waiting for the sender: claims stay just ahead of sends


def sweep(limit: int = 100) -> SweepResult:
    """Deliver what is due: notices whose trigger never came, retries whose time came,
    leases that ran out. Safe to run concurrently with itself and with the trigger: every
    notice is claimed with a write conditioned on the read that found it, as `deliver` claims
    one, and one whose claim another worker's write beat is left to `deliver`, which reads it
    again. The page is read, judged and claimed as the query streams it, a request of claims
    at a time, on a thread of its own (`_claim_stream`), at most CLAIMS_AHEAD requests ahead of
    the sends; the mails of each claimed request go out on the sweep's one SMTP connection,
    one after another, its texts and pushes from SWEEP_WORKERS threads, and each notice's
    attempts are recorded from another thread as soon as its sends end (`_Recorder`).

    Whatever stops it (an error, a cancellation), a sweep records what it sent, gives back
    unsent what it claimed and joins its threads before it raises; an error of its claims or
    its records is raised once everything else is done, never swallowed."""
    from google.cloud.firestore import FieldFilter

    now = clock.now()
    query = (
        notices()
        .where(filter=FieldFilter("status", "in", list(rules.SWEPT)))
        .where(filter=FieldFilter("dueAt", "<=", now))
        .order_by("dueAt")
        .limit(limit)
    )
    stream: queue.Queue[Claimed | None] = queue.Queue(maxsize=CLAIMS_AHEAD)
    stop = threading.Event()
    examined, others = 0, []
    recorder = _Recorder()
    try:
        with (
            ThreadPoolExecutor(max_workers=1) as claimer,
            ThreadPoolExecutor(max_workers=SWEEP_WORKERS) as pool,
            Sending() as sending,
        ):
            claiming = claimer.submit(_claim_stream, query, now, sending, stream, stop)
            ended = False
            try:
                while (claimed := stream.get()) is not None:
                    examined += claimed.examined
                    others += [pool.submit(_deliver_isolated, i) for i in claimed.alone]
                    _send_all(claimed, sending, pool, recorder)
                ended = True
            finally:
                stop.set()
                while not ended and (claimed := stream.get()) is not None:
                    for lease in claimed.leases:  # claimed, never sent: due again now
                        recorder.add(lease, dict.fromkeys(lease.channels, UNSENT))
    finally:
        recorder.close()  # after the pool: every send has handed its notice over
    done = recorder.deliveries + [d for f in others if (d := f.result()) is not None]
    claiming.result()  # what stopped the claims early, once what they took is recorded
    recorder.check()
    states = [state for d in done for state in d.results.values()]
    return SweepResult(
        examined=examined,
        delivered=sum(1 for d in done if d.claimed),
        sent=states.count(State.SENT.value),
        waiting=states.count(State.RETRY.value),
        failed=states.count(State.FAILED.value),
    )


def _claim_stream(
    query: Any,
    now: datetime,
    sending: Sending,
    out: queue.Queue[Claimed | None],
    stop: threading.Event,
) -> None:
    """Read, judge and claim what `query` streams, FIRST_CLAIMS notices and then CLAIM_BATCH
    at a time, putting each request's `Claimed` on `out`, and None after the last (or once
    `stop` is set). Each claimed notice is rendered and its mail built here too, while the
    sender is busy with the mails before it."""
    try:
        reads = Reads()
        size, page = FIRST_CLAIMS, []
        for snap in query.stream():
            if stop.is_set():
                return
            page.append(snap)
            if len(page) >= size:
                out.put(_claim_page(page, now, reads, sending))
                size, page = CLAIM_BATCH, []
        if page and not stop.is_set():
            out.put(_claim_page(page, now, reads, sending))
    finally:
        out.put(None)


def _claim_page(snaps: Sequence[Any], now: datetime, reads: Reads, sending: Sending) -> Claimed:
    claims, alone = _claims(snaps, now, reads)
    leases, refused = _claim_all(claims) if claims else ([], [])
    contents = [_content(lease, sending) for lease in leases]  # never raises
    return Claimed(len(snaps), leases, contents, alone + refused)


def _deliver_isolated(notice_id: str) -> Delivery | None:
    """One notice of a sweep on its own: a notice that cannot be delivered (a record that no
    longer parses, a template that refuses its data) must not stop the others. Its lease runs
    out and a later sweep tries it again; the error line names it."""
    try:
        return deliver(notice_id)
    except Exception:
        log.exception("notice %s could not be delivered by the sweep", notice_id)
        return None


def _claims(snaps: Sequence[Any], now: datetime, reads: Reads) -> tuple[list[Claim], list[str]]:
    """The claims of a page of notices, judged as `claim` judges one, on one batched read of
    what their plans need; and the notices too broken to be read for with the others, which
    `deliver` tries (and logs) one by one."""
    together: list[tuple[Any, dict[str, Any]]] = []
    alone: list[str] = []
    for snap in snaps:
        doc = snap.to_dict() or {}
        try:
            _first_reads(doc, now)
        except Exception:
            alone.append(snap.id)
            continue
        together.append((snap, doc))
    try:
        readings = _readings([doc for _, doc in together], now, reads)
    except Exception as exc:
        if is_dependency_failure(exc):
            raise
        # One notice's reads broke the page's (a record that no longer parses): each is
        # read for on its own, and the one that cannot be is left to `deliver`, which logs it.
        kept: list[tuple[Any, dict[str, Any]]] = []
        readings = []
        for snap, doc in together:
            try:
                readings += _readings([doc], now, reads)
            except Exception:
                alone.append(snap.id)
                continue
            kept.append((snap, doc))
        together = kept
    claims = []
    for (snap, doc), reading in zip(together, readings, strict=True):
        try:
            update, due = _claim_update(doc, now, reading)
        except Exception:
            log.exception("notice %s could not be delivered by the sweep", snap.id)
            continue
        if update:
            claims.append(Claim(snap, doc, update, due, reading))
    return claims, alone


def _claim_all(claims: Sequence[Claim]) -> tuple[list[Lease], list[str]]:
    """Write `claims` in one request, each conditioned on the read that found its notice and
    applied or refused on its own: the leases taken, and the notices whose claim was refused
    (another worker wrote them since)."""
    from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

    batch = BulkWriteBatch(_db())
    for c in claims:
        store.update(
            c.snap.reference, c.update, tx=batch, by="system", unchanged_since=c.snap.update_time
        )
    leases, refused = [], []
    for c, update_time in zip(claims, _written(batch), strict=True):
        if update_time is None:
            refused.append(c.snap.id)
            continue
        _stopped(c.snap.id, c.reading)
        if c.due:
            lease_id = c.update["lease"]["id"]
            doc = {**c.doc, **c.update}
            leases.append(Lease(c.snap.reference, lease_id, doc, update_time, c.due))
    return leases, refused


def _written(batch: Any) -> list[Any]:
    """Apply a BulkWriteBatch (each write on its own): each write's update time, None for a
    write that was refused (its precondition failed) or whose fate is unknown."""
    try:
        response = batch.commit()
    except Exception as exc:
        # Some may have been applied: their notices are read again, found leased, and wait
        # for the lease to run out; none is sent twice.
        log.warning("a batch of %d notice writes failed: %r", len(batch), exc)
        return [None] * len(batch)
    statuses = list(response.status)
    return [
        result.update_time if i < len(statuses) and statuses[i].code == 0 else None
        for i, result in enumerate(response.write_results)
    ]


def _send_all(claimed: Claimed, sending: Sending, pool: Any, recorder: _Recorder) -> None:
    """Send the claimed channels: texts and pushes from the pool, mails one after another on
    the run's connection, each notice handed to the recorder as soon as all its sends ended.
    Stopped midway (a cancellation), the mail being sent is left to its lease (it may have
    gone, as when a worker crashes) and the rest of the request is given back unsent."""
    work: list[tuple[Lease, Content | None, dict[Channel, Any]]] = []
    for lease, (content, failure) in zip(claimed.leases, claimed.contents, strict=True):
        sends: dict[Channel, Any] = {}
        for channel in lease.channels:
            if failure is not None:
                sends[channel] = failure
            elif channel is not Channel.EMAIL:
                sends[channel] = pool.submit(_send_in_time, lease, channel, content, sending)
        work.append((lease, content, sends))
    for n, (lease, content, sends) in enumerate(work):
        if Channel.EMAIL in lease.channels and Channel.EMAIL not in sends:
            assert content is not None
            try:
                sends[Channel.EMAIL] = _send_in_time(lease, Channel.EMAIL, content, sending)
            except BaseException:
                sends[Channel.EMAIL] = BROKEN
                _record_when_sent(lease, sends, recorder)
                for rest, _, unsent in work[n + 1 :]:
                    for send in unsent.values():
                        if isinstance(send, Future):
                            send.cancel()  # not begun: given back with the rest
                    if Channel.EMAIL in rest.channels:
                        unsent.setdefault(Channel.EMAIL, UNSENT)
                    _record_when_sent(rest, unsent, recorder)
                raise
        _record_when_sent(lease, sends, recorder)


def _record_when_sent(lease: Lease, sends: Mapping[Channel, Any], recorder: _Recorder) -> None:
    """Hand `lease` to the recorder once each of its sends (a result, or a future of one)
    ended: from whichever thread ends the last."""
    futures = [f for f in sends.values() if isinstance(f, Future)]
    left, lock = [len(futures) + 1], threading.Lock()

    def one_ended(_: object = None) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        recorder.add(lease, {c: _ended(r) for c, r in sends.items()})

    for future in futures:
        future.add_done_callback(one_ended)
    one_ended()


def _ended(send: Any) -> Result | None:
    """A send's result; a future cancelled before it began is a channel given back unsent,
    one that raised (only a cancellation gets past `_send_in_time`) is left to its lease."""
    if not isinstance(send, Future):
        return send  # type: ignore[no-any-return]
    if send.cancelled():
        return UNSENT
    if send.exception() is not None:
        return BROKEN
    return send.result()  # type: ignore[no-any-return]


def _send_in_time(
    lease: Lease, channel: Channel, content: Content, sending: Sending
) -> Result | None:
    """Send one claimed channel while its lease has at least half of its time left (a send
    that could outlast it might run beside another worker's), else give it back unsent."""
    left = lease.doc["lease"]["until"] - clock.now()
    if left < timedelta(seconds=settings.get().notify_lease_seconds / 2):
        return UNSENT
    address = _addresses(lease.doc).get(channel)
    if address and (channel, address) in sending.suppressed:
        # Refused for good earlier in this run, and its suppression maybe not written yet:
        # given back, the next claim reads it and skips the channel by the rule of a first send.
        return UNSENT
    try:
        result = SENDERS[channel](lease, content, sending)
    except Exception:
        log.exception("notice %s could not be delivered by the sweep", lease.ref.id)
        return BROKEN
    if result is not None and result.suppress and address:
        sending.suppressed.add((channel, address))
    return result


RECORD_WAIT = 0.3  # seconds the first of a request's records waits for others to join it


class _Recorder:
    """Records a sweep's attempts from a thread of its own, up to RECORD_BATCH notices a
    request, each write conditioned on its lease's last write and applied on its own. A record
    waits at most RECORD_WAIT for others to share its request, whatever the sends after it
    take: a record held back while the relay is slow would let its lease run out, and the
    worker that took the notice over would send it again. A notice written meanwhile
    (cancelled, or taken over), or whose answers mean more (a suppression, a dead token,
    written in the same commit), is recorded alone by `_commit`. A record that cannot be
    written is logged and its error raised by `check` once the sweep's work is done."""

    def __init__(self) -> None:
        self._inbox: queue.Queue[tuple[Lease, list[Attempt]] | None] = queue.Queue()
        self.deliveries: list[Delivery] = []
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="notify-recorder", daemon=True)
        self._thread.start()

    def add(self, lease: Lease, results: Mapping[Channel, Result | None]) -> None:
        attempts = [_attempt(lease, c, r) for c, r in results.items() if r is not BROKEN]
        if attempts:
            self._inbox.put((lease, attempts))

    def close(self) -> None:
        """Write what was added and end the thread."""
        self._inbox.put(None)
        self._thread.join()

    def check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        more = True
        while more:
            first = self._inbox.get()
            if first is None:
                return
            batch, until = [first], time.monotonic() + RECORD_WAIT
            while len(batch) < RECORD_BATCH:
                try:
                    item = self._inbox.get(timeout=max(until - time.monotonic(), 0))
                except queue.Empty:
                    break
                if item is None:
                    more = False
                    break
                batch.append(item)
            try:
                deliveries, failure = _record(batch)
            except BaseException as exc:
                log.exception("the attempts of %d notices could not be recorded", len(batch))
                deliveries, failure = [], exc
            self.deliveries += deliveries
            self._failure = self._failure or failure


def _record(
    items: Sequence[tuple[Lease, list[Attempt]]],
) -> tuple[list[Delivery], BaseException | None]:
    """Record `items` in one request, those that need it alone: what was recorded, and the
    first error of a record that could not be written."""
    from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

    batch = BulkWriteBatch(_db())
    together = []
    alone: list[tuple[Lease, list[Attempt], Any, Callable[[Any], None] | None]] = []
    for lease, attempts in items:
        change, effects = _recording(lease, attempts), _effects(lease, attempts)
        if effects is None:
            update = change(lease.doc)
            store.update(
                lease.ref, update, tx=batch, by="system", unchanged_since=lease.update_time
            )
            together.append((lease, attempts, change, update))
        else:
            alone.append((lease, attempts, change, effects))
    written = _written(batch) if together else []
    deliveries, failure = [], None
    for (lease, attempts, change, update), update_time in zip(together, written, strict=True):
        if update_time is None:
            alone.append((lease, attempts, change, None))
        else:
            deliveries.append(_recorded(lease.wrote(update, update_time), attempts))
    for lease, attempts, change, effects in alone:
        try:
            _commit(lease, change, effects)
        except LeaseLost:
            log.warning("notice %s: lease lost to another worker", lease.ref.id)
            deliveries.append(Delivery(lease.ref.id, claimed=True, lost=True))
            continue
        except Exception as exc:
            log.exception("notice %s: its attempts could not be recorded", lease.ref.id)
            failure = failure or exc
            continue
        deliveries.append(_recorded(lease, attempts))
    return deliveries, failure


def _recorded(lease: Lease, attempts: Sequence[Attempt]) -> Delivery:
    return Delivery(lease.ref.id, claimed=True, results=_logged(lease, attempts))


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
