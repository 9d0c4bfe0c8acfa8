"""Double-entry ledger arithmetic. Pure: the payment functions persist what these return.

Every movement of money is a transaction of postings that sum to zero per currency, in
integer minor units. Debits are positive, credits negative. Balances are sums of postings,
never edited. Accounts:

- `paypal_clearing`: money PayPal holds for the platform (an asset; never below zero).
- `platform_fees`: the platform's commission (credit balance).
- `earnings:{doctor|clinic}:{uid}`: what the platform owes a provider (credit balance).
- `platform_losses`: what a reversal (chargeback) took back that the provider had already been
  paid (debit balance: the platform's loss). If that money was only in transit and comes
  back (a payout failed or was returned), it pays the loss back first (`loss_recovered`).
- `patient_payments:{patient}`, `refunds`, `payouts`: pass-through accounts. Each payment,
  refund or payout posts to its one in and out within the same transaction, so their entries
  list every such movement (a patient's payments, all refunds) while their balance stays zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLEARING = "paypal_clearing"
FEES = "platform_fees"
REFUNDS = "refunds"
PAYOUTS = "payouts"
LOSSES = "platform_losses"
BASIS_POINTS = 10_000


class LedgerError(ValueError):
    """A movement the books refuse: more refunded than paid, more paid out than owed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def patient_account(uid: str) -> str:
    return f"patient_payments:{uid}"


def earnings_account(kind: str, uid: str) -> str:
    if kind not in ("doctor", "clinic"):
        raise ValueError(f"earnings belong to a doctor or a clinic, not {kind!r}")
    return f"earnings:{kind}:{uid}"


@dataclass(frozen=True)
class Posting:
    account: str
    amount_minor: int  # debit > 0, credit < 0
    currency: str


@dataclass(frozen=True)
class Transaction:
    kind: str  # payment | refund | reversal | payout
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        totals: dict[str, int] = defaultdict(int)
        for p in self.postings:
            if not isinstance(p.amount_minor, int) or isinstance(p.amount_minor, bool):
                raise TypeError("amounts are integer minor units")
            totals[p.currency] += p.amount_minor
        if any(totals.values()):
            raise LedgerError("unbalanced", f"a {self.kind} must sum to zero: {dict(totals)}")


def fee_of(amount_minor: int, rate_bps: int) -> int:
    """The platform's fee, rounded half up to the minor unit, never more than the amount."""
    if not 0 <= rate_bps <= BASIS_POINTS:
        raise ValueError("a fee rate is 0..10000 basis points")
    return min(amount_minor, (amount_minor * rate_bps + BASIS_POINTS // 2) // BASIS_POINTS)


@dataclass(frozen=True)
class Capture:
    """What one captured payment split into: the basis for refunds and reversals of it."""

    patient: str
    provider: str  # an earnings account
    currency: str
    amount_minor: int
    fee_minor: int


def payment(capture: Capture) -> Transaction:
    a, f, c = capture.amount_minor, capture.fee_minor, capture.currency
    if a <= 0 or not 0 <= f <= a:
        raise LedgerError("invalid_amount", "a payment is positive and its fee within it")
    return Transaction(
        "payment",
        (
            Posting(CLEARING, a, c),
            Posting(patient_account(capture.patient), -a, c),
            # The patient's payment is recognised at once as fee and provider earnings.
            Posting(patient_account(capture.patient), a, c),
            Posting(FEES, -f, c),
            Posting(capture.provider, -(a - f), c),
        ),
    )


def give_back(
    capture: Capture,
    amount_minor: int,
    already_returned_minor: int,
    *,
    provider_owed_minor: int,
    kind: str = "refund",
    absorb_shortfall: bool = False,
) -> Transaction:
    """Return part or all of a capture: the fee and the provider's earnings shrink pro rata,
    so the last part returns exactly what is left.

    A refund is the platform's choice, so it may not take back more than the provider is
    still owed (refused). A reversal (a chargeback PayPal imposes) cannot be refused: it takes
    what the provider is owed and books the rest to `platform_losses`. So does a refund with
    `absorb_shortfall`: one PayPal has already made, checked before it was sent, that a payout
    overtook since.
    """
    c = capture.currency
    remaining = capture.amount_minor - already_returned_minor
    if amount_minor <= 0:
        raise LedgerError("invalid_amount", "a refund is positive")
    if amount_minor > remaining:
        raise LedgerError(
            "refund_exceeds_capture", f"only {remaining} minor units of this capture are left"
        )
    fee_back = _pro_rata(
        capture.fee_minor, capture.amount_minor, already_returned_minor, amount_minor
    )
    earnings_back = amount_minor - fee_back
    from_provider = min(earnings_back, max(provider_owed_minor, 0))
    loss = earnings_back - from_provider
    if loss and kind != "reversal" and not absorb_shortfall:
        raise LedgerError(
            "provider_balance_insufficient",
            "the provider was already paid this money; only a reversal can take it back",
        )
    return Transaction(
        kind,
        (
            Posting(capture.provider, from_provider, c),
            *((Posting(LOSSES, loss, c),) if loss else ()),
            Posting(FEES, fee_back, c),
            Posting(REFUNDS, amount_minor, c),
            Posting(REFUNDS, -amount_minor, c),
            Posting(CLEARING, -amount_minor, c),
        ),
    )


def _pro_rata(part_of: int, whole: int, before: int, now: int) -> int:
    """The share of `part_of` that `before + now` of `whole` carries, less what `before` did:
    cumulative rounding, so shares over several refunds add up to `part_of` exactly."""
    return (part_of * (before + now)) // whole - (part_of * before) // whole


def payout(provider: str, amount_minor: int, currency: str, owed_minor: int) -> Transaction:
    if amount_minor <= 0:
        raise LedgerError("invalid_amount", "a payout is positive")
    if amount_minor > owed_minor:
        raise LedgerError("payout_exceeds_balance", f"only {owed_minor} minor units are owed")
    return Transaction(
        "payout",
        (
            Posting(provider, amount_minor, currency),
            Posting(PAYOUTS, amount_minor, currency),
            Posting(PAYOUTS, -amount_minor, currency),
            Posting(CLEARING, -amount_minor, currency),
        ),
    )


def balances(transactions: Iterable[Transaction]) -> Mapping[tuple[str, str], int]:
    """(account, currency) -> sum of postings (debit positive)."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for tx in transactions:
        for p in tx.postings:
            totals[(p.account, p.currency)] += p.amount_minor
    return dict(totals)


def owed(transactions: Iterable[Transaction], provider: str, currency: str) -> int:
    """What the platform owes a provider (the credit balance of their earnings)."""
    return -balances(transactions).get((provider, currency), 0)


# -- payouts (issue 15): earnings leave through an in-transit account ---------------------
# A payout is booked in two steps. When it is recorded (before PayPal is asked) the money
# moves from the provider's earnings to `payouts_in_transit`, so nothing else can spend it;
# when PayPal says what became of it, it leaves the platform (`payout_paid`) or comes back to
# the provider's earnings (`payout_returned`; `payout_reversed` once it had been paid).

IN_TRANSIT = "payouts_in_transit"
PAYOUT_FEES = "payout_fees"


def payout_reserved(
    provider: str, amount_minor: int, currency: str, owed_minor: int
) -> Transaction:
    """Earnings set aside for a payout: never more than the provider is owed."""
    if amount_minor <= 0:
        raise LedgerError("invalid_amount", "a payout is positive")
    if amount_minor > owed_minor:
        raise LedgerError("payout_exceeds_balance", f"only {owed_minor} minor units are owed")
    return Transaction(
        "payout_reserved",
        (Posting(provider, amount_minor, currency), Posting(IN_TRANSIT, -amount_minor, currency)),
    )


def payout_paid(amount_minor: int, currency: str, fee_minor: int = 0) -> Transaction:
    """PayPal paid the provider: the money leaves PayPal's balance (and PayPal's fee too)."""
    if amount_minor <= 0 or fee_minor < 0:
        raise LedgerError("invalid_amount", "a payout is positive, its fee not negative")
    postings = [
        Posting(IN_TRANSIT, amount_minor, currency),
        Posting(PAYOUTS, amount_minor, currency),
        Posting(PAYOUTS, -amount_minor, currency),
        Posting(CLEARING, -amount_minor, currency),
    ]
    if fee_minor:
        postings += [
            Posting(PAYOUT_FEES, fee_minor, currency),
            Posting(CLEARING, -fee_minor, currency),
        ]
    return Transaction("payout", tuple(postings))


def payout_returned(provider: str, amount_minor: int, currency: str) -> Transaction:
    """The payout never reached the provider (refused, failed, returned, cancelled): owed again."""
    if amount_minor <= 0:
        raise LedgerError("invalid_amount", "a payout is positive")
    return Transaction(
        "payout_returned",
        (Posting(IN_TRANSIT, amount_minor, currency), Posting(provider, -amount_minor, currency)),
    )


def payout_reversed(provider: str, amount_minor: int, currency: str) -> Transaction:
    """A paid payout came back to PayPal's balance (reversed or refunded): owed again."""
    if amount_minor <= 0:
        raise LedgerError("invalid_amount", "a payout is positive")
    return Transaction(
        "payout_reversed",
        (
            Posting(CLEARING, amount_minor, currency),
            Posting(PAYOUTS, amount_minor, currency),
            Posting(PAYOUTS, -amount_minor, currency),
            Posting(provider, -amount_minor, currency),
        ),
    )


def loss_recovered(provider: str, amount_minor: int, currency: str) -> Transaction:
    """Money that came back from a payout pays first for what the platform lost meanwhile
    on the provider's orders: a reversal or refund booked while that money was away could
    not take it from the earnings (`give_back` booked the shortfall to `platform_losses`).
    Booked beside `payout_returned` / `payout_reversed`, whose credit it never exceeds."""
    if amount_minor <= 0:
        raise LedgerError("invalid_amount", "a recovery is positive")
    return Transaction(
        "loss_recovered",
        (Posting(provider, amount_minor, currency), Posting(LOSSES, -amount_minor, currency)),
    )
