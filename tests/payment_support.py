"""Helpers for payment tests: a patient with something to pay for, and views of the books."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import requests

from shared.payments import ledger_store
from shared.platform import clients
from shared.platform.context import Role
from tests.paypal_support import Sim
from tests.support import Api, User, approved_doctor, bearer, create_user, slot_in


@dataclass
class Visit:
    """A patient's pending appointment with a doctor."""

    patient: Api
    patient_user: User
    doctor: User
    doctor_api: Api
    appointment: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.appointment["id"])

    def order(self) -> requests.Response:
        return self.patient.post("/paypal-create", json={"appointmentId": self.id})

    def capture(self, order_id: str) -> requests.Response:
        return self.patient.post("/paypal-capture", json={"orderId": order_id})

    def appointment_now(self) -> dict[str, Any]:
        response = self.patient.get(f"/appointments/{self.id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def book_visit(stack: Any, admin: Api, *, hours_ahead: float = 72, price: str = "20.00") -> Visit:
    doctor, doctor_api = approved_doctor(stack, admin, price)
    user = create_user(stack, Role.PATIENT)
    patient = bearer(stack, user)
    booked = patient.post(
        "/appointments", json={"doctorUid": doctor.uid, "start": slot_in(hours_ahead)}
    )
    assert booked.status_code == 201, booked.text
    return Visit(patient, user, doctor, doctor_api, booked.json())


def pay(visit: Visit, sim: Sim) -> dict[str, Any]:
    """Order, approve in PayPal's window, capture: the captured order."""
    made = visit.order()
    assert made.status_code == 201, made.text
    order = made.json()
    sim.approve({"links": [{"rel": "approve", "href": order["approveLink"]}]})
    captured = visit.capture(order["id"])
    assert captured.status_code == 200, captured.text
    body: dict[str, Any] = captured.json()
    return body


def ledger_of(order_id: str) -> list[dict[str, Any]]:
    return ledger_store.transactions_of(order_id)


def stored_order(order_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = clients.db().collection("orders").document(order_id).get().to_dict()
    return doc


def assert_balanced(transactions: list[dict[str, Any]]) -> None:
    for tx in transactions:
        totals: dict[str, int] = defaultdict(int)
        for posting in tx["postings"]:
            assert isinstance(posting["amountMinor"], int)
            totals[posting["currency"]] += posting["amountMinor"]
        assert all(v == 0 for v in totals.values()), tx


def account_sum(transactions: list[dict[str, Any]], account: str) -> int:
    return sum(
        p["amountMinor"] for tx in transactions for p in tx["postings"] if p["account"] == account
    )


def sim_capture_of(sim: Sim, paypal_order_id: str) -> dict[str, Any]:
    client = sim.client()
    order = client.get_order(paypal_order_id)
    return dict(order["purchase_units"][0]["payments"]["captures"][0])


def hold_webhooks(sim: Sim) -> None:
    sim.control("POST", "/webhooks/hold")


def release_webhooks(sim: Sim) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = sim.control("POST", "/webhooks/release")["sent"]
    return sent


def deliveries(sim: Sim, event_type: str, resource_id: str) -> list[dict[str, Any]]:
    sent = sim.control("GET", "/webhooks")["webhooks"]
    return [
        d
        for d in sent
        if d["event"]["event_type"] == event_type and d["event"]["resource"]["id"] == resource_id
    ]


def paypal_event(sim: Sim, event_type: str, capture_id: str) -> dict[str, Any]:
    """Have PayPal send a signed PAYMENT.CAPTURE.* event now; our webhook must take it (200)."""
    sent: dict[str, Any] = sim.control(
        "POST", "/webhooks", json={"eventType": event_type, "captureId": capture_id}
    )
    assert sent["status"] == 200, sent
    return sent
