"""shared/payouts/rules.py and the payout transactions of shared/payments/ledger.py, alone:
no emulator, no network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.payments import ledger
from shared.payouts import rules
from shared.payouts.rules import Earning, RecipientType, SendBlock, Status

NOW = datetime(2030, 3, 14, 12, 0, tzinfo=UTC)
HOLD = timedelta(days=14)
DOCTOR = ledger.earnings_account("doctor", "d1")


def _earning(
    order_id: str = "o1",
    amount: int = 2000,
    fee: int = 200,
    returned: int = 0,
    delivered_days_ago: float | None = 20,
    currency: str = "USD",
) -> Earning:
    delivered = None if delivered_days_ago is None else NOW - timedelta(days=delivered_days_ago)
    return Earning(order_id, currency, amount, fee, returned, delivered)


def _plan(
    earnings: list[Earning],
    owed: int = 10**9,
    minimum: int = 1000,
    currency: str = "USD",
    now: datetime = NOW,
):
    return rules.plan(
        earnings,
        currency=currency,
        owed_minor=owed,
        now=now,
        holding=HOLD,
        minimum_minor=minimum,
        max_lines=200,
    )


# -- what is payable -------------------------------------------------------------------------


def test_only_earnings_delivered_longer_ago_than_the_holding_period_are_paid():
    plan = _plan(
        [
            _earning("old", delivered_days_ago=15),
            _earning("edge", delivered_days_ago=14),  # exactly the holding period: due
            _earning("recent", delivered_days_ago=13.9),
            _earning("not-yet", delivered_days_ago=None),  # not completed (or never will be)
        ]
    )
    assert plan is not None
    assert [line.order_id for line in plan.lines] == ["old", "edge"]
    assert plan.amount_minor == 2 * 1800  # the doctor's part: 20.00 less the 2.00 fee, each


def test_refunds_made_and_in_flight_shrink_the_line_as_the_ledger_gives_back():
    # 20.00 with a 2.00 fee; 5.00 refunded or being refunded: the fee shrinks pro rata.
    earning = _earning(amount=2000, fee=200, returned=500)
    assert rules.earnings_left(earning) == 1800 - (500 - 50)
    capture = ledger.Capture("p", DOCTOR, "USD", 2000, 200)
    books = [ledger.payment(capture), ledger.give_back(capture, 500, 0, provider_owed_minor=1800)]
    assert rules.earnings_left(earning) == ledger.owed(books, DOCTOR, "USD")
    assert rules.earnings_left(_earning(returned=2000)) == 0
    assert rules.earnings_left(_earning(returned=5000)) == 0  # never below zero


def test_odd_refunds_round_as_the_ledger_does():
    capture = ledger.Capture("p", DOCTOR, "USD", 999, 101)
    books = [ledger.payment(capture)]
    returned = 0
    for part in (333, 1, 7):
        owed = ledger.owed(books, DOCTOR, "USD")
        books.append(ledger.give_back(capture, part, returned, provider_owed_minor=owed))
        returned += part
        left = rules.earnings_left(Earning("o", "USD", 999, 101, returned, NOW))
        assert left == ledger.owed(books, DOCTOR, "USD")


def test_less_than_the_minimum_waits_and_the_minimum_is_per_currency():
    assert _plan([_earning(amount=1100, fee=110)], minimum=1000) is None  # 9.90 < 10.00
    assert _plan([_earning(amount=1100, fee=100)], minimum=1000) is not None  # 10.00
    minimums = {"USD": 1000, "JPY": 1000}
    assert rules.minimum_for("JPY", minimums) == 1000  # ¥1,000: zero decimals
    assert rules.minimum_for("EUR", minimums) == 100  # unlisted: one major unit
    assert rules.minimum_for("HUF", minimums) == 1  # a zero-decimal one: one forint


def test_zero_decimal_currencies_are_whole_units_throughout():
    jpy = [_earning("a", amount=3000, fee=300, currency="JPY")]
    plan = _plan(jpy, minimum=1000, currency="JPY")
    assert plan is not None
    assert plan.amount_minor == 2700
    assert _plan(jpy, minimum=1000, currency="USD") is None  # only the payout's currency


def test_never_more_than_owed_and_the_statement_shows_the_shortfall():
    plan = _plan([_earning("a"), _earning("b")], owed=2500)
    assert plan is not None
    assert plan.lines_minor == 3600
    assert plan.amount_minor == 2500
    assert plan.adjustment_minor == -1100
    assert _plan([_earning("a")], owed=0) is None
    assert _plan([_earning("a")], owed=-50) is None


def test_oldest_first_and_at_most_max_lines():
    earnings = [_earning(f"o{n}", delivered_days_ago=30 - n) for n in range(5)]
    plan = rules.plan(
        earnings,
        currency="USD",
        owed_minor=10**9,
        now=NOW,
        holding=HOLD,
        minimum_minor=1,
        max_lines=2,
    )
    assert plan is not None
    assert [line.order_id for line in plan.lines] == ["o0", "o1"]


def test_the_holding_period_outlasts_the_refund_window():
    assert rules.holding_period(14, 24) == timedelta(days=14)
    assert rules.holding_period(0, 24) == timedelta(days=2)  # never inside the refund window
    assert rules.holding_period(1, 72) == timedelta(days=4)


# -- PayPal's news only moves a payout forward ---------------------------------------------------


@pytest.mark.parametrize(
    ("current", "item", "expected"),
    [
        (Status.SENDING, "PENDING", Status.SENT),
        (Status.SENT, "SUCCESS", Status.PAID),
        (Status.SENDING, "SUCCESS", Status.PAID),  # the webhook beat the worker's save
        (Status.SENT, "UNCLAIMED", Status.UNCLAIMED),
        (Status.UNCLAIMED, "SUCCESS", Status.PAID),  # claimed
        (Status.UNCLAIMED, "RETURNED", Status.RETURNED),  # cancelled or 30 days unclaimed
        (Status.SENT, "FAILED", Status.RETURNED),
        (Status.SENT, "BLOCKED", Status.RETURNED),
        (Status.SENT, "ONHOLD", None),  # still pending: sent it stays
        (Status.PAID, "REVERSED", Status.REVERSED),
        (Status.PAID, "REFUNDED", Status.REVERSED),
        (Status.SENT, "REVERSED", Status.RETURNED),  # news out of order: it never left
        # Late or repeated news changes nothing.
        (Status.PAID, "PENDING", None),
        (Status.PAID, "UNCLAIMED", None),
        (Status.PAID, "SUCCESS", None),
        (Status.PAID, "FAILED", None),
        (Status.RETURNED, "SUCCESS", None),
        (Status.REVERSED, "SUCCESS", None),
        (Status.UNCLAIMED, "PENDING", None),
        (Status.UNCLAIMED, "UNCLAIMED", None),
        # PayPal has nothing of these: its news cannot be about them.
        (Status.SCHEDULED, "SUCCESS", None),
        (Status.HELD, "SUCCESS", None),
        (Status.REFUSED, "SUCCESS", None),
        (Status.CANCELLED, "SUCCESS", None),
        (Status.SENT, "WHATEVER", None),
    ],
)
def test_item_statuses_move_payouts_only_forward(current, item, expected):
    assert rules.after_item(current, item) == expected


def test_a_denied_batch_returns_the_money_of_what_was_not_paid():
    assert rules.after_batch(Status.SENT, "DENIED") is Status.RETURNED
    assert rules.after_batch(Status.SENDING, "DENIED") is Status.RETURNED
    assert rules.after_batch(Status.PAID, "DENIED") is None
    assert rules.after_batch(Status.SENT, "SUCCESS") is None


# -- names ---------------------------------------------------------------------------------------


def test_one_payout_per_provider_currency_and_week():
    monday = datetime(2030, 1, 7, 0, 1, tzinfo=UTC)
    sunday = datetime(2030, 1, 13, 23, 59, tzinfo=UTC)
    assert rules.period_of(monday) == rules.period_of(sunday) == "2030-W02"
    assert rules.period_of(monday + timedelta(days=7)) == "2030-W03"
    made = rules.payout_id("2030-W02", "doctor", "uid1", "USD")
    assert made == "2030-W02_doctor_uid1_USD"
    assert rules.payout_id("2030-W02", "doctor", "uid1", "JPY") != made
    odd = rules.payout_id("2030-W02", "doctor", "a/b", "USD")  # not a document id: hashed
    assert "/" not in odd
    assert len(odd) <= 256


def test_task_ids_are_cloud_tasks_ids_one_per_dispatch():
    first = rules.task_id("2030-W02_doctor_uid.1_USD", 0)
    assert first == rules.task_id("2030-W02_doctor_uid.1_USD", 0)  # racing enqueuers agree
    assert rules.task_id("2030-W02_doctor_uid.1_USD", 1) != first  # a deliberate re-dispatch
    assert all(c.isalnum() or c in "-_" for c in first)
    assert first[8] == "-"  # a hash leads, not the shared period prefix
    assert len(rules.sender_item_id("x" * 100)) <= 63
    assert rules.request_id("p", 0) != rules.request_id("p", 1)


# -- the address ---------------------------------------------------------------------------------


def test_receivers_paypal_can_pay():
    assert rules.receiver_problem(RecipientType.EMAIL, "dr.a+pay@clinic.example") is None
    assert rules.receiver_problem(RecipientType.EMAIL, "not-an-address") is not None
    assert rules.receiver_problem(RecipientType.EMAIL, "a@" + "b" * 130 + ".com") is not None
    assert rules.receiver_problem(RecipientType.PAYPAL_ID, "G83JXTJ5EHCQ2") is None
    assert rules.receiver_problem(RecipientType.PAYPAL_ID, "g83jxtj5ehcq2") is not None
    assert rules.receiver_problem(RecipientType.PAYPAL_ID, "G83JXTJ5EHCQ") is not None


def test_payouts_wait_for_an_address_its_cooling_off_and_an_admins_hold():
    address = {"recipientType": "EMAIL", "receiver": "a@b.example"}
    assert rules.send_block(None, NOW) is SendBlock.NO_ADDRESS
    assert rules.send_block({"address": None}, NOW) is SendBlock.NO_ADDRESS
    cooling = {"address": address, "coolingOffUntil": NOW + timedelta(hours=1)}
    assert rules.send_block(cooling, NOW) is SendBlock.COOLING_OFF
    cooled = {"address": address, "coolingOffUntil": NOW - timedelta(seconds=1)}
    assert rules.send_block(cooled, NOW) is None
    assert rules.send_block({**cooled, "heldByAdmin": True}, NOW) is SendBlock.HELD_BY_ADMIN


def test_codes_are_kept_only_as_digests():
    digest = rules.code_digest("u1", "123456")
    assert "123456" not in digest
    assert digest != rules.code_digest("u2", "123456")  # a digest is no use for another uid


def test_unclaimed_items_are_cancelled_after_the_setting():
    since = NOW - timedelta(days=20)
    assert rules.unclaimed_due(since, NOW, 20)
    assert not rules.unclaimed_due(since, NOW, 21)
    assert not rules.unclaimed_due(None, NOW, 1)


def test_the_transit_check_compares_per_currency():
    assert rules.transit_mismatches({"USD": -1500}, {"USD": 1500}) == {}
    assert rules.transit_mismatches({"USD": -1500}, {"USD": 1000}) == {"USD": (1500, 1000)}
    assert rules.transit_mismatches({}, {"JPY": 700}) == {"JPY": (0, 700)}
    assert rules.transit_mismatches({"EUR": -5}, {}) == {"EUR": (5, 0)}


# -- the ledger's payout transactions -------------------------------------------------------------


def test_a_payout_sets_money_aside_then_pays_or_returns_it():
    capture = ledger.Capture("p", DOCTOR, "USD", 2000, 200)
    books = [ledger.payment(capture)]
    books.append(ledger.payout_reserved(DOCTOR, 1800, "USD", ledger.owed(books, DOCTOR, "USD")))
    b = ledger.balances(books)
    assert ledger.owed(books, DOCTOR, "USD") == 0
    assert b[(ledger.IN_TRANSIT, "USD")] == -1800
    with pytest.raises(ledger.LedgerError) as exc:
        ledger.payout_reserved(DOCTOR, 1, "USD", 0)
    assert exc.value.code == "payout_exceeds_balance"

    paid = [*books, ledger.payout_paid(1800, "USD", fee_minor=36)]
    b = ledger.balances(paid)
    assert b[(ledger.IN_TRANSIT, "USD")] == 0
    assert b[(ledger.CLEARING, "USD")] == 2000 - 1800 - 36
    assert b[(ledger.PAYOUT_FEES, "USD")] == 36
    assert b[(ledger.PAYOUTS, "USD")] == 0  # pass-through

    returned = [*books, ledger.payout_returned(DOCTOR, 1800, "USD")]
    assert ledger.owed(returned, DOCTOR, "USD") == 1800
    assert ledger.balances(returned)[(ledger.IN_TRANSIT, "USD")] == 0

    reversed_ = [*paid, ledger.payout_reversed(DOCTOR, 1800, "USD")]
    assert ledger.owed(reversed_, DOCTOR, "USD") == 1800
    assert ledger.balances(reversed_)[(ledger.CLEARING, "USD")] == 2000 - 36
    for books_now in (paid, returned, reversed_):
        assert sum(ledger.balances(books_now).values()) == 0
