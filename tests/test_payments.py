"""Paying for appointments through the functions, the PayPal simulator and the emulators.

Every PayPal call made during a test is held to PayPal's OpenAPI contract by the `sim`
fixture: a request that breaks it fails the test.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud.firestore import FieldFilter

from shared.platform import clients
from shared.platform.context import Role
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
    sim_capture_of,
    stored_order,
)
from tests.paypal_support import Sim
from tests.support import bearer, create_user, eventually, problem


def _approve(sim: Sim, order: dict[str, Any]) -> None:
    sim.approve({"links": [{"rel": "approve", "href": order["approveLink"]}]})


def _approved_order(visit: Any, sim: Sim) -> dict[str, Any]:
    """The visit's order, approved by the buyer in PayPal's window."""
    order: dict[str, Any] = visit.order().json()
    _approve(sim, order)
    return order


def _payments(tx: list[dict[str, Any]], kind: str = "payment") -> list[dict[str, Any]]:
    return [t for t in tx if t["kind"] == kind]


def test_a_patient_pays_and_the_appointment_is_confirmed_with_balanced_books(stack, sim, admin):
    visit = book_visit(stack, admin, price="20.00")
    made = visit.order()
    assert made.status_code == 201, made.text
    order = made.json()
    assert order["amount"] == {"currency": "USD", "value": "20.00"}
    assert order["status"] == "created"
    assert order["approveLink"].startswith(sim.url)

    again = visit.order()  # a second click, or a retry after a lost answer
    assert again.status_code == 200, again.text
    assert again.json()["paypalOrderId"] == order["paypalOrderId"]
    creates = sim.requests_with(order["id"])
    assert [r["path"] for r in creates] == ["/v2/checkout/orders"]

    _approve(sim, order)
    captured = visit.capture(order["id"])
    assert captured.status_code == 200, captured.text
    body = captured.json()
    assert body["status"] == "captured"
    assert body["captureId"]
    assert visit.appointment_now()["status"] == "confirmed"

    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment"]
    assert_balanced(books)
    doctor_account = f"earnings:doctor:{visit.doctor.uid}"
    assert account_sum(books, doctor_account) == -1800  # 20.00 less the 10 % platform fee
    assert account_sum(books, "platform_fees") == -200
    assert account_sum(books, "paypal_clearing") == 2000

    balance = visit.doctor_api.get("/payments/balance")
    assert balance.status_code == 200, balance.text
    assert balance.json()["balances"] == [
        {
            "currency": "USD",
            "balance": {"currency": "USD", "value": "-18.00"},
            "owed": {"currency": "USD", "value": "18.00"},
        }
    ]
    mine = visit.patient.get("/payments/orders").json()["items"]
    assert [o["id"] for o in mine] == [order["id"]]
    earned = visit.doctor_api.get("/payments/ledger").json()["items"]
    assert [(e["kind"], e["amount"]["value"]) for e in earned] == [("payment", "-18.00")]

    # Capturing again answers the same capture; PayPal's own webhook for it changes nothing.
    replay = visit.capture(order["id"])
    assert replay.status_code == 200
    assert replay.json()["captureId"] == body["captureId"]
    eventually(
        lambda: [
            d["status"] for d in deliveries(sim, "PAYMENT.CAPTURE.COMPLETED", body["captureId"])
        ],
        lambda got: got == [200],
        "PayPal's COMPLETED webhook",
    )
    assert len(ledger_of(order["id"])) == 1


def test_the_amount_is_the_booked_price_never_the_clients(stack, sim, admin):
    visit = book_visit(stack, admin, price="20.00")
    sneaky = visit.patient.post(
        "/paypal-create",
        json={"appointmentId": visit.id, "amount": {"currency": "USD", "value": "0.01"}},
    )
    problem(sneaky, 400, "validation_failed")
    # The doctor raising the price later does not change what this appointment costs.
    visit.doctor_api.request(
        "PATCH", "/users/me", json={"consultationPrice": {"currency": "USD", "value": "99.00"}}
    )
    made = visit.order()
    assert made.status_code == 201, made.text
    assert made.json()["amount"] == {"currency": "USD", "value": "20.00"}
    (create,) = [
        r
        for r in sim.control("GET", "/requests")["requests"]
        if r["requestId"] == made.json()["id"]
    ]
    assert create["path"] == "/v2/checkout/orders"


def test_strangers_cannot_pay_for_or_capture_someone_elses_appointment(stack, sim, admin):
    visit = book_visit(stack, admin)
    stranger = bearer(stack, create_user(stack, Role.PATIENT))
    problem(stranger.post("/paypal-create", json={"appointmentId": visit.id}), 404)
    order = visit.order().json()
    problem(stranger.post("/paypal-capture", json={"orderId": order["id"]}), 404)
    problem(stranger.post("/paypal-capture", json={"paypalOrderId": order["paypalOrderId"]}), 404)
    problem(stranger.get(f"/payments/orders/{order['id']}"), 404)
    problem(visit.doctor_api.post("/paypal-create", json={"appointmentId": visit.id}), 403)
    problem(admin.post("/paypal-capture", json={"orderId": order["id"]}), 403)
    problem(visit.patient.post("/paypal-create", json={}), 400)
    problem(visit.patient.post("/paypal-create", json={"appointmentId": "a/b"}), 400)
    problem(visit.patient.post("/paypal-create", json={"appointmentId": "nope"}), 404)
    problem(visit.patient.post("/paypal-capture", json={"orderId": "nope"}), 404)


def test_capturing_before_the_buyer_approved_is_a_conflict(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = visit.order().json()
    body = problem(visit.capture(order["id"]), 409, "order_not_approved")
    assert body["approveLink"] == order["approveLink"]
    assert stored_order(order["id"])["status"] == "created"
    assert ledger_of(order["id"]) == []


def test_a_capture_tried_too_early_does_not_stop_the_order_being_paid(stack, sim, admin):
    # PayPal documents retrying one PayPal-Request-Id only after timeouts and 5xx; the
    # simulator replays a refusal for a reused id, so a client that reused it after the early
    # attempt would be refused forever.
    visit = book_visit(stack, admin)
    order = visit.order().json()
    problem(visit.capture(order["id"]), 409, "order_not_approved")
    problem(visit.capture(order["id"]), 409, "order_not_approved")  # still not approved
    _approve(sim, order)  # the buyer approves
    captured = visit.capture(order["id"])
    assert captured.status_code == 200, captured.text
    assert captured.json()["status"] == "captured"
    assert visit.appointment_now()["status"] == "confirmed"
    assert_balanced(ledger_of(order["id"]))


def test_a_declined_instrument_asks_for_another_funding_source(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _approved_order(visit, sim)
    sim.fault(mock="INSTRUMENT_DECLINED", pathContains="/capture")
    body = problem(visit.capture(order["id"]), 422, "instrument_declined")
    assert body["action"] == "choose_other_funding_source"
    assert body["approveLink"] == order["approveLink"]
    assert visit.appointment_now()["status"] == "pending_payment"
    assert ledger_of(order["id"]) == []

    captured = visit.capture(order["id"])  # the buyer chose another source and came back
    assert captured.status_code == 200, captured.text
    assert visit.appointment_now()["status"] == "confirmed"


def test_paypal_failing_answers_503_and_records_nothing(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _approved_order(visit, sim)
    sim.fault(mock="INTERNAL_SERVER_ERROR", pathContains="/capture", count=3)
    problem(visit.capture(order["id"]), 503, "paypal_unavailable")
    tried = [
        r for r in sim.control("GET", "/requests")["requests"] if r["path"].endswith("/capture")
    ]
    tried = [r for r in tried if r["requestId"] and r["requestId"].startswith(order["id"])]
    assert len(tried) == 3
    assert len({r["requestId"] for r in tried}) == 1
    assert stored_order(order["id"])["status"] == "created"
    assert ledger_of(order["id"]) == []
    assert visit.appointment_now()["status"] == "pending_payment"

    assert visit.capture(order["id"]).status_code == 200  # PayPal is back


def test_a_lost_capture_answer_is_retried_with_the_same_request_id_and_captures_once(
    stack, sim, admin
):
    visit = book_visit(stack, admin)
    order = _approved_order(visit, sim)
    sim.fault(delay=4, pathContains="/capture")  # PayPal captures, its answer arrives too late
    captured = visit.capture(order["id"])
    assert captured.status_code == 200, captured.text
    tried = [
        r
        for r in sim.control("GET", "/requests")["requests"]
        if r["path"].endswith("/capture") and (r["requestId"] or "").startswith(order["id"])
    ]
    assert len(tried) == 2
    assert len({r["requestId"] for r in tried}) == 1
    assert sim_capture_of(sim, order["paypalOrderId"])["id"] == captured.json()["captureId"]
    assert len(_payments(ledger_of(order["id"]))) == 1


def test_concurrent_captures_of_one_order_book_one_payment(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _approved_order(visit, sim)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: visit.capture(order["id"]), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert len({a.json()["captureId"] for a in answers}) == 1
    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment"]
    assert_balanced(books)
    entries = (
        clients.db()
        .collection("ledgerEntries")
        .where(filter=FieldFilter("orderId", "==", order["id"]))
        .get()
    )
    assert len(entries) == len(books[0]["postings"])
    assert visit.appointment_now()["status"] == "confirmed"


def test_an_order_captured_elsewhere_is_reconciled_not_refused(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _approved_order(visit, sim)
    hold_webhooks(sim)  # PayPal's webhook is late: only the capture call can find out
    elsewhere = sim.client().capture_order(order["paypalOrderId"], request_id="lost-" + order["id"])
    captured = visit.capture(order["id"])
    assert captured.status_code == 200, captured.text
    assert (
        captured.json()["captureId"]
        == elsewhere["purchase_units"][0]["payments"]["captures"][0]["id"]
    )
    ours = [
        r["path"]
        for r in sim.control("GET", "/requests")["requests"]
        if order["paypalOrderId"] in r["path"]
    ]
    assert ours[-2:] == [
        f"/v2/checkout/orders/{order['paypalOrderId']}/capture",  # ORDER_ALREADY_CAPTURED
        f"/v2/checkout/orders/{order['paypalOrderId']}",  # read, to reconcile
    ]
    assert visit.appointment_now()["status"] == "confirmed"
    release_webhooks(sim)
    assert len(ledger_of(order["id"])) == 1


def _captured_at_paypal_only(visit, sim: Sim) -> dict[str, Any]:
    """An approved order PayPal captured without our hearing of it yet (webhooks held)."""
    order = _approved_order(visit, sim)
    hold_webhooks(sim)
    sim.client().capture_order(order["paypalOrderId"], request_id="elsewhere-" + order["id"])
    return order


def test_the_completed_webhook_settles_an_order_whose_capture_answer_never_came(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _captured_at_paypal_only(visit, sim)
    assert stored_order(order["id"])["status"] == "created"
    (sent,) = release_webhooks(sim)
    assert sent["status"] == 200
    assert stored_order(order["id"])["status"] == "captured"
    assert visit.appointment_now()["status"] == "confirmed"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]


def _expire_hold(visit) -> None:
    clients.db().collection("appointments").document(visit.id).update(
        {"holdExpiresAt": datetime.now(UTC) - timedelta(minutes=1)}
    )


def test_an_expired_hold_cannot_be_paid_and_nothing_is_charged(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _approved_order(visit, sim)
    _expire_hold(visit)
    problem(visit.order(), 409, "hold_expired")
    problem(visit.capture(order["id"]), 409, "hold_expired")
    assert sim.client().get_order(order["paypalOrderId"])["status"] == "APPROVED"  # not charged
    assert ledger_of(order["id"]) == []


def test_a_capture_that_lands_after_the_hold_ran_out_is_refunded(stack, sim, admin):
    visit = book_visit(stack, admin)
    # PayPal captured (say the page did, as the hold was running out) and tells us late.
    order = _captured_at_paypal_only(visit, sim)
    _expire_hold(visit)
    (sent,) = release_webhooks(sim)
    assert sent["status"] == 200

    got = visit.patient.get(f"/payments/orders/{order['id']}").json()
    assert got["status"] == "refunded"
    assert [(r["cause"], r["status"], r["amount"]["value"]) for r in got["refunds"]] == [
        ("unpayable", "completed", "20.00")
    ]
    assert sim_capture_of(sim, order["paypalOrderId"])["status"] == "REFUNDED"
    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment", "refund"]
    assert_balanced(books)
    for account in ("paypal_clearing", "platform_fees", f"earnings:doctor:{visit.doctor.uid}"):
        assert account_sum(books, account) == 0, account
    assert visit.appointment_now()["status"] == "expired"


def _pending_capture(visit, sim: Sim) -> dict[str, Any]:
    """Pay with a funding source PayPal holds for days (an eCheck): 202 capture_pending."""
    order = _approved_order(visit, sim)
    sim.control("POST", "/captures/pending", json={"count": 1})
    held = visit.capture(order["id"])
    assert held.status_code == 202, held.text
    body: dict[str, Any] = held.json()
    assert body["status"] == "capture_pending"
    assert visit.appointment_now()["status"] == "pending_payment"
    assert ledger_of(order["id"]) == []  # no money has moved yet
    return body


def test_a_pending_capture_confirms_when_paypal_completes_it(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _pending_capture(visit, sim)
    paypal_event(sim, "PAYMENT.CAPTURE.COMPLETED", order["captureId"])
    assert stored_order(order["id"])["status"] == "captured"
    assert visit.appointment_now()["status"] == "confirmed"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]


def test_after_paypal_denied_a_pending_capture_the_patient_can_pay_again(stack, sim, admin):
    visit = book_visit(stack, admin)
    first = _pending_capture(visit, sim)
    paypal_event(sim, "PAYMENT.CAPTURE.DENIED", first["captureId"])
    assert stored_order(first["id"])["status"] == "denied"
    assert ledger_of(first["id"]) == []
    assert visit.appointment_now()["status"] == "pending_payment"
    problem(visit.capture(first["id"]), 409, "payment_denied")  # not a 200: nothing was paid

    again = visit.order()
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first["id"] + "-2"
    assert again.json()["paypalOrderId"] != first["paypalOrderId"]
    _approve(sim, again.json())
    assert visit.capture(again.json()["id"]).status_code == 200
    assert visit.appointment_now()["status"] == "confirmed"
    problem(visit.order(), 409, "already_paid")


def _hours_ahead_visit(stack, admin, sim, hours: float):
    visit = book_visit(stack, admin, hours_ahead=hours)
    order = pay(visit, sim)
    return visit, order


def test_a_patient_cancelling_a_day_ahead_gets_everything_back(stack, sim, admin):
    visit, order = _hours_ahead_visit(stack, admin, sim, 72)
    cancelled = visit.patient.post(f"/appointments/{visit.id}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancellation"]["refund"] == "full"
    got = visit.patient.get(f"/payments/orders/{order['id']}").json()
    assert got["status"] == "refunded"
    assert got["refunded"] == {"currency": "USD", "value": "20.00"}
    assert [(r["cause"], r["status"]) for r in got["refunds"]] == [("cancellation", "completed")]
    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment", "refund"]
    assert account_sum(books, f"earnings:doctor:{visit.doctor.uid}") == 0
    assert visit.appointment_now()["payment"]["status"] == "refunded"


def test_a_patient_cancelling_late_gets_nothing_back(stack, sim, admin):
    visit, order = _hours_ahead_visit(stack, admin, sim, 6)  # after the cut-off for refunds
    cancelled = visit.patient.post(f"/appointments/{visit.id}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancellation"]["refund"] == "none"
    assert stored_order(order["id"])["status"] == "captured"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]


def test_a_doctor_cancelling_late_refunds_in_full(stack, sim, admin):
    visit, order = _hours_ahead_visit(stack, admin, sim, 6)
    cancelled = visit.doctor_api.post(
        f"/appointments/{visit.id}/cancel", json={"reason": "Called away to surgery"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancellation"]["refund"] == "full"
    assert stored_order(order["id"])["status"] == "refunded"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "refund"]


def test_paypal_down_during_a_cancellation_leaves_the_refund_for_the_sweep(stack, sim, admin):
    visit, order = _hours_ahead_visit(stack, admin, sim, 72)
    sim.fault(mock="INTERNAL_SERVER_ERROR", pathContains="/refund", count=3)
    cancelled = visit.patient.post(f"/appointments/{visit.id}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text  # the cancellation itself stands
    (refund,) = visit.patient.get(f"/payments/orders/{order['id']}").json()["refunds"]
    assert refund["status"] == "sending"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]

    clients.db().collection("refunds").document(refund["id"]).update(
        {"updatedAt": datetime.now(UTC) - timedelta(minutes=5)}
    )
    swept = admin.post("/payments/refunds/sweep")
    assert swept.status_code == 200, swept.text
    assert swept.json()["waiting"] == 0
    assert swept.json()["done"] >= 1
    assert stored_order(order["id"])["status"] == "refunded"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "refund"]


def test_money_moves_leave_an_audit_trail(stack, sim, admin):
    from shared.audit import service as audit

    visit = book_visit(stack, admin)
    order = pay(visit, sim)

    def trail(resource: str) -> list[tuple[str, str]]:
        rows, _ = audit.list_entries(resource=resource, limit=20, cursor=None)
        return sorted((data["action"], data["actor"]) for _, data in rows)

    eventually(
        lambda: trail(f"orders/{order['id']}"),
        lambda got: ("create", visit.patient_user.uid) in got and ("update", "system") in got,
        "the order's audit entries",
    )
    eventually(
        lambda: trail(f"ledger/payment-{order['id']}"),
        lambda got: got == [("create", "system")],
        "the ledger transaction's audit entry",
    )


def test_paypal_refusing_the_payer_is_a_clear_answer_with_nothing_recorded(stack, sim, admin):
    visit = book_visit(stack, admin)
    order = _approved_order(visit, sim)
    sim.fault(mock="PAYER_ACCOUNT_LOCKED_OR_CLOSED", pathContains="/capture")
    body = problem(visit.capture(order["id"]), 422, "paypal_refused")
    assert body["paypalIssue"] == "PAYER_ACCOUNT_LOCKED_OR_CLOSED"
    assert stored_order(order["id"])["status"] == "created"
    assert ledger_of(order["id"]) == []
    assert visit.appointment_now()["status"] == "pending_payment"


def test_paypal_refusing_to_make_the_order_is_a_documented_answer_with_nothing_recorded(
    stack, sim, admin
):
    """The answer is one the route's OpenAPI document lists (the test client checks each)."""
    visit = book_visit(stack, admin)
    sim.fault(mock="PAYEE_ACCOUNT_RESTRICTED", pathContains="/v2/checkout/orders")
    body = problem(visit.order(), 422, "paypal_refused")
    assert body["paypalIssue"] == "PAYEE_ACCOUNT_RESTRICTED"
    assert visit.appointment_now()["status"] == "pending_payment"
    made = visit.order()  # PayPal takes it now: the order is made, as if asked for the first time
    assert made.status_code == 201, made.text


def test_the_payer_is_told_of_the_payment_and_of_the_refund(stack, sim, admin):
    visit, _ = _hours_ahead_visit(stack, admin, sim, 72)
    assert visit.patient.post(f"/appointments/{visit.id}/cancel", json={}).status_code == 200
    queued = (
        clients.db()
        .collection("notifications")
        .where(filter=FieldFilter("uid", "==", visit.patient_user.uid))
        .get()
    )
    money = [n for n in queued if n.get("kind") in ("payment_received", "refund_completed")]
    notices = sorted((n.get("kind"), n.get("data")["amount"]) for n in money)
    assert notices == [("payment_received", "20.00"), ("refund_completed", "20.00")]
    assert {n.get("to") for n in money} == {visit.patient_user.email}
    # The visit's reminder, queued with the confirmation, went with the cancellation.
    reminders = [n for n in queued if n.get("kind") == "appointment_reminder"]
    assert all((n.to_dict() or {}).get("cancelled") is True for n in reminders), reminders


def test_an_order_paypal_let_lapse_is_replaced_by_a_new_one(stack, sim, admin):
    visit = book_visit(stack, admin)
    first = visit.order().json()
    sim.control("POST", f"/orders/{first['paypalOrderId']}/expire")  # left unapproved too long
    problem(visit.capture(first["id"]), 409, "order_expired")
    assert stored_order(first["id"])["status"] == "abandoned"
    # Asked again, it answers as it did: nothing was paid (not a 200 of an abandoned order).
    problem(visit.capture(first["id"]), 409, "order_expired")
    again = visit.order()
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first["id"] + "-2"
    _approve(sim, again.json())
    assert visit.capture(again.json()["id"]).status_code == 200
    assert visit.appointment_now()["status"] == "confirmed"
