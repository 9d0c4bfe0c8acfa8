"""A chargeback of part of a payment (PAYMENT.CAPTURE.REVERSED naming its amount, as a refund-
shaped resource): the order keeps holding what is left, the subject stays confirmed, each
reversal is its own ledger transaction, and the provider is paid out the rest.

Capture 20.00 USD at a 10% fee: the doctor earns 18.00. A chargeback of 5.00 takes back 0.50
of the fee and 4.50 of the earnings (pro rata), leaving the doctor 13.50.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from shared.payments import webhooks
from shared.workflows.payment_subjects import SUBJECTS
from tests.payment_support import (
    account_sum,
    assert_balanced,
    book_visit,
    ledger_of,
    pay,
    paypal_event,
    stored_order,
)
from tests.payout_support import provider_with_earnings, record
from tests.paypal_support import Sim
from tests.support import Api

pytest_plugins = ("tests.payout_fixtures",)


def _charge_back(sim: Sim, capture_id: str, value: str) -> dict[str, Any]:
    """PayPal sends a signed chargeback of `value` USD of the capture; our webhook takes it."""
    sent: dict[str, Any] = sim.control(
        "POST",
        "/webhooks",
        json={
            "eventType": "PAYMENT.CAPTURE.REVERSED",
            "captureId": capture_id,
            "amount": {"currency_code": "USD", "value": value},
        },
    )
    assert sent["status"] == 200, sent
    assert sent["event"]["resource_type"] == "refund"
    return sent


def _reversals(order_id: str) -> list[dict[str, Any]]:
    return [t for t in ledger_of(order_id) if t["kind"] == "reversal"]


def test_a_partial_chargeback_leaves_the_order_paid_and_the_rest_paid_out(
    stack, payouts_sim: Sim, admin: Api
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    order = doctor.orders[0]
    _charge_back(payouts_sim, order["captureId"], "5.00")

    stored = stored_order(order["id"])
    assert stored["status"] == "captured"  # it still holds 15.00
    assert stored["reversedMinor"] == 500
    appointment = doctor.api.get(f"/appointments/{stored['subjectId']}").json()
    assert appointment["status"] != "cancelled"  # the visit took place, and stays paid for
    assert appointment["payment"]["status"] == "captured"
    # The order, as an admin reads it, says what was charged back and still holds the rest.
    shown = admin.get(f"/payments/orders/{order['id']}").json()
    assert (shown["status"], shown["chargedBack"]["value"]) == ("captured", "5.00")
    assert shown["refunded"]["value"] == "0.00"
    books = ledger_of(order["id"])
    assert_balanced(books)
    assert account_sum(books, "paypal_clearing") == 1500
    assert doctor.owed() == 1350

    payout = record(doctor)
    assert payout["amountMinor"] == 1350
    assert payout["lines"] == [{"orderId": order["id"], "amountMinor": 1350}]


def test_two_partial_chargebacks_are_two_reversals_each_counted_once(stack, sim: Sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    first = _charge_back(sim, order["captureId"], "5.00")
    _charge_back(sim, order["captureId"], "3.00")

    assert stored_order(order["id"])["reversedMinor"] == 800
    reversals = _reversals(order["id"])
    assert len(reversals) == 2
    assert len({t["id"] for t in reversals}) == 2

    # PayPal delivers the first again (acknowledged, not applied), and a delivery racing its
    # own record applies it again: neither counts it twice.
    body = json.dumps(first["event"], separators=(",", ":")).encode()
    again = requests.post(
        f"{stack.gateway_url}/paypal-webhook", data=body, headers=first["headers"], timeout=30
    )
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True
    assert webhooks.apply(first["event"], subjects=SUBJECTS) == webhooks.REVERSED_IN_PART

    stored = stored_order(order["id"])
    assert (stored["status"], stored["reversedMinor"]) == ("captured", 800)
    assert len(_reversals(order["id"])) == 2
    books = ledger_of(order["id"])
    assert_balanced(books)
    assert account_sum(books, "paypal_clearing") == 1200
    assert account_sum(books, f"earnings:doctor:{visit.doctor.uid}") == -1080
    assert visit.appointment_now()["status"] == "confirmed"


def test_a_full_chargeback_after_a_partial_one_takes_the_rest_and_revokes(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    _charge_back(sim, order["captureId"], "5.00")
    paypal_event(sim, "PAYMENT.CAPTURE.REVERSED", order["captureId"])

    stored = stored_order(order["id"])
    assert (stored["status"], stored["reversedMinor"]) == ("reversed", 2000)
    assert visit.appointment_now()["status"] == "cancelled"
    assert len(_reversals(order["id"])) == 2
    books = ledger_of(order["id"])
    assert_balanced(books)
    for account in ("paypal_clearing", "platform_fees", f"earnings:doctor:{visit.doctor.uid}"):
        assert account_sum(books, account) == 0, account


def test_a_refund_after_a_partial_chargeback_gives_back_only_what_is_left(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = pay(visit, sim)
    _charge_back(sim, order["captureId"], "5.00")

    too_much = {"orderId": order["id"], "amount": {"currency": "USD", "value": "15.01"}}
    refused = admin.post("/payments/refunds", json={**too_much, "reason": "Late"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "refund_exceeds_capture"
    rest = admin.post("/payments/refunds", json={"orderId": order["id"], "reason": "Late"})
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount"] == {"currency": "USD", "value": "15.00"}

    stored = stored_order(order["id"])
    assert (stored["status"], stored["refundedMinor"]) == ("refunded", 1500)
    books = ledger_of(order["id"])
    assert_balanced(books)
    for account in ("paypal_clearing", "platform_fees", f"earnings:doctor:{visit.doctor.uid}"):
        assert account_sum(books, account) == 0, account


def test_a_partial_chargeback_of_an_order_in_a_payout_is_recovered_then_the_rest_paid(
    stack, payouts_sim: Sim, admin: Api
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    order = doctor.orders[0]
    payout = record(doctor)
    held = admin.post(f"/payouts/{payout['id']}/hold", json={"reason": "checking"})
    assert held.status_code == 200, held.text
    # The 18.00 are away in the payout: the doctor's 4.50 share is the platform's loss.
    _charge_back(payouts_sim, order["captureId"], "5.00")
    assert stored_order(order["id"])["status"] == "captured"
    assert doctor.owed() == 0

    cancelled = admin.post(f"/payouts/{payout['id']}/cancel", json={"reason": "charged back"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert doctor.owed() == 1350  # 18.00 back, less the 4.50 that paid the loss
    assert stored_order(order["id"])["payoutId"] is None
    again = record(doctor)
    assert again["id"] == doctor.payout_id(n=2)
    assert again["lines"] == [{"orderId": order["id"], "amountMinor": 1350}]
