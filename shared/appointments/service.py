"""Appointments: availability, slot claims, booking and the state changes that follow.

A claimed slot is a document `slots/{doctorUid}_{start}`; booking creates it and the
appointment in one transaction, so two patients racing for a slot get one booking and one
409. A hold that ran out is released lazily when its slot is next claimed, and by the sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from shared.appointments import rules
from shared.appointments.rules import Status
from shared.appointments.schedule import DayException, Interval, Schedule, is_slot, slots_between
from shared.identity import access, profiles
from shared.platform import (
    clients,
    clock,
    context,
    eventlog,
    idempotency,
    outbox,
    pagination,
    settings,
    store,
    stored,
)
from shared.platform.context import Principal, Role
from shared.platform.errors import BadRequest, Conflict, NotFound

if TYPE_CHECKING:
    from shared.platform.endings import Ending

APPOINTMENTS = "appointments"
AVAILABILITY = "availability"
SLOTS = "slots"
MAX_TRANSACTION_ATTEMPTS = 10


def _db() -> Any:
    return clients.db()


def appointment_ref(appointment_id: str) -> Any:
    return _db().collection(APPOINTMENTS).document(appointment_id)


def slot_ref(doctor_uid: str, start: datetime) -> Any:
    return _db().collection(SLOTS).document(f"{doctor_uid}_{start.astimezone(UTC):%Y%m%dT%H%MZ}")


def _transactional(fn: Callable[[Any], Any]) -> Any:
    return store.run_transaction(fn, attempts=MAX_TRANSACTION_ATTEMPTS)


# -- availability ------------------------------------------------------------------------


def schedule_from(doc: dict[str, Any]) -> Schedule:
    def intervals(items: list[dict[str, str]]) -> tuple[Interval, ...]:
        return tuple(
            Interval(time.fromisoformat(i["start"]), time.fromisoformat(i["end"])) for i in items
        )

    return Schedule(
        time_zone=doc["timeZone"],
        slot_minutes=int(doc["slotMinutes"]),
        weekly={day: intervals(items) for day, items in doc.get("weekly", {}).items()},
        exceptions=[
            DayException(
                date.fromisoformat(e["date"]), bool(e.get("off")), intervals(e.get("intervals", []))
            )
            for e in doc.get("exceptions", [])
        ],
    )


def save_availability(doctor_uid: str, doc: dict[str, Any]) -> dict[str, Any]:
    data = {**doc, "doctorUid": doctor_uid, "updatedAt": clock.now()}
    store.set(_db().collection(AVAILABILITY).document(doctor_uid), data)
    return data


def availability(doctor_uid: str) -> dict[str, Any] | None:
    snap = _db().collection(AVAILABILITY).document(doctor_uid).get()
    data: dict[str, Any] | None = snap.to_dict() if snap.exists else None
    return data


def refuse_closing(tx: Any, doctor_uid: str) -> None:
    """404 for a doctor whose erasure has begun or is done (access.closing, in `tx`)."""
    if access.closing(doctor_uid, tx=tx):
        raise NotFound("No bookable doctor with this id.", code="doctor_not_found")


def bookable_doctor(doctor_uid: str) -> tuple[dict[str, Any], Schedule]:
    """The doctor's profile and schedule, or 404 when they cannot be booked."""
    profile = profiles.get(doctor_uid) if 1 <= len(doctor_uid) <= 128 else None
    if (
        profile is None
        or profile.get("role") != Role.DOCTOR.value
        or not profile.get("approved")
        or profile.get("disabled")
    ):
        raise NotFound("No bookable doctor with this id.", code="doctor_not_found")
    doc = availability(doctor_uid)
    if doc is None:
        raise NotFound("This doctor has not published availability.", code="no_availability")
    with stored.reading(f"{AVAILABILITY}/{doctor_uid}"):
        schedule = schedule_from(doc)
        ZoneInfo(schedule.time_zone)  # an unknown zone fails here, not midway through a booking
    return profile, schedule


def free_slots(doctor_uid: str, start: datetime, end: datetime) -> list[datetime]:
    from google.cloud.firestore import FieldFilter

    _, schedule = bookable_doctor(doctor_uid)
    now = clock.now()
    candidates = [s for s in slots_between(schedule, max(start, now), end)]
    if not candidates:
        return []
    claimed = (
        _db()
        .collection(SLOTS)
        .where(filter=FieldFilter("doctorUid", "==", doctor_uid))
        .where(filter=FieldFilter("start", ">=", candidates[0]))
        .where(filter=FieldFilter("start", "<=", candidates[-1]))
        .stream()
    )
    taken = {d["start"] for d in (c.to_dict() for c in claimed) if not _released(d, now)}
    return [s for s in candidates if s not in taken]


def _released(slot: dict[str, Any], now: datetime) -> bool:
    """A held slot whose hold ran out is free again (the sweep tidies it up later)."""
    return slot.get("status") == "held" and slot["holdExpiresAt"] <= now


# -- booking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Booking:
    doctor_uid: str
    start: datetime
    note: str | None


def book(
    patient: Principal, booking: Booking, key: idempotency.Key | None
) -> tuple[dict[str, Any], bool]:
    """Claim the slot and create the appointment; returns (appointment, replayed)."""
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition

    s = settings.get()
    doctor, schedule = bookable_doctor(booking.doctor_uid)
    start = booking.start.astimezone(UTC)
    now = clock.now()
    if start <= now:
        raise Conflict("That slot has already started.", code="slot_in_past")
    if not is_slot(schedule, start):
        raise BadRequest("That is not one of the doctor's slots.", code="not_a_slot")
    price = doctor.get("consultationPrice")
    if not price:
        raise Conflict("This doctor has no consultation price yet.", code="doctor_not_bookable")
    slot = slot_ref(booking.doctor_uid, start)
    appointment = _db().collection(APPOINTMENTS).document()
    hold_until = now + timedelta(minutes=s.appointment_hold_minutes)
    record = {
        "id": appointment.id,
        "patientUid": patient.uid,
        "doctorUid": booking.doctor_uid,
        "clinicUid": doctor.get("clinicUid"),
        "start": start,
        "end": start + timedelta(minutes=schedule.slot_minutes),
        "status": Status.PENDING_PAYMENT.value,
        "price": dict(price),  # the doctor's price at booking time, kept as booked
        "holdExpiresAt": hold_until,
        "note": booking.note,
        "slotId": slot.id,
        "cancellation": None,
        "createdAt": now,
        "updatedAt": now,
    }

    slot_fields = {
        "doctorUid": booking.doctor_uid,
        "start": start,
        "appointmentId": appointment.id,
        "status": "held",
        "holdExpiresAt": hold_until,
    }
    first = idempotency.earlier(key)
    if first is not None:
        return get(first), True

    def claim(tx: Any) -> None:
        # The one read in the transaction (so the one lock): the doctor is not being erased.
        # The slot is read outside it: creating the slot document is itself the atomic claim,
        # so racing patients never wait on each other's locks; exactly one create succeeds.
        refuse_closing(tx, booking.doctor_uid)
        store.create(appointment, record, tx=tx)
        eventlog.record(
            tx,
            "appointment_booked",
            f"{APPOINTMENTS}/{appointment.id}",
            actor=patient.uid,
            at=now,
            uid=patient.uid,
            data={"doctorUid": booking.doctor_uid},
        )
        idempotency.remember(key, tx, appointment.id)
        held = slot.get()
        if not held.exists:
            store.create(slot, slot_fields, tx=tx)
        elif _released(held.to_dict(), now):
            # Take over a run-out hold, only if nobody else did since we read it.
            store.update(slot, slot_fields, tx=tx, unchanged_since=held.update_time)
            stale = appointment_ref(held.to_dict()["appointmentId"]).get()
            if stale.exists and stale.to_dict()["status"] == Status.PENDING_PAYMENT.value:
                store.update(
                    stale.reference,
                    _expiry_fields(),
                    tx=tx,
                    by="system",
                    unchanged_since=stale.update_time,
                )
        else:
            raise Conflict("Someone else has this slot.", code="slot_taken")

    try:
        _transactional(claim)
    except (AlreadyExists, FailedPrecondition):
        first = idempotency.earlier(key)  # a concurrent retry with the same key won
        if first is not None:
            return get(first), True
        raise Conflict("Someone else has this slot.", code="slot_taken") from None
    return record, False


def _expiry_fields() -> dict[str, Any]:
    return {"status": Status.EXPIRED.value, "updatedAt": clock.now()}


def get(appointment_id: str) -> dict[str, Any]:
    if not 1 <= len(appointment_id) <= 128:
        raise NotFound()
    snap = appointment_ref(appointment_id).get()
    if not snap.exists:
        raise NotFound()
    return _lazily_expired(snap.to_dict())


def shown(doc: dict[str, Any]) -> dict[str, Any]:
    """The appointment as it stands now: a hold that ran out reads as expired."""
    return _lazily_expired(doc)


def _lazily_expired(doc: dict[str, Any]) -> dict[str, Any]:
    """Show a hold that ran out as expired even before the sweep writes it. Every read of an
    appointment passes here: one whose stored state no longer parses answers 409
    `record_unreadable` (logged) for itself only."""
    with stored.reading(f"{APPOINTMENTS}/{doc.get('id')}"):
        expired = rules.hold_expired(Status(doc["status"]), doc.get("holdExpiresAt"), clock.now())
    return {**doc, "status": Status.EXPIRED.value} if expired else doc


# -- state changes -----------------------------------------------------------------------


Check = Callable[[dict[str, Any], datetime], None]


def _change(
    appointment_id: str,
    authorize: Callable[[dict[str, Any] | None], Any],
    check: Check,
    changes: Callable[[dict[str, Any], datetime], dict[str, Any]],
    *,
    release_slot: bool,
    by: str | None = None,
    also: Callable[[Any, dict[str, Any], datetime, dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Load, authorize, check and change one appointment (and its slot) in one transaction;
    `also(tx, doc, now, update)` adds writes (never reads) that must commit with the change
    and returns the update, amended with what it recorded."""
    ref = appointment_ref(appointment_id)

    def apply(tx: Any) -> dict[str, Any]:
        snap = ref.get(transaction=tx)
        doc = snap.to_dict() if snap.exists else None
        authorize(doc)
        assert doc is not None
        now = clock.now()
        doc = _lazily_expired(doc)  # a run-out hold can no longer be confirmed or cancelled
        check(doc, now)
        update = {**changes(doc, now), "updatedAt": now}
        if also is not None:
            update = also(tx, doc, now, update)
        store.update(ref, update, tx=tx, by=by)
        if release_slot:
            _release(tx, doc)
        return {**doc, **update}

    try:
        result: dict[str, Any] = _transactional(apply)
    except rules.TransitionRefused as exc:
        raise Conflict(str(exc), code=exc.code) from None
    return result


def _release(tx: Any, doc: dict[str, Any]) -> None:
    store.delete(_db().collection(SLOTS).document(doc["slotId"]), tx=tx)


def confirm(appointment_id: str, *, payment: dict[str, Any] | None = None) -> dict[str, Any]:
    """Confirm an appointment on its own (the payment capture uses `confirm_in`)."""

    def apply(tx: Any) -> dict[str, Any]:
        snap = appointment_ref(appointment_id).get(transaction=tx)
        if not snap.exists:
            raise NotFound()
        return confirm_in(tx, _lazily_expired(snap.to_dict()), payment, clock.now())

    try:
        result: dict[str, Any] = _transactional(apply)
    except rules.TransitionRefused as exc:
        raise Conflict(str(exc), code=exc.code) from None
    return result


def confirm_in(
    tx: Any,
    doc: dict[str, Any],
    payment: dict[str, Any] | None,
    now: datetime,
    *,
    unchanged_since: Any = None,
) -> dict[str, Any]:
    """The one way an appointment becomes confirmed: writes only, inside the caller's
    transaction (which read `doc`), so a payment and its confirmation commit together."""
    rules.check_transition(Status(doc["status"]), Status.CONFIRMED)
    update = {
        "status": Status.CONFIRMED.value,
        "confirmedAt": now,
        "holdExpiresAt": None,
        "payment": payment,
        "updatedAt": now,
    }
    store.update(
        appointment_ref(doc["id"]), update, tx=tx, by="system", unchanged_since=unchanged_since
    )
    store.update(
        _db().collection(SLOTS).document(doc["slotId"]),
        {"status": "booked", "holdExpiresAt": None},
        tx=tx,
        by="system",
    )
    _queue_reminder(tx, doc, doc["start"])
    return {**doc, **update}


def _queue_reminder(tx: Any, doc: dict[str, Any], start: datetime) -> None:
    """The patient's reminder of a confirmed appointment, at the configured lead time (at once
    when it starts sooner), in the same commit: cancelled with it, moved with it."""
    lead = timedelta(minutes=settings.get().reminder_lead_minutes)
    outbox.queue(
        tx,
        doc["patientUid"],
        "",  # notify finds the address in the profile when it sends
        "appointment_reminder",
        {"appointmentId": doc["id"], "start": start},
        "system",
        notice_id=outbox.reminder_id(doc["id"], start),
        not_before=start - lead,
        replace=True,
    )


def _cancel_reminder(tx: Any, doc: dict[str, Any], actor: str) -> None:
    outbox.cancel(tx, outbox.reminder_id(doc["id"], doc["start"]), actor)


def revoke_payment_in(
    tx: Any, doc: dict[str, Any], reason: str, now: datetime, *, unchanged_since: Any = None
) -> None:
    """PayPal took the payment back (denied or reversed): a confirmed appointment is cancelled
    and its slot freed; one already held or past keeps its status. Writes only."""
    payment = {**(doc.get("payment") or {}), "status": "reversed"}
    update: dict[str, Any] = {"payment": payment, "updatedAt": now}
    if doc["status"] == Status.CONFIRMED.value:
        _cancel_reminder(tx, doc, "system")
        update["status"] = Status.CANCELLED.value
        update["cancellation"] = {
            "by": "system",
            "role": "system",
            "reason": reason,
            "at": now,
            "wasConfirmed": True,
            "hoursBeforeStart": round((doc["start"] - now).total_seconds() / 3600, 2),
            "refund": "none",
        }
        _release(tx, doc)
    store.update(
        appointment_ref(doc["id"]), update, tx=tx, by="system", unchanged_since=unchanged_since
    )


def cancel(
    appointment_id: str,
    principal: Principal,
    reason: str | None,
    authorize: Callable[[dict[str, Any] | None], Any],
    *,
    ending: Ending,
) -> dict[str, Any]:
    """Cancel; `ending` writes what must commit with the cancellation (a paid appointment's
    refund) in the same transaction, and acts after it commits (sends that refund)."""
    cutoff = timedelta(minutes=settings.get().patient_cutoff_minutes)

    def check(doc: dict[str, Any], now: datetime) -> None:
        if principal.role is not Role.PATIENT and not reason:
            raise BadRequest("A doctor or admin cancelling gives a reason.", code="reason_required")
        rules.check_cancel(Status(doc["status"]), principal.role, doc["start"], now, cutoff)

    def changes(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {
            "status": Status.CANCELLED.value,
            "cancellation": {
                "by": principal.uid,
                "role": principal.role.value,
                "reason": reason,
                "at": now,
                "wasConfirmed": doc["status"] == Status.CONFIRMED.value,
                "hoursBeforeStart": round((doc["start"] - now).total_seconds() / 3600, 2),
            },
        }

    def end(tx: Any, doc: dict[str, Any], now: datetime, update: dict[str, Any]) -> dict[str, Any]:
        if doc["status"] == Status.CONFIRMED.value:
            _cancel_reminder(tx, doc, principal.uid)
        eventlog.record(
            tx,
            "appointment_cancelled",
            f"{APPOINTMENTS}/{doc['id']}",
            actor=principal.uid,
            at=now,
            uid=doc["patientUid"],
            data={"by": principal.role.value, "wasConfirmed": doc["status"] == "confirmed"},
        )
        refund = ending.in_transaction(tx, doc, principal.role, doc["start"] - now)
        return {**update, "cancellation": {**update["cancellation"], "refund": refund}}

    cancelled = _change(appointment_id, authorize, check, changes, release_slot=True, also=end)
    ending.after_commit(cancelled)
    return cancelled


def record_outcome(
    appointment_id: str, target: Status, authorize: Callable[[dict[str, Any] | None], Any]
) -> dict[str, Any]:
    def check(doc: dict[str, Any], now: datetime) -> None:
        rules.check_outcome(Status(doc["status"]), target, doc["start"], now)

    def changes(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {"status": target.value, "outcomeAt": now}

    def logged(tx: Any, doc: dict[str, Any], now: datetime, update: dict[str, Any]) -> Any:
        kind = "appointment_no_show" if target is Status.NO_SHOW else "appointment_completed"
        ctx = context.current()
        eventlog.record(
            tx,
            kind,
            f"{APPOINTMENTS}/{doc['id']}",
            actor=ctx.actor if ctx else "system",
            at=now,
            uid=doc["patientUid"],
            data={"doctorUid": doc["doctorUid"]},
        )
        return update

    return _change(appointment_id, authorize, check, changes, release_slot=False, also=logged)


def reschedule(
    appointment_id: str, new_start: datetime, authorize: Callable[[dict[str, Any] | None], Any]
) -> dict[str, Any]:
    """Move a confirmed appointment to another free slot of the same doctor, atomically."""
    cutoff = timedelta(minutes=settings.get().patient_cutoff_minutes)
    ref = appointment_ref(appointment_id)
    new_start = new_start.astimezone(UTC)

    def move(tx: Any) -> dict[str, Any]:
        snap = ref.get(transaction=tx)
        doc = snap.to_dict() if snap.exists else None
        authorize(doc)
        assert doc is not None
        now = clock.now()
        rules.check_reschedule(Status(doc["status"]), doc["start"], now, cutoff)
        if new_start <= now + cutoff:
            raise Conflict("The new time is too soon.", code="reschedule_window_closed")
        _, schedule = bookable_doctor(doc["doctorUid"])
        if not is_slot(schedule, new_start):
            raise BadRequest("That is not one of the doctor's slots.", code="not_a_slot")
        target = slot_ref(doc["doctorUid"], new_start)
        taken = target.get(transaction=tx)
        if taken.exists and not _released(taken.to_dict(), now):
            raise Conflict("Someone else has this slot.", code="slot_taken")
        store.set(
            target,
            {
                "doctorUid": doc["doctorUid"],
                "start": new_start,
                "appointmentId": doc["id"],
                "status": "booked",
                "holdExpiresAt": None,
            },
            tx=tx,
        )
        _release(tx, doc)  # the old slot is freed only together with the new one being taken
        if outbox.reminder_id(doc["id"], doc["start"]) != outbox.reminder_id(doc["id"], new_start):
            _cancel_reminder(tx, doc, doc["patientUid"])
            _queue_reminder(tx, doc, new_start)
        update = {
            "start": new_start,
            "end": new_start + (doc["end"] - doc["start"]),
            "slotId": target.id,
            "rescheduledFrom": doc["start"],
            "updatedAt": now,
        }
        store.update(ref, update, tx=tx)
        return {**doc, **update}

    try:
        result: dict[str, Any] = _transactional(move)
    except rules.TransitionRefused as exc:
        raise Conflict(str(exc), code=exc.code) from None
    except store.TransactionContended:
        raise Conflict("Someone else has this slot.", code="slot_taken") from None
    return result


def sweep_expired_holds(limit: int = 200) -> int:
    """Expire unpaid holds that ran out and free their slots; returns how many."""
    from google.cloud.firestore import FieldFilter

    now = clock.now()
    due = (
        _db()
        .collection(APPOINTMENTS)
        .where(filter=FieldFilter("status", "==", Status.PENDING_PAYMENT.value))
        .where(filter=FieldFilter("holdExpiresAt", "<=", now))
        .limit(limit)
        .stream()
    )
    expired = 0
    for snap in due:
        ref = snap.reference

        def expire(tx: Any, ref: Any = ref) -> bool:
            current = ref.get(transaction=tx).to_dict()
            if not rules.hold_expired(
                Status(current["status"]), current.get("holdExpiresAt"), clock.now()
            ):
                return False  # paid in the meantime
            slot = _db().collection(SLOTS).document(current["slotId"])
            held = slot.get(transaction=tx)  # every read before the first write
            store.update(ref, _expiry_fields(), tx=tx, by="system")
            if held.exists and held.to_dict().get("appointmentId") == current["id"]:
                store.delete(slot, tx=tx)
            return True

        if _transactional(expire):
            expired += 1
    return expired


# -- lists -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilter:
    status: Status | None
    start_from: datetime | None
    start_to: datetime | None
    doctor_uid: str | None = None
    patient_uid: str | None = None


def scope_field(principal: Principal) -> str | None:
    """Which field ties an appointment to this caller; None for admins, who see all."""
    return {
        Role.PATIENT: "patientUid",
        Role.DOCTOR: "doctorUid",
        Role.CLINIC: "clinicUid",
    }.get(principal.role)


def list_for(
    principal: Principal, f: ListFilter, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The caller's appointments (all for admins), latest start first."""
    from google.cloud.firestore import FieldFilter, Query

    collection = _db().collection(APPOINTMENTS)
    query: Any = collection
    mine = scope_field(principal)
    equal: dict[str, Any] = {}
    if mine:
        equal[mine] = principal.uid
    elif principal.role is Role.ADMIN:
        equal.update(
            {k: v for k, v in (("doctorUid", f.doctor_uid), ("patientUid", f.patient_uid)) if v}
        )
    else:
        return [], None
    if f.status:
        equal["status"] = f.status.value
    for name, value in equal.items():
        query = query.where(filter=FieldFilter(name, "==", value))
    if f.start_from:
        query = query.where(filter=FieldFilter("start", ">=", f.start_from))
    if f.start_to:
        query = query.where(filter=FieldFilter("start", "<", f.start_to))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("start", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return stored.readable(_lazily_expired, [s.to_dict() for s in snaps]), next_cursor
