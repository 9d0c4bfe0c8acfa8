"""The end of a legal hold (issue 27): an erased account's held records stay until their
retention is over, then the hold sweep (`POST /privacy/holds/sweep`) erases them: deleted when
they name no one else, stripped of the account when they are someone else's too; the books
keep their amounts under an anonymous account; the audit log is kept. On the local stack.

Time is moved by writing the hold's end dates into the past (the sweep reads the business
clock), so other holds of the shared stack are not touched.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.audit.rules import HEALTH_FIELDS
from shared.platform import clients, store
from shared.platform.context import Role, Service
from shared.privacy import holds, rules
from tests.support import PRESCRIPTION_ITEM, bearer, create_user, problem, service_api

# -- the pure part ------------------------------------------------------------------------------


def test_a_record_naming_no_one_else_is_deleted_else_the_account_is_taken_out():
    appointments = next(h for h in rules.HOLDINGS if h.collection == "appointments")
    alone = {"patientUid": "p", "doctorUid": None, "clinicUid": None, "note": "x"}
    assert rules.at_end(appointments, alone, "p", HEALTH_FIELDS) is None
    shared = {"patientUid": "p", "doctorUid": "d", "clinicUid": None, "note": "x", "status": "c"}
    assert rules.at_end(appointments, shared, "p", HEALTH_FIELDS) == {
        "patientUid": None,
        "note": None,
    }
    # The doctor taken out: the patient's record keeps its content.
    assert rules.at_end(appointments, shared, "d", HEALTH_FIELDS) == {"doctorUid": None}


def test_the_books_keep_their_amounts_under_an_anonymous_account():
    assert rules.erased_account("patient_payments:u1") == "patient_payments:erased"
    assert rules.erased_account("earnings:doctor:u1") == "earnings:doctor:erased"
    tx = {
        "patientUid": "u1",
        "providerUid": "d",
        "postings": [
            {"account": "patient_payments:u1", "amountMinor": 5, "currency": "USD"},
            {"account": "earnings:doctor:d", "amountMinor": -5, "currency": "USD"},
        ],
    }
    update = rules.stripped_transaction(tx, "u1", frozenset(rules.ledger_accounts("u1")))
    assert update["patientUid"] is None
    assert "providerUid" not in update
    assert [p["account"] for p in update["postings"]] == [
        "patient_payments:erased",
        "earnings:doctor:d",
    ]
    assert sum(p["amountMinor"] for p in update["postings"]) == 0


def test_a_hold_ends_part_by_part():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    hold = {
        "collections": {"appointments": {"until": now + timedelta(days=5)}},
        "books": {"until": now + timedelta(days=3)},
        "auditLog": {"until": now - timedelta(days=1), "endedAt": now - timedelta(hours=1)},
    }
    assert rules.next_end(hold) == now + timedelta(days=3)
    assert rules.next_end(hold, finished=frozenset({"books"})) == now + timedelta(days=5)
    assert rules.next_end(hold, finished=frozenset({"books", "collections.appointments"})) is None
    assert [p for p, part in rules.hold_parts(hold) if rules.part_ended(part, now)] == []


# -- on the local stack ---------------------------------------------------------------------------


def _create(collection: str, data: dict[str, Any], doc_id: str | None = None) -> str:
    col = clients.db().collection(collection)
    ref = col.document(doc_id) if doc_id else col.document()
    store.create(ref, data, by="test")
    return str(ref.id)


def _get(collection: str, doc_id: str) -> dict[str, Any] | None:
    snap = clients.db().collection(collection).document(doc_id).get()
    if not snap.exists:
        return None
    return {k: v for k, v in (snap.to_dict() or {}).items() if k != "_meta"}


def _visit(patient: str, doctor: str, note: str) -> str:
    now = datetime.now(UTC)
    return _create(
        "appointments",
        {
            "patientUid": patient,
            "doctorUid": doctor,
            "clinicUid": None,
            "start": now - timedelta(days=3),
            "end": now - timedelta(days=3) + timedelta(minutes=20),
            "status": "completed",
            "note": note,
            "createdAt": now,
        },
    )


def _paid(patient: str, doctor: str) -> dict[str, str]:
    """An order with its ledger transaction, as payments books it."""
    order = _create(
        "orders",
        {
            "patientUid": patient,
            "providerUid": doctor,
            "status": "captured",
            "amount": {"currency": "USD", "minor": 1250},
        },
    )
    tx = f"payment-{order}"
    postings = [
        {"account": f"patient_payments:{patient}", "amountMinor": 1250, "currency": "USD"},
        {"account": f"earnings:doctor:{doctor}", "amountMinor": -1250, "currency": "USD"},
    ]
    _create(
        "ledger",
        {
            "id": tx,
            "kind": "payment",
            "orderId": order,
            "postings": postings,
            "patientUid": patient,
            "providerUid": doctor,
        },
        tx,
    )
    for n, posting in enumerate(postings):
        _create("ledgerEntries", {**posting, "txId": tx, "orderId": order}, f"{tx}-{n}")
    _create(
        "ledgerAccounts",
        {"account": f"patient_payments:{patient}", "currencies": ["USD"]},
        f"patient_payments_{patient}",
    )
    return {"order": order, "tx": tx}


def _erase(stack: Any, *users: Any) -> None:
    ids = []
    for user in users:
        asked = bearer(stack, user).post("/privacy/erasure")
        assert asked.status_code == 201, asked.text
        ids.append(asked.json()["id"])
        store.update(
            clients.db().collection("privacyRequests").document(ids[-1]),
            {"eraseAfter": datetime.now(UTC) - timedelta(seconds=1)},
            by="test",
        )
    ran = service_api(stack, Service.SCHEDULER, "privacy").post("/privacy/erasure/run")
    assert ran.status_code == 200, ran.text
    assert set(ids) <= set(ran.json()["erased"]), ran.text


def _end_retention(uid: str) -> None:
    """Move the hold's ends into the past, as the years would."""
    past = datetime.now(UTC) - timedelta(days=1)
    ref = clients.db().collection("legalHolds").document(uid)
    hold = ref.get().to_dict()
    update: dict[str, Any] = {f"{path}.until": past for path, _ in rules.hold_parts(hold)}
    store.update(ref, {**update, "nextEnd": past}, by="test")


def _sweep(stack: Any, **params: Any) -> dict[str, Any]:
    swept = service_api(stack, Service.SCHEDULER, "privacy").post(
        "/privacy/holds/sweep", params=params
    )
    assert swept.status_code == 200, swept.text
    return dict(swept.json())


def _naming(uid: str) -> list[str]:
    """Documents of the held collections (the audit log aside) that still name `uid`."""
    found = []
    for collection in rules.HOLDS:
        if collection in ("audit", "paypalEvents"):
            continue
        for snap in clients.db().collection(collection).stream():
            data = {k: v for k, v in (snap.to_dict() or {}).items() if k != "_meta"}
            if uid in snap.id or uid in repr(data):
                found.append(f"{collection}/{snap.id}")
    return found


def test_held_records_are_erased_when_their_retention_ends_and_not_before(stack, admin):
    patient, doctor, leaving_doctor, other = (
        create_user(stack, r) for r in (Role.PATIENT, Role.DOCTOR, Role.DOCTOR, Role.PATIENT)
    )
    p = patient.uid
    visit = _visit(p, doctor.uid, "headache for a week")
    with_leaving = _visit(p, leaving_doctor.uid, "follow-up")
    prescription = _create(
        "prescriptions",
        {
            "patientUid": p,
            "doctorUid": doctor.uid,
            "pharmacyUid": None,
            "appointmentId": visit,
            "items": [PRESCRIPTION_ITEM],
            "notes": "rest",
            "status": "issued",
        },
    )
    paid = _paid(p, doctor.uid)
    # Someone else's records with the same doctor: never touched.
    others = {
        "appointments": _visit(other.uid, doctor.uid, "back pain"),
        "orders": _paid(other.uid, doctor.uid)["order"],
    }
    before = {c: _get(c, i) for c, i in others.items()}

    _erase(stack, patient, leaving_doctor)
    hold = clients.db().collection("legalHolds").document(p).get().to_dict()
    assert hold["nextEnd"] > datetime.now(UTC) + timedelta(days=365)
    assert hold["closedAt"] is None

    # Before their retention ends, nothing goes.
    swept = _sweep(stack)
    assert p not in swept["holds"]
    assert _get("appointments", visit)["patientUid"] == p
    assert _get("ledgerEntries", f"{paid['tx']}-0")["account"] == f"patient_payments:{p}"
    quiet = holds.sweep(10, "test", now=datetime(2000, 1, 1, tzinfo=UTC))  # the service's clock
    assert quiet["holds"] == []
    assert quiet["erased"] == 0

    _end_retention(p)
    swept = _sweep(stack)
    assert p in swept["holds"], swept
    assert p in swept["closed"], swept
    # 4 records others keep (2 visits, the prescription, the order), a posting, a transaction
    assert swept["stripped"] >= 6, swept

    # The still-open doctor's records stay, without the patient or their health content.
    kept = _get("appointments", visit)
    assert kept["patientUid"] is None
    assert kept["note"] is None
    assert kept["doctorUid"] == doctor.uid
    assert kept["status"] == "completed"
    script = _get("prescriptions", prescription)
    assert script["patientUid"] is None
    assert script["items"] is None
    assert script["notes"] is None
    order = _get("orders", paid["order"])
    assert order["patientUid"] is None
    assert order["amount"] == {"currency": "USD", "minor": 1250}
    # A visit with another erased account stays for that account's hold, without the patient.
    assert _get("appointments", with_leaving)["doctorUid"] == leaving_doctor.uid
    assert _get("appointments", with_leaving)["patientUid"] is None
    # The books: amounts kept, balanced, the account anonymous.
    entry = _get("ledgerEntries", f"{paid['tx']}-0")
    assert entry["account"] == "patient_payments:erased"
    assert entry["amountMinor"] == 1250
    tx = _get("ledger", paid["tx"])
    assert tx["patientUid"] is None
    assert tx["providerUid"] == doctor.uid
    assert sum(x["amountMinor"] for x in tx["postings"]) == 0
    assert _get("ledgerAccounts", f"patient_payments_{p}") is None
    assert _naming(p) == []

    # The hold says what was erased and when; the audit log is kept.
    hold = clients.db().collection("legalHolds").document(p).get().to_dict()
    assert hold["closedAt"] is not None
    assert hold["nextEnd"] is None
    assert hold["collections"]["appointments"]["stripped"] == 2
    assert hold["collections"]["appointments"]["endedAt"] is not None
    assert hold["books"]["stripped"] == 2  # the patient's posting and its transaction
    assert hold["books"]["erased"] == 1  # the account's currencies record
    assert "export bucket" in hold["auditLog"]["keptBy"]

    # A second sweep erases nothing more.
    again = _sweep(stack)
    assert p not in again["holds"]
    assert (again["erased"], again["stripped"]) == (0, 0)

    # The other erased account's hold, in bounded steps: the visit names no one now, so it goes.
    _end_retention(leaving_doctor.uid)
    first = _sweep(stack, limit=1)
    assert first["continuing"] == [leaving_doctor.uid], first
    assert first["erased"] == 1, first
    assert _get("appointments", with_leaving) is None
    second = _sweep(stack, limit=1)
    assert second["closed"] == [leaving_doctor.uid], second
    assert second["erased"] == 0, second

    # Nobody else's records changed.
    assert {c: _get(c, i) for c, i in others.items()} == before
    assert _get("ledgerEntries", f"payment-{others['orders']}-0")["account"] == (
        f"patient_payments:{other.uid}"
    )

    # The audit log still verifies once the sweep's entries are sealed.
    time.sleep(1)
    assert admin.post("/audit/seal").status_code == 200
    verified = admin.get("/audit/verify").json()
    assert verified["ok"] is True, verified


def test_only_the_scheduler_and_admins_sweep_holds(stack, admin):
    patient = create_user(stack, Role.PATIENT)
    problem(bearer(stack, patient).post("/privacy/holds/sweep"), 403)
    assert admin.post("/privacy/holds/sweep", params={"limit": 1}).status_code == 200
    problem(admin.post("/privacy/holds/sweep", params={"limit": 0}), 400)
    problem(admin.post("/privacy/holds/sweep", params={"limit": 2001}), 400)
    problem(admin.post("/privacy/holds/sweep", params={"limit": "many"}), 400)
