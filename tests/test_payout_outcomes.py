"""What PayPal makes of a payout, and how we learn it: every item outcome, webhooks that are
duplicated, out of order, forged or missing, the sweep, and the books after all of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import requests

from shared.payments import ledger_store
from shared.payouts import records
from shared.platform import store
from shared.platform.context import Role
from tests.payment_support import assert_balanced, stored_order
from tests.payout_support import (
    Provider,
    admin_alerts,
    in_transit,
    item_of,
    move_item,
    notices_to,
    payout_webhooks,
    paypal_batch,
    provider_with_earnings,
    record,
    scheduler,
    send,
    wait_for_status,
)
from tests.paypal_support import Sim
from tests.support import Api, create_user, eventually, problem

# The `tasks` and `payouts_sim` fixtures.
pytest_plugins = ("tests.payout_fixtures",)

USD = "USD"


def _books_of(provider: Provider) -> list[str]:
    return [t["kind"] for t in ledger_store.transactions_of(provider.payout_id())]


def test_every_item_outcome_moves_the_money_where_it_belongs(stack, payouts_sim: Sim, admin: Api):
    admin_user = create_user(stack, Role.ADMIN)
    first = {  # what PayPal first makes of each provider's item
        "failed": "FAILED",
        "blocked": "BLOCKED",
        "returned": "RETURNED",
        "claimed": "UNCLAIMED",
        "never_claimed": "UNCLAIMED",
        "on_hold": "ONHOLD",
        "reversed": "SUCCESS",
        "refunded": "SUCCESS",
    }
    providers = {name: provider_with_earnings(stack, admin, payouts_sim) for name in first}
    for name, status in first.items():
        payouts_sim.control(
            "POST",
            "/payouts/outcomes",
            json={"receiver": providers[name].receiver, "status": status},
        )
    assert admin.post("/payouts/run").status_code == 200
    pid = {name: p.payout_id() for name, p in providers.items()}

    # The money came back before reaching the provider: owed again, orders payable again.
    for name in ("failed", "blocked", "returned"):
        payout = wait_for_status(pid[name], "returned")
        p = providers[name]
        assert p.owed() == 1800, name
        assert _books_of(p) == ["payout_reserved", "payout_returned"], name
        assert stored_order(p.orders[0]["id"])["payoutId"] is None
        assert notices_to(p.uid, "payout_returned")
        assert payout["itemStatus"] == first[name]

    # Unclaimed: the provider is told, the money waits in transit; then claimed: paid.
    claimed = wait_for_status(pid["claimed"], "unclaimed")
    assert notices_to(providers["claimed"].uid, "payout_unclaimed")
    assert providers["claimed"].owed() == 0
    move_item(payouts_sim, item_of(payouts_sim, claimed)["payout_item_id"], "SUCCESS")
    wait_for_status(pid["claimed"], "paid")

    # On hold at PayPal: still sent; released by PayPal: paid.
    held = wait_for_status(pid["on_hold"], "sent")
    eventually(
        lambda: item_of(payouts_sim, records.get(pid["on_hold"]) or held),
        lambda item: item["transaction_status"] == "ONHOLD",
        "PayPal to hold the item",
    )
    assert records.get(pid["on_hold"])["status"] == "sent"
    move_item(payouts_sim, item_of(payouts_sim, held)["payout_item_id"], "SUCCESS")
    wait_for_status(pid["on_hold"], "paid")

    # Paid, then taken back: REFUNDED comes by webhook, REVERSED only by asking (PayPal
    # sends no webhook for it): the sweep finds it.
    for name in ("reversed", "refunded"):
        paid = wait_for_status(pid[name], "paid")
        move_item(payouts_sim, item_of(payouts_sim, paid)["payout_item_id"], name.upper())
    wait_for_status(pid["refunded"], "reversed")
    sent = payout_webhooks(payouts_sim, records.get(pid["reversed"]) or {})
    assert all(d["event"]["resource"].get("transaction_status") != "REVERSED" for d in sent)
    never = wait_for_status(pid["never_claimed"], "unclaimed")
    # Time travel: nobody claimed it for PAYOUT_UNCLAIMED_CANCEL_DAYS.
    store.update(
        records.payout_ref(never["id"]),
        {"unclaimedSince": datetime.now(UTC) - timedelta(days=21)},
        by="test",
    )
    swept = scheduler(stack).post("/payouts/sweep", params={"limit": 500})
    assert swept.status_code == 200, swept.text
    assert swept.json()["cancelled"] >= 1
    assert records.get(pid["reversed"])["status"] == "reversed"
    assert wait_for_status(pid["never_claimed"], "returned")["itemStatus"] == "RETURNED"
    assert (
        paypal_batch(payouts_sim, never["paypalBatchId"])["items"][0]["transaction_status"]
        == "RETURNED"
    )
    for name in ("reversed", "refunded"):
        p = providers[name]
        assert p.owed() == 1800, name  # taken back from them: owed again
        assert _books_of(p) == ["payout_reserved", "payout", "payout_reversed"], name
    assert admin_alerts(admin_user.uid, "payout_reversed")
    assert providers["never_claimed"].owed() == 1800

    for p in providers.values():
        assert_balanced(ledger_store.transactions_of(p.payout_id()))
        assert p.owed() >= 0
    # The money in transit is exactly what the open payouts hold, in every currency.
    checked = admin.post("/payouts/check")
    assert checked.status_code == 200, checked.text
    assert checked.json()["mismatches"] == []


def test_webhooks_out_of_order_and_twice_change_nothing_twice(stack, payouts_sim: Sim, admin: Api):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payouts_sim.control("POST", "/payouts/webhooks", json={"mode": "drop"})
    payout = record(doctor)
    assert send(stack, payout["id"]).json()["status"] == "sent"
    events = eventually(
        lambda: payout_webhooks(payouts_sim, payout),
        lambda found: any(
            d["event"]["event_type"] == "PAYMENT.PAYOUTSBATCH.SUCCESS" for d in found
        ),
        "PayPal to have processed the batch",
    )
    assert records.get(payout["id"])["status"] == "sent"  # nothing reached us
    url = f"{stack.gateway_url}/payouts/webhook"

    def deliver(delivery: dict) -> requests.Response:
        body = json.dumps(delivery["event"], separators=(",", ":"), ensure_ascii=True)
        return requests.post(url, data=body, headers=delivery["headers"], timeout=30)

    # Late and backwards: the batch's SUCCESS first, its PROCESSING last.
    for delivery in reversed(events):
        answer = deliver(delivery)
        assert answer.status_code == 200, answer.text
        assert answer.json()["replayed"] is False
    assert records.get(payout["id"])["status"] == "paid"
    for delivery in events:  # PayPal delivers each again
        answer = deliver(delivery)
        assert answer.status_code == 200, answer.text
        assert answer.json()["replayed"] is True
    assert _books_of(doctor) == ["payout_reserved", "payout"]
    assert doctor.owed() == 0


def test_missing_webhooks_are_made_up_for_by_the_sweep(stack, payouts_sim: Sim, admin: Api):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payouts_sim.control("POST", "/payouts/webhooks", json={"mode": "drop"})
    payout = record(doctor)
    assert send(stack, payout["id"]).json()["status"] == "sent"
    eventually(
        lambda: paypal_batch(payouts_sim, records.get(payout["id"])["paypalBatchId"]),
        lambda batch: batch["batch_header"]["batch_status"] == "SUCCESS",
        "PayPal to pay the batch",
    )
    swept = admin.post("/payouts/sweep")
    assert swept.status_code == 200, swept.text
    assert records.get(payout["id"])["status"] == "paid"
    assert _books_of(doctor) == ["payout_reserved", "payout"]


def test_forged_and_foreign_webhooks_change_nothing(stack, payouts_sim: Sim, admin: Api):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payouts_sim.control("POST", "/payouts/webhooks", json={"mode": "drop"})
    payouts_sim.control("POST", "/payouts/processing", json={"atOnce": False})
    payout = record(doctor)
    assert send(stack, payout["id"]).json()["status"] == "sent"
    item = item_of(payouts_sim, records.get(payout["id"]))
    move_item(payouts_sim, item["payout_item_id"], "FAILED")
    [genuine] = [
        d
        for d in payout_webhooks(payouts_sim, payout)
        if d["event"]["event_type"] == "PAYMENT.PAYOUTS-ITEM.FAILED"
    ]
    url = f"{stack.gateway_url}/payouts/webhook"

    forged = json.loads(json.dumps(genuine["event"]))
    forged["event_type"] = "PAYMENT.PAYOUTS-ITEM.SUCCEEDED"
    forged["resource"]["transaction_status"] = "SUCCESS"  # the signature no longer fits
    problem(
        requests.post(url, json=forged, headers=genuine["headers"], timeout=30),
        400,
        "webhook_unverified",
    )
    unsigned = requests.post(url, json=genuine["event"], timeout=30)
    problem(unsigned, 400, "webhook_unverified")
    problem(requests.post(url, json={"id": "x", "resource": {}}, timeout=30), 400)
    problem(
        requests.post(url, data="{", headers={"Content-Type": "application/json"}, timeout=30), 400
    )
    # Signed by PayPal, but for the payments webhook, not this one.
    capture_id = stored_order(doctor.orders[0]["id"])["captureId"]
    foreign = payouts_sim.control(
        "POST",
        "/webhooks",
        json={"eventType": "PAYMENT.CAPTURE.COMPLETED", "captureId": capture_id, "url": url},
    )
    assert foreign["status"] == 400
    assert records.get(payout["id"])["status"] == "sent"
    assert doctor.owed() == 0

    body = json.dumps(genuine["event"], separators=(",", ":"), ensure_ascii=True)
    applied = requests.post(url, data=body, headers=genuine["headers"], timeout=30)
    assert applied.status_code == 200, applied.text
    assert applied.json()["outcome"] == "returned"
    assert doctor.owed() == 1800


def test_a_zero_decimal_currency_is_paid_in_whole_yen(stack, payouts_sim: Sim, admin: Api):
    doctor = provider_with_earnings(stack, admin, payouts_sim, price="3000", currency="JPY")
    assert doctor.owed("JPY") == 2700
    payout = record(doctor, "JPY")
    assert payout["amountMinor"] == 2700
    assert send(stack, payout["id"]).status_code == 200
    paid = wait_for_status(payout["id"], "paid")
    item = item_of(payouts_sim, paid)
    assert item["payout_item"]["amount"] == {"currency": "JPY", "value": "2700"}
    assert item["payout_item_fee"] == {"currency": "JPY", "value": "54"}
    assert paid["feeMinor"] == 54
    assert doctor.owed("JPY") == 0
    assert in_transit("JPY") >= 0
    shown = doctor.api.get(f"/payouts/{payout['id']}").json()
    assert shown["amount"] == {"currency": "JPY", "value": "2700"}
