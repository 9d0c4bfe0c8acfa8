"""The demo data `make dev` seeds: a patient can book the demo doctor and pay, as printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dev import seed
from shared.platform.context import Role
from tests.paypal_support import Sim
from tests.support import Api, User, bearer


def test_the_seed_is_idempotent_and_leaves_something_to_book_and_pay(stack, sim: Sim):
    first = seed.seed()
    again = seed.seed()  # `make dev` run twice on the same emulators
    assert [(a.role, a.uid) for a in first] == [(a.role, a.uid) for a in again]
    by_role = {a.role: a for a in again}
    doctor = by_role[Role.DOCTOR].uid
    printed = seed.instructions(stack, again)
    assert f"/appointments/doctors/{doctor}/slots" in printed
    assert "/paypal-capture" in printed

    who = by_role[Role.PATIENT]
    patient: Api = bearer(stack, User(who.uid, who.email, who.password, Role.PATIENT))
    start = datetime.now(UTC) + timedelta(days=2)
    slots = patient.get(
        f"/appointments/doctors/{doctor}/slots",
        params={"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()},
    )
    assert slots.status_code == 200, slots.text
    assert len(slots.json()["slots"]) == 24  # 08:00-20:00 Jakarta, every 30 minutes
    booked = patient.post(
        "/appointments", json={"doctorUid": doctor, "start": slots.json()["slots"][0]}
    )
    assert booked.status_code == 201, booked.text
    order = patient.post("/paypal-create", json={"appointmentId": booked.json()["id"]})
    assert order.status_code == 201, order.text
    assert order.json()["amount"] == {"currency": "USD", "value": "15.00"}
    sim.approve({"links": [{"rel": "approve", "href": order.json()["approveLink"]}]})
    captured = patient.post("/paypal-capture", json={"orderId": order.json()["id"]})
    assert captured.status_code == 200, captured.text

    clinic = patient.get(f"/bookings/clinics/{by_role[Role.CLINIC].uid}")
    assert clinic.status_code == 200, clinic.text
    assert [s["id"] for s in clinic.json()["services"]] == ["checkup"]
