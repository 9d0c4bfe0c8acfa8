"""Clinic bookings in Firestore: clinic setup, the booking queue, its counters and dashboards.

Collections:
  clinics/{clinicUid}                  the clinic's services and weekly schedule
  bookings/{id}                        one booking (price and currency copied at request time)
  bookingWindows/{clinicUid}_{start}   counts by status of one window
  bookingWindows/{...}/places/{n}      place n of the window's capacity, while a booking holds it
  bookingDays/{clinicUid}_{date}       counts by status of one local day of a clinic
  bookingPatients/{patientUid}         the patient's open bookings (`open`: id -> window end),
                                       against their cap on open requests (see `request`)
The counters, places and open bookings change in the same transaction as the booking they
count, so the dashboards read counters instead of bookings, an accept cannot overbook (see
`apply`) and a patient cannot hold more open requests than the cap (see `request`).

Document reads per dashboard call (an empty query result still costs one read):
  day queue   1 (clinic) + the windows of that day that have a booking (<= windows per day)
  load        1 (clinic) + the windows of the range that have a booking (<= days x windows per
              day; the route allows 7 by default and 14 at most)
  stats       the days of the range that have a booking (<= MAX_RANGE_DAYS), at least 1
  unanswered  limit + 1
  requests    limit + 1, plus 1 for the queue position of the page's first item
  day list    1 (clinic) + limit + 1
  patient     limit + 1, plus 1 per `requested` booking on the page (its queue position)
A queue position is a count() aggregation: 1 read per 1000 index entries counted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.bookings import rules
from shared.bookings.rules import Action, Refusal, Schedule, Status
from shared.identity import access, profiles
from shared.platform import (
    clients,
    clock,
    eventlog,
    idempotency,
    logs,
    outbox,
    pagination,
    settings,
    store,
    stored,
)
from shared.platform.context import Role
from shared.platform.errors import BadRequest, Conflict, NotFound

if TYPE_CHECKING:
    from shared.platform.endings import Ending

log = logs.get("alodoktor.bookings")

CLINICS = "clinics"
BOOKINGS = "bookings"
WINDOWS = "bookingWindows"
DAYS = "bookingDays"
PATIENTS = "bookingPatients"
PLACES = "places"  # bookingWindows/{id}/places/{0..capacity-1}
MAX_RANGE_DAYS = 92
TX_ATTEMPTS = 20
IDEMPOTENCY_SCOPE = "bookings.create"


def _db() -> Any:
    return clients.db()


def clinic_ref(uid: str) -> Any:
    return _db().collection(CLINICS).document(uid)


def booking_ref(booking_id: str) -> Any:
    return _db().collection(BOOKINGS).document(booking_id)


def window_ref(clinic_uid: str, start: datetime) -> Any:
    part = start.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
    return _db().collection(WINDOWS).document(f"{clinic_uid}_{part}")


def day_ref(clinic_uid: str, day: date) -> Any:
    return _db().collection(DAYS).document(f"{clinic_uid}_{day.isoformat()}")


def patient_ref(patient_uid: str) -> Any:
    """The patient's open bookings: `open` maps each booking id to its window's end."""
    return _db().collection(PATIENTS).document(patient_uid)


def schedule_of(clinic: dict[str, Any]) -> Schedule:
    """The clinic's schedule; a stored one that no longer parses (a hand edit, an unknown
    time zone) answers 409 `record_unreadable` for this clinic only."""
    with stored.reading(f"{CLINICS}/{clinic.get('clinicUid')}"):
        schedule = Schedule.of(clinic["schedule"])
        schedule.zone  # noqa: B018  (an unknown zone fails here, not midway through a move)
    return schedule


def _dict(snap: Any) -> dict[str, Any] | None:
    data: dict[str, Any] | None = snap.to_dict() if snap.exists else None
    return data


# -- clinic setup -------------------------------------------------------------------------


def get_clinic(uid: str) -> dict[str, Any] | None:
    return _dict(clinic_ref(uid).get()) if 1 <= len(uid) <= 128 else None


def save_clinic(uid: str, setup: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """Replace the clinic's services and schedule (the account must be a clinic; only approved
    clinics reach this route, and only approved ones can be booked)."""
    profile = profiles.get(uid)
    if profile is None or profile.get("role") != Role.CLINIC.value:
        raise NotFound("No such clinic.", code="clinic_not_found")
    doc = {**setup, "clinicUid": uid, "updatedAt": clock.now()}
    store.set(clinic_ref(uid), doc, by=actor)
    return doc


def refuse_closing(tx: Any, clinic_uid: str) -> None:
    """404 for a clinic whose erasure has begun or is done (access.closing, in `tx`)."""
    if access.closing(clinic_uid, tx=tx):
        raise NotFound("No such clinic takes bookings.", code="clinic_not_found")


def bookable_clinic(uid: str) -> dict[str, Any]:
    profile = profiles.get(uid) if 1 <= len(uid) <= 128 else None
    clinic = get_clinic(uid) if profile else None
    if (
        profile is None
        or clinic is None
        or profile.get("role") != Role.CLINIC.value
        or not profile.get("approved")
        or profile.get("disabled")
    ):
        raise NotFound("No such clinic takes bookings.", code="clinic_not_found")
    return clinic


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewBooking:
    patient_uid: str
    patient_email: str | None
    clinic_uid: str
    service_id: str
    window_start: datetime
    note: str | None


def request(
    new: NewBooking, key: idempotency.Key | None, *, now: datetime | None = None
) -> tuple[dict[str, Any], bool]:
    """Put a request in the clinic's queue; returns (booking, replayed).

    A patient may have at most `MAX_OPEN_BOOKING_REQUESTS_PER_PATIENT` bookings open at once:
    requested or accepted (rules.OPEN_FOR_PATIENT) with their window not ended; one more is
    refused with 409 `too_many_open_requests`, the cap as the problem's `limit`.

    The open bookings are one document per patient (`bookingPatients/{uid}`, `open`: booking
    id -> window end). A request reads it, checks the cap, and commits the booking, its
    counters, its key and its entry in one commit whose write of that document is conditional
    on it being unchanged since the read (`last_update_time`). Every move out of the open set
    removes its entry in that move's own commit (`_move`, `revoke_payment_in`), and the next
    request drops entries whose window has ended. So the document holds exactly the patient's
    open bookings, and of two requests racing for the last place only the first commit lands:
    the other fails its precondition, reads again, finds the place taken and is refused. The
    race is lock-free (as the window's places are): a read-then-write transaction would make
    one patient's concurrent requests wait on each other's locks. Bookings made before the
    cap existed have no entry and do not count. The commit is a transaction all the same, for
    its one read: the clinic's access record, which the clinic's erasure fences
    (`refuse_closing`), shared by every request to the clinic (readers do not wait on each
    other), so a booking commits before the fence (and the erasure finds it) or is refused.

    An Idempotency-Key replay answers the first booking before any of this, so it counts once;
    a concurrent retry that finds the last place taken by the first request of its own key is
    answered that booking too.

    Reads: the clinic's profile and setup (2), the patient's open bookings (1, once more per
    lost race), the clinic's access record (1 a commit), plus the key (1) when one is sent.
    """
    from google.cloud import firestore

    at = now or clock.now()
    clinic = bookable_clinic(new.clinic_uid)
    service = next((s for s in clinic.get("services", []) if s["id"] == new.service_id), None)
    if service is None or not service.get("active", True):
        raise NotFound("The clinic offers no such service.", code="service_not_found")
    schedule = schedule_of(clinic)
    window = rules.window_at(schedule, new.window_start)
    if window is None:
        raise BadRequest(
            "windowStart is not the start of one of the clinic's windows.", code="not_a_window"
        )
    if at >= window.start:
        raise Conflict("This window has already started.", code="window_started")

    booking_id = uuid.uuid4().hex
    booking = {
        "id": booking_id,
        "clinicUid": new.clinic_uid,
        "patientUid": new.patient_uid,
        "patientEmail": new.patient_email,
        "serviceId": service["id"],
        "serviceName": service["name"],
        "durationMinutes": service["durationMinutes"],
        "price": dict(service["price"]),
        "windowStart": window.start,
        "windowEnd": window.end,
        "windowDate": window.local_date.isoformat(),
        "note": new.note,
        "status": Status.REQUESTED.value,
        "requestedAt": at,
        "queueKey": rules.queue_key(at, booking_id),
        "answerBy": rules.answer_by(at, window.start, settings.get().booking_answer_seconds),
        "updatedAt": at,
    }

    limit = settings.get().max_open_booking_requests_per_patient
    mine = patient_ref(new.patient_uid)

    def create() -> str:
        # Not store.run_optimistic, which retries AlreadyExists too: a retry of this key that
        # lost to its first request must reach idempotency.once as AlreadyExists, to replay it.
        from google.api_core.exceptions import FailedPrecondition

        for _ in range(TX_ATTEMPTS):
            snap = mine.get()
            if not snap.exists:  # the patient's first request: a document to guard
                store.set(mine, {"patientUid": new.patient_uid}, merge=True)
                continue
            recorded: dict[str, Any] = (_dict(snap) or {}).get("open") or {}
            counting = rules.still_open(recorded, at)
            rules.check_open_limit(len(counting), limit)
            ended = [b for b in recorded if b not in counting]
            entries: dict[str, Any] = {f"open.{b}": firestore.DELETE_FIELD for b in ended}
            entries[f"open.{booking_id}"] = window.end

            def commit(tx: Any, entries: dict[str, Any] = entries, snap: Any = snap) -> None:
                refuse_closing(tx, new.clinic_uid)  # the transaction's one read (and lock)
                store.create(booking_ref(booking_id), booking, tx=tx)
                eventlog.record(
                    tx,
                    "booking_requested",
                    f"{BOOKINGS}/{booking_id}",
                    actor=new.patient_uid,
                    at=at,
                    uid=new.patient_uid,
                    data={"clinicUid": new.clinic_uid},
                )
                _count(tx, booking, rules.moved_counts(None, Status.REQUESTED))
                store.update(mine, entries, tx=tx, unchanged_since=snap.update_time)
                idempotency.remember(key, tx, booking_id, now=at)

            try:
                store.run_transaction(commit, attempts=TX_ATTEMPTS)
            except FailedPrecondition:
                continue  # the patient's open bookings changed since the read: count again
            return booking_id
        raise store.TransactionContended()

    try:
        made, replayed = idempotency.once(key, create)
    except Refusal as refusal:
        taken_by = idempotency.earlier(key)  # the first request of this key took the place
        if taken_by is None:
            raise Conflict(refusal.message, code=refusal.code, **refusal.extra) from None
        made, replayed = taken_by, True
    if not replayed:
        return booking, False
    first = get(made)
    if first is None:  # the key's booking was removed: nothing to replay
        raise Conflict("This Idempotency-Key's booking is gone.", code="idempotency_key_reused")
    return first, True


def _count(tx: Any, booking: dict[str, Any], deltas: dict[str, int]) -> None:
    """Move a booking's counts in its window's and its day's counters (inside `tx`)."""
    from google.cloud import firestore

    counts = {status: firestore.Increment(n) for status, n in deltas.items()}
    clinic_uid = booking["clinicUid"]
    with stored.reading(f"{BOOKINGS}/{booking.get('id')}"):
        day = date.fromisoformat(booking["windowDate"])
    store.set(
        window_ref(clinic_uid, booking["windowStart"]),
        {
            "clinicUid": clinic_uid,
            "start": booking["windowStart"],
            "end": booking["windowEnd"],
            "date": booking["windowDate"],
            "counts": counts,
        },
        merge=True,
        tx=tx,
    )
    store.set(
        day_ref(clinic_uid, day),
        {"clinicUid": clinic_uid, "date": booking["windowDate"], "counts": counts},
        merge=True,
        tx=tx,
    )


def _release(tx: Any, booking: dict[str, Any], *, by: str) -> None:
    """The booking no longer counts against its patient's cap (a write only, inside `tx`;
    removing an entry that is not there, as a booking older than the cap has none, is a
    no-op)."""
    from google.cloud import firestore

    store.set(
        patient_ref(booking["patientUid"]),
        {"patientUid": booking["patientUid"], "open": {booking["id"]: firestore.DELETE_FIELD}},
        merge=True,
        tx=tx,
        by=by,
    )


def get(booking_id: str) -> dict[str, Any] | None:
    if not 1 <= len(booking_id) <= 64:
        return None
    return _dict(booking_ref(booking_id).get())


# -- transitions --------------------------------------------------------------------------

NOTIFY = {
    Action.ACCEPT: "booking_accepted",
    Action.DECLINE: "booking_declined",
    Action.EXPIRE: "booking_declined",
}
AUTO_DECLINE_REASON = "The clinic did not answer in time."


MAX_PLACES = 1000  # far above any window's capacity: the read of a window's places is bounded


def place_ref(booking: dict[str, Any], index: int) -> Any:
    """One of a window's places: it exists while a booking holds it."""
    window = window_ref(booking["clinicUid"], booking["windowStart"])
    return window.collection(PLACES).document(str(index))


def apply(
    booking_id: str,
    action: Action,
    *,
    actor: str,
    ending: Ending,
    reason: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Move a booking by `action` in one transaction with its counters (409 when refused).
    When the move ends a booking, `ending` writes what must commit with it (a paid booking's
    refund) and acts after the commit.

    An accept claims one of the window's places: place documents 0..capacity-1 under the
    window's counter, created (never overwritten) in the same transaction as the booking's
    change and its counts. Creating a place that exists fails the whole transaction, so two
    accepts can never hold the same place and the held places never exceed the capacity, on
    any number of instances. The transaction reads only the booking itself, so concurrent
    accepts of different bookings do not lock each other out; they meet only at the place.
    """
    from google.api_core.exceptions import AlreadyExists

    at = now or clock.now()
    try:
        if action is not Action.ACCEPT:
            return _move(
                booking_id, action, actor=actor, reason=reason, at=at, place=None, ending=ending
            )
        for place in _free_places(booking_id, at):
            try:
                return _move(
                    booking_id, action, actor=actor, reason=None, at=at, place=place, ending=ending
                )
            except AlreadyExists:
                continue  # another accept took this place first: try the next
        raise Refusal("window_full", "All places of this window are taken.")
    except Refusal as refusal:
        raise Conflict(refusal.message, code=refusal.code, **refusal.extra) from None


def _free_places(booking_id: str, at: datetime) -> list[int]:
    """The window's places no booking held when looked at (a hint: the create decides)."""
    booking = get(booking_id)
    if booking is None:
        raise NotFound()
    rules.next_status(
        Status(booking["status"]), Action.ACCEPT, now=at, window_start=booking["windowStart"]
    )
    clinic = get_clinic(booking["clinicUid"]) or {}
    window = None
    if "schedule" in clinic:
        window = rules.window_at(schedule_of(clinic), booking["windowStart"])
    if window is None:
        raise Refusal("window_closed", "The clinic no longer offers this window.")
    places = window_ref(booking["clinicUid"], booking["windowStart"]).collection(PLACES)
    taken = {int(s.id) for s in places.limit(MAX_PLACES).stream() if s.id.isdigit()}
    rules.check_capacity(len(taken), window.capacity)
    # Places held above a capacity the clinic since lowered still count: only the first
    # (capacity - excess) places are claimable, so concurrent accepts can never together
    # exceed the capacity while those bookings hold on.
    excess = sum(1 for i in taken if i >= window.capacity)
    return [i for i in range(window.capacity - excess) if i not in taken]


def _move(
    booking_id: str,
    action: Action,
    *,
    actor: str,
    reason: str | None,
    at: datetime,
    place: int | None,
    ending: Ending,
) -> dict[str, Any]:

    def move(tx: Any) -> dict[str, Any]:
        booking = _dict(booking_ref(booking_id).get(transaction=tx))
        if booking is None:
            raise NotFound()
        current = Status(booking["status"])
        target = rules.next_status(current, action, now=at, window_start=booking["windowStart"])
        changes: dict[str, Any] = {"status": target.value, "updatedAt": at, f"at.{target}": at}
        if place is not None:
            store.create(place_ref(booking, place), {"bookingId": booking_id}, tx=tx, by=actor)
            changes["place"] = place
        elif booking.get("place") is not None and target not in rules.HOLDS_A_PLACE:
            store.delete(place_ref(booking, booking["place"]), tx=tx, by=actor)
            changes["place"] = None
        if action in (Action.DECLINE, Action.EXPIRE):
            changes["declineReason"] = reason
        if target in (Status.CANCELLED, Status.DECLINED):
            # Who ended it decides the refund of a paid booking (shared/payments/rules.py).
            ender = ENDED_BY.get(action, "system")
            starts_in = booking["windowStart"] - at
            changes["refund"] = ending.in_transaction(tx, booking, ender, starts_in)
        store.update(booking_ref(booking_id), changes, tx=tx, by=actor)
        if action in LOGGED:
            eventlog.record(
                tx,
                LOGGED[action],
                f"{BOOKINGS}/{booking_id}",
                actor=actor,
                at=at,
                uid=booking["patientUid"],
                data={"clinicUid": booking["clinicUid"], "status": target.value},
            )
        _count(tx, booking, rules.moved_counts(current, target))
        if rules.leaves_open(current, target):
            _release(tx, {**booking, "id": booking_id}, by=actor)
        if action in NOTIFY and booking.get("patientEmail"):
            outbox.queue(
                tx,
                booking["patientUid"],
                booking["patientEmail"],
                NOTIFY[action],
                {"bookingId": booking_id, "reason": reason, "windowStart": booking["windowStart"]},
                actor,
            )
        return {**booking, **{k: v for k, v in changes.items() if "." not in k}}

    result: dict[str, Any] = store.run_transaction(move, attempts=TX_ATTEMPTS)
    ending.after_commit(result)
    return result


ENDED_BY: dict[Action, Role | str] = {Action.CANCEL: Role.PATIENT, Action.DECLINE: Role.CLINIC}
# The moves the domain event log records (shared/platform/eventlog.py): one answer per request.
LOGGED: dict[Action, str] = {
    Action.ACCEPT: "booking_answered",
    Action.DECLINE: "booking_answered",
    Action.EXPIRE: "booking_answered",
    Action.CANCEL: "booking_cancelled",
    Action.NO_SHOW: "booking_no_show",
}


def record_payment_in(
    tx: Any,
    booking: dict[str, Any],
    payment: dict[str, Any],
    now: datetime,
    *,
    unchanged_since: Any = None,
) -> None:
    """The booking is paid (writes only, inside the capture's transaction or batch)."""
    store.update(
        booking_ref(booking["id"]),
        {"payment": payment, "updatedAt": now},
        tx=tx,
        by="system",
        unchanged_since=unchanged_since,
    )


def revoke_payment_in(
    tx: Any,
    booking: dict[str, Any],
    reason: str,
    now: datetime,
    *,
    unchanged_since: Any = None,
) -> None:
    """PayPal took the payment back: an open booking is cancelled and its place freed; one
    already attended keeps its status. Writes only, inside the caller's transaction."""
    changes: dict[str, Any] = {
        "payment": {**(booking.get("payment") or {}), "status": "reversed"},
        "updatedAt": now,
    }
    current = Status(booking["status"])
    if current in (Status.REQUESTED, Status.ACCEPTED):
        changes.update({"status": Status.CANCELLED.value, f"at.{Status.CANCELLED}": now})
        changes["declineReason"] = reason
        if booking.get("place") is not None:
            store.delete(place_ref(booking, booking["place"]), tx=tx, by="system")
            changes["place"] = None
        _count(tx, booking, rules.moved_counts(current, Status.CANCELLED))
        _release(tx, booking, by="system")
    store.update(
        booking_ref(booking["id"]), changes, tx=tx, by="system", unchanged_since=unchanged_since
    )


def sweep(*, limit: int, ending: Ending, now: datetime | None = None) -> tuple[int, bool]:
    """Decline up to `limit` requests past their answer deadline (`ending` as in `apply`);
    returns (declined, more)."""
    from google.cloud.firestore import FieldFilter, Query

    at = now or clock.now()
    due = (
        _db()
        .collection(BOOKINGS)
        .where(filter=FieldFilter("status", "==", Status.REQUESTED.value))
        .where(filter=FieldFilter("answerBy", "<=", at))
        .order_by("answerBy", direction=Query.ASCENDING)
        .limit(limit)
    )
    snaps = list(due.stream())
    declined = 0
    for snap in snaps:
        try:
            apply(
                snap.id,
                Action.EXPIRE,
                actor="system",
                ending=ending,
                reason=AUTO_DECLINE_REASON,
                now=at,
            )
        except (Conflict, NotFound):
            continue  # answered or cancelled since the query: nothing to decline
        declined += 1
    log.info("sweep declined %d of %d overdue requests", declined, len(snaps))
    return declined, len(snaps) == limit


# -- queue and lists ------------------------------------------------------------------------


def _queue_query(clinic_uid: str | None) -> Any:
    from google.cloud.firestore import FieldFilter

    query: Any = _db().collection(BOOKINGS)
    if clinic_uid is not None:
        query = query.where(filter=FieldFilter("clinicUid", "==", clinic_uid))
    return query.where(filter=FieldFilter("status", "==", Status.REQUESTED.value))


def queue_position(booking: dict[str, Any]) -> int | None:
    """1 for the clinic's oldest unanswered request; None once the booking is answered."""
    from google.cloud.firestore import FieldFilter

    if booking.get("status") != Status.REQUESTED.value:
        return None
    ahead = _queue_query(booking["clinicUid"]).where(
        filter=FieldFilter("queueKey", "<", booking["queueKey"])
    )
    return store.count(ahead) + 1


def list_for_patient(
    uid: str, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A patient's bookings, newest request first."""
    from google.cloud.firestore import FieldFilter, Query

    collection = _db().collection(BOOKINGS)
    query = collection.where(filter=FieldFilter("patientUid", "==", uid))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("requestedAt", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [s.to_dict() for s in snaps], next_cursor


def list_unanswered(
    clinic_uid: str | None, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Requests still waiting for an answer, first come first served (oldest first).

    This is the one list that is oldest first: it is a queue, worked from its head.
    """
    from google.cloud.firestore import Query

    collection = _db().collection(BOOKINGS)
    snaps, next_cursor = pagination.run_page(
        collection,
        _queue_query(clinic_uid),
        [("queueKey", Query.ASCENDING)],
        limit=limit,
        cursor=cursor,
    )
    return [s.to_dict() for s in snaps], next_cursor


def list_for_day(
    clinic_uid: str, day: date, status: Status | None, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A clinic's bookings for one local day, by window, then first come first served."""
    from google.cloud.firestore import FieldFilter, Query

    collection = _db().collection(BOOKINGS)
    query = collection.where(filter=FieldFilter("clinicUid", "==", clinic_uid)).where(
        filter=FieldFilter("windowDate", "==", day.isoformat())
    )
    if status is not None:
        query = query.where(filter=FieldFilter("status", "==", status.value))
    order = [("windowStart", Query.ASCENDING), ("queueKey", Query.ASCENDING)]
    snaps, next_cursor = pagination.run_page(collection, query, order, limit=limit, cursor=cursor)
    return [s.to_dict() for s in snaps], next_cursor


# -- dashboards ---------------------------------------------------------------------------


def _window_counters(query: Any) -> dict[datetime, dict[str, Any]]:
    return {snap.get("start"): snap.to_dict().get("counts", {}) for snap in query.stream()}


def day_queue(clinic: dict[str, Any], day: date) -> list[rules.WindowLoad]:
    """The windows of one local day with their counts by status."""
    from google.cloud.firestore import FieldFilter

    schedule = schedule_of(clinic)
    query = (
        _db()
        .collection(WINDOWS)
        .where(filter=FieldFilter("clinicUid", "==", clinic["clinicUid"]))
        .where(filter=FieldFilter("date", "==", day.isoformat()))
    )
    return rules.load(rules.windows_on(schedule, day), _window_counters(query))


def open_windows(
    clinic_uid: str, day: date | None, now: datetime | None = None
) -> tuple[dict[str, Any], date, list[rules.WindowLoad]]:
    """A bookable clinic's windows on one local day (default its today) that a patient may
    still ask for, with their free places: (the clinic, the day, the windows)."""
    clinic = bookable_clinic(clinic_uid)
    at = now or clock.now()
    day = day or today(clinic, at)
    return clinic, day, rules.open_to_request(day_queue(clinic, day), at)


def load(clinic: dict[str, Any], first: date, days: int) -> list[rules.WindowLoad]:
    """Every window of `days` local days from `first`, with held places against capacity."""
    from google.cloud.firestore import FieldFilter, Query

    schedule = schedule_of(clinic)
    windows = rules.windows_between(schedule, first, days)
    if not windows:
        return []
    query = (
        _db()
        .collection(WINDOWS)
        .where(filter=FieldFilter("clinicUid", "==", clinic["clinicUid"]))
        .where(filter=FieldFilter("start", ">=", windows[0].start))
        .where(filter=FieldFilter("start", "<=", windows[-1].start))
        .order_by("start", direction=Query.ASCENDING)
    )
    return rules.load(windows, _window_counters(query))


def stats(clinic_uid: str, first: date, last: date) -> rules.RangeStats:
    """Counts by status of the bookings whose window falls in [first, last], and by day."""
    from google.cloud.firestore import FieldFilter, Query

    if last < first or (last - first) >= timedelta(days=MAX_RANGE_DAYS):
        raise BadRequest(
            f"A range runs forward and spans at most {MAX_RANGE_DAYS} days.", code="invalid_range"
        )
    query = (
        _db()
        .collection(DAYS)
        .where(filter=FieldFilter("clinicUid", "==", clinic_uid))
        .where(filter=FieldFilter("date", ">=", first.isoformat()))
        .where(filter=FieldFilter("date", "<=", last.isoformat()))
        .order_by("date", direction=Query.ASCENDING)
    )
    found = {
        date.fromisoformat(s.get("date")): s.to_dict().get("counts", {}) for s in query.stream()
    }
    return rules.range_stats(first, last, found)


def today(clinic: dict[str, Any], now: datetime | None = None) -> date:
    return rules.local_date(schedule_of(clinic), now or clock.now())
