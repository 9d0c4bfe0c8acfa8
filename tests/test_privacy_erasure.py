"""Closing an account (issue 27), the parts a review found missing: a recent sign-in and a
notice to the owner when it is asked; the blockers of the account's role at the time it is
carried out; notices scrubbed however many there are, across bounded runs."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

from google.cloud.firestore import FieldFilter

from shared.platform import clients, clock, outbox, store
from shared.platform.context import Role, Service
from shared.privacy import erasure
from tests.notify_support import Mail
from tests.payout_support import notices_to
from tests.support import (
    bearer,
    create_user,
    erasure_due_now,
    problem,
    service_api,
    sign_in,
)


def _age_session(uid: str, seconds: int) -> None:
    """The account's cookie sessions as if their sign-in were `seconds` old."""
    query = clients.db().collection("sessions").where(filter=FieldFilter("uid", "==", uid))
    for snap in query.stream():
        snap.reference.update({"authTime": int(time.time()) - seconds})


# -- a recent sign-in, and the owner told --------------------------------------------------------


def test_closing_an_account_needs_a_recent_sign_in(stack):
    user = create_user(stack, Role.PATIENT)
    browser = sign_in(stack, user)
    _age_session(user.uid, 600)  # signed in ten minutes ago: the session still works

    assert browser.get("/privacy/consents").status_code == 200
    refused = problem(browser.post("/privacy/erasure"), 401, "reauthenticate")
    assert refused["type"].endswith("/reauthenticate")
    assert refused["maxAgeSeconds"] == 300
    assert notices_to(user.uid, "erasure_requested") == []
    requests_of = clients.db().collection("privacyRequests")
    mine = requests_of.where(filter=FieldFilter("uid", "==", user.uid)).get()
    assert mine == [], "a refused request leaves nothing behind"
    # Still signed in: the session is not ended, the account can sign in again and ask.
    assert browser.get("/users/me").status_code == 200
    again = sign_in(stack, user).post("/privacy/erasure")
    assert again.status_code == 201, again.text


def test_the_owner_is_told_when_and_how_to_cancel(stack):
    user = create_user(stack, Role.PATIENT)
    asked = bearer(stack, user).post("/privacy/erasure")
    assert asked.status_code == 201, asked.text
    request = asked.json()

    (notice,) = notices_to(user.uid, "erasure_requested")
    assert notice["data"]["requestId"] == request["id"]
    erase_after = datetime.fromisoformat(notice["data"]["eraseAfter"])
    assert erase_after == datetime.fromisoformat(request["eraseAfter"].replace("Z", "+00:00"))
    assert erase_after > datetime.now(UTC) + timedelta(days=13)
    (mail,) = Mail(stack.mail_url).wait(user.email)
    assert "closed" in mail["subject"]
    assert request["id"] in mail["text"]
    assert "cancel" in mail["text"]
    # Asking again is the same request, told once.
    assert bearer(stack, user).post("/privacy/erasure").json()["id"] == request["id"]
    assert len(notices_to(user.uid, "erasure_requested")) == 1


def test_a_carried_out_erasure_is_recorded_on_the_request(stack):
    """Nothing is mailed once the account is erased (no address of it is kept to mail): the
    request records when and by whom, an audited change the owner was told of beforehand."""
    user = create_user(stack, Role.PATIENT)
    asked = bearer(stack, user).post("/privacy/erasure").json()
    assert erasure.erase(user.uid, "patient", asked["id"], "test") is True
    done = clients.db().collection("privacyRequests").document(asked["id"]).get().to_dict()
    assert done["state"] == "done"
    assert done["handledBy"] == "test"
    assert done["completedAt"] is not None
    (notice,) = notices_to(user.uid, "erasure_requested")
    assert notice["cancelled"] is True
    assert notice["to"] is None
    assert notice["data"] is None


# -- the blockers of the role the account has when the run comes --------------------------------


def test_a_patient_who_became_a_doctor_with_visits_to_come_is_not_erased(stack, admin):
    user = create_user(stack, Role.PATIENT)
    asked = bearer(stack, user).post("/privacy/erasure")
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["id"]
    # During the cooling-off the account becomes a doctor, and a patient books a visit.
    changed = admin.request("PATCH", f"/admin-users/{user.uid}", json={"role": "doctor"})
    assert changed.status_code == 200, changed.text
    now = datetime.now(UTC)
    visit = clients.db().collection("appointments").document()
    store.create(
        visit,
        {
            "patientUid": create_user(stack, Role.PATIENT).uid,
            "doctorUid": user.uid,
            "status": "confirmed",
            "start": now + timedelta(days=1),
            "end": now + timedelta(days=1, minutes=20),
        },
        by="test",
    )
    erasure_due_now(request_id)
    scheduler = service_api(stack, Service.SCHEDULER, "privacy")

    ran = scheduler.post("/privacy/erasure/run")
    assert ran.status_code == 200, ran.text
    assert request_id in ran.json()["blocked"]
    assert request_id not in ran.json()["erased"]
    account = clients.db().collection("access").document(user.uid).get().to_dict()
    assert account["deleted"] is False
    assert clients.db().collection("users").document(user.uid).get().to_dict().get("email")

    # The owner and the admins see why, and when it is looked at again.
    mine = bearer(stack, user).get(f"/privacy/erasure/{request_id}")
    assert mine.status_code == 200, mine.text
    shown = mine.json()
    assert shown["state"] == "blocked"
    assert shown["blockedBy"] == ["open_appointments"]
    assert datetime.fromisoformat(shown["eraseAfter"].replace("Z", "+00:00")) > now
    listed = admin.get("/privacy/requests", params={"limit": 100}).json()["items"]
    assert next(r for r in listed if r["id"] == request_id)["blockedBy"] == ["open_appointments"]
    # An admin can ask for the blocked ones alone.
    only = admin.get("/privacy/requests", params={"limit": 100, "state": "blocked"})
    assert only.status_code == 200, only.text
    assert request_id in {r["id"] for r in only.json()["items"]}
    assert {r["state"] for r in only.json()["items"]} == {"blocked"}
    problem(admin.get("/privacy/requests", params={"state": "lost"}), 400)
    # Not there for anyone else; asking again is the same request.
    problem(
        bearer(stack, create_user(stack, Role.PATIENT)).get(f"/privacy/erasure/{request_id}"), 404
    )
    assert bearer(stack, user).post("/privacy/erasure").json()["id"] == request_id
    # Not due again before its recheck: a run now leaves it alone.
    assert request_id not in scheduler.post("/privacy/erasure/run").json()["blocked"]

    # Once the visit is over, the next run erases the account.
    store.update(visit, {"status": "completed"}, by="test")
    erasure_due_now(request_id)
    ran = scheduler.post("/privacy/erasure/run")
    assert ran.json()["erased"] == [request_id], ran.text
    done = clients.db().collection("privacyRequests").document(request_id).get().to_dict()
    assert done["state"] == "done"
    assert done["role"] == "doctor"
    assert done["blockedBy"] is None


def test_a_patient_with_visits_to_come_cancels_them_before_the_account_is_closed(stack):
    """A booked visit holds a provider's time (and, paid, the patient's money): the patient
    cancels it, refunded as the policy says, rather than leave it booked for an account that
    is gone. A visit already begun, or ended, holds nothing up."""
    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    now = datetime.now(UTC)
    visits = clients.db().collection("appointments")
    begun, to_come = visits.document(), visits.document()
    for ref, start in ((begun, now - timedelta(minutes=5)), (to_come, now + timedelta(days=2))):
        store.create(
            ref,
            {
                "patientUid": user.uid,
                "doctorUid": create_user(stack, Role.DOCTOR).uid,
                "status": "confirmed",
                "start": start,
                "end": start + timedelta(minutes=20),
            },
            by="test",
        )
    refused = problem(api.post("/privacy/erasure"), 409, "erasure_blocked")
    assert refused["reasons"] == ["visits_to_come"]
    booking = clients.db().collection("bookings").document()
    store.create(
        booking,
        {
            "patientUid": user.uid,
            "clinicUid": create_user(stack, Role.CLINIC).uid,
            "status": "requested",
            "windowStart": now + timedelta(days=3),
        },
        by="test",
    )
    store.update(to_come, {"status": "cancelled"}, by="test")
    refused = problem(api.post("/privacy/erasure"), 409, "erasure_blocked")  # the clinic's
    assert refused["reasons"] == ["visits_to_come"]
    store.update(booking, {"status": "cancelled"}, by="test")
    asked = api.post("/privacy/erasure")
    assert asked.status_code == 201, asked.text


def test_a_blocked_erasure_can_be_cancelled(stack):
    user = create_user(stack, Role.PATIENT)
    api = bearer(stack, user)
    request_id = api.post("/privacy/erasure").json()["id"]
    store.update(
        clients.db().collection("privacyRequests").document(request_id),
        {"state": "blocked", "blockedBy": ["money_owed"]},
        by="test",
    )
    cancelled = api.post(f"/privacy/erasure/{request_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"


# -- notices scrubbed however many there are ----------------------------------------------------


def _old_notices(uid: str, email: str, prefix: str, n: int) -> None:
    """`n` sent notices of the account, made long before its erasure began."""
    batch = clients.db().batch()
    long_ago = clock.now() - timedelta(days=30)
    for i in range(n):
        batch.set(
            clients.db().collection("notifications").document(f"{prefix}-{i:02d}"),
            {
                "uid": uid,
                "to": email,
                "kind": "payment_received",
                "data": {"orderId": f"o-{i}"},
                "status": "done",
                "createdAt": long_ago,
            },
        )
    batch.commit()


def test_an_account_with_more_notices_than_a_run_reads_is_erased_across_runs(stack, monkeypatch):
    """A scrubbed notice keeps its uid, so each run goes on from where the last one stopped
    (it read the same first ones again before, and never ended)."""
    user = create_user(stack, Role.PATIENT)
    request_id = bearer(stack, user).post("/privacy/erasure").json()["id"]
    db = clients.db()
    _old_notices(user.uid, user.email, f"erasure-test-{user.uid}", 23)
    monkeypatch.setattr(erasure, "MAX_DOCUMENTS_PER_RUN", 5)

    def scrubbed() -> int:
        query = db.collection("notifications").where(filter=FieldFilter("uid", "==", user.uid))
        return sum(1 for s in query.stream() if (s.to_dict() or {}).get("to") is None)

    counts = []
    for _ in range(10):
        finished = erasure.erase(user.uid, "patient", request_id, "test")
        counts.append(scrubbed())
        if finished:
            break
    assert finished, counts
    # 24 notices (the request's own among them), five records a run at most: every run moved
    # on (the last may find none left, and ends the erasure).
    assert counts[-1] == 24
    moving = counts[:-1]
    assert all(b > a for a, b in itertools.pairwise(moving)), counts
    assert len(counts) <= 7, counts
    done = db.collection("privacyRequests").document(request_id).get().to_dict()
    assert done["state"] == "done"
    assert db.collection("legalHolds").document(user.uid).get().exists


def test_a_notice_queued_while_an_erasure_runs_is_scrubbed_too(stack, monkeypatch):
    """The walk goes in document order; a notice queued after it began (a refund's, say) may
    have an id before where it had got to, and is scrubbed all the same."""
    user = create_user(stack, Role.PATIENT)
    request_id = bearer(stack, user).post("/privacy/erasure").json()["id"]
    db = clients.db()
    _old_notices(user.uid, user.email, f"m-{user.uid}", 12)
    monkeypatch.setattr(erasure, "MAX_DOCUMENTS_PER_RUN", 5)
    assert erasure.erase(user.uid, "patient", request_id, "test") is False
    # Queued now, with an id that sorts before every one the walk has passed.
    late = db.collection("notifications").document(f"a-late-{user.uid}")
    outbox.queue(
        late_batch := db.batch(),
        user.uid,
        user.email,
        "payment_received",
        {"orderId": "o-late", "currency": "USD", "amount": "5.00"},
        "test",
        notice_id=late.id,
    )
    late_batch.commit()
    for _ in range(10):
        if erasure.erase(user.uid, "patient", request_id, "test"):
            break
    else:
        raise AssertionError("the erasure did not end")
    left = late.get().to_dict() or {}
    assert left.get("to") is None, left
    assert left.get("data") is None, left
    assert left.get("cancelled") is True
    every = db.collection("notifications").where(filter=FieldFilter("uid", "==", user.uid))
    assert all((s.to_dict() or {}).get("to") is None for s in every.stream())
