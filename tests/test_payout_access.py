"""Who may call what: the worker only with Cloud Tasks' OIDC token, the scheduled routes with
Cloud Scheduler's (or as an admin); a provider's payout address, its code, its cooling-off
and an admin's hold; a chargeback racing a payout; and the daily check."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dev import stack as local
from shared.payments import ledger, ledger_store
from shared.payouts import records, rules, scheduling
from shared.platform import clients, store
from shared.platform.context import Role, Service
from shared.workflows.payout_deliveries import DELIVERIES
from tests.payment_support import assert_balanced, stored_order
from tests.payout_support import (
    Provider,
    address_code,
    admin_alerts,
    cooled_off,
    delivered_long_ago,
    notices_to,
    provider_with_earnings,
    record,
    send,
    set_address,
    wait_for_status,
    worker,
)
from tests.paypal_support import Sim
from tests.support import (
    Api,
    bearer,
    create_user,
    emulator_claims,
    eventually,
    google_token,
    problem,
    service_api,
    unsigned_token,
)

pytest_plugins = ("tests.payout_fixtures",)  # the `payouts_sim` fixture


def test_only_cloud_tasks_may_call_the_worker_and_only_with_a_good_token(stack, admin: Api):
    url = f"{stack.gateway_url}/payouts"
    body = {"payoutId": "2030-W01_doctor_nobody_USD"}

    def call(token: str | None) -> Api:
        return Api(stack.gateway_url, bearer=token)

    def token(**kw: object) -> str:
        args = {"email": local.TASKS_SERVICE_ACCOUNT, "audience": url, **kw}
        return google_token(stack, **args)  # type: ignore[arg-type]

    # The right one: through to the handler (which finds no such payout).
    problem(worker(stack).post("/payouts/tasks/send", json=body), 404, "payout_not_found")
    problem(worker(stack).post("/payouts/tasks/send", json={"payoutId": "a/b"}), 400)
    problem(worker(stack).post("/payouts/tasks/send", json={}), 400)
    # Missing, for another function, from an unknown account, expired, unsigned: 401.
    problem(call(None).post("/payouts/tasks/send", json=body), 401)
    wrong_audience = token(audience=f"{stack.gateway_url}/payments")
    problem(call(wrong_audience).post("/payouts/tasks/send", json=body), 401)
    stranger = token(email="someone@evil.iam.gserviceaccount.com")
    problem(call(stranger).post("/payouts/tasks/send", json=body), 401)
    expired = token(expires_in=-3600)
    problem(call(expired).post("/payouts/tasks/send", json=body), 401)
    forged = unsigned_token(
        {
            "iss": "https://accounts.google.com",
            "aud": url,
            "email": local.TASKS_SERVICE_ACCOUNT,
            "email_verified": True,
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
        }
    )
    problem(call(forged).post("/payouts/tasks/send", json=body), 401)
    not_google = unsigned_token(emulator_claims(stack.project_id, "someone"))
    problem(call(not_google).post("/payouts/tasks/send", json=body), 401)
    # Cloud Scheduler, an admin, a doctor: known callers, but not this route's.
    scheduler = service_api(stack, Service.SCHEDULER, "payouts")
    problem(scheduler.post("/payouts/tasks/send", json=body), 403)
    problem(admin.post("/payouts/tasks/send", json=body), 403)
    doctor = bearer(stack, create_user(stack, Role.DOCTOR))
    problem(doctor.post("/payouts/tasks/send", json=body), 403)

    # The scheduled routes: Cloud Scheduler and admins, never Cloud Tasks or a provider.
    for path in ("/payouts/sweep", "/payouts/check"):
        assert scheduler.post(path).status_code == 200, path
        problem(worker(stack).post(path), 403)
        problem(doctor.post(path), 403)
        problem(call(None).post(path), 401)
        problem(call(wrong_audience).post(path), 401)


def test_a_provider_sets_and_verifies_a_payout_address_which_then_cools_off(
    stack, payouts_sim: Sim, admin: Api
):
    doctor = provider_with_earnings(stack, admin, payouts_sim, address=False)
    api, uid = doctor.api, doctor.uid
    assert api.get("/payouts/address").json()["blockedBy"] == "no_address"
    for bad in (
        {"recipientType": "EMAIL", "receiver": "not-an-address"},
        {"recipientType": "PAYPAL_ID", "receiver": "lowercase12345"},
        {"recipientType": "PHONE", "receiver": "+15551234567"},
        {"recipientType": "EMAIL", "receiver": "a@b.example", "extra": 1},
    ):
        problem(api.request("PUT", "/payouts/address", json=bad), 400)
    problem(api.post("/payouts/address/verify", json={"code": "123456"}), 409)

    asked = api.request(
        "PUT", "/payouts/address", json={"recipientType": "EMAIL", "receiver": "New@Doc.example"}
    )
    assert asked.status_code == 200, asked.text
    assert asked.json()["pending"]["receiver"] == "new@doc.example"
    assert asked.json()["address"] is None
    [sent] = notices_to(uid, "payout_address_code")
    assert sent["to"] == "new@doc.example"  # the code proves the mailbox is theirs
    code = address_code(uid)
    wrong = "000000" if code != "000000" else "111111"
    problem(api.post("/payouts/address/verify", json={"code": wrong}), 400, "code_incorrect")
    problem(api.post("/payouts/address/verify", json={"code": "12"}), 400)

    verified = api.post("/payouts/address/verify", json={"code": code})
    assert verified.status_code == 200, verified.text
    shown = verified.json()
    assert shown["address"] == {"recipientType": "EMAIL", "receiver": "new@doc.example"}
    assert shown["blockedBy"] == "cooling_off"
    until = datetime.fromisoformat(shown["coolingOffUntil"].replace("Z", "+00:00"))
    assert timedelta(hours=71) < until - datetime.now(UTC) <= timedelta(hours=72)
    [told] = notices_to(uid, "payout_address_changed")
    assert told["to"] == doctor.user.email  # the account's own e-mail hears of it
    problem(api.post("/payouts/address/verify", json={"code": code}), 409)  # used up

    # Five wrong codes and the request is void.
    api.request(
        "PUT", "/payouts/address", json={"recipientType": "EMAIL", "receiver": "x@y.example"}
    )
    for _ in range(rules.MAX_CODE_TRIES):
        problem(api.post("/payouts/address/verify", json={"code": wrong}), 400)
    problem(api.post("/payouts/address/verify", json={"code": address_code(uid)}), 409)
    assert api.get("/payouts/address").json()["address"]["receiver"] == "new@doc.example"

    # Cooling off: this week's run leaves the provider's earnings where they are.
    ran = admin.post("/payouts/run")
    assert ran.status_code == 200, ran.text
    assert ran.json()["skipped"].get("cooling_off", 0) >= 1
    assert doctor.payout() is None
    assert doctor.owed() == 1800

    patient_user = create_user(stack, Role.PATIENT)
    patient = bearer(stack, patient_user)
    problem(patient.get("/payouts/address"), 403)
    unapproved = bearer(stack, create_user(stack, Role.DOCTOR, approved=False))
    problem(
        unapproved.request(
            "PUT", "/payouts/address", json={"recipientType": "EMAIL", "receiver": "a@b.example"}
        ),
        403,
        "not_approved",
    )
    shown_to_admin = admin.get(f"/payouts/providers/{uid}")
    assert shown_to_admin.status_code == 200, shown_to_admin.text
    assert shown_to_admin.json()["blockedBy"] == "cooling_off"
    problem(admin.get(f"/payouts/providers/{patient_user.uid}"), 404)
    problem(api.get(f"/payouts/providers/{uid}"), 403)


def test_a_payout_recorded_before_an_address_change_waits_out_the_cooling_off(
    stack, payouts_sim: Sim, admin: Api
):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    payout = record(doctor)
    set_address(doctor.api, doctor.uid, "changed@doc.example")  # then a (new) cooling-off
    held = send(stack, payout["id"])
    assert held.status_code == 200, held.text
    assert held.json()["status"] == "held"
    assert held.json()["holdReason"] == "cooling_off"
    cooled_off(doctor.uid)
    assert admin.post("/payouts/run").status_code == 200  # releases ended holds
    paid = wait_for_status(payout["id"], "paid")
    assert paid["receiver"] == "changed@doc.example"


def test_an_admin_holds_a_provider_and_releases_them(stack, payouts_sim: Sim, admin: Api):
    doctor = provider_with_earnings(stack, admin, payouts_sim)
    held = admin.post(f"/payouts/providers/{doctor.uid}/hold", json={"reason": "a complaint"})
    assert held.status_code == 200, held.text
    assert held.json()["blockedBy"] == "held_by_admin"
    ran = admin.post("/payouts/run").json()
    assert ran["skipped"].get("held_by_admin", 0) >= 1
    assert doctor.payout() is None
    assert admin.post(f"/payouts/providers/{doctor.uid}/release").status_code == 200
    assert admin.post("/payouts/run").status_code == 200
    wait_for_status(doctor.payout_id(), "paid")
    problem(admin.post("/payouts/providers/nobody-at-all/hold", json={"reason": "x" * 5}), 404)
    problem(doctor.api.post(f"/payouts/providers/{doctor.uid}/release"), 403)


def _paid_once_then_owed_twice(stack: Any, admin: Api, sim: Sim) -> Provider:
    """A doctor paid out for one visit (D), with two more (A, B) now due: owed 3600."""
    doctor = provider_with_earnings(stack, admin, sim, visits=3)
    d, a, b = doctor.orders
    for order in (a, b):  # not yet delivered: only D is paid out now
        store.update(
            clients.db().collection("appointments").document(order["subjectId"]),
            {"status": "confirmed"},
            by="test",
        )
    first = record(doctor)
    assert [line["orderId"] for line in first["lines"]] == [d["id"]]
    assert send(stack, first["id"]).status_code == 200
    wait_for_status(first["id"], "paid")
    for order in (a, b):
        delivered_long_ago(order["subjectId"])
    assert doctor.owed() == 3600
    return doctor


def _take_back(doctor: Provider, debit: str, sim: Sim, admin: Api) -> int:
    """D charged back (PayPal reverses it) or refunded (an admin's): the answer's status."""
    order = stored_order(doctor.orders[0]["id"])
    if debit == "chargeback":
        sent = sim.control(
            "POST",
            "/webhooks",
            json={"eventType": "PAYMENT.CAPTURE.REVERSED", "captureId": order["captureId"]},
        )
        return int(sent["status"])
    refund = admin.post(
        "/payments/refunds", json={"orderId": order["id"], "reason": "racing a payout"}
    )
    return refund.status_code


@pytest.mark.parametrize("debit", ["chargeback", "refund"])
def test_a_refund_or_chargeback_racing_a_payout_never_takes_earnings_below_zero(
    stack, payouts_sim: Sim, admin: Api, debit: str
):
    """Each provider was paid out for one visit (D); two more (A, B) are now due. D is
    charged back (PayPal reverses it) or refunded (an admin's) while next week's payout of A
    and B is recorded: the two debit the same earnings through different orders, so only the
    provider's guard orders them. Whichever commits first, the other sees it."""
    providers = [_paid_once_then_owed_twice(stack, admin, payouts_sim) for _ in range(3)]
    next_week = rules.period_of(datetime.now(UTC) + timedelta(days=7))

    def payout_of(doctor: Provider) -> tuple[dict | None, str]:
        return scheduling.record(
            "doctor",
            doctor.uid,
            "USD",
            period=next_week,
            now=datetime.now(UTC),
            deliveries=DELIVERIES,
        )

    def take_back(doctor: Provider) -> int:
        return _take_back(doctor, debit, payouts_sim, admin)

    with ThreadPoolExecutor(max_workers=6) as pool:
        payouts = [pool.submit(payout_of, p) for p in providers]
        debits = [pool.submit(take_back, p) for p in providers]
        results = [f.result() for f in payouts]
        answers = [d.result() for d in debits]
    # A chargeback cannot be refused; an admin's refund of money already paid out is refused
    # once the provider's earnings no longer hold it (409 provider_balance_insufficient).
    assert all(a in ((200,) if debit == "chargeback" else (201, 409)) for a in answers), answers

    for doctor, (payout, outcome) in zip(providers, results, strict=True):
        assert outcome == "recorded", outcome
        assert payout is not None
        assert doctor.owed() >= 0
        books = ledger_store.transactions_of(doctor.orders[0]["id"])
        given_back = [t for t in books if t["kind"] in ("reversal", "refund")]
        from_provider = sum(
            p["amountMinor"]
            for t in given_back
            for p in t["postings"]
            if p["account"] == doctor.account
        )
        # Whichever came first, the provider's earnings paid no more than they held.
        assert payout["amountMinor"] + from_provider + doctor.owed() == 3600
        assert_balanced(ledger_store.transactions_of(payout["id"]))
        assert_balanced(books)


def test_a_chargeback_between_a_runs_balance_and_its_commit_makes_the_payout_read_again(
    stack, payouts_sim: Sim, admin: Api, monkeypatch: pytest.MonkeyPatch
):
    """The run reads every earnings account at its start and guards each payout with that
    version: a chargeback of D committing after the payout summed the balance (3600), before
    it commits, fails its commit; the retry reads 1800 and pays no more."""
    doctor = _paid_once_then_owed_twice(stack, admin, payouts_sim)
    [account] = [a for a in scheduling.earnings_accounts() if a.uid == doctor.uid]
    seen = scheduling.Seen({}, records.profile(doctor.uid), account.snapshot)
    summed: list[int] = []
    real_owed = ledger_store.owed

    def owed_then_charged_back(provider_account: str, currency: str, *, tx: Any = None) -> int:
        value = real_owed(provider_account, currency, tx=tx)
        summed.append(value)
        if len(summed) == 1:  # lands between the sum and the commit
            assert _take_back(doctor, "chargeback", payouts_sim, admin) == 200
            eventually(
                lambda: real_owed(doctor.account, "USD"),
                lambda owed: owed == 1800,
                "the chargeback to be booked",
            )
        return value

    monkeypatch.setattr(ledger_store, "owed", owed_then_charged_back)
    payout, outcome = scheduling.record(
        "doctor",
        doctor.uid,
        "USD",
        period=rules.period_of(datetime.now(UTC) + timedelta(days=7)),
        now=datetime.now(UTC),
        deliveries=DELIVERIES,
        seen=seen,
    )
    monkeypatch.undo()
    assert summed == [3600, 1800]  # read again after the failed commit
    assert outcome == "recorded"
    assert payout is not None
    assert payout["amountMinor"] == 1800
    assert payout["adjustmentMinor"] == -1800  # the statement shows the shortfall
    assert doctor.owed() == 0
    assert_balanced(ledger_store.transactions_of(payout["id"]))


def test_the_daily_check_tells_admins_when_transit_and_payouts_disagree(stack, admin: Api):
    admin_user = create_user(stack, Role.ADMIN)
    clean = service_api(stack, Service.SCHEDULER, "payouts").post("/payouts/check")
    assert clean.status_code == 200, clean.text
    assert clean.json()["mismatches"] == []
    assert not admin_alerts(admin_user.uid, "payouts_in_transit_mismatch")

    stray = ledger.Transaction(
        "test_stray",
        (
            ledger.Posting(ledger.IN_TRANSIT, -123, "EUR"),
            ledger.Posting(ledger.CLEARING, 123, "EUR"),
        ),
    )
    undo = ledger.Transaction(
        "test_stray",
        tuple(ledger.Posting(p.account, -p.amount_minor, p.currency) for p in stray.postings),
    )
    tag = f"stray-{time.time_ns()}"
    batch = clients.db().batch()
    ledger_store.record(batch, tag, stray, order_id=tag, parties={})
    batch.commit()
    try:
        found = admin.post("/payouts/check")
        assert found.status_code == 200, found.text
        assert found.json()["mismatches"] == [
            {"currency": "EUR", "inTransit": "1.23", "openPayouts": "0.00"}
        ]
        assert admin_alerts(admin_user.uid, "payouts_in_transit_mismatch")
    finally:
        batch = clients.db().batch()
        ledger_store.record(batch, f"{tag}-undo", undo, order_id=tag, parties={})
        batch.commit()
    assert admin.post("/payouts/check").json()["mismatches"] == []
