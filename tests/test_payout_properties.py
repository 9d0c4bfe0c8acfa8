"""Random histories of payments, refunds, chargebacks and payouts (and of what PayPal made of
each payout), replayed through the ledger's arithmetic and the payout rules, as the payout
service applies them. Whatever the history:

- the books balance (every transaction, so all of them);
- no provider's balance goes negative (what the platform owes them), and no money is in
  transit that no open payout accounts for;
- what a provider was paid out never exceeds what they earned, and no order is paid out by
  two payouts at once.

The same arithmetic runs against Firestore in tests/test_payouts.py, with racing requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.payments import ledger
from shared.payouts import rules

NOW = datetime(2030, 6, 1, tzinfo=UTC)
HOLD = timedelta(days=14)
PROVIDERS = (ledger.earnings_account("doctor", "d1"), ledger.earnings_account("clinic", "c1"))


@dataclass
class Order:
    capture: ledger.Capture
    returned: int = 0  # refunded or reversed
    reversed: bool = False
    delivered: bool = False
    payout: str | None = None


@dataclass
class Payout:
    provider: str
    amount: int
    orders: list[int]
    status: str = "in_transit"  # in_transit | paid | returned | reversed


@dataclass
class World:
    books: list[ledger.Transaction] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    payouts: list[Payout] = field(default_factory=list)

    def owed(self, provider: str) -> int:
        return ledger.owed(self.books, provider, "USD")

    def earning(self, n: int) -> rules.Earning:
        o = self.orders[n]
        return rules.Earning(
            str(n),
            "USD",
            o.capture.amount_minor,
            o.capture.fee_minor,
            o.returned,
            NOW - HOLD if o.delivered else None,
        )


events = st.lists(
    st.one_of(
        # A patient pays a provider: amount, fee rate in basis points, which provider.
        st.tuples(st.just("pay"), st.integers(1, 200_000), st.integers(0, 3000), st.booleans()),
        st.tuples(st.just("deliver"), st.integers(0, 40)),
        # An admin's refund (refused if the provider was paid this money already), or one
        # PayPal made on its own (booked whatever the provider still has), or a chargeback.
        st.tuples(st.just("refund"), st.integers(0, 40), st.integers(1, 100), st.booleans()),
        st.tuples(st.just("chargeback"), st.integers(0, 40)),
        st.tuples(st.just("payout"), st.booleans(), st.integers(1, 5000)),
        st.tuples(
            st.just("outcome"),
            st.integers(0, 20),
            st.sampled_from(["SUCCESS", "FAILED", "RETURNED", "REVERSED", "UNCLAIMED"]),
        ),
    ),
    max_size=80,
)


def _give_back(world: World, n: int, part: int, *, kind: str, absorb: bool) -> None:
    order = world.orders[n]
    capture = order.capture
    try:
        world.books.append(
            ledger.give_back(
                capture,
                part,
                order.returned,
                provider_owed_minor=world.owed(capture.provider),
                kind=kind,
                absorb_shortfall=absorb,
            )
        )
    except ledger.LedgerError as refused:
        # Refused refunds are an outcome of a random history, not what this test is about.
        assert refused.code == "provider_balance_insufficient"  # noqa: PT017
        return
    order.returned += part


def _record_payout(world: World, provider: str, minimum: int) -> None:
    """As shared/payouts/scheduling.record: the plan from unpaid-out orders, never more than
    owed, set aside in transit, its orders marked."""
    candidates = [
        n
        for n, o in enumerate(world.orders)
        if o.capture.provider == provider and o.payout is None and not o.reversed
    ]
    plan = rules.plan(
        [world.earning(n) for n in candidates],
        currency="USD",
        owed_minor=world.owed(provider),
        now=NOW,
        holding=HOLD,
        minimum_minor=minimum,
        max_lines=200,
    )
    if plan is None:
        return
    world.books.append(
        ledger.payout_reserved(provider, plan.amount_minor, "USD", world.owed(provider))
    )
    payout_id = f"p{len(world.payouts)}"
    lines = [int(line.order_id) for line in plan.lines]
    for n in lines:
        world.orders[n].payout = payout_id
    world.payouts.append(Payout(provider, plan.amount_minor, lines))


def _outcome(world: World, index: int, item_status: str) -> None:
    """As shared/payouts/reconciling.apply_item, for the simplified states."""
    payout = world.payouts[index]
    before = {"in_transit": rules.Status.SENT, "paid": rules.Status.PAID}.get(payout.status)
    if before is None:
        return
    target = rules.after_item(before, item_status)
    if target is rules.Status.PAID:
        world.books.append(ledger.payout_paid(payout.amount, "USD"))
        payout.status = "paid"
    elif target in (rules.Status.RETURNED, rules.Status.REVERSED):
        book = ledger.payout_reversed if target is rules.Status.REVERSED else ledger.payout_returned
        world.books.append(book(payout.provider, payout.amount, "USD"))
        payout.status = target.value
        for n in payout.orders:  # owed again, for a later payout
            world.orders[n].payout = None


@settings(max_examples=400, deadline=None)
@given(events, st.integers(1, 3000))
def test_random_histories_keep_the_books_whole(script, minimum):
    world = World()
    for event in script:
        kind = event[0]
        if kind == "pay":
            _, amount, rate, to_clinic = event
            capture = ledger.Capture(
                "patient", PROVIDERS[to_clinic], "USD", amount, ledger.fee_of(amount, rate)
            )
            world.books.append(ledger.payment(capture))
            world.orders.append(Order(capture))
        elif kind == "deliver" and world.orders:
            world.orders[event[1] % len(world.orders)].delivered = True
        elif kind == "refund" and world.orders:
            n = event[1] % len(world.orders)
            order = world.orders[n]
            left = order.capture.amount_minor - order.returned
            if left > 0 and not order.reversed:
                part = max(1, left * event[2] // 100)
                _give_back(world, n, part, kind="refund", absorb=event[3])
        elif kind == "chargeback" and world.orders:
            n = event[1] % len(world.orders)
            order = world.orders[n]
            left = order.capture.amount_minor - order.returned
            if left > 0 and not order.reversed:
                _give_back(world, n, left, kind="reversal", absorb=False)
                order.reversed = True
        elif kind == "payout":
            _record_payout(world, PROVIDERS[event[1]], minimum)
        elif kind == "outcome" and world.payouts:
            _outcome(world, event[1] % len(world.payouts), event[2])

        b = ledger.balances(world.books)
        assert sum(b.values()) == 0  # every transaction balanced, so the books do
        in_transit = sum(p.amount for p in world.payouts if p.status == "in_transit")
        assert -b.get((ledger.IN_TRANSIT, "USD"), 0) == in_transit  # the daily check's claim
        assert b.get((ledger.PAYOUTS, "USD"), 0) == 0  # a pass-through account
        for provider in PROVIDERS:
            assert world.owed(provider) >= 0, provider
            earned = sum(
                o.capture.amount_minor - o.capture.fee_minor
                for o in world.orders
                if o.capture.provider == provider
            )
            paid = sum(
                p.amount for p in world.payouts if p.provider == provider and p.status == "paid"
            )
            out = paid + sum(
                p.amount
                for p in world.payouts
                if p.provider == provider and p.status == "in_transit"
            )
            assert paid <= earned
            # What left (or is leaving) never exceeds what was earned less what was given back.
            given_back = -sum(
                p.amount_minor
                for tx in world.books
                if tx.kind in ("refund", "reversal")
                for p in tx.postings
                if p.account == provider
            )
            assert out <= earned + given_back
        live = [p for p in world.payouts if p.status in ("in_transit", "paid")]
        lines = [n for p in live for n in p.orders]
        assert len(lines) == len(set(lines))  # no order in two live payouts
