"""Personal data, the pure part: where an account's data lives, what an erasure does with each
record, how long the law keeps what it keeps, the requests' deadlines, and the clinical
records as FHIR R4 resources. No I/O here (shared.privacy.consents, .exports, .erasure do it).

`HOLDINGS` is the one map of every collection the code writes that can hold an account's data:
how to find an account's documents in it (the document id is the uid, or a field holds it), and
what erasure does with them: delete, anonymize, scrub (strip the personal fields, keep the
record), hold (kept as it is, pseudonymous once the profile is gone, under a legal hold with
its retention end) or keep (records of the rights themselves and the audit log).
tests/test_privacy.py walks every collection in the emulator, so a collection added later that
holds someone's data fails there until it is listed here (or in `NOT_SEARCHED`, with why).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from shared.platform.ids import DOC_ID

Treatment = Literal["delete", "anonymize", "scrub", "hold", "keep"]
Retention = Literal["medical", "financial", "audit"]


class RequestKind(StrEnum):
    EXPORT = "export"
    ERASURE = "erasure"


class RequestState(StrEnum):
    # An export is ready at once (its pages are made as they are downloaded); an erasure waits
    # out its cooling-off period, then runs (in bounded steps) until done.
    READY = "ready"
    WAITING = "waiting"  # erasure: in its cooling-off period, may be cancelled
    # erasure: due, but the account's role has visits or money still open (`blockedBy`); it
    # is looked at again by later runs, and may still be cancelled
    BLOCKED = "blocked"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class BuildState(StrEnum):
    """An export's build (a Cloud Tasks job, one task a part)."""

    QUEUED = "queued"
    BUILDING = "building"
    DONE = "done"  # every part built: download them
    NOT_QUEUED = "not_queued"  # Cloud Tasks could not be asked: download the pages instead


@dataclass(frozen=True)
class Holding:
    """A collection that can hold an account's documents."""

    collection: str
    treatment: Treatment
    fields: tuple[str, ...] = ()  # fields whose value is the uid
    by_id: bool = False  # the document's id is the uid
    retention: Retention | None = None  # for treatment "hold"
    # For "scrub": the fields removed (the rest is kept, pseudonymous).
    scrubbed: tuple[str, ...] = ()
    # Fields that hold health data: the export marks them, so reading them is logged.
    health: bool = False


MEDICAL: Retention = "medical"
FINANCIAL: Retention = "financial"

HOLDINGS: tuple[Holding, ...] = (
    # The account itself.
    Holding("users", "anonymize", by_id=True),
    Holding("directory", "delete", by_id=True),
    Holding("access", "anonymize", by_id=True),  # a tombstone: tokens learn it is gone
    Holding("sessions", "delete", fields=("uid",)),
    Holding("idempotency", "delete", fields=("caller",)),
    # Consents and requests prove what the account agreed to and asked for: kept.
    Holding("consents", "keep", by_id=True),
    Holding("privacyRequests", "keep", fields=("uid",)),
    Holding("legalHolds", "keep", by_id=True),
    # Notices: stopped, their addresses and contents stripped; devices and preferences gone.
    Holding("notifications", "scrub", fields=("uid",), scrubbed=("to", "data", "recipient")),
    Holding("deviceTokens", "delete", fields=("uid",)),
    Holding("notificationPreferences", "delete", by_id=True),
    Holding("events", "delete", fields=("uid",)),
    # Care: visit records and prescriptions are medical records the law keeps.
    Holding("availability", "delete", by_id=True),
    Holding("clinics", "delete", by_id=True),
    Holding("pharmacies", "delete", by_id=True),
    Holding("bookingPatients", "delete", by_id=True),
    Holding(
        "appointments",
        "hold",
        fields=("patientUid", "doctorUid", "clinicUid"),
        retention=MEDICAL,
        health=True,
    ),
    Holding("slots", "hold", fields=("doctorUid",), retention=MEDICAL),
    Holding(
        "prescriptions",
        "hold",
        fields=("patientUid", "doctorUid", "pharmacyUid"),
        retention=MEDICAL,
        health=True,
    ),
    Holding(
        "bookings",
        "hold",
        fields=("patientUid", "clinicUid"),
        retention=MEDICAL,
        health=True,  # the patient's note to the clinic
    ),
    Holding("bookingWindows", "hold", fields=("clinicUid",), retention=MEDICAL),
    Holding("bookingDays", "hold", fields=("clinicUid",), retention=MEDICAL),
    # Money: the books are kept; where a provider is paid is not (its payouts keep it).
    Holding("orders", "hold", fields=("patientUid", "providerUid"), retention=FINANCIAL),
    Holding("refunds", "hold", fields=("patientUid", "providerUid"), retention=FINANCIAL),
    Holding("payouts", "hold", fields=("providerUid",), retention=FINANCIAL),
    Holding("payoutProfiles", "delete", by_id=True),
)

# Ledger postings name accounts after the uid (shared.payments.ledger: patient_account,
# earnings_account); tests/test_privacy_rules.py holds these to those functions.
LEDGER_ENTRIES = "ledgerEntries"


def ledger_accounts(uid: str) -> tuple[str, ...]:
    return (f"patient_payments:{uid}", f"earnings:doctor:{uid}", f"earnings:clinic:{uid}")


# Collections not searched for an account's documents, and why (the test's walk skips these).
NOT_SEARCHED: Mapping[str, str] = {
    "audit": "the log: exported as the account's own actions and the reads of its health "
    "data; append-only, kept (a legal hold)",
    "ledger": "a ledger transaction's postings are exported one by one as ledgerEntries",
    "ledgerAccounts": "an account's currencies only; its postings are the ledgerEntries",
    "ledgerGuards": "a count of a provider's debits, no data of its own",
    "paypalEvents": "PayPal's notifications as received, kept with the books",
    "suppressions": "an address PayPal or a mailbox refused, keyed by a hash of the address",
    "analytics": "daily counts, no account in them",
    "auditCheckpoints": "seals of the log",
    "auditAcknowledgements": "an admin's note on a flagged entry",
    "auditFindings": "what the log check found",
    "auditHead": "the log's legacy head",
    "auditCheck": "the log check's bookmark",
    "reconciliation": "the Auth reconciliation's bookmark",
    "settings": "configuration",
}

HOLDS: tuple[str, ...] = (
    *tuple(h.collection for h in HOLDINGS if h.treatment == "hold"),
    LEDGER_ENTRIES,
    "ledger",
    "ledgerAccounts",
    "ledgerGuards",
    "paypalEvents",
    "audit",
)

# Profile fields kept when a profile is anonymized (nothing that names or reaches a person).
KEPT_PROFILE_FIELDS = frozenset({"uid", "role", "createdAt"})


def anonymized(uid: str) -> dict[str, Any]:
    """What an anonymized profile is beside the fields kept: erased, and, as the access
    record's tombstone, neither approved nor enabled, so no booking path takes it (they
    refuse a profile not approved or disabled) whatever else is put back by hand."""
    return {"uid": uid, "erased": True, "approved": False, "disabled": True}


# -- the export's walk -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One query of the walk: a document by id, or documents where `field` == `value`."""

    collection: str
    field: str | None  # None: the document whose id is `value`
    value: str
    health: bool = False
    reads: bool = False  # the reads of the health data in these documents (audit entries)


def steps(uid: str) -> list[Step]:
    """The walk over everything held about `uid`, in a fixed order (the cursor's index)."""
    out: list[Step] = []
    for h in HOLDINGS:
        if h.by_id:
            out.append(Step(h.collection, None, uid, h.health))
        out += [Step(h.collection, f, uid, h.health) for f in h.fields]
    out += [Step(LEDGER_ENTRIES, "account", a) for a in ledger_accounts(uid)]
    out.append(Step("audit", "actor", uid))  # what the account did
    # Who read the account's health data: the reads of its own records (as the patient).
    out += [
        Step(h.collection, "patientUid", uid, h.health, reads=True)
        for h in HOLDINGS
        if h.health and "patientUid" in h.fields
    ]
    return out


@dataclass(frozen=True)
class Cursor:
    step: int
    after: str | None  # the last document id of that step already given


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps([cursor.step, cursor.after], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class BadCursor(ValueError):
    pass


def decode_cursor(token: str | None, step_count: int) -> Cursor:
    if not token:
        return Cursor(0, None)
    try:
        padded = token + "=" * (-len(token) % 4)
        step, after = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise BadCursor("not a cursor of this export") from exc
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < step_count:
        raise BadCursor("not a cursor of this export")
    # `after` names a document of the step's collection: a document id and nothing else (a
    # path or an empty one would reach Firestore's client and fail there, a 500).
    if after is not None and (not isinstance(after, str) or not DOC_ID.fullmatch(after)):
        raise BadCursor("not a cursor of this export")
    return Cursor(step, after)


def plain(value: Any) -> Any:
    """A stored value as JSON: times as ISO 8601, bytes as base64, references as paths."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    path = getattr(value, "path", None)  # a DocumentReference
    return path if isinstance(path, str) else str(value)


# -- requests and their deadlines --------------------------------------------------------------


def deadline(requested_at: datetime, days: int) -> datetime:
    """When the law expects the answer (GDPR Art. 12(3), KVKK Art. 13(2))."""
    return requested_at + timedelta(days=days)


def erasure_due(requested_at: datetime, cooling_off_days: int) -> datetime:
    return requested_at + timedelta(days=cooling_off_days)


def retention_end(last: datetime, retention: Retention, days: Mapping[Retention, int]) -> datetime:
    return last + timedelta(days=days[retention])


# What stops a provider's erasure: visits still to come and money still owed.
OPEN_APPOINTMENTS = frozenset({"pending_payment", "confirmed"})
OPEN_BOOKINGS = frozenset({"requested", "accepted", "checked_in"})
OPEN_PAYOUTS = frozenset({"scheduled", "held", "sending", "sent", "unclaimed", "refused"})


# -- FHIR R4 ------------------------------------------------------------------------------------

_FHIR_ID = re.compile(r"[^A-Za-z0-9\-.]")

APPOINTMENT_STATUS = {
    "pending_payment": "pending",
    "confirmed": "booked",
    "completed": "fulfilled",
    "no_show": "noshow",
    "cancelled": "cancelled",
    "expired": "cancelled",
}
MEDICATION_STATUS = {
    "issued": "active",
    "sent": "active",
    "received": "active",
    "ready": "active",
    "rejected": "active",  # the patient may send it to another pharmacy
    "dispensed": "completed",
    "cancelled": "cancelled",
}


def fhir_id(raw: str) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) for a document id."""
    return (_FHIR_ID.sub("-", raw) or "x")[:64]


def _instant(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value if isinstance(value, str) else None


def _ref(kind: str, uid: Any) -> dict[str, Any] | None:
    return {"reference": f"{kind}/{fhir_id(uid)}"} if isinstance(uid, str) and uid else None


def patient(uid: str, profile: Mapping[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": fhir_id(uid),
        "identifier": [{"system": "urn:alodoktor:uid", "value": uid}],
    }
    name = profile.get("displayName")
    if isinstance(name, str) and name.strip():
        resource["name"] = [{"text": name.strip()}]
    telecom = [
        {"system": system, "value": value}
        for system, value in (("email", profile.get("email")), ("phone", profile.get("phone")))
        if isinstance(value, str) and value
    ]
    if telecom:
        resource["telecom"] = telecom
    return resource


def practitioner(uid: str, profile: Mapping[str, Any] | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": fhir_id(uid),
        "identifier": [{"system": "urn:alodoktor:uid", "value": uid}],
    }
    name = (profile or {}).get("displayName")
    if isinstance(name, str) and name.strip():
        resource["name"] = [{"text": name.strip()}]
    return resource


def appointment(doc_id: str, d: Mapping[str, Any]) -> dict[str, Any]:
    participants = [
        {"actor": ref, "status": "accepted"}
        for ref in (_ref("Patient", d.get("patientUid")), _ref("Practitioner", d.get("doctorUid")))
        if ref is not None
    ]
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": fhir_id(doc_id),
        "identifier": [{"system": "urn:alodoktor:appointments", "value": doc_id}],
        "status": APPOINTMENT_STATUS.get(str(d.get("status")), "proposed"),
        "participant": participants or [{"type": [{"text": "unknown"}], "status": "needs-action"}],
    }
    start, end = _instant(d.get("start")), _instant(d.get("end"))
    if start and end:
        resource["start"], resource["end"] = start, end
    note = d.get("note")
    if isinstance(note, str) and note:
        resource["comment"] = note
    created = _instant(d.get("createdAt"))
    if created:
        resource["created"] = created
    return resource


def medication_requests(doc_id: str, d: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One MedicationRequest per item of a prescription, grouped by the prescription's id."""
    out = []
    raw = d.get("items")
    items: list[Any] = raw if isinstance(raw, list) else []
    for n, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        words = [str(item.get(k)) for k in ("medication", "strength", "form") if item.get(k)]
        resource: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": fhir_id(f"{doc_id}-{n}"),
            "groupIdentifier": {"system": "urn:alodoktor:prescriptions", "value": doc_id},
            "status": MEDICATION_STATUS.get(str(d.get("status")), "unknown"),
            "intent": "order",
            "medicationCodeableConcept": {"text": " ".join(words) or "unnamed"},
            "subject": _ref("Patient", d.get("patientUid")) or {"display": "unknown"},
        }
        requester = _ref("Practitioner", d.get("doctorUid"))
        if requester:
            resource["requester"] = requester
        authored = _instant(d.get("createdAt"))
        if authored:
            resource["authoredOn"] = authored
        dosage = " ".join(str(item.get(k)) for k in ("dose", "frequency") if item.get(k))
        instruction = item.get("instructions")
        if dosage or instruction:
            resource["dosageInstruction"] = [
                {
                    **({"text": dosage} if dosage else {}),
                    **({"patientInstruction": str(instruction)} if instruction else {}),
                }
            ]
        quantity, days = item.get("quantity"), item.get("durationDays")
        supply: dict[str, Any] = {}
        if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0:
            supply["quantity"] = {"value": quantity}
        if isinstance(days, int) and not isinstance(days, bool) and days > 0:
            supply["expectedSupplyDuration"] = {
                "value": days,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            }
        refills = item.get("refills")
        if isinstance(refills, int) and not isinstance(refills, bool) and refills >= 0:
            supply["numberOfRepeatsAllowed"] = refills
        if supply:
            resource["dispenseRequest"] = supply
        notes = d.get("notes")
        if isinstance(notes, str) and notes:
            resource["note"] = [{"text": notes}]
        out.append(resource)
    return out


def entry(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:alodoktor:{resource['resourceType']}/{resource['id']}",
        "resource": dict(resource),
    }


def referenced_practitioners(resources: list[dict[str, Any]]) -> Iterator[str]:
    """The practitioners a page's resources point at (by FHIR id)."""
    for r in resources:
        for ref in (r.get("requester"), *(p.get("actor") for p in r.get("participant", []))):
            if isinstance(ref, Mapping) and str(ref.get("reference", "")).startswith(
                "Practitioner/"
            ):
                yield str(ref["reference"]).split("/", 1)[1]


# -- the end of a legal hold ----------------------------------------------------------------------
# `legalHolds/{uid}` has parts, each with its retention and end (`until`): `collections.<name>`
# (the account's records in a held collection), `books` (its ledger accounts) and `auditLog`.
# When a part's end has passed, the sweep (shared.privacy.holds) erases what it holds and marks
# it `endedAt`; the hold is closed when no part is left.

AUDIT_KEPT_BY = (
    "the audit export bucket's retention policy: the log is append-only and never deleted "
    "by the application (docs/guides/audit.md)"
)
ERASED_PARTY = "erased"  # the party a stripped ledger account is named after


def hold_parts(hold: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """A hold's parts by their field path in the hold: `collections.<name>`, `books`,
    `auditLog`."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    held = hold.get("collections")
    if isinstance(held, Mapping):
        out += [(f"collections.{c}", p) for c, p in sorted(held.items()) if isinstance(p, Mapping)]
    for name in ("books", "auditLog"):
        part = hold.get(name)
        if isinstance(part, Mapping):
            out.append((name, part))
    return out


def part_open(part: Mapping[str, Any]) -> bool:
    return part.get("endedAt") is None


def part_ended(part: Mapping[str, Any], now: datetime) -> bool:
    """The part's retention is over and the sweep has not finished it yet."""
    until = part.get("until")
    return part_open(part) and isinstance(until, datetime) and until <= now


def next_end(hold: Mapping[str, Any], finished: frozenset[str] = frozenset()) -> datetime | None:
    """The earliest end among the hold's parts still open, but for those just `finished`
    (None: nothing is left)."""
    ends = [
        p["until"]
        for path, p in hold_parts(hold)
        if path not in finished and part_open(p) and isinstance(p.get("until"), datetime)
    ]
    return min(ends) if ends else None


def at_end(
    holding: Holding, data: Mapping[str, Any], uid: str, health_fields: frozenset[str]
) -> dict[str, Any] | None:
    """What the end of `uid`'s hold does to one of its records in `holding`: None to delete it
    (it names no one else), else the update that strips `uid` from it (the fields naming it,
    and the health fields when it is the patient), so the record stays for the others it
    names (an account still open, or one under a hold of its own, ended by that hold)."""
    others = {v for f in holding.fields if isinstance(v := data.get(f), str) and v and v != uid}
    if not others:
        return None
    update: dict[str, Any] = {f: None for f in holding.fields if data.get(f) == uid}
    if data.get("patientUid") == uid:
        update |= {f: None for f in sorted(health_fields) if f in data}
    return update


def erased_account(account: str) -> str:
    """A ledger account with its party's uid taken out (`earnings:doctor:erased`): its
    postings keep their amounts, so every transaction still balances."""
    kind, _, _party = account.rpartition(":")
    return f"{kind}:{ERASED_PARTY}" if kind else account


def stripped_transaction(
    data: Mapping[str, Any], uid: str, accounts: frozenset[str]
) -> dict[str, Any]:
    """A ledger transaction's update that takes `uid` out of it (its party fields and the
    accounts of its postings); empty when it does not name `uid`."""
    update: dict[str, Any] = {f: None for f in ("patientUid", "providerUid") if data.get(f) == uid}
    postings = data.get("postings")
    if isinstance(postings, list) and any(
        isinstance(p, Mapping) and p.get("account") in accounts for p in postings
    ):
        update["postings"] = [
            {**p, "account": erased_account(str(p["account"]))}
            if isinstance(p, Mapping) and p.get("account") in accounts
            else p
            for p in postings
        ]
    return update
