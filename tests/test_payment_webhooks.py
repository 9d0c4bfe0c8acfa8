"""PayPal's webhooks through `paypal-webhook`: verified, applied once, reconciled with orders."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from shared.payments import refunds
from shared.platform import clients
from shared.platform.context import Role
from shared.platform.money import Money
from tests.payment_support import (
    account_sum,
    assert_balanced,
    book_visit,
    deliveries,
    hold_webhooks,
    ledger_of,
    pay,
    paypal_event,
    release_webhooks,
    stored_order,
)
from tests.paypal_support import Sim
from tests.support import Api, bearer, create_user, eventually, problem


def _completed_delivery(sim: Sim, capture_id: str) -> dict[str, Any]:
    found = eventually(
        lambda: deliveries(sim, "PAYMENT.CAPTURE.COMPLETED", capture_id),
        lambda got: len(got) == 1 and got[0]["status"] == 200,
        "the COMPLETED webhook",
    )
    return found[0]


def _post(stack, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{stack.gateway_url}/paypal-webhook", data=body, headers=headers, timeout=30
    )


def _admin_refund(admin: Api, order_id: str, value: str) -> requests.Response:
    body = {"orderId": order_id, "amount": {"currency": "USD", "value": value}, "reason": "Late"}
    return admin.post("/payments/refunds", json=body)


def _event_doc(event_id: str) -> dict[str, Any] | None:
    snap = clients.db().collection("paypalEvents").document(event_id).get()
    return snap.to_dict() if snap.exists else None


def test_an_event_paypal_does_not_verify_is_refused_and_changes_nothing(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    delivery = _completed_delivery(sim, order["captureId"])

    forged = json.loads(json.dumps(delivery["event"]))
    forged["id"] = "WH-FORGED-" + forged["id"][3:20]
    forged["event_type"] = "PAYMENT.CAPTURE.REVERSED"  # signed as COMPLETED, sent as REVERSED
    answer = _post(stack, json.dumps(forged).encode(), delivery["headers"])
    problem(answer, 400, "webhook_unverified")
    unsigned = {k: v for k, v in delivery["headers"].items() if k != "PAYPAL-TRANSMISSION-SIG"}
    problem(_post(stack, json.dumps(forged).encode(), unsigned), 400, "webhook_unverified")
    problem(_post(stack, b'{"id": "x"}', delivery["headers"]), 400)
    problem(_post(stack, b"not json", delivery["headers"]), 400)
    shapeless = {"id": "WH-SHAPELESS-1", "event_type": "PAYMENT.CAPTURE.COMPLETED"}
    cents_and_more = {"currency_code": "USD", "value": "1.005"}
    for resource in ({"id": "C1"}, {"id": "C1", "amount": cents_and_more}):
        odd = _post(
            stack, json.dumps({**shapeless, "resource": resource}).encode(), delivery["headers"]
        )
        problem(odd, 400, "webhook_invalid")

    assert _event_doc(forged["id"]) is None
    assert stored_order(order["id"])["status"] == "captured"
    assert visit.appointment_now()["status"] == "confirmed"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]


def test_a_replayed_event_is_acknowledged_and_not_applied_twice(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    refunded = _admin_refund(admin, order["id"], "5.00")
    assert refunded.status_code == 201, refunded.text
    refund_id = refunded.json()["paypalRefundId"]
    (first,) = eventually(
        lambda: deliveries(sim, "PAYMENT.CAPTURE.REFUNDED", refund_id),
        lambda got: len(got) == 1 and got[0]["status"] == 200,
        "the REFUNDED webhook",
    )
    before = ledger_of(order["id"])
    for _ in range(2):
        again = _post(
            stack,
            json.dumps(first["event"], separators=(",", ":")).encode(),
            first["headers"],
        )
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] is True
    assert ledger_of(order["id"]) == before
    assert stored_order(order["id"])["refundedMinor"] == 500


def test_a_chargeback_reverses_the_books_and_frees_the_slot(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    paypal_event(sim, "PAYMENT.CAPTURE.REVERSED", order["captureId"])
    assert stored_order(order["id"])["status"] == "reversed"
    appointment = visit.appointment_now()
    assert appointment["status"] == "cancelled"
    assert appointment["cancellation"]["role"] == "system"
    assert appointment["payment"]["status"] == "reversed"

    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment", "reversal"]
    assert_balanced(books)
    for account in ("paypal_clearing", "platform_fees", f"earnings:doctor:{visit.doctor.uid}"):
        assert account_sum(books, account) == 0, account
    owed = visit.doctor_api.get("/payments/balance", params={"currency": "USD"}).json()
    assert owed["balances"][0]["owed"]["value"] == "0.00"

    # The slot is free again: someone else can book it.
    other = bearer(stack, create_user(stack, Role.PATIENT))
    rebooked = other.post(
        "/appointments", json={"doctorUid": visit.doctor.uid, "start": visit.appointment["start"]}
    )
    assert rebooked.status_code == 201, rebooked.text


def test_a_denied_capture_takes_back_what_was_counted(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    paypal_event(sim, "PAYMENT.CAPTURE.DENIED", order["captureId"])
    assert stored_order(order["id"])["status"] == "denied"
    assert visit.appointment_now()["status"] == "cancelled"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "reversal"]


def test_a_refund_made_in_paypal_is_recorded_once(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    made = sim.client().refund_capture(
        order["captureId"], request_id="dashboard-" + order["id"], money=Money("USD", 700)
    )
    eventually(
        lambda: stored_order(order["id"]).get("refundedMinor"),
        lambda got: got == 700,
        "the order's refunded total",
    )
    got = admin.get(f"/payments/orders/{order['id']}").json()
    assert got["status"] == "partially_refunded"
    assert [(r["cause"], r["status"], r["paypalRefundId"]) for r in got["refunds"]] == [
        ("paypal", "completed", made["id"])
    ]
    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment", "refund"]
    assert_balanced(books)
    assert account_sum(books, "paypal_clearing") == 2000 - 700


def test_events_for_captures_we_do_not_know_are_acknowledged(stack, sim):
    client = sim.client()
    foreign = client.create_order(Money("USD", 100), request_id="foreign-order-1x")
    sim.approve(foreign)
    captured = client.capture_order(foreign["id"], request_id="foreign-capture-1x")
    capture_id = captured["purchase_units"][0]["payments"]["captures"][0]["id"]
    (delivery,) = eventually(
        lambda: deliveries(sim, "PAYMENT.CAPTURE.COMPLETED", capture_id),
        lambda got: len(got) == 1 and got[0]["status"] is not None,
        "the COMPLETED webhook",
    )
    assert delivery["status"] == 200  # PayPal must not retry it forever
    assert _event_doc(delivery["event"]["id"])["outcome"] == "unknown_capture"


def _refund_posts(sim: Sim, capture_id: str) -> list[dict[str, Any]]:
    seen = sim.control("GET", "/requests")["requests"]
    return [r for r in seen if r["path"] == f"/v2/payments/captures/{capture_id}/refund"]


def test_a_dashboard_refund_left_half_booked_is_finished_not_sent_again(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    hold_webhooks(sim)
    made = sim.client().refund_capture(
        order["captureId"], request_id="dash-" + order["id"], money=Money("USD", 400)
    )
    # The webhook's first step, then its instance stopped before booking the refund.
    noted = refunds.note_external(stored_order(order["id"]), made)
    assert noted["status"] == "sending"
    clients.db().collection("refunds").document(noted["id"]).update(
        {"updatedAt": datetime.now(UTC) - timedelta(minutes=5)}
    )
    assert admin.post("/payments/refunds/sweep").json()["waiting"] == 0
    assert len(_refund_posts(sim, order["captureId"])) == 1  # only PayPal's own
    assert stored_order(order["id"])["refundedMinor"] == 400
    (sent,) = release_webhooks(sim)  # PayPal's late news of it changes nothing now
    assert sent["status"] == 200
    assert stored_order(order["id"])["refundedMinor"] == 400
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "refund"]


def test_a_chargeback_during_a_refund_in_flight_never_returns_more_than_was_paid(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    # PayPal makes the refund, but its answers never arrive: the refund stays `sending`.
    sim.fault(delay=4, pathContains="/refund", count=3)
    lost = _admin_refund(admin, order["id"], "5.00")
    # Made, and waiting for PayPal's answer (or booked already by PayPal's REFUNDED webhook).
    assert lost.status_code == 201, lost.text
    paypal_event(sim, "PAYMENT.CAPTURE.REVERSED", order["captureId"])
    assert stored_order(order["id"])["reversedMinor"] == 1500  # the refund under way keeps its 5

    (refund,) = refunds.for_order(order["id"])
    clients.db().collection("refunds").document(refund["id"]).update(
        {"updatedAt": datetime.now(UTC) - timedelta(minutes=5)}
    )
    assert admin.post("/payments/refunds/sweep").json()["waiting"] == 0
    final = stored_order(order["id"])
    assert final["status"] == "reversed"
    books = ledger_of(order["id"])
    assert sorted(t["kind"] for t in books) == ["payment", "refund", "reversal"]
    assert_balanced(books)
    assert account_sum(books, "paypal_clearing") == 0  # 20 in, 15 reversed, 5 refunded
    assert account_sum(books, f"earnings:doctor:{visit.doctor.uid}") == 0


def test_a_chargeback_of_a_payment_that_was_refused_its_appointment_leaves_it_alone(
    stack, sim, admin
):
    visit = book_visit(stack, admin)
    order = visit.order().json()
    sim.approve({"links": [{"rel": "approve", "href": order["approveLink"]}]})
    hold_webhooks(sim)
    made = sim.client().capture_order(order["paypalOrderId"], request_id="late-" + order["id"])
    capture_id = made["purchase_units"][0]["payments"]["captures"][0]["id"]
    clients.db().collection("appointments").document(visit.id).update(
        {"holdExpiresAt": datetime.now(UTC) - timedelta(minutes=1)}
    )
    sim.fault(mock="INTERNAL_SERVER_ERROR", pathContains="/refund", count=3)
    release_webhooks(sim)  # captured too late: its refund waits for PayPal
    paypal_event(sim, "PAYMENT.CAPTURE.REVERSED", capture_id)
    assert stored_order(order["id"])["status"] == "reversed"
    appointment = visit.appointment_now()  # never paid by this order: untouched, and readable
    assert appointment["status"] == "expired"
    assert appointment["payment"] is None

    # The waiting refund is refused now (PayPal reversed the capture): what it held is
    # booked as reversed, so the books still return exactly what was captured.
    (refund,) = refunds.for_order(order["id"])
    clients.db().collection("refunds").document(refund["id"]).update(
        {"updatedAt": datetime.now(UTC) - timedelta(minutes=5)}
    )
    assert admin.post("/payments/refunds/sweep").status_code == 200
    assert refunds.for_order(order["id"])[0]["status"] == "failed"
    books = ledger_of(order["id"])
    assert_balanced(books)
    assert account_sum(books, "paypal_clearing") == 0
    assert account_sum(books, f"earnings:doctor:{visit.doctor.uid}") == 0
    assert stored_order(order["id"])["refundingMinor"] == 0


@pytest.mark.parametrize("custom_id", ["__RMA55__", "INV/2026"])
def test_a_custom_id_that_names_no_document_is_looked_up_by_paypals_ids(
    stack, sim, admin, custom_id
):
    """PayPal's custom_id is the seller's free text (a dashboard refund's, another
    integration's): one that could name no document of ours (reserved, or holding a slash)
    answers 200 and is matched by the capture it refunds, never a 500 PayPal retries for
    days while the refund stays unbooked."""
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    made = sim.client().refund_capture(
        order["captureId"],
        request_id=f"dashboard-{order['id']}",
        money=Money("USD", 300),
        custom_id="__RMA55__",  # a reserved id; a refund's custom_id can hold no slash
    )
    (delivery,) = eventually(
        lambda: deliveries(sim, "PAYMENT.CAPTURE.REFUNDED", made["id"]),
        lambda got: len(got) == 1 and got[0]["status"] is not None,
        "the REFUNDED webhook",
    )
    assert delivery["status"] == 200
    assert stored_order(order["id"])["refundedMinor"] == 300

    client = sim.client()
    foreign = client.create_order(
        Money("USD", 100), request_id=f"foreign-{order['id']}", custom_id=custom_id
    )
    sim.approve(foreign)
    captured = client.capture_order(foreign["id"], request_id=f"foreign-cap-{order['id']}")
    capture_id = captured["purchase_units"][0]["payments"]["captures"][0]["id"]
    (delivery,) = eventually(
        lambda: deliveries(sim, "PAYMENT.CAPTURE.COMPLETED", capture_id),
        lambda got: len(got) == 1 and got[0]["status"] is not None,
        "the COMPLETED webhook of a capture not ours",
    )
    assert delivery["status"] == 200


def test_a_reversal_naming_its_amount_leaves_a_refund_under_way_its_share(stack, sim, admin):
    """A refund-shaped reversal says how much PayPal took back (here all of the capture): the
    ledger reverses only what a refund already under way leaves, so that refund is booked when
    PayPal makes it, and the books return exactly what was captured."""
    from shared.payments import refund_sending, webhooks
    from shared.workflows.payment_subjects import SUBJECTS

    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    refund_id = f"{order['id']}-under-way"
    batch = clients.db().batch()
    refunds.queue_in(
        batch,
        refund_id,
        stored_order(order["id"]),
        reason="goodwill",
        cause="admin",
        requested_by="admin",
        amount_minor=500,
    )
    batch.commit()
    assert refunds.reserve(refund_id)["status"] == refunds.SENDING
    assert stored_order(order["id"])["refundingMinor"] == 500

    webhooks.take_back(order["id"], order["captureId"], "reversed", 2000, subjects=SUBJECTS)
    assert stored_order(order["id"])["reversedMinor"] == 1500
    assert refund_sending.send(refund_id)["status"] == refunds.COMPLETED
    books = ledger_of(order["id"])
    assert sorted(t["kind"] for t in books) == ["payment", "refund", "reversal"]
    assert_balanced(books)
    assert account_sum(books, "paypal_clearing") == 0  # 20 in, 15 reversed, 5 refunded
    assert account_sum(books, f"earnings:doctor:{visit.doctor.uid}") == 0
