"""Admin refunds, clinic-booking payments and the payment lists, against the whole stack."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.payments import ledger, ledger_store
from shared.platform import clients
from shared.platform.context import Role
from tests.payment_support import (
    account_sum,
    assert_balanced,
    book_visit,
    hold_webhooks,
    ledger_of,
    pay,
    release_webhooks,
    sim_capture_of,
    stored_order,
)
from tests.paypal_support import Sim
from tests.support import Api, bearer, create_user, problem
from tests.test_bookings import Clinic, _book, _window


def _refund(admin: Api, order_id: str, value: str | None, reason: str = "Goodwill", **kw):
    body: dict[str, Any] = {"orderId": order_id, "reason": reason}
    if value is not None:
        body["amount"] = {"currency": "USD", "value": value}
    return admin.post("/payments/refunds", json=body, **kw)


def test_admins_refund_part_then_the_rest_never_more_than_captured(stack, sim, admin):
    visit = book_visit(stack, admin, price="20.00")
    order = pay(visit, sim)

    part = _refund(admin, order["id"], "5.00", headers={"Idempotency-Key": "r-1"})
    assert part.status_code == 201, part.text
    assert part.json()["status"] == "completed"
    assert part.json()["amount"] == {"currency": "USD", "value": "5.00"}
    replay = _refund(admin, order["id"], "5.00", headers={"Idempotency-Key": "r-1"})
    assert replay.status_code == 200
    assert replay.json()["id"] == part.json()["id"]
    problem(
        _refund(admin, order["id"], "6.00", headers={"Idempotency-Key": "r-1"}),
        409,
        "idempotency_key_reused",
    )

    too_much = problem(_refund(admin, order["id"], "15.01"), 409, "refund_exceeds_capture")
    assert too_much["refundable"] == {"currency": "USD", "value": "15.00"}
    problem(
        admin.post(
            "/payments/refunds",
            json={
                "orderId": order["id"],
                "reason": "x" * 5,
                "amount": {"currency": "EUR", "value": "1.00"},
            },
        ),
        409,
        "refund_currency_mismatch",
    )
    problem(_refund(admin, order["id"], "0.00"), 400)
    problem(_refund(admin, order["id"], "1.00", reason=""), 400)
    problem(_refund(visit.patient, order["id"], "1.00"), 403)
    problem(_refund(visit.doctor_api, order["id"], "1.00"), 403)
    problem(_refund(admin, "appointment_nope", "1.00"), 404)

    rest = _refund(admin, order["id"], None, reason="Doctor was late")
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount"] == {"currency": "USD", "value": "15.00"}
    problem(_refund(admin, order["id"], None), 409, "nothing_to_refund")

    assert stored_order(order["id"])["status"] == "refunded"
    assert sim_capture_of(sim, order["paypalOrderId"])["status"] == "REFUNDED"
    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment", "refund", "refund"]
    assert_balanced(books)
    for account in ("paypal_clearing", "platform_fees", f"earnings:doctor:{visit.doctor.uid}"):
        assert account_sum(books, account) == 0, account  # pro rata, and exact at the end
    assert visit.appointment_now()["payment"]["status"] == "refunded"


def test_a_debit_of_earnings_not_read_with_owed_guarded_is_refused(stack):
    """Every debit of a provider's earnings is guarded (owed_guarded read in the same batch):
    one recorded without it could commit beside a racing debit against the same balance."""
    provider = ledger.earnings_account("doctor", f"unguarded-{time.time_ns()}")
    batch = clients.db().batch()
    with pytest.raises(RuntimeError, match="owed_guarded"):
        ledger_store.record(
            batch,
            f"payout-{provider}",
            ledger.payout(provider, 100, "USD", 100),
            order_id="unguarded",
            parties={},
        )


def test_an_admin_refund_may_not_take_back_what_the_doctor_was_paid_out(stack, sim, admin):
    visit = book_visit(stack, admin, price="20.00")
    order = pay(visit, sim)
    provider = f"earnings:doctor:{visit.doctor.uid}"
    batch = clients.db().batch()  # as the payout job will book one
    ledger_store.owed_guarded(batch, provider, "USD")  # as the payout job reads it
    ledger_store.record(
        batch,
        f"payout-{order['id']}",
        ledger.payout(provider, 1500, "USD", 1800),
        order_id=f"payout-of-{order['id']}",
        parties={"providerUid": visit.doctor.uid},
    )
    batch.commit()
    problem(_refund(admin, order["id"], None), 409, "provider_balance_insufficient")
    assert _refund(admin, order["id"], "3.00").status_code == 201  # within what is still owed


def test_concurrent_refunds_never_exceed_the_capture(stack, sim, admin):
    visit = book_visit(stack, admin, price="20.00")
    order = pay(visit, sim)
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: _refund(admin, order["id"], "8.00"), range(3)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 201, 409], [a.text for a in answers]
    assert stored_order(order["id"])["refundedMinor"] == 1600
    assert_balanced(ledger_of(order["id"]))


# -- clinic bookings -----------------------------------------------------------------------


def _pay_booking(patient: Api, booking_id: str, sim: Sim) -> dict[str, Any]:
    made = patient.post("/paypal-create", json={"bookingId": booking_id})
    assert made.status_code == 201, made.text
    order = made.json()
    sim.approve({"links": [{"rel": "approve", "href": order["approveLink"]}]})
    captured = patient.post("/paypal-capture", json={"orderId": order["id"]})
    assert captured.status_code == 200, captured.text
    return dict(captured.json())


def test_a_paid_booking_the_clinic_declines_is_refunded_in_full(stack, sim):
    clinic = Clinic(stack)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booking = _book(patient, clinic)
    order = _pay_booking(patient, booking["id"], sim)
    assert order["amount"] == {"currency": "USD", "value": "12.50"}
    shown = patient.get(f"/bookings/{booking['id']}").json()
    assert shown["payment"]["status"] == "captured"
    assert shown["status"] == "requested"  # paid, and still the clinic's to answer

    declined = clinic.act(booking["id"], "decline", json={"reason": "Fully booked that day"})
    assert declined["refund"] == "full"
    assert stored_order(order["id"])["status"] == "refunded"
    books = ledger_of(order["id"])
    assert [t["kind"] for t in books] == ["payment", "refund"]
    assert account_sum(books, f"earnings:clinic:{clinic.uid}") == 0


def test_a_patient_cancelling_a_paid_booking_early_is_refunded(stack, sim):
    clinic = Clinic(stack)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booking = _book(patient, clinic, _window(3))
    order = _pay_booking(patient, booking["id"], sim)
    clinic.act(booking["id"], "accept")
    cancelled = patient.post(f"/bookings/{booking['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["refund"] == "full"
    assert stored_order(order["id"])["status"] == "refunded"
    assert patient.get(f"/bookings/{booking['id']}").json()["payment"]["status"] == "refunded"


def test_a_cancelled_booking_cannot_be_paid_and_a_late_capture_is_refunded(stack, sim):
    clinic = Clinic(stack)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booking = _book(patient, clinic)
    made = patient.post("/paypal-create", json={"bookingId": booking["id"]}).json()
    sim.approve({"links": [{"rel": "approve", "href": made["approveLink"]}]})
    assert patient.post(f"/bookings/{booking['id']}/cancel").status_code == 200

    problem(patient.post("/paypal-create", json={"bookingId": booking["id"]}), 409, "not_payable")
    problem(patient.post("/paypal-capture", json={"orderId": made["id"]}), 409, "not_payable")
    assert ledger_of(made["id"]) == []  # refused before PayPal was asked to charge

    hold_webhooks(sim)
    sim.client().capture_order(made["paypalOrderId"], request_id="late-" + made["id"])
    (sent,) = release_webhooks(sim)  # PayPal's news of a capture made elsewhere
    assert sent["status"] == 200
    assert stored_order(made["id"])["status"] == "refunded"
    assert [t["kind"] for t in ledger_of(made["id"])] == ["payment", "refund"]


def test_an_unanswered_paid_request_declined_by_the_sweep_is_refunded(stack, sim, admin):
    clinic = Clinic(stack)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booking = _book(patient, clinic)
    order = _pay_booking(patient, booking["id"], sim)
    clients.db().collection("bookings").document(booking["id"]).update(
        {"answerBy": datetime.now(UTC) - timedelta(minutes=1)}
    )
    assert admin.post("/bookings/sweep").status_code == 200
    assert stored_order(order["id"])["status"] == "refunded"


# -- lists -------------------------------------------------------------------------------


def test_each_party_sees_only_their_payments_and_admins_see_all(stack, sim, admin):
    first = book_visit(stack, admin, price="20.00")
    order = pay(first, sim)
    second = book_visit(stack, admin, price="30.00")
    other = pay(second, sim)

    mine = first.patient.get("/payments/orders").json()
    assert [o["id"] for o in mine["items"]] == [order["id"]]
    problem(first.patient.get(f"/payments/orders/{other['id']}"), 404)
    problem(
        first.patient.get("/payments/orders", params={"patientUid": second.patient_user.uid}), 403
    )
    problem(first.patient.get("/payments/ledger"), 403)
    problem(first.patient.get("/payments/balance"), 403)

    earned = first.doctor_api.get("/payments/orders", params={"status": "captured"}).json()["items"]
    assert [o["id"] for o in earned] == [order["id"]]
    assert first.doctor_api.get(f"/payments/orders/{order['id']}").status_code == 200
    problem(first.doctor_api.get(f"/payments/orders/{other['id']}"), 404)
    problem(first.doctor_api.get("/payments/ledger", params={"account": "platform_fees"}), 403)

    page = admin.get("/payments/orders", params={"limit": 1}).json()
    assert len(page["items"]) == 1
    assert page["nextCursor"]
    following = admin.get(
        "/payments/orders", params={"limit": 1, "cursor": page["nextCursor"]}
    ).json()
    assert following["items"][0]["id"] != page["items"][0]["id"]
    by_patient = admin.get(
        "/payments/orders", params={"patientUid": second.patient_user.uid}
    ).json()
    assert [o["id"] for o in by_patient["items"]] == [other["id"]]

    captured = admin.get("/payments/orders", params={"status": "captured", "limit": 100}).json()
    assert {order["id"], other["id"]} <= {o["id"] for o in captured["items"]}
    own_captured = first.patient.get("/payments/orders", params={"status": "captured"}).json()
    assert [o["id"] for o in own_captured["items"]] == [order["id"]]
    of_order = admin.get("/payments/ledger", params={"orderId": order["id"]}).json()["items"]
    assert len(of_order) == 5
    assert sum(int(e["amount"]["value"].replace(".", "")) for e in of_order) == 0
    fees = admin.get("/payments/ledger", params={"account": "platform_fees", "limit": 100}).json()
    assert {e["orderId"] for e in fees["items"]} >= {order["id"], other["id"]}
    problem(admin.get("/payments/balance"), 400, "account_required")
    doctor_two = admin.get(
        "/payments/balance", params={"account": f"earnings:doctor:{second.doctor.uid}"}
    )
    assert doctor_two.json()["balances"][0]["owed"] == {"currency": "USD", "value": "27.00"}
    problem(admin.get("/payments/ledger", params={"cursor": "garbage"}), 400)


# -- PayPal saying "not now" versus "no" (shared.integrations.paypal.transient) -------------


def _aged(refund_id: str) -> None:
    """As if the refund had waited past the sweep's grace period."""
    clients.db().collection("refunds").document(refund_id).update(
        {"updatedAt": datetime.now(UTC) - timedelta(minutes=5)}
    )


@pytest.mark.parametrize("code", ["PREVIOUS_REQUEST_IN_PROGRESS", "RATE_LIMIT_REACHED"])
def test_paypal_saying_not_now_leaves_a_cancellations_refund_for_the_sweep(stack, sim, admin, code):
    """PayPal's 409 PREVIOUS_REQUEST_IN_PROGRESS ("wait and try again") or 429 is no refusal:
    the refund stays `sending`, its amount held from the doctor's earnings, and the sweep
    sends the very same request (one PayPal-Request-Id), so PayPal refunds it exactly once."""
    from shared.payments import refunds

    admin_user = create_user(stack, Role.ADMIN)
    visit = book_visit(stack, admin, hours_ahead=72, price="20.00")
    order = pay(visit, sim)
    capture_id = stored_order(order["id"])["captureId"]
    sim.fault(mock=code, pathContains=f"{capture_id}/refund")
    cancelled = visit.patient.post(f"/appointments/{visit.id}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancellation"]["refund"] == "full"
    (refund,) = refunds.for_order(order["id"])
    assert refund["status"] == "sending", refund
    waiting = stored_order(order["id"])
    assert (waiting["status"], waiting["refundingMinor"]) == ("captured", 2000)
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]

    _aged(refund["id"])
    swept = admin.post("/payments/refunds/sweep")
    assert swept.status_code == 200, swept.text
    (refund,) = refunds.for_order(order["id"])
    assert refund["status"] == "completed", refund
    assert stored_order(order["id"])["status"] == "refunded"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "refund"]
    tries = sim.requests_with(refund["id"])
    assert [t["path"] for t in tries] == [f"/v2/payments/captures/{capture_id}/refund"] * 2
    assert sim.client().get_capture(capture_id)["status"] == "REFUNDED"
    assert _refund_alerts(admin_user.uid) == []


@pytest.mark.parametrize("code", ["CAPTURE_FULLY_REFUNDED", "PERMISSION_DENIED"])
def test_a_refund_paypal_refuses_for_good_fails_and_the_admins_are_told(stack, sim, admin, code):
    """A definite refusal (422 business, 403 permission) fails the refund, gives its amount
    back to the order, and tells every admin: the patient is still owed."""
    from shared.payments import refunds

    admin_user = create_user(stack, Role.ADMIN)
    visit = book_visit(stack, admin, price="20.00")
    order = pay(visit, sim)
    capture_id = stored_order(order["id"])["captureId"]
    sim.fault(mock=code, pathContains=f"{capture_id}/refund")
    made = _refund(admin, order["id"], "5.00")
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "failed"
    (refund,) = refunds.for_order(order["id"])
    assert (refund["status"], refund["error"]) == ("failed", code)
    after = stored_order(order["id"])
    assert (after["status"], after.get("refundingMinor", 0)) == ("captured", 0)
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]
    (alert,) = _refund_alerts(admin_user.uid)
    assert alert["data"]["refundId"] == refund["id"]
    assert alert["data"]["orderId"] == order["id"]
    assert code in alert["data"]["message"]


def _refund_alerts(admin_uid: str) -> list[dict[str, Any]]:
    from tests.payout_support import admin_alerts

    return admin_alerts(admin_uid, "refund_failed")


def _pending_refund(stack, sim, admin) -> tuple[dict[str, Any], dict[str, Any]]:
    """A captured 20.00 order and an admin's 5.00 refund of it that PayPal left PENDING."""
    from shared.payments import refunds

    visit = book_visit(stack, admin, price="20.00")
    order = pay(visit, sim)
    sim.control("POST", "/refunds/pending", json={"count": 1})
    made = _refund(admin, order["id"], "5.00")
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "sending"  # not done: nothing booked, nothing told
    (refund,) = refunds.for_order(order["id"])
    assert (refund["status"], refund["paypalStatus"]) == ("sending", "PENDING")
    held = stored_order(order["id"])
    assert (held["status"], held["refundingMinor"]) == ("captured", 500)
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]
    _aged(refund["id"])
    assert admin.post("/payments/refunds/sweep").status_code == 200
    (refund,) = refunds.for_order(order["id"])
    assert refund["status"] == "sending"  # PayPal still has it PENDING: the sweep waits
    return order, refund


def test_a_refund_paypal_leaves_pending_is_booked_only_once_paypal_completes_it(stack, sim, admin):
    from shared.payments import refunds

    hold_webhooks(sim)  # the sweep, not PayPal's webhook, finds it done
    order, refund = _pending_refund(stack, sim, admin)
    sim.control("POST", f"/refunds/{refund['paypalRefundId']}", json={"status": "COMPLETED"})
    assert admin.post("/payments/refunds/sweep").status_code == 200
    (refund,) = refunds.for_order(order["id"])
    assert (refund["status"], refund["paypalStatus"]) == ("completed", "COMPLETED")
    assert stored_order(order["id"])["status"] == "partially_refunded"
    release_webhooks(sim)  # PayPal's REFUNDED event, late: it finds the refund booked
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "refund"]
    assert stored_order(order["id"])["refundingMinor"] == 0


def test_a_pending_refund_paypal_fails_is_failed_and_the_admins_are_told(stack, sim, admin):
    from shared.payments import refunds

    admin_user = create_user(stack, Role.ADMIN)
    order, refund = _pending_refund(stack, sim, admin)
    sim.control("POST", f"/refunds/{refund['paypalRefundId']}", json={"status": "FAILED"})
    assert admin.post("/payments/refunds/sweep").status_code == 200
    (refund,) = refunds.for_order(order["id"])
    assert (refund["status"], refund["error"]) == ("failed", "failed")
    after = stored_order(order["id"])
    assert (after["status"], after["refundingMinor"]) == ("captured", 0)
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]
    (alert,) = _refund_alerts(admin_user.uid)
    assert alert["data"]["refundId"] == refund["id"]


def test_an_admins_refund_paypal_is_down_for_is_made_and_sent_by_the_sweep(stack, sim, admin):
    """A failing dependency answers 503 only when it changed nothing: this refund is queued
    and its amount held before PayPal is asked, so PayPal down answers it 201 `sending` (a
    503 would invite the admin to ask again, and a second refund); the sweep sends it, once."""
    from shared.payments import refunds

    visit = book_visit(stack, admin, price="20.00")
    order = pay(visit, sim)
    sim.fault(mock="INTERNAL_SERVER_ERROR", pathContains="/refund", count=3)
    made = _refund(admin, order["id"], "5.00")
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "sending"
    assert stored_order(order["id"])["refundingMinor"] == 500
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]

    _aged(made.json()["id"])
    assert admin.post("/payments/refunds/sweep").status_code == 200
    (refund,) = refunds.for_order(order["id"])
    assert refund["status"] == "completed", refund
    assert stored_order(order["id"])["refundedMinor"] == 500
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "refund"]


def test_paypals_refunded_event_for_a_refund_still_pending_books_nothing(stack, sim, admin):
    """PayPal's PAYMENT.CAPTURE.REFUNDED names the refund as it stands: one still PENDING is
    noted, not booked (the patient has not got the money); the sweep books it once COMPLETED."""
    from shared.payments import refunds, webhooks
    from shared.workflows.payment_subjects import SUBJECTS

    hold_webhooks(sim)
    order, refund = _pending_refund(stack, sim, admin)
    event = {
        "event_type": "PAYMENT.CAPTURE.REFUNDED",
        "resource": {
            "id": refund["paypalRefundId"],
            "status": "PENDING",
            "custom_id": refund["id"],
            "amount": {"currency_code": "USD", "value": "5.00"},
        },
    }
    assert webhooks.apply(event, subjects=SUBJECTS) == "refund_pending"
    (still,) = refunds.for_order(order["id"])
    assert still["status"] == "sending"
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment"]
    sim.control("POST", f"/refunds/{refund['paypalRefundId']}", json={"status": "COMPLETED"})
    _aged(refund["id"])
    assert admin.post("/payments/refunds/sweep").status_code == 200
    assert [t["kind"] for t in ledger_of(order["id"])] == ["payment", "refund"]
    release_webhooks(sim)


def test_a_refund_waiting_a_day_for_paypal_is_alerted_at_each_sweep(stack, sim, admin, caplog):
    """PayPal answering "not now" for good (an outage, credentials it refuses) leaves a
    refund `sending`: from a day on, each sweep logs the ERROR line monitoring alerts on."""
    import logging

    from shared.payments import refund_sending, refunds

    visit = book_visit(stack, admin, price="20.00")
    order = pay(visit, sim)
    sim.fault(mock="INTERNAL_SERVER_ERROR", pathContains="/refund", count=9)
    made = _refund(admin, order["id"], "5.00").json()
    assert made["status"] == "sending"

    def swept_lines() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="alodoktor.refunds"):
            assert refund_sending.sweep(limit=50, older_than=timedelta(0))[1] >= 1
        return [r.getMessage() for r in caplog.records if r.name == "alodoktor.refunds"]

    assert not any("has waited for PayPal" in line for line in swept_lines())  # an hour is fine
    clients.db().collection("refunds").document(made["id"]).update(
        {"createdAt": datetime.now(UTC) - refund_sending.STUCK_AFTER - timedelta(minutes=1)}
    )
    alert = f"refund {made['id']} has waited for PayPal since"
    assert any(line.startswith(alert) for line in swept_lines())
    assert refunds.get(made["id"])["status"] == "sending"  # still tried, never given up
