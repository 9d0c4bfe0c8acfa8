"""The ledger's arithmetic: every transaction balances, nothing goes negative (property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.payments import ledger

DOCTOR = ledger.earnings_account("doctor", "d1")
CLINIC = ledger.earnings_account("clinic", "c1")


def _capture(amount: int, rate_bps: int = 1500, provider: str = DOCTOR) -> ledger.Capture:
    return ledger.Capture("p1", provider, "USD", amount, ledger.fee_of(amount, rate_bps))


def test_a_payment_splits_into_fee_and_earnings():
    books = [ledger.payment(_capture(2000))]
    b = ledger.balances(books)
    assert b[(ledger.CLEARING, "USD")] == 2000
    assert b[(ledger.FEES, "USD")] == -300
    assert ledger.owed(books, DOCTOR, "USD") == 1700


def test_fees_round_half_up_and_stay_within_the_amount():
    assert ledger.fee_of(1000, 1250) == 125
    assert ledger.fee_of(5, 1000) == 1  # 0.5 rounds up
    assert ledger.fee_of(4, 1000) == 0
    assert ledger.fee_of(7, 10_000) == 7


def test_an_unbalanced_transaction_cannot_be_made():
    with pytest.raises(ledger.LedgerError) as exc:
        ledger.Transaction("payment", (ledger.Posting(ledger.CLEARING, 5, "USD"),))
    assert exc.value.code == "unbalanced"
    with pytest.raises(TypeError):
        ledger.Transaction("payment", (ledger.Posting(ledger.CLEARING, 0.5, "USD"),))  # type: ignore[arg-type]


def test_partial_refunds_add_up_to_the_whole_and_no_more():
    cap = _capture(1001, 1500)  # fee 150
    books = [ledger.payment(cap)]
    returned = 0
    for part in (333, 333, 335):
        owed = ledger.owed(books, DOCTOR, "USD")
        books.append(ledger.give_back(cap, part, returned, provider_owed_minor=owed))
        returned += part
    b = ledger.balances(books)
    assert b[(ledger.CLEARING, "USD")] == 0
    assert b[(ledger.FEES, "USD")] == 0  # the fee came back exactly, despite rounding
    assert ledger.owed(books, DOCTOR, "USD") == 0
    with pytest.raises(ledger.LedgerError) as exc:
        ledger.give_back(cap, 1, returned, provider_owed_minor=0)
    assert exc.value.code == "refund_exceeds_capture"


def test_after_a_payout_a_refund_is_refused_but_a_chargeback_is_a_loss():
    cap = _capture(1000, 1000)  # fee 100, doctor owed 900
    books = [ledger.payment(cap), ledger.payout(DOCTOR, 900, "USD", 900)]
    with pytest.raises(ledger.LedgerError) as exc:
        ledger.give_back(cap, 1000, 0, provider_owed_minor=0)
    assert exc.value.code == "provider_balance_insufficient"
    books.append(ledger.give_back(cap, 1000, 0, provider_owed_minor=0, kind="reversal"))
    b = ledger.balances(books)
    assert b[(ledger.LOSSES, "USD")] == 900
    assert b[(ledger.CLEARING, "USD")] == -900  # PayPal took back money already paid out
    assert ledger.owed(books, DOCTOR, "USD") == 0


def test_payouts_cannot_exceed_what_is_owed():
    books = [ledger.payment(_capture(1000, 2000))]
    owed = ledger.owed(books, DOCTOR, "USD")
    books.append(ledger.payout(DOCTOR, owed, "USD", owed))
    assert ledger.owed(books, DOCTOR, "USD") == 0
    assert ledger.balances(books)[(ledger.CLEARING, "USD")] == 200  # the platform's fee
    with pytest.raises(ledger.LedgerError) as exc:
        ledger.payout(DOCTOR, 1, "USD", 0)
    assert exc.value.code == "payout_exceeds_balance"


# A random day of business: payments to two providers, refunds and reversals of any of them
# (never more than is left of a capture), payouts of up to what is owed. The books must always
# balance, and no balance may go negative.
events = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.integers(1, 500_000), st.integers(0, 3000), st.booleans()),
        st.tuples(st.just("refund"), st.integers(0, 50), st.integers(1, 100)),
        st.tuples(st.just("reverse"), st.integers(0, 50)),
        st.tuples(st.just("payout"), st.booleans(), st.integers(1, 100)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_random_business_keeps_the_books_balanced_and_non_negative(script):
    books: list[ledger.Transaction] = []
    captures: list[tuple[ledger.Capture, int]] = []  # (capture, returned so far)
    for event in script:
        if event[0] == "pay":
            _, amount, rate, to_clinic = event
            cap = _capture(amount, rate, CLINIC if to_clinic else DOCTOR)
            books.append(ledger.payment(cap))
            captures.append((cap, 0))
        elif event[0] in ("refund", "reverse") and captures:
            index = event[1] % len(captures)
            cap, returned = captures[index]
            left = cap.amount_minor - returned
            if left == 0:
                continue
            part = left if event[0] == "reverse" else max(1, left * event[2] // 100)
            owed = ledger.owed(books, cap.provider, "USD")
            try:
                books.append(
                    ledger.give_back(
                        cap,
                        part,
                        returned,
                        provider_owed_minor=owed,
                        kind="reversal" if event[0] == "reverse" else "refund",
                    )
                )
            except ledger.LedgerError as refused:
                # A refused refund is an expected outcome of a random script, not its subject.
                assert refused.code == "provider_balance_insufficient"  # noqa: PT017
                assert event[0] == "refund"
                continue
            captures[index] = (cap, returned + part)
        elif event[0] == "payout":
            provider = CLINIC if event[1] else DOCTOR
            owed = ledger.owed(books, provider, "USD")
            if owed:
                books.append(ledger.payout(provider, max(1, owed * event[2] // 100), "USD", owed))

        b = ledger.balances(books)
        assert sum(b.values()) == 0  # every transaction balanced, so the books do
        losses = b.get((ledger.LOSSES, "USD"), 0)
        assert losses >= 0
        # Only a chargeback of money already paid out can take clearing below zero.
        assert b.get((ledger.CLEARING, "USD"), 0) + losses >= 0
        assert b.get((ledger.FEES, "USD"), 0) <= 0  # a credit balance: never owed back
        for provider in (DOCTOR, CLINIC):
            assert ledger.owed(books, provider, "USD") >= 0
        for account in (ledger.REFUNDS, ledger.PAYOUTS, ledger.patient_account("p1")):
            assert b.get((account, "USD"), 0) == 0  # pass-through accounts settle in-transaction
    fully_returned = all(r == c.amount_minor for c, r in captures)
    if captures and fully_returned:  # everything given back: no fee was kept
        assert ledger.balances(books).get((ledger.FEES, "USD"), 0) == 0


def test_a_refund_paypal_already_made_books_a_shortfall_as_a_loss():
    capture = _capture(2000)
    books = [ledger.payment(capture), ledger.payout(DOCTOR, 1700, "USD", 1700)]
    with pytest.raises(ledger.LedgerError):
        ledger.give_back(capture, 2000, 0, provider_owed_minor=0)
    made = ledger.give_back(capture, 2000, 0, provider_owed_minor=0, absorb_shortfall=True)
    assert made.kind == "refund"
    b = ledger.balances([*books, made])
    assert b[(ledger.LOSSES, "USD")] == 1700
    assert b[(ledger.CLEARING, "USD")] == -1700  # the payout left; PayPal returned it all
