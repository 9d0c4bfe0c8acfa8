"""Payouts against the whole stack: the weekly run, Cloud Tasks (the firebase-tools emulator
behind dev/cloud_tasks.py), the worker, PayPal's Payouts API (the simulator) and its webhooks,
the ledger in Firestore."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from shared.payments import ledger_store
from shared.payouts import records
from shared.platform import clients
from shared.platform.context import Role
from tests.payment_support import assert_balanced, stored_order
from tests.payout_support import (
    Tasks,
    admin_alerts,
    batches_sent,
    item_of,
    move_item,
    notices_to,
    paypal_batch,
    provider_with_earnings,
    record,
    scheduler,
    send,
    wait_for_status,
)
from tests.paypal_support import Sim
from tests.support import Api, bearer, create_user, problem

# The `tasks` and `payouts_sim` fixtures.
pytest_plugins = ("tests.payout_fixtures",)


def test_a_doctor_is_paid_what_they_earned_once_the_visit_is_long_enough_past(
    stack, payouts_sim: Sim, admin: Api, tasks: Tasks
):
    doctor = provider_with_earnings(stack, admin, payouts_sim, visits=2, price="20.00")
    assert doctor.owed() == 2 * 1800  # 20.00 each, less the platform's 10 %

    ran = admin.post("/payouts/run")
    assert ran.status_code == 200, ran.text
    assert ran.json()["recorded"] >= 1
    pid = doctor.payout_id()
    # Recorded before it is sent: the amount set aside in one commit with the payout.
    assert doctor.owed() == 0

    paid = wait_for_status(pid, "paid")  # the task ran, PayPal paid, its webhook told us
    assert paid["amountMinor"] == 3600
    assert {line["orderId"] for line in paid["lines"]} == {o["id"] for o in doctor.orders}
    assert all(stored_order(o["id"])["payoutId"] == pid for o in doctor.orders)
    assert len(tasks.made_for(pid)) == 1
    sent = batches_sent(payouts_sim, pid)
    assert len(sent) == 1
    assert sent[0]["requestId"] == f"{pid}-0"
    batch = paypal_batch(payouts_sim, paid["paypalBatchId"])
    assert batch["batch_header"]["sender_batch_header"]["sender_batch_id"] == pid
    item = batch["items"][0]
    assert item["payout_item"]["amount"] == {"currency": "USD", "value": "36.00"}
    assert item["payout_item"]["receiver"] == doctor.receiver
    assert item["transaction_status"] == "SUCCESS"

    books = ledger_store.transactions_of(pid)
    assert [t["kind"] for t in books] == ["payout_reserved", "payout"]
    assert_balanced(books)
    assert doctor.owed() == 0
    fee = paid["feeMinor"]
    assert fee == 72  # PayPal's 2 %, booked as the platform's cost
    assert notices_to(doctor.uid, "payout_sent")
    # Logged for the admins' dashboards in the same commit, once.
    event = clients.db().collection("events").document(f"payout_sent-{pid}").get().to_dict()
    assert event is not None
    assert (event["uid"], event["amountMinor"], event["currency"]) == (doctor.uid, 3600, "USD")

    # The doctor sees it and its statement; nobody else does.
    listed = doctor.api.get("/payouts")
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()["items"]] == [pid]
    shown = doctor.api.get(f"/payouts/{pid}").json()
    assert shown["amount"] == {"currency": "USD", "value": "36.00"}
    assert shown["status"] == "paid"
    assert sorted(line["amount"]["value"] for line in shown["lines"]) == ["18.00", "18.00"]
    other = bearer(stack, create_user(stack, Role.DOCTOR))
    problem(other.get(f"/payouts/{pid}"), 404)
    assert other.get("/payouts").json()["items"] == []
    problem(other.get("/payouts", params={"providerUid": doctor.uid}), 403, "filter_not_allowed")
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    problem(patient.get("/payouts"), 403)
    problem(patient.get(f"/payouts/{pid}"), 403)
    assert admin.get(f"/payouts/{pid}").status_code == 200
    by_admin = admin.get("/payouts", params={"providerUid": doctor.uid}).json()["items"]
    assert [p["id"] for p in by_admin] == [pid]

    # Nothing more is owed: running again this week pays nothing more, sends nothing more.
    again = scheduler(stack).post("/payouts/run")
    assert again.status_code == 200, again.text
    assert len(batches_sent(payouts_sim, pid)) == 1
    assert len(tasks.made_for(pid)) == 1


def test_two_runs_at_once_and_a_third_after_make_each_payout_and_task_once(
    stack, payouts_sim: Sim, admin: Api, tasks: Tasks
):
    doctors = [provider_with_earnings(stack, admin, payouts_sim) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: admin.post("/payouts/run"), range(2)))
    assert [r.status_code for r in runs] == [200, 200], [r.text for r in runs]
    assert admin.post("/payouts/run").status_code == 200
    for doctor in doctors:
        pid = doctor.payout_id()
        wait_for_status(pid, "paid")
        assert len(tasks.made_for(pid)) == 1  # one task; any second enqueue was refused
        assert len(batches_sent(payouts_sim, pid)) == 1
        assert len(ledger_store.transactions_of(pid)) == 2  # reserved once, paid once
        assert doctor.owed() == 0
        assert doctor.payout(n=2) is None


def test_the_same_task_delivered_twice_at_once_pays_once(stack, payouts_sim: Sim, admin: Api):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payout = record(doctor)  # recorded, not enqueued: the deliveries below are the task's
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: send(stack, payout["id"]), range(2)))
    codes = sorted(a.status_code for a in answers)
    assert codes in ([200, 200], [200, 503]), [a.text for a in answers]
    for busy in (a for a in answers if a.status_code == 503):
        problem(busy, 503, "payout_busy")  # Cloud Tasks comes back later
    assert len(batches_sent(payouts_sim, payout["id"])) == 1
    wait_for_status(payout["id"], "paid")
    redelivered = send(stack, payout["id"])  # a later redelivery finds it done
    assert redelivered.status_code == 200
    assert redelivered.json()["status"] == "paid"
    assert len(batches_sent(payouts_sim, payout["id"])) == 1


def test_an_enqueue_that_fails_after_the_commit_is_made_by_the_next_run(
    stack, payouts_sim: Sim, admin: Api, tasks: Tasks
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    tasks.fail_next(count=50)  # Cloud Tasks unreachable for this whole run
    ran = admin.post("/payouts/run")
    assert ran.status_code == 200, ran.text
    assert ran.json()["enqueueFailed"] >= 1
    payout = doctor.payout()
    assert payout is not None
    assert payout["status"] == "scheduled"
    assert tasks.made_for(payout["id"]) == []  # so the next run must make its task
    assert doctor.owed() == 0  # recorded all the same: the money is set aside
    assert batches_sent(payouts_sim, payout["id"]) == []
    tasks.control("DELETE", "/faults")

    again = admin.post("/payouts/run")
    assert again.status_code == 200, again.text
    wait_for_status(payout["id"], "paid")
    assert len(tasks.made_for(payout["id"])) == 1
    assert len(batches_sent(payouts_sim, payout["id"])) == 1


def test_paypal_down_is_retried_by_cloud_tasks_with_the_same_request(
    stack, payouts_sim: Sim, admin: Api, tasks: Tasks
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    pid = doctor.payout_id()
    # PayPal fails every try of the first delivery (500, nothing done): the worker answers
    # 503 and Cloud Tasks delivers again, after its backoff.
    payouts_sim.fault(
        mock="INTERNAL_SERVER_ERROR",
        count=3,
        pathContains="/v1/payments/payouts",
        bodyContains=pid,  # this payout's tries only, not an earlier test's retried task
    )
    assert admin.post("/payouts/run").status_code == 200
    paid = wait_for_status(pid, "paid")
    sent = batches_sent(payouts_sim, pid)
    assert len(sent) == 4  # one delivery's three failed tries, then the next delivery's
    assert {r["requestId"] for r in sent} == {f"{pid}-0"}
    batch = paypal_batch(payouts_sim, paid["paypalBatchId"])
    assert batch["batch_header"]["sender_batch_header"]["sender_batch_id"] == pid


def test_a_crash_after_paypals_answer_is_recovered_by_the_retry_which_pays_once(
    stack, payouts_sim: Sim, admin: Api
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payout = record(doctor)
    pid = payout["id"]
    # PayPal makes the batch but its answers never arrive (every try times out): the worker
    # has no batch id to save when it stops, exactly as if it had died after the 201. (PayPal
    # holds the batch meanwhile, so no webhook reaches us first.)
    payouts_sim.control("POST", "/payouts/processing", json={"atOnce": False})
    payouts_sim.fault(delay=5, count=3, pathContains="/v1/payments/payouts", bodyContains=pid)
    lost = send(stack, pid)
    problem(lost, 503, "paypal_unavailable")
    stuck = records.get(pid)
    assert stuck is not None
    assert stuck["status"] == "sending"
    assert stuck["paypalBatchId"] is None

    retried = send(stack, pid)  # Cloud Tasks' retry: the same PayPal-Request-Id and body
    assert retried.status_code == 200, retried.text
    batch_id = retried.json()["paypalBatchId"]
    assert batch_id
    assert retried.json()["status"] == "sent"
    move_item(payouts_sim, item_of(payouts_sim, retried.json())["payout_item_id"], "SUCCESS")
    paid = wait_for_status(pid, "paid")
    assert paid["paypalBatchId"] == batch_id
    assert {r["requestId"] for r in batches_sent(payouts_sim, pid)} == {f"{pid}-0"}
    assert len(ledger_store.transactions_of(pid)) == 2  # paid once


def test_a_duplicate_batch_refusal_leads_back_to_the_batch_paypal_made(
    stack, payouts_sim: Sim, admin: Api
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    pid = record(doctor)["id"]
    payouts_sim.control("POST", "/payouts/processing", json={"atOnce": False})
    payouts_sim.fault(delay=5, count=3, pathContains="/v1/payments/payouts", bodyContains=pid)
    problem(send(stack, pid), 503, "paypal_unavailable")
    # PayPal no longer recognises our PayPal-Request-Id: the retry meets the sender_batch_id
    # check, whose refusal links the batch it made.
    payouts_sim.control("POST", "/payouts/forget-request-ids")
    retried = send(stack, pid)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "sent"
    move_item(payouts_sim, item_of(payouts_sim, retried.json())["payout_item_id"], "SUCCESS")
    paid = wait_for_status(pid, "paid")
    made = [
        r
        for r in payouts_sim.control("GET", "/requests")["requests"]
        if r["path"] == "/v1/payments/payouts" and r["requestId"] == f"{pid}-0"
    ]
    assert len(made) == 4
    batch = paypal_batch(payouts_sim, paid["paypalBatchId"])
    assert batch["batch_header"]["sender_batch_header"]["sender_batch_id"] == pid
    assert len(ledger_store.transactions_of(pid)) == 2


def test_insufficient_funds_is_recorded_and_alerted_then_an_admin_retries(
    stack, payouts_sim: Sim, admin: Api
):
    admin_user = create_user(stack, Role.ADMIN)
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    pid = record(doctor)["id"]
    payouts_sim.control("POST", "/payouts/errors", json={"testValue": "ERRPYO005"})
    refused = send(stack, pid)
    assert refused.status_code == 200, refused.text  # no use retrying: admins decide
    assert refused.json()["status"] == "refused"
    assert refused.json()["error"]["name"] == "INSUFFICIENT_FUNDS"
    assert admin_alerts(admin_user.uid, "payout_refused")
    assert doctor.owed() == 0  # still set aside for this payout
    assert send(stack, pid).json()["status"] == "refused"  # a redelivery changes nothing
    problem(admin.post(f"/payouts/{pid}/hold", json={"reason": "looking"}), 409)

    retried = admin.post(f"/payouts/{pid}/retry")
    assert retried.status_code == 200, retried.text
    wait_for_status(pid, "paid")
    assert [r["requestId"] for r in batches_sent(payouts_sim, pid)] == [f"{pid}-0", f"{pid}-1"]
    problem(admin.post(f"/payouts/{pid}/retry"), 409, "payout_not_refused")
    problem(doctor.api.post(f"/payouts/{pid}/retry"), 403)


def test_an_admin_cancels_a_refused_payout_and_the_money_is_owed_again(
    stack, payouts_sim: Sim, admin: Api
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    pid = record(doctor)["id"]
    payouts_sim.control("POST", "/payouts/errors", json={"testValue": "ERRPYO010"})
    assert send(stack, pid).json()["status"] == "refused"
    cancelled = admin.post(f"/payouts/{pid}/cancel", json={"reason": "wrong receiver"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert doctor.owed() == 1800
    assert all(stored_order(o["id"])["payoutId"] is None for o in doctor.orders)
    # The orders are payable again: the next run pays them, under the period's next id.
    assert admin.post("/payouts/run").status_code == 200
    wait_for_status(doctor.payout_id(n=2), "paid")
    assert doctor.owed() == 0


def test_a_held_payout_waits_until_an_admin_releases_it(stack, payouts_sim: Sim, admin: Api):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    pid = record(doctor)["id"]
    held = admin.post(f"/payouts/{pid}/hold", json={"reason": "checking the invoices"})
    assert held.status_code == 200, held.text
    assert held.json()["status"] == "held"
    assert send(stack, pid).json()["status"] == "held"  # the task finds it held: done
    assert batches_sent(payouts_sim, pid) == []
    released = admin.post(f"/payouts/{pid}/release")
    assert released.status_code == 200, released.text
    wait_for_status(pid, "paid")
    problem(admin.post(f"/payouts/{pid}/release"), 409, "payout_not_held")
    problem(admin.post("/payouts/nope-not-a-payout/release"), 404)


def test_cloud_tasks_refuses_a_second_task_of_the_same_name(
    stack, payouts_sim: Sim, admin: Api, tasks: Tasks
):
    from shared.payouts import scheduling

    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payout = record(doctor)
    assert scheduling.dispatch(payout) is True  # made now
    assert scheduling.dispatch(payout) is False  # ALREADY_EXISTS: nothing twice
    assert len(tasks.made_for(payout["id"])) == 1
    assert len(tasks.refused_for(payout["id"])) == 1
    wait_for_status(payout["id"], "paid")  # delivered with Cloud Tasks' OIDC token
    assert len(batches_sent(payouts_sim, payout["id"])) == 1


def test_a_rate_limit_on_a_payout_is_a_503_for_the_retry_not_a_refusal(
    stack, payouts_sim: Sim, admin: Api
):
    _not_now_then_sent(stack, payouts_sim, admin, "RATE_LIMIT_REACHED", "30")


def test_a_previous_request_in_progress_on_a_payout_is_a_503_for_the_retry(
    stack, payouts_sim: Sim, admin: Api
):
    _not_now_then_sent(stack, payouts_sim, admin, "PREVIOUS_REQUEST_IN_PROGRESS", "5")


def _not_now_then_sent(stack, payouts_sim: Sim, admin: Api, code: str, retry_after: str) -> None:
    """A 429 or a 409 PREVIOUS_REQUEST_IN_PROGRESS is PayPal saying "later": the worker frees
    the lease and answers 503 with Retry-After, Cloud Tasks delivers again, and the retry
    sends the same request; no admin has to retry a payout PayPal never refused."""
    admin_user = create_user(stack, Role.ADMIN)
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    pid = record(doctor)["id"]
    payouts_sim.fault(mock=code, pathContains="/v1/payments/payouts", bodyContains=pid)
    busy = send(stack, pid)
    problem(busy, 503, "paypal_unavailable")
    assert busy.headers["Retry-After"] == retry_after
    waiting = records.get(pid)
    assert waiting is not None
    assert (waiting["status"], waiting["leaseUntil"]) == ("sending", None)
    assert admin_alerts(admin_user.uid, "payout_refused") == []

    retried = send(stack, pid)  # Cloud Tasks' next delivery
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] in ("sent", "paid")
    wait_for_status(pid, "paid")
    assert {r["requestId"] for r in batches_sent(payouts_sim, pid)} == {f"{pid}-0"}
    assert len(ledger_store.transactions_of(pid)) == 2  # paid once
