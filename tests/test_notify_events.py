"""The domain event log and its daily aggregates (written in the commit of their cause), the
admin feed and dashboards, and appointment reminders that follow their appointment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.platform import clients, eventlog, outbox
from shared.platform.context import Role
from tests.notify_support import notice, settled
from tests.payment_support import book_visit, pay
from tests.support import (
    Api,
    approved_doctor,
    bearer,
    create_user,
    problem,
    sign_in,
    slot_in,
)

pytest_plugins = ("tests.notify_fixtures",)


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _day(admin: Api) -> dict[str, Any]:
    response = admin.get("/notifications/analytics", params={"start": _today(), "end": _today()})
    assert response.status_code == 200, response.text
    (day,) = response.json()["days"]
    return dict(day)


def _event(kind: str, subject_id: str) -> dict[str, Any] | None:
    snap = clients.db().collection("events").document(eventlog.event_id(kind, subject_id)).get()
    return snap.to_dict() if snap.exists else None


def test_a_booking_and_its_payment_are_logged_and_counted_in_the_days_dashboard(stack, admin, sim):
    before = _day(admin)
    visit = book_visit(stack, admin)
    booked = _event("appointment_booked", visit.id)
    assert booked is not None
    assert booked["uid"] == visit.patient_user.uid
    assert "note" not in booked["data"]

    order = pay(visit, sim)
    paid = _event("payment_captured", order["id"])
    assert paid is not None
    assert (paid["amountMinor"], paid["currency"]) == (2000, "USD")

    after = _day(admin)
    assert after["bookings"] == before["bookings"] + 1
    assert after["payments"] == before["payments"] + 1
    revenue = after["revenueMinor"].get("USD", 0) - before["revenueMinor"].get("USD", 0)
    assert revenue == 2000

    feed = admin.get(
        "/notifications/events", params={"uid": visit.patient_user.uid, "limit": 10}
    ).json()
    assert [e["kind"] for e in feed["items"]] == ["payment_captured", "appointment_booked"]


def test_concurrent_bookings_are_each_counted_once(stack, admin):
    doctor, _ = approved_doctor(stack, admin)
    patients = [bearer(stack, create_user(stack, Role.PATIENT)) for _ in range(8)]
    starts = [slot_in(30 + 0.5 * i) for i in range(8)]
    before = _day(admin)

    def book(i: int) -> int:
        response = patients[i].post(
            "/appointments", json={"doctorUid": doctor.uid, "start": starts[i]}
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(book, range(8)))
    assert statuses == [201] * 8
    assert _day(admin)["bookings"] == before["bookings"] + 8


def test_an_event_is_logged_once_whatever_tries_to_log_it_again(stack, admin):
    subject = f"orders/test-{datetime.now(UTC).timestamp()}"
    at = datetime.now(UTC)
    before = _day(admin)

    def log_it() -> None:
        batch = clients.db().batch()
        eventlog.record(
            batch,
            "refund_completed",
            subject,
            actor="test",
            at=at,
            amount_minor=500,
            currency="EUR",
        )
        batch.commit()

    log_it()
    from google.api_core.exceptions import AlreadyExists

    with pytest.raises(AlreadyExists):
        log_it()  # the whole commit is refused: its counts with it
    after = _day(admin)
    assert after["refunds"] == before["refunds"] + 1
    refunded = after["refundedMinor"].get("EUR", 0) - before["refundedMinor"].get("EUR", 0)
    assert refunded == 500


def _sign_ups_of(uid: str) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    events = clients.db().collection("events").where(filter=FieldFilter("uid", "==", uid)).stream()
    return [e.to_dict() for e in events if e.get("kind") == "user_signed_up"]


def test_a_sign_up_is_logged_once_whether_self_made_or_by_an_admin(stack, admin):
    before = _day(admin)
    newcomer = create_user(stack, None)  # an Auth account with no role and no profile yet
    sign_in(stack, newcomer)
    sign_in(stack, newcomer)  # the second sign-in makes nothing new
    (event,) = _sign_ups_of(newcomer.uid)
    assert (event["data"], event["actor"]) == ({"role": "patient"}, newcomer.uid)

    made = admin.post(
        "/admin-users",
        json={
            "email": f"made-{datetime.now(UTC).timestamp()}@test.alodoktor.test",
            "role": "pharmacy",
            "password": "pw-12345678",
        },
    )
    assert made.status_code == 201, made.text
    uid = made.json()["profile"]["uid"]
    (event,) = _sign_ups_of(uid)
    assert event["data"] == {"role": "pharmacy"}
    assert event["actor"] != uid

    after = _day(admin)
    assert after["signUps"] == before["signUps"] + 2
    assert after["counts"]["user_signed_up"] >= 2


def test_the_feed_and_dashboards_are_for_admins_and_check_their_range(stack, admin):
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    problem(patient.get("/notifications/events"), 403, "role_not_allowed")
    problem(
        patient.get("/notifications/analytics", params={"start": _today(), "end": _today()}), 403
    )
    problem(admin.get("/notifications/analytics", params={"start": "2031-02-01"}), 400)
    problem(
        admin.get("/notifications/analytics", params={"start": "2031-02-02", "end": "2031-02-01"}),
        400,
    )
    problem(
        admin.get("/notifications/analytics", params={"start": "2031-01-01", "end": "2031-12-31"}),
        400,
    )
    days = admin.get(
        "/notifications/analytics", params={"start": "2031-01-01", "end": "2031-01-03"}
    ).json()["days"]
    assert [d["day"] for d in days] == ["2031-01-01", "2031-01-02", "2031-01-03"]
    assert days[0]["bookings"] == 0
    assert days[0]["conversion"] is None


def test_a_confirmed_appointment_gets_its_reminder_which_follows_it_and_ends_with_it(
    stack, admin, sim, mail
):
    visit = book_visit(stack, admin, hours_ahead=72)
    pay(visit, sim)
    start = datetime.fromisoformat(visit.appointment_now()["start"].replace("Z", "+00:00"))
    first = outbox.reminder_id(visit.id, start)
    reminder = settled(first)
    assert reminder["kind"] == "appointment_reminder"
    assert reminder["status"] == "pending"  # a day before, by default
    assert reminder["dueAt"] == start - timedelta(days=1)
    assert reminder["channels"]["email"]["nextAt"] == start - timedelta(days=1)

    moved_to = slot_in(96)
    moved = visit.patient.post(f"/appointments/{visit.id}/reschedule", json={"start": moved_to})
    assert moved.status_code == 200, moved.text
    new_start = datetime.fromisoformat(moved_to.replace("Z", "+00:00"))
    second = outbox.reminder_id(visit.id, new_start)
    assert notice(first)["cancelled"] is True
    assert settled(second)["dueAt"] == new_start - timedelta(days=1)

    cancelled = visit.patient.post(f"/appointments/{visit.id}/cancel", json={"reason": "ill"})
    assert cancelled.status_code == 200, cancelled.text
    assert notice(second)["cancelled"] is True
    # The sweep, reaching it when it was due, sends nothing and closes it.
    from tests.notify_support import later

    later(second)
    assert admin.post("/notifications/sweep").status_code == 200
    assert notice(second)["status"] == "cancelled"
    assert all(
        "reminder" not in m["subject"].lower() for m in mail.messages(visit.patient_user.email)
    )
