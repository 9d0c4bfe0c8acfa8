"""Helpers for payout tests: providers with earnings that are due, verified payout addresses,
the worker's and the scheduler's clients, and views of the simulator and the task queue."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from shared.payments import ledger, ledger_store
from shared.payouts import records, rules, scheduling
from shared.platform import clients, store
from shared.platform.context import Role, Service
from shared.workflows.payout_deliveries import DELIVERIES
from tests.payment_support import Visit, pay
from tests.paypal_support import Sim
from tests.support import (
    Api,
    User,
    approved_doctor,
    bearer,
    create_user,
    eventually,
    service_api,
    slot_in,
)

DELIVERED_DAYS_AGO = 15  # beyond the default holding period (PAYOUT_HOLD_DAYS=14)


@dataclass
class Provider:
    user: User
    api: Api
    receiver: str
    orders: list[dict[str, Any]]

    @property
    def uid(self) -> str:
        return self.user.uid

    @property
    def account(self) -> str:
        return ledger.earnings_account("doctor", self.uid)

    def owed(self, currency: str = "USD") -> int:
        return ledger_store.owed(self.account, currency)

    def payout_id(self, currency: str = "USD", n: int = 1) -> str:
        base = rules.payout_id(rules.period_of(datetime.now(UTC)), "doctor", self.uid, currency)
        return base if n == 1 else f"{base}-{n}"

    def payout(self, currency: str = "USD", n: int = 1) -> dict[str, Any] | None:
        return records.get(self.payout_id(currency, n))


def delivered_long_ago(appointment_id: str, days: float = DELIVERED_DAYS_AGO) -> None:
    """Time travel for a test: the appointment as it stands `days` after its visit took
    place (the doctor recorded it completed then). Appointments are booked in the future, so
    no test can wait for one to pass. Its slot moves too: payouts count from the slot's end."""
    ended = datetime.now(UTC) - timedelta(days=days)
    store.update(
        clients.db().collection("appointments").document(appointment_id),
        {
            "status": "completed",
            "start": ended - timedelta(minutes=30),
            "end": ended,
            "outcomeAt": ended,
        },
        by="test",
    )


def address_code(uid: str) -> str:
    """The code in the last `payout_address_code` notice to `uid` (what its e-mail says)."""
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection("notifications")
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("kind", "==", "payout_address_code"))
    )
    notices = sorted((s.to_dict() for s in query.stream()), key=lambda n: n["createdAt"])
    assert notices, f"no payout_address_code notice to {uid}"
    return str(notices[-1]["data"]["code"])


def set_address(api: Api, uid: str, receiver: str) -> dict[str, Any]:
    """Set and verify a payout address through the API, as a provider does."""
    asked = api.request(
        "PUT", "/payouts/address", json={"recipientType": "EMAIL", "receiver": receiver}
    )
    assert asked.status_code == 200, asked.text
    verified = api.post("/payouts/address/verify", json={"code": address_code(uid)})
    assert verified.status_code == 200, verified.text
    body: dict[str, Any] = verified.json()
    return body


def cooled_off(uid: str) -> None:
    """Time travel: the address change's cooling-off is over."""
    store.update(
        records.profile_ref(uid),
        {"coolingOffUntil": datetime.now(UTC) - timedelta(minutes=1)},
        by="test",
    )


def provider_with_earnings(
    stack: Any,
    admin: Api,
    sim: Sim,
    *,
    visits: int = 1,
    price: str = "20.00",
    currency: str = "USD",
    address: bool = True,
) -> Provider:
    """A doctor whose `visits` paid appointments took place long enough ago to be paid out,
    with a verified payout address out of its cooling-off (unless `address` is False)."""
    first = _book(stack, admin, price, currency)
    orders = [pay(first, sim)]
    delivered_long_ago(first.id)
    for _ in range(visits - 1):
        again = first.patient.post(
            "/appointments", json={"doctorUid": first.doctor.uid, "start": _next_slot(first)}
        )
        assert again.status_code == 201, again.text
        made = first.patient.post("/paypal-create", json={"appointmentId": again.json()["id"]})
        assert made.status_code == 201, made.text
        sim.approve({"links": [{"rel": "approve", "href": made.json()["approveLink"]}]})
        captured = first.patient.post("/paypal-capture", json={"orderId": made.json()["id"]})
        assert captured.status_code == 200, captured.text
        orders.append(captured.json())
        delivered_long_ago(again.json()["id"])
    receiver = f"pay-{uuid.uuid4().hex[:10]}@doctors.example"
    if address:
        set_address(first.doctor_api, first.doctor.uid, receiver)
        cooled_off(first.doctor.uid)
    return Provider(first.doctor, first.doctor_api, receiver, orders)


def _book(stack: Any, admin: Api, price: str, currency: str) -> Visit:
    """A patient's pending appointment with a new doctor who charges `price` `currency`."""
    doctor, doctor_api = approved_doctor(
        stack, admin, price, consultationPrice={"currency": currency, "value": price}
    )
    user = create_user(stack, Role.PATIENT)
    patient = bearer(stack, user)
    booked = patient.post("/appointments", json={"doctorUid": doctor.uid, "start": slot_in(72)})
    assert booked.status_code == 201, booked.text
    return Visit(patient, user, doctor, doctor_api, booked.json())


_slots_taken: dict[str, int] = {}


def _next_slot(visit: Any) -> str:
    n = _slots_taken.get(visit.doctor.uid, 0) + 1
    _slots_taken[visit.doctor.uid] = n
    return slot_in(72 + n)


def record(provider: Provider, currency: str = "USD") -> dict[str, Any]:
    """Record this period's payout of `provider` (the run's first step, without enqueueing)."""
    payout, outcome = scheduling.record(
        "doctor",
        provider.uid,
        currency,
        period=rules.period_of(datetime.now(UTC)),
        now=datetime.now(UTC),
        deliveries=DELIVERIES,
    )
    assert outcome in ("recorded", "found"), outcome
    assert payout is not None
    return payout


def wait_for_status(payout_id: str, *statuses: str) -> dict[str, Any]:
    found: dict[str, Any] = eventually(
        lambda: records.get(payout_id) or {},
        lambda p: p.get("status") in statuses,
        f"payout {payout_id} to become {'/'.join(statuses)}",
    )
    return found


def worker(stack: Any) -> Api:
    return service_api(stack, Service.TASKS, "payouts")


def scheduler(stack: Any) -> Api:
    return service_api(stack, Service.SCHEDULER, "payouts")


def send(stack: Any, payout_id: str) -> requests.Response:
    """One delivery of the payout's task, as Cloud Tasks makes it."""
    return worker(stack).post("/payouts/tasks/send", json={"payoutId": payout_id})


@dataclass
class Tasks:
    url: str

    def control(self, method: str, path: str, **kw: Any) -> Any:
        response = requests.request(method, self.url + "/_sim" + path, timeout=30, **kw)
        response.raise_for_status()
        return response.json()

    def made_for(self, payout_id: str) -> list[dict[str, Any]]:
        """Tasks Cloud Tasks accepted for this payout (any dispatch)."""
        found: list[dict[str, Any]] = self.control("GET", "/tasks")["tasks"]
        return [t for t in found if f"-{_safe(payout_id)}-" in t["name"]]

    def refused_for(self, payout_id: str) -> list[str]:
        names: list[str] = self.control("GET", "/tasks")["refused"]
        return [n for n in names if f"-{_safe(payout_id)}-" in n]

    def fail_next(self, count: int = 1) -> None:
        self.control("POST", "/faults", json={"status": 503, "count": count})


def _safe(payout_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in payout_id)


def batches_sent(sim: Sim, payout_id: str) -> list[dict[str, Any]]:
    """Every POST /v1/payments/payouts the simulator received for this payout's attempts."""
    seen = sim.control("GET", "/requests")["requests"]
    return [
        r
        for r in seen
        if r["path"] == "/v1/payments/payouts"
        and str(r.get("requestId") or "").startswith(payout_id + "-")
    ]


def paypal_batch(sim: Sim, batch_id: str) -> dict[str, Any]:
    found: dict[str, Any] = sim.client().get_payout_batch(batch_id)
    return found


def item_of(sim: Sim, payout: dict[str, Any]) -> dict[str, Any]:
    batch = paypal_batch(sim, payout["paypalBatchId"])
    items: list[dict[str, Any]] = batch["items"]
    assert len(items) == 1, batch
    return items[0]


def move_item(sim: Sim, item_id: str, status: str) -> dict[str, Any]:
    moved: dict[str, Any] = sim.control(
        "POST", f"/payouts/items/{item_id}", json={"status": status}
    )
    return moved


def payout_webhooks(sim: Sim, payout: dict[str, Any]) -> list[dict[str, Any]]:
    """Signed payout webhooks the simulator sent (or dropped) about this payout."""
    sent: list[dict[str, Any]] = sim.control("GET", "/payouts/webhooks")["webhooks"]

    def about(event: dict[str, Any]) -> bool:
        resource = event["resource"]
        header = resource.get("batch_header") or resource
        sender = resource.get("sender_batch_id") or (
            (header.get("sender_batch_header") or {}).get("sender_batch_id")
        )
        return bool(sender == payout["id"])

    return [d for d in sent if about(d["event"])]


def in_transit(currency: str = "USD") -> int:
    """What the ledger holds in transit (a credit balance, shown positive)."""
    return -ledger_store.balance(ledger.IN_TRANSIT, currency)


def admin_alerts(admin_uid: str, alert: str) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection("notifications")
        .where(filter=FieldFilter("uid", "==", admin_uid))
        .where(filter=FieldFilter("kind", "==", "payout_alert"))
    )
    return [n for n in (s.to_dict() for s in query.stream()) if n["data"].get("alert") == alert]


def notices_to(uid: str, kind: str) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection("notifications")
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("kind", "==", kind))
    )
    return [s.to_dict() for s in query.stream()]
