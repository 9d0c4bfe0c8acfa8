"""Prescriptions: written by an appointment's doctor, sent by the patient to a pharmacy,
worked by that pharmacy. Every answer that hands one out has its read recorded (health data),
by the request pipeline (shared.platform.disclosure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.identity import profiles
from shared.platform import clients, clock, eventlog, idempotency, pagination, store
from shared.platform.context import Principal, Role
from shared.platform.errors import Conflict, NotFound
from shared.prescriptions import rules
from shared.prescriptions.rules import Status

COLLECTION = "prescriptions"


def ref(prescription_id: str) -> Any:
    return clients.db().collection(COLLECTION).document(prescription_id)


def write(
    doctor: Principal,
    appointment: dict[str, Any],
    items: list[dict[str, Any]],
    notes: str | None,
    key: idempotency.Key | None,
    *,
    prescribable: bool,
) -> tuple[dict[str, Any], bool]:
    """A new prescription for the appointment's patient; (prescription, replayed).
    `prescribable`: whether the appointment's own rules allow one now (a replay is answered
    whatever the appointment became since)."""
    first = idempotency.earlier(key)
    if first is not None:
        return load(first), True
    if not prescribable:
        raise Conflict(
            "Prescriptions are written for confirmed or completed appointments.",
            code="appointment_not_eligible",
        )
    now = clock.now()
    doc_ref = clients.db().collection(COLLECTION).document()
    record = {
        "id": doc_ref.id,
        "appointmentId": appointment["id"],
        "patientUid": appointment["patientUid"],
        "doctorUid": doctor.uid,
        "pharmacyUid": None,
        "status": Status.ISSUED.value,
        "items": items,
        "notes": notes,
        "history": [{"status": Status.ISSUED.value, "by": doctor.uid, "at": now}],
        "createdAt": now,
        "updatedAt": now,
    }

    def create() -> str:
        batch = clients.db().batch()
        store.create(doc_ref, record, tx=batch)
        # The event names the prescription; what it prescribes stays in the prescription.
        eventlog.record(
            batch,
            "prescription_written",
            f"{COLLECTION}/{doc_ref.id}",
            actor=doctor.uid,
            at=now,
            uid=appointment["patientUid"],
            data={"appointmentId": appointment["id"], "doctorUid": doctor.uid},
        )
        idempotency.remember(key, batch, doc_ref.id)
        batch.commit()
        return str(doc_ref.id)

    # A concurrent request with this key that committed first is replayed (or, sent with
    # another body, refused with 409), not a 500 of the key's AlreadyExists.
    made, replayed = idempotency.once(key, create)
    return (load(made), True) if replayed else (record, False)


def load(prescription_id: str) -> dict[str, Any]:
    snap = ref(prescription_id).get() if 1 <= len(prescription_id) <= 128 else None
    if snap is None or not snap.exists:
        raise NotFound()
    data: dict[str, Any] = snap.to_dict()
    return data


def approved_pharmacy(uid: str) -> None:
    profile = profiles.get(uid) if 1 <= len(uid) <= 128 else None
    if (
        profile is None
        or profile.get("role") != Role.PHARMACY.value
        or not profile.get("approved")
        or profile.get("disabled")
    ):
        raise NotFound("No approved pharmacy with this id.", code="pharmacy_not_found")


def move(
    prescription_id: str,
    principal: Principal,
    target: Status,
    authorize: Callable[[dict[str, Any] | None], Any],
    *,
    reason: str | None = None,
    pharmacy_uid: str | None = None,
) -> dict[str, Any]:
    """Apply one lifecycle step in a transaction, with who did it and why."""
    if pharmacy_uid is not None:
        approved_pharmacy(pharmacy_uid)
    doc_ref = ref(prescription_id)

    def apply(tx: Any) -> dict[str, Any]:
        snap = doc_ref.get(transaction=tx)
        doc = snap.to_dict() if snap.exists else None
        authorize(doc)
        assert doc is not None
        rules.check_move(Status(doc["status"]), target, principal.role)
        now = clock.now()
        step = {"status": target.value, "by": principal.uid, "at": now, "reason": reason}
        update: dict[str, Any] = {
            "status": target.value,
            "history": [*doc.get("history", []), step],
            "updatedAt": now,
        }
        if pharmacy_uid is not None:
            update["pharmacyUid"] = pharmacy_uid
        store.update(doc_ref, update, tx=tx)
        if target is Status.DISPENSED:
            eventlog.record(
                tx,
                "prescription_dispensed",
                f"{COLLECTION}/{prescription_id}",
                actor=principal.uid,
                at=now,
                uid=doc["patientUid"],
                data={"pharmacyUid": doc.get("pharmacyUid")},
            )
        return {**doc, **update}

    try:
        result: dict[str, Any] = store.run_transaction(apply)
    except rules.MoveRefused as exc:
        raise Conflict(str(exc), code=exc.code) from None
    except store.TransactionContended:
        raise Conflict("The prescription changed meanwhile; try again.", code="contended") from None
    return result


def scope_field(principal: Principal) -> str | None:
    return {
        Role.PATIENT: "patientUid",
        Role.DOCTOR: "doctorUid",
        Role.PHARMACY: "pharmacyUid",
    }.get(principal.role)


def list_for(
    principal: Principal,
    *,
    status: Status | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The caller's prescriptions (a pharmacy's queue; all for admins), newest first."""
    from google.cloud.firestore import FieldFilter, Query

    collection = clients.db().collection(COLLECTION)
    query: Any = collection
    field = scope_field(principal)
    if field:
        query = query.where(filter=FieldFilter(field, "==", principal.uid))
    if status:
        query = query.where(filter=FieldFilter("status", "==", status.value))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("createdAt", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [s.to_dict() for s in snaps], next_cursor
