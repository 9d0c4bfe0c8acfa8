"""Money that comes back from a payout, and what the platform lost while it was away.

A chargeback (or a refund PayPal made) of a provider's order while its earnings are in a
payout finds nothing to take from them: the platform books the loss. When that payout's
money comes back (failed, returned, cancelled; or paid and taken back), it pays the loss back
first, once, and only the rest is owed again. A payout that was paid leaves the loss booked.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from shared.payments import ledger, ledger_store
from shared.payouts import reconciling, records, rules, scheduling
from shared.platform import clients, store
from shared.platform.money import Money
from shared.workflows.payout_deliveries import DELIVERIES
from tests.payment_support import assert_balanced, paypal_event, stored_order
from tests.payout_support import (
    Provider,
    delivered_long_ago,
    in_transit,
    item_of,
    move_item,
    payout_webhooks,
    paypal_batch,
    provider_with_earnings,
    record,
    send,
    wait_for_status,
)
from tests.paypal_support import Sim
from tests.support import Api, eventually

pytest_plugins = ("tests.payout_fixtures",)

USD = "USD"


# -- the rule alone ----------------------------------------------------------------------


def _loss(tx: str, minutes: int, amount: int, recovered: int = 0) -> rules.Loss:
    at = datetime(2030, 1, 7, tzinfo=UTC) + timedelta(minutes=minutes)
    return rules.Loss(tx, f"order-{tx}", at, amount, recovered)


def test_returned_money_pays_the_oldest_losses_first_and_never_more_than_is_left():
    late, early, half = _loss("b", 5, 700), _loss("a", 1, 500), _loss("c", 9, 400, 300)
    assert rules.recoveries([late, early, half], 10_000) == [(early, 500), (late, 700), (half, 100)]
    assert rules.recoveries([late, early], 600) == [(early, 500), (late, 100)]
    assert rules.recoveries([_loss("d", 0, 300, 300)], 1000) == []
    assert rules.recoveries([early], 0) == []


def test_a_recovery_moves_earnings_to_losses_and_balances():
    account = ledger.earnings_account("doctor", "d1")
    capture = ledger.Capture("p1", account, USD, 2000, 200)
    books = [ledger.payment(capture), ledger.payout_reserved(account, 1800, USD, 1800)]
    books.append(ledger.give_back(capture, 2000, 0, provider_owed_minor=0, kind="reversal"))
    assert ledger.balances(books)[(ledger.LOSSES, USD)] == 1800
    books += [ledger.payout_returned(account, 1800, USD), ledger.loss_recovered(account, 1800, USD)]
    assert ledger.owed(books, account, USD) == 0
    assert ledger.balances(books)[(ledger.LOSSES, USD)] == 0
    with pytest.raises(ledger.LedgerError, match="positive"):
        ledger.loss_recovered(account, 0, USD)


# -- with the stack ----------------------------------------------------------------------


def _provider_books(provider: Provider) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection(ledger_store.LEDGER)
        .where(filter=FieldFilter("providerUid", "==", provider.uid))
    )
    return [s.to_dict() or {} for s in query.stream()]


def _lost_on(provider: Provider) -> int:
    """What the platform lost on this provider's orders, less what came back for it."""
    books = _provider_books(provider)
    assert_balanced(books)
    return sum(
        int(p["amountMinor"])
        for t in books
        for p in t["postings"]
        if p["account"] == ledger.LOSSES and p["currency"] == USD
    )


def _kinds(payout_id: str) -> list[str]:
    return sorted(t["kind"] for t in ledger_store.transactions_of(payout_id))


def _record(provider: Provider, period: str | None = None) -> dict[str, Any]:
    """Record the provider's payout of `period` (this week's by default)."""
    now = datetime.now(UTC)
    payout, outcome = scheduling.record(
        "doctor",
        provider.uid,
        USD,
        period=period or rules.period_of(now),
        now=now,
        deliveries=DELIVERIES,
    )
    assert outcome in ("recorded", "found"), outcome
    assert payout is not None
    return payout


def _sent(
    stack: Any, provider: Provider, period: str | None = None, status: str = "sent"
) -> dict[str, Any]:
    payout = _record(provider, period)
    answer = send(stack, payout["id"])
    assert answer.status_code == 200, answer.text
    return wait_for_status(payout["id"], status)


def _deliver(stack: Any, delivery: dict[str, Any]) -> requests.Response:
    body = json.dumps(delivery["event"], separators=(",", ":"), ensure_ascii=True)
    return requests.post(
        f"{stack.gateway_url}/payouts/webhook", data=body, headers=delivery["headers"], timeout=30
    )


def test_a_chargeback_while_the_payout_is_away_is_paid_back_when_it_returns(
    stack, payouts_sim: Sim, admin: Api, tasks
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    order = doctor.orders[0]
    payouts_sim.control("POST", "/payouts/processing", json={"atOnce": False})
    sent = _sent(stack, doctor)
    # The patient charges back while the money is with PayPal: nothing left to take.
    paypal_event(payouts_sim, "PAYMENT.CAPTURE.REVERSED", order["captureId"])
    assert stored_order(order["id"])["status"] == "reversed"
    assert doctor.owed() == 0
    assert _lost_on(doctor) == 1800

    move_item(payouts_sim, item_of(payouts_sim, sent)["payout_item_id"], "FAILED")
    returned = wait_for_status(sent["id"], "returned")
    assert doctor.owed() == 0  # the patient has their money back; the doctor earned nothing
    assert _lost_on(doctor) == 0  # and the platform lost nothing
    assert returned["recoveredMinor"] == 1800
    assert returned["recoveredLosses"] == [
        {"txId": f"reversal-{order['id']}", "orderId": order["id"], "amountMinor": 1800}
    ]
    assert _kinds(sent["id"]) == ["loss_recovered", "payout_reserved", "payout_returned"]

    # PayPal delivers the news again, and it is applied again by hand: nothing more.
    [failed] = [
        d
        for d in payout_webhooks(payouts_sim, sent)
        if d["event"]["event_type"] == "PAYMENT.PAYOUTS-ITEM.FAILED"
    ]
    again = _deliver(stack, failed)
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True
    assert reconciling.apply_item(sent["id"], failed["event"]["resource"]) == "returned"
    assert reconciling.reconcile(records.get(sent["id"]) or {}) == "returned"
    assert _kinds(sent["id"]) == ["loss_recovered", "payout_reserved", "payout_returned"]
    assert doctor.owed() == 0
    assert _lost_on(doctor) == 0

    # Nothing is due, nothing is in transit for it, and the books agree with the payouts.
    payout, outcome = scheduling.record(
        "doctor",
        doctor.uid,
        USD,
        period=rules.period_of(datetime.now(UTC)),
        now=datetime.now(UTC),
        deliveries=DELIVERIES,
    )
    assert (payout, outcome) == (None, "nothing_due")
    checked = admin.post("/payouts/check")
    assert checked.status_code == 200, checked.text
    assert checked.json()["mismatches"] == []


def test_a_refund_paypal_made_while_away_is_paid_back_and_the_rest_paid_once_later(
    stack, payouts_sim: Sim, admin: Api, tasks
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    order = doctor.orders[0]
    payouts_sim.control("POST", "/payouts/processing", json={"atOnce": False})
    first = _sent(stack, doctor)
    # Part of the payment refunded in PayPal's dashboard meanwhile: 7.00, of which the
    # doctor's part (6.30, the fee shrinking pro rata) is the platform's loss for now.
    payouts_sim.client().refund_capture(
        order["captureId"], request_id=f"dash-{order['id']}", money=Money(USD, 700)
    )
    eventually(
        lambda: stored_order(order["id"]).get("refundedMinor"),
        lambda got: got == 700,
        "the dashboard refund to be booked",
    )
    assert _lost_on(doctor) == 630

    move_item(payouts_sim, item_of(payouts_sim, first)["payout_item_id"], "RETURNED")
    assert wait_for_status(first["id"], "returned")["recoveredMinor"] == 630
    assert _lost_on(doctor) == 0
    assert doctor.owed() == 1170
    assert stored_order(order["id"])["payoutId"] is None

    # The same order in the next payout: what is left of it, and that money failing too
    # recovers nothing twice.
    second = _sent(stack, doctor)
    assert second["id"] == doctor.payout_id(n=2)
    assert second["amountMinor"] == 1170
    assert second["lines"] == [{"orderId": order["id"], "amountMinor": 1170}]
    move_item(payouts_sim, item_of(payouts_sim, second)["payout_item_id"], "FAILED")
    again = wait_for_status(second["id"], "returned")
    assert "recoveredMinor" not in again
    assert _kinds(second["id"]) == ["payout_reserved", "payout_returned"]
    assert doctor.owed() == 1170
    assert _lost_on(doctor) == 0


def test_a_chargeback_while_away_stays_a_loss_if_the_payout_is_paid(
    stack, payouts_sim: Sim, admin: Api, tasks
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    order = doctor.orders[0]
    payouts_sim.control("POST", "/payouts/processing", json={"atOnce": False})
    sent = _sent(stack, doctor)
    paypal_event(payouts_sim, "PAYMENT.CAPTURE.REVERSED", order["captureId"])
    move_item(payouts_sim, item_of(payouts_sim, sent)["payout_item_id"], "SUCCESS")
    paid = wait_for_status(sent["id"], "paid")
    assert "recoveredMinor" not in paid
    assert doctor.owed() == 0
    assert _lost_on(doctor) == 1800  # the doctor has the money: the loss is real

    # Until PayPal takes the paid payout back (no webhook: the sweep finds it): then the
    # money is here again, and pays the loss back first.
    move_item(payouts_sim, item_of(payouts_sim, paid)["payout_item_id"], "REVERSED")
    assert reconciling.reconcile(records.get(sent["id"]) or {}) == "reversed"
    reversed_ = records.get(sent["id"]) or {}
    assert reversed_["recoveredMinor"] == 1800
    assert doctor.owed() == 0
    assert _lost_on(doctor) == 0
    assert _kinds(sent["id"]) == ["loss_recovered", "payout", "payout_reserved", "payout_reversed"]


def test_two_payouts_away_at_once_recover_one_loss_once(stack, payouts_sim: Sim, admin: Api, tasks):
    doctor = provider_with_earnings(stack, admin, payouts_sim, visits=2)
    one, two = doctor.orders
    # The second visit is not due yet: last week's payout pays the first alone.
    delivered_long_ago(stored_order(two["id"])["subjectId"], days=1)
    payouts_sim.control("POST", "/payouts/processing", json={"atOnce": False})
    earlier = _sent(stack, doctor, period="2001-W01")
    assert earlier["lines"] == [{"orderId": one["id"], "amountMinor": 1800}]
    delivered_long_ago(stored_order(two["id"])["subjectId"])
    later = _sent(stack, doctor)
    assert later["lines"] == [{"orderId": two["id"], "amountMinor": 1800}]
    assert in_transit() >= 3600

    # The first order is charged back while both payouts are away; both come back.
    paypal_event(payouts_sim, "PAYMENT.CAPTURE.REVERSED", one["captureId"])
    assert _lost_on(doctor) == 1800
    move_item(payouts_sim, item_of(payouts_sim, later)["payout_item_id"], "FAILED")
    assert wait_for_status(later["id"], "returned")["recoveredMinor"] == 1800
    assert doctor.owed() == 0
    move_item(payouts_sim, item_of(payouts_sim, earlier)["payout_item_id"], "FAILED")
    assert "recoveredMinor" not in wait_for_status(earlier["id"], "returned")
    # The doctor is owed the second visit's earnings, and the next payout pays them.
    assert doctor.owed() == 1800
    assert _lost_on(doctor) == 0
    assert stored_order(two["id"])["payoutId"] is None
    next_one = record(doctor)
    assert next_one["lines"] == [{"orderId": two["id"], "amountMinor": 1800}]


def test_an_admin_cancelling_a_held_payout_pays_back_the_loss_too(
    stack, payouts_sim: Sim, admin: Api, tasks
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    order = doctor.orders[0]
    payout = record(doctor)
    held = admin.post(f"/payouts/{payout['id']}/hold", json={"reason": "checking"})
    assert held.status_code == 200, held.text
    paypal_event(payouts_sim, "PAYMENT.CAPTURE.REVERSED", order["captureId"])
    assert _lost_on(doctor) == 1800
    cancelled = admin.post(f"/payouts/{payout['id']}/cancel", json={"reason": "charged back"})
    assert cancelled.status_code == 200, cancelled.text
    assert (records.get(payout["id"]) or {})["recoveredMinor"] == 1800
    assert doctor.owed() == 0
    assert _lost_on(doctor) == 0


# -- the sweep and PayPal's items that moved on ------------------------------------------


def _unclaimed_long_ago(stack: Any, payouts_sim: Sim, admin: Api) -> tuple[Provider, dict]:
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payouts_sim.control(
        "POST", "/payouts/outcomes", json={"receiver": doctor.receiver, "status": "UNCLAIMED"}
    )
    unclaimed = _sent(stack, doctor, status="unclaimed")
    payouts_sim.control("POST", "/payouts/webhooks", json={"mode": "drop"})
    return doctor, unclaimed


def _past_cancel_days(payout_id: str) -> None:
    store.update(
        records.payout_ref(payout_id),
        {"unclaimedSince": datetime.now(UTC) - timedelta(days=40)},
        by="test",
    )


def test_the_sweep_reconciles_an_item_claimed_late_whose_webhook_was_lost(
    stack, payouts_sim: Sim, admin: Api, tasks
):
    doctor, unclaimed = _unclaimed_long_ago(stack, payouts_sim, admin)
    move_item(payouts_sim, item_of(payouts_sim, unclaimed)["payout_item_id"], "SUCCESS")
    _past_cancel_days(unclaimed["id"])
    swept = admin.post("/payouts/sweep", params={"limit": 500})
    assert swept.status_code == 200, swept.text
    paid = records.get(unclaimed["id"]) or {}
    assert paid["status"] == "paid"
    assert paid["feeMinor"] == 36  # PayPal's 2 %
    assert doctor.owed() == 0
    assert _kinds(unclaimed["id"]) == ["payout", "payout_reserved"]


def test_the_sweep_reconciles_an_item_paypal_returned_whose_webhook_was_lost(
    stack, payouts_sim: Sim, admin: Api, tasks
):
    doctor, unclaimed = _unclaimed_long_ago(stack, payouts_sim, admin)
    move_item(payouts_sim, item_of(payouts_sim, unclaimed)["payout_item_id"], "RETURNED")
    _past_cancel_days(unclaimed["id"])
    swept = admin.post("/payouts/sweep", params={"limit": 500})
    assert swept.status_code == 200, swept.text
    returned = records.get(unclaimed["id"]) or {}
    assert returned["status"] == "returned"
    assert returned["itemStatus"] == "RETURNED"
    assert doctor.owed() == 1800
    assert _kinds(unclaimed["id"]) == ["payout_reserved", "payout_returned"]
    again = admin.post("/payouts/sweep", params={"limit": 500})
    assert again.status_code == 200, again.text
    assert _kinds(unclaimed["id"]) == ["payout_reserved", "payout_returned"]


# -- foreign batches ---------------------------------------------------------------------


def test_webhooks_of_a_foreign_batch_with_an_id_no_document_could_have_are_acknowledged(
    stack, payouts_sim: Sim
):
    tag = uuid.uuid4().hex[:10]
    for n, sender in enumerate((f"__{tag}__", f"{tag}/b")):
        made = payouts_sim.client().create_payout(
            sender_batch_id=sender,
            items=[
                {
                    "recipient_type": "EMAIL",
                    "receiver": f"someone-{tag}@elsewhere.example",
                    "amount": {"currency": USD, "value": "5.00"},
                    "note": "not Alo Doktor's",
                    "sender_item_id": f"item-{tag}-{n}",
                }
            ],
            request_id=f"foreign-{tag}-{n}",
        )
        batch_id = made["batch_header"]["payout_batch_id"]
        eventually(
            lambda: paypal_batch(payouts_sim, batch_id)["batch_header"]["batch_status"],  # noqa: B023
            lambda status: status == "SUCCESS",
            "PayPal to pay the foreign batch",
        )
        delivered = eventually(
            lambda: payout_webhooks(payouts_sim, {"id": sender}),  # noqa: B023
            lambda found: len(found) >= 3 and all(d["status"] is not None for d in found),
            f"PayPal's webhooks of batch {sender}",
        )
        assert {d["status"] for d in delivered} == {200}, (sender, delivered)
        for delivery in delivered:
            replayed = _deliver(stack, delivery)
            assert replayed.status_code == 200, replayed.text
            assert replayed.json()["outcome"] == "unknown_payout"


def test_a_sender_batch_id_that_is_no_document_id_is_not_looked_up(stack, monkeypatch):
    """Production Firestore refuses such an id (INVALID_ARGUMENT: reserved, or a path), so
    looking it up would answer 500 to every one of PayPal's retries; the emulator lets it by,
    so its refusal is played here."""
    from google.api_core.exceptions import InvalidArgument

    from shared.platform.ids import DOC_ID

    looked_up: list[str] = []
    plain = records.get

    def as_firestore(payout_id: str) -> dict[str, Any] | None:
        looked_up.append(payout_id)
        if not DOC_ID.fullmatch(payout_id):
            raise InvalidArgument(f"not a document id: {payout_id!r}")
        return plain(payout_id)

    monkeypatch.setattr(records, "get", as_firestore)
    for sender in ("__x__", "a/b", "../payouts", "a\n"):
        item = {
            "sender_batch_id": sender,
            "payout_batch_id": "FOREIGN0BATCH",
            "payout_item_id": "FOREIGN0ITEM",
            "transaction_status": "SUCCESS",
        }
        assert reconciling._apply_event("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item) == (
            "unknown_payout"
        )
        header = {
            "payout_batch_id": "FOREIGN0BATCH",
            "sender_batch_header": {"sender_batch_id": sender},
        }
        assert reconciling._apply_event(
            "PAYMENT.PAYOUTSBATCH.SUCCESS", {"batch_header": header}
        ) == ("unknown_payout")
    assert looked_up == []
