"""A marketplace week, lived in minutes on a stack of its own with its Cloud Scheduler running
and its clock moved forward (dev/scheduler.py's /_sim/clock).

A doctor publishes hours and a clinic opens its queue; three patients book and pay; the
reminders go out the day before, one of them after the mail server refused it once (the
notifications sweep retries it); one patient cancels for a full refund; the clinic answers its
queue and records its visit in its window, the doctor at the end of the slot; the holding period
passes and the weekly payout run pays each provider, through Cloud Tasks and PayPal, exactly
what they earned; the scheduler's seals, checks and exports keep the audit log whole. Nothing
here calls a scheduled route by hand: every job ran because its time came.

At the end the week's books and the analytics are printed, and checked against what happened.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from dev import query_indexes
from dev.stack import Ports, Stack
from shared.payments import ledger, ledger_store
from shared.platform import clients, outbox, settings
from shared.platform.context import Role
from tests.notify_support import Mail, channel
from tests.payout_support import set_address
from tests.paypal_support import Sim
from tests.support import (
    CHECKUP,
    Api,
    approved_doctor,
    bearer,
    clinic_setup,
    create_user,
    eventually,
)

HOLD_DAYS = 2  # the week's holding period (PAYOUT_HOLD_DAYS), so a payout run falls in it
DOCTOR_PRICE = "40.00"
FEE_BPS = 1000  # the platform's fee (PLATFORM_FEE_BPS' default)


@dataclass
class Week:
    stack: Stack

    @property
    def control(self) -> str:
        return self.stack.scheduler_url + "/_sim"

    def now(self) -> datetime:
        answer = requests.get(self.control + "/clock", timeout=10)
        answer.raise_for_status()
        return datetime.fromisoformat(answer.json()["now"])

    def live_until(self, moment: datetime) -> list[dict[str, Any]]:
        """Move the clock to `moment` and wait until every job due by then has run: the runs."""
        answer = requests.post(
            self.control + "/clock", json={"to": moment.isoformat(), "settle": True}, timeout=960
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["settled"], body
        runs: list[dict[str, Any]] = body["runs"]
        failed = [r for r in runs if not (r["status"] and 200 <= r["status"] < 300)]
        assert not failed, f"scheduled jobs failed: {failed}"
        return runs

    def runs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = requests.get(self.control + "/runs", timeout=10).json()[
            "runs"
        ]
        return found


@pytest.fixture(scope="module")
def week(query_log: Path, request: pytest.FixtureRequest) -> Iterator[Week]:
    """A stack of the week's own, scheduler live: moving its clock must not move the clock of
    the stack the other tests of this worker share."""
    saved_env = dict(os.environ)
    saved_clients = (clients._app, clients._db)
    stack = Stack(
        ports=Ports.free(),
        extra_env={
            query_indexes.ENV: str(query_log),
            "PAYOUT_HOLD_DAYS": str(HOLD_DAYS),
            "PAYPAL_TIMEOUT_SECONDS": "3",
        },
    )
    stack.start()
    os.environ.update(stack.env)
    settings.get.cache_clear()
    # This test's own Admin SDK calls go to the week's emulators: an app and a client of their
    # own (the worker's, made for its shared stack, stay as they are for the tests after).
    import firebase_admin

    clients._app = firebase_admin.initialize_app(
        options={"projectId": stack.project_id}, name=f"alodoktor-week-{uuid.uuid4().hex[:8]}"
    )
    clients._db = None
    try:
        yield Week(stack)
    finally:
        failed = request.session.testsfailed > 0
        stack.stop(keep_files=failed)
        if failed:
            print(f"\nthe week's stack logs are kept in {stack.workdir}")
        firebase_admin.delete_app(clients._app)
        clients._app, clients._db = saved_clients
        os.environ.clear()
        os.environ.update(saved_env)
        settings.get.cache_clear()


def _at(day: datetime, hhmm: str) -> datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return day.replace(hour=hour, minute=minute, second=0, microsecond=0)


def _next_monday_six(after: datetime) -> datetime:
    """The payouts-run job's next time (terraform/schedules.json: `0 6 * * 1`, UTC)."""
    moment = _at(after, "06:00")
    while moment.weekday() != 0 or moment <= after:
        moment += timedelta(days=1)
    return moment


def _ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def _pay(patient: Api, sim: Sim, **subject: str) -> dict[str, Any]:
    order = _ok(patient.post("/paypal-create", json=subject), 201)
    sim.approve({"links": [{"rel": "approve", "href": order["approveLink"]}]})
    return _ok(patient.post("/paypal-capture", json={"orderId": order["id"]}))


def _minor(value: str) -> int:
    return round(float(value) * 100)


def _net(price_minor: int) -> int:
    return price_minor - price_minor * FEE_BPS // 10_000


def test_a_week_of_the_marketplace(week: Week) -> None:
    stack = week.stack
    sim = Sim(stack.paypal_url, True, "")
    mail = Mail(stack.mail_url)
    start = week.now()
    admin = bearer(stack, create_user(stack, Role.ADMIN))

    # -- Saturday-ish: providers open their books ---------------------------------------
    doctor, doctor_api = approved_doctor(stack, admin, DOCTOR_PRICE)  # publishes its hours
    clinic_user = create_user(stack, Role.CLINIC)
    clinic = bearer(stack, clinic_user)
    _ok(clinic.request("PUT", "/bookings/clinics/me", json=clinic_setup("UTC")))
    set_address(doctor_api, doctor.uid, f"doctor-{uuid.uuid4().hex[:8]}@pay.example")
    set_address(clinic, clinic_user.uid, f"clinic-{uuid.uuid4().hex[:8]}@pay.example")

    visit_day = (start + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    first_slot, second_slot = _at(visit_day, "10:00"), _at(visit_day, "11:00")
    window = _at(visit_day, "08:00")

    users = {name: create_user(stack, Role.PATIENT) for name in ("ayse", "berk", "cem")}
    patients = {name: bearer(stack, user) for name, user in users.items()}

    # Two patients book the doctor and pay; the third asks the clinic, pays, is accepted.
    ayse_visit = _ok(
        patients["ayse"].post(
            "/appointments", json={"doctorUid": doctor.uid, "start": first_slot.isoformat()}
        ),
        201,
    )
    berk_visit = _ok(
        patients["berk"].post(
            "/appointments", json={"doctorUid": doctor.uid, "start": second_slot.isoformat()}
        ),
        201,
    )
    ayse_order = _pay(patients["ayse"], sim, appointmentId=ayse_visit["id"])
    berk_order = _pay(patients["berk"], sim, appointmentId=berk_visit["id"])
    booking = _ok(
        patients["cem"].post(
            "/bookings",
            json={
                "clinicUid": clinic_user.uid,
                "serviceId": CHECKUP["id"],
                "windowStart": window.isoformat(),
            },
        ),
        201,
    )
    cem_order = _pay(patients["cem"], sim, bookingId=booking["id"])
    queue = _ok(clinic.get(f"/bookings/clinics/{clinic_user.uid}/requests"))
    assert [item["id"] for item in queue["items"]] == [booking["id"]]
    assert _ok(clinic.post(f"/bookings/{booking['id']}/accept"))["status"] == "accepted"

    # -- The day before: reminders; the mail server refuses Ayşe's once -----------------
    mail.fault(users["ayse"].email, 451)
    reminder_time = first_slot - timedelta(hours=24)
    runs = week.live_until(reminder_time - timedelta(minutes=30))
    assert "notifications-sweep" in {r["job"] for r in runs}
    reminder = outbox.reminder_id(ayse_visit["id"], first_slot)
    assert channel(reminder, "email")["state"] == "pending"  # not due yet: nothing sent
    week.live_until(reminder_time + timedelta(minutes=1))
    assert channel(reminder, "email")["state"] == "retry"  # due, sent, refused
    assert not _reminders(mail, users["ayse"].email), "the refused reminder went out"
    # The notifications sweep's next runs retry it once its backoff is over.
    week.live_until(reminder_time + timedelta(minutes=11))
    (sent,) = _reminders(mail, users["ayse"].email)
    received = datetime.fromisoformat(sent["receivedAt"])
    assert reminder_time < received < reminder_time + timedelta(minutes=12)
    assert channel(reminder, "email")["state"] == "sent"

    # Berk cancels a day ahead: a full refund, and his reminder never goes out.
    cancelled = _ok(patients["berk"].post(f"/appointments/{berk_visit['id']}/cancel", json={}))
    assert cancelled["status"] == "cancelled"
    assert _order_status(patients["berk"], berk_order["id"]) == "refunded"

    # -- The visit day ---------------------------------------------------------------------
    week.live_until(window + timedelta(minutes=5))
    assert _ok(clinic.post(f"/bookings/{booking['id']}/check-in"))["status"] == "checked_in"
    week.live_until(window + timedelta(minutes=31))
    assert _ok(clinic.post(f"/bookings/{booking['id']}/complete"))["status"] == "completed"
    week.live_until(first_slot + timedelta(minutes=31))
    done = _ok(doctor_api.post(f"/appointments/{ayse_visit['id']}/complete"))
    assert done["status"] == "completed"
    assert not _reminders(mail, users["berk"].email)

    # -- The holding period passes; Monday's payout run pays the providers ----------------
    cooled = start + timedelta(hours=settings.get().payout_address_cooling_off_hours)
    payday = _next_monday_six(max(first_slot + timedelta(days=HOLD_DAYS, hours=1), cooled))
    runs = week.live_until(payday + timedelta(minutes=1))
    assert any(r["job"] == "payouts-run" for r in runs), runs
    paid = eventually(
        lambda: _payouts(admin),
        lambda found: len(found) == 2 and all(p["status"] == "paid" for p in found),
        "both payouts paid",
    )
    by_provider = {p["providerUid"]: p for p in paid}
    expected = {
        doctor.uid: _net(_minor(DOCTOR_PRICE)),
        clinic_user.uid: _net(_minor(CHECKUP["price"]["value"])),
    }
    assert {uid: _minor(p["amount"]["value"]) for uid, p in by_provider.items()} == expected
    for kind, uid in (("doctor", doctor.uid), ("clinic", clinic_user.uid)):
        assert ledger_store.owed(ledger.earnings_account(kind, uid), "USD") == 0

    # -- An hour later: the audit log sealed, checked and exported on schedule -----------
    runs = week.live_until(payday + timedelta(hours=1, minutes=1))
    jobs = {r["job"] for r in week.runs()}
    assert {"audit-seal", "audit-check", "audit-export", "notifications-sweep"} <= jobs
    verdict = _ok(admin.get("/audit/verify"))
    assert verdict["ok"], verdict
    assert verdict["count"] >= 1
    exported = list((stack.workdir / "audit-export").rglob("*"))
    assert any(path.is_file() for path in exported), "no audit export was written"

    # -- The week's books and analytics -----------------------------------------------------
    end = week.now()
    analytics = _ok(
        admin.get(
            "/notifications/analytics",
            params={"start": start.date().isoformat(), "end": end.date().isoformat()},
        )
    )
    totals = _totals(analytics["days"])
    captured = sum(_minor(o["amount"]["value"]) for o in (ayse_order, berk_order, cem_order))
    print(_books(start, end, totals, expected, paid))
    assert totals["payments"] == 3
    assert totals["revenue"] == captured
    assert totals["refunds"] == 1
    assert totals["refunded"] == _minor(DOCTOR_PRICE)
    assert totals["payouts_sent"] == 2
    assert totals["paid_out"] == sum(expected.values())
    assert totals["no_shows"] == 0
    # The platform kept its fee on what was delivered; what was refunded it gave back.
    assert captured - totals["refunded"] - totals["paid_out"] == sum(
        _minor(v) - _net(_minor(v)) for v in (DOCTOR_PRICE, CHECKUP["price"]["value"])
    )


def _reminders(mail: Mail, to: str) -> list[dict[str, Any]]:
    return [m for m in mail.messages(to) if m["subject"].startswith("Reminder:")]


def _order_status(patient: Api, order_id: str) -> str:
    orders = _ok(patient.get("/payments/orders"))["items"]
    (order,) = [o for o in orders if o["id"] == order_id]
    return str(order["status"])


def _payouts(admin: Api) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _ok(admin.get("/payouts", params={"limit": 100}))["items"]
    return found


def _totals(days: list[dict[str, Any]]) -> dict[str, int]:
    def money(field: str) -> int:
        return sum(int(day[field].get("USD", 0)) for day in days)

    return {
        "payments": sum(day["payments"] for day in days),
        "revenue": money("revenueMinor"),
        "refunds": sum(day["refunds"] for day in days),
        "refunded": money("refundedMinor"),
        "payouts_sent": sum(day["payoutsSent"] for day in days),
        "paid_out": money("paidOutMinor"),
        "no_shows": sum(day["noShows"] for day in days),
        "bookings": sum(day["bookings"] for day in days),
    }


def _books(
    start: datetime,
    end: datetime,
    totals: dict[str, int],
    earned: dict[str, int],
    paid: list[dict[str, Any]],
) -> str:
    lines = [
        f"\nThe week {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC (business time)",
        f"  bookings {totals['bookings']}, payments {totals['payments']} "
        f"({totals['revenue'] / 100:.2f} USD), refunds {totals['refunds']} "
        f"({totals['refunded'] / 100:.2f} USD), no-shows {totals['no_shows']}",
    ]
    for payout in paid:
        lines.append(
            f"  payout {payout['id']}: {payout['amount']['value']} {payout['amount']['currency']}"
            f" {payout['status']} (earned {earned[payout['providerUid']] / 100:.2f})"
        )
    kept = totals["revenue"] - totals["refunded"] - totals["paid_out"]
    lines.append(f"  the platform kept {kept / 100:.2f} USD")
    return "\n".join(lines)


def test_the_week_started_at_the_real_time(week: Week) -> None:
    """Sanity of the control: the clock only moves forward, and says where it is."""
    now = week.now()
    assert now >= datetime.now(UTC) - timedelta(seconds=5)
    back = requests.post(
        week.control + "/clock", json={"to": (now - timedelta(days=1)).isoformat()}, timeout=10
    )
    assert back.status_code == 409
