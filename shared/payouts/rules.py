"""Payouts, the rules alone: what is payable, the payout's states, PayPal's item outcomes, the
payout address. Pure: shared/payouts/*.py apply these to what they read, and
tests/test_payout_rules.py checks them without any I/O.

A payout pays one provider, in one currency, for one period (an ISO week): its id is
`{period}_{kind}_{uid}_{currency}`, which is also PayPal's `sender_batch_id`, so a second
run of the same week finds the same payout instead of making another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.platform.ids import DOC_ID
from shared.platform.money import EXPONENTS


class Status(StrEnum):
    SCHEDULED = "scheduled"  # recorded: amount frozen, money in transit; a task will send it
    HELD = "held"  # recorded, not to be sent until the hold ends (an admin, the address)
    SENDING = "sending"  # a worker is sending it to PayPal (or was, and one will again)
    SENT = "sent"  # PayPal took the batch; its item is pending
    UNCLAIMED = "unclaimed"  # the receiver has no PayPal account yet: the money waits
    PAID = "paid"  # PayPal paid the provider (it may still be reversed)
    REFUSED = "refused"  # PayPal refused the batch (funds, recipient): an admin decides
    RETURNED = "returned"  # the money came back unpaid (failed, returned, blocked, cancelled)
    REVERSED = "reversed"  # paid, then taken back (reversed, refunded)
    CANCELLED = "cancelled"  # an admin cancelled it before PayPal had it


# The money of these is in `payouts_in_transit`; the daily check counts them.
IN_TRANSIT = frozenset(
    {
        Status.SCHEDULED,
        Status.HELD,
        Status.SENDING,
        Status.SENT,
        Status.UNCLAIMED,
        Status.REFUSED,
    }
)
# PayPal has (or may have) the batch: the sweep asks PayPal about these.
WITH_PAYPAL = frozenset({Status.SENDING, Status.SENT, Status.UNCLAIMED})
FINAL = frozenset({Status.RETURNED, Status.REVERSED, Status.CANCELLED})
# Where the worker may still send from (a retry after a lost answer resumes `sending`).
SENDABLE = frozenset({Status.SCHEDULED, Status.SENDING})

# How far along each state is: PayPal's news only ever moves a payout forward, so an event
# that arrives late (PENDING after SUCCESS) changes nothing.
_RANK = {
    Status.SCHEDULED: 0,
    Status.HELD: 0,
    Status.REFUSED: 0,
    Status.SENDING: 1,
    Status.SENT: 2,
    Status.UNCLAIMED: 3,
    Status.PAID: 4,
    Status.RETURNED: 5,
    Status.REVERSED: 5,
    Status.CANCELLED: 5,
}

# PayPal's item statuses (transaction_enum) and what each means for the money.
ITEM_WAITING = frozenset({"PENDING", "ONHOLD"})
ITEM_RETURNED = frozenset({"FAILED", "RETURNED", "BLOCKED"})
ITEM_TAKEN_BACK = frozenset({"REFUNDED", "REVERSED"})
ITEM_STATUSES = ITEM_WAITING | ITEM_RETURNED | ITEM_TAKEN_BACK | {"SUCCESS", "UNCLAIMED"}


def after_item(current: Status, item_status: str) -> Status | None:
    """The state PayPal's item status moves a payout to; None when it moves nothing (news
    older than what we know, or about a payout PayPal does not have)."""
    if current not in WITH_PAYPAL and current is not Status.PAID:
        return None
    if item_status in ITEM_WAITING:
        target = Status.SENT
    elif item_status == "UNCLAIMED":
        target = Status.UNCLAIMED
    elif item_status == "SUCCESS":
        target = Status.PAID
    elif item_status in ITEM_RETURNED:
        target = Status.RETURNED
    elif item_status in ITEM_TAKEN_BACK:
        # Taken back after it was paid: reversed; before (news out of order): it never left.
        target = Status.REVERSED if current is Status.PAID else Status.RETURNED
    else:
        return None
    if current is Status.PAID and target is not Status.REVERSED:
        return None  # once paid, only a reversal is news
    return target if _RANK[target] > _RANK[current] else None


def after_batch(current: Status, batch_status: str) -> Status | None:
    """A batch PayPal denied as a whole (no item of it was paid): the money comes back."""
    if batch_status == "DENIED" and current in (Status.SENDING, Status.SENT):
        return Status.RETURNED
    return None


# -- money that comes back pays the platform's losses first ------------------------------


@dataclass(frozen=True)
class Loss:
    """What one reversal or refund booked to `platform_losses` for a provider's earnings in
    one currency (the part it could not take from them), and how much of it money that came
    back from payouts has paid back since."""

    tx_id: str  # the ledger transaction that booked it
    order_id: str
    at: datetime
    amount_minor: int
    recovered_minor: int = 0


def recoveries(losses: Iterable[Loss], returned_minor: int) -> list[tuple[Loss, int]]:
    """What of `returned_minor` (a payout's money back in the provider's earnings) pays which
    loss: oldest first, each never beyond what is left of it, together never beyond the
    money returned. The rest is owed to the provider again."""
    left = max(returned_minor, 0)
    taken: list[tuple[Loss, int]] = []
    for loss in sorted(losses, key=lambda x: (x.at, x.tx_id)):
        part = min(left, max(loss.amount_minor - loss.recovered_minor, 0))
        if part > 0:
            taken.append((loss, part))
            left -= part
    return taken


# -- what is payable ---------------------------------------------------------------------


@dataclass(frozen=True)
class Earning:
    """One paid order of a provider, as a payout sees it."""

    order_id: str
    currency: str
    amount_minor: int  # what the patient paid
    fee_minor: int  # the platform's commission on it
    returned_minor: int  # refunded, being refunded, or reversed
    delivered_at: datetime | None  # when what it paid for took place; None: not (yet)


def earnings_left(e: Earning) -> int:
    """The provider's part of an order that is still theirs: their share of it, less their
    share of what was given back (the fee shrinks pro rata, as shared/payments/ledger.py
    gives back, with the same cumulative rounding)."""
    if e.amount_minor <= 0:
        return 0
    returned = min(max(e.returned_minor, 0), e.amount_minor)
    fee_back = (e.fee_minor * returned) // e.amount_minor
    return max((e.amount_minor - e.fee_minor) - (returned - fee_back), 0)


def holding_period(hold_days: int, refund_notice_hours: int) -> timedelta:
    """How long after delivery earnings wait: the setting, and always longer than the window
    in which the refund policy still gives money back."""
    return max(timedelta(days=hold_days), timedelta(hours=refund_notice_hours, days=1))


def minimum_for(currency: str, minimums: Mapping[str, int]) -> int:
    """The least payout in a currency, in minor units: the setting, else one major unit."""
    return max(int(minimums.get(currency, 10 ** EXPONENTS.get(currency, 2))), 1)


@dataclass(frozen=True)
class Line:
    order_id: str
    amount_minor: int


@dataclass(frozen=True)
class Plan:
    """What one payout pays and what for. `amount_minor` is the lines' sum unless the
    provider is owed less (a chargeback took from earnings already paid out): then the
    shortfall shows as `adjustment_minor` (negative), so the statement adds up."""

    currency: str
    lines: tuple[Line, ...]
    amount_minor: int

    @property
    def lines_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)

    @property
    def adjustment_minor(self) -> int:
        return self.amount_minor - self.lines_minor


def plan(
    earnings: Iterable[Earning],
    *,
    currency: str,
    owed_minor: int,
    now: datetime,
    holding: timedelta,
    minimum_minor: int,
    max_lines: int,
) -> Plan | None:
    """The payout due now, or None: earnings delivered at least `holding` ago, oldest first
    (at most `max_lines` of them), never more than the provider is owed, and only when that
    reaches the minimum (less waits for the next run)."""
    due = sorted(
        (
            e
            for e in earnings
            if e.currency == currency
            and e.delivered_at is not None
            and e.delivered_at + holding <= now
            and earnings_left(e) > 0
        ),
        key=lambda e: (e.delivered_at, e.order_id),
    )[:max_lines]
    lines = tuple(Line(e.order_id, earnings_left(e)) for e in due)
    amount = min(sum(line.amount_minor for line in lines), max(owed_minor, 0))
    if not lines or amount < max(minimum_minor, 1):
        return None
    return Plan(currency, lines, amount)


# -- names -------------------------------------------------------------------------------


def period_of(when: datetime) -> str:
    """The ISO week a run belongs to, e.g. 2030-W07: one payout per provider and currency."""
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def payout_id(period: str, kind: str, uid: str, currency: str) -> str:
    """The payout's id and PayPal `sender_batch_id` (at most 256 characters, a document id)."""
    made = f"{period}_{kind}_{uid}_{currency}"
    if DOC_ID.fullmatch(made) and len(made) <= 200:
        return made
    digest = hashlib.sha256(uid.encode()).hexdigest()[:32]
    return f"{period}_{kind}_{digest}_{currency}"


def task_id(payout: str, dispatch: int) -> str:
    """The Cloud Tasks task id of a payout's `dispatch`-th sending: the same for every
    enqueuer of that sending (so Cloud Tasks refuses the second), a new one for a deliberate
    re-dispatch. A hash leads, as Cloud Tasks asks, so ids do not share one long prefix."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", payout)
    return f"{hashlib.sha256(payout.encode()).hexdigest()[:8]}-{safe}-{dispatch}"[:500]


def sender_item_id(payout: str) -> str:
    """PayPal's `sender_item_id` (at most 63 characters)."""
    return payout if len(payout) <= 63 else hashlib.sha256(payout.encode()).hexdigest()[:63]


def request_id(payout: str, attempt: int) -> str:
    """The PayPal-Request-Id of one attempt to send: every retry of that attempt (a lost
    answer, a 5xx, a crash) reuses it; only an admin's retry after a refusal starts another."""
    return f"{payout}-{attempt}"


# -- the payout address --------------------------------------------------------------------


class RecipientType(StrEnum):
    EMAIL = "EMAIL"
    PAYPAL_ID = "PAYPAL_ID"


_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_PAYPAL_ID = re.compile(r"^[A-Z0-9]{13}$")


def receiver_problem(recipient_type: RecipientType, receiver: str) -> str | None:
    """Why PayPal would not take this receiver; None when it looks right."""
    if recipient_type is RecipientType.EMAIL:
        if len(receiver) > 127 or not _EMAIL.fullmatch(receiver):
            return "not an e-mail address PayPal can pay (at most 127 characters)"
    elif not _PAYPAL_ID.fullmatch(receiver):
        return "a PayPal account id is 13 capital letters and digits"
    return None


def code_digest(uid: str, code: str) -> str:
    """How a verification code is kept: never the code itself."""
    return hashlib.sha256(f"payout-address:{uid}:{code}".encode()).hexdigest()


MAX_CODE_TRIES = 5
CODE_LIFETIME = timedelta(hours=24)


class SendBlock(StrEnum):
    NO_ADDRESS = "no_address"  # none set, or not yet verified
    COOLING_OFF = "cooling_off"  # changed lately: held in case it was not the provider
    HELD_BY_ADMIN = "held_by_admin"


def send_block(profile: Mapping[str, object] | None, now: datetime) -> SendBlock | None:
    """Why a provider may not be paid now, from their payout profile; None: they may."""
    if profile is None:
        return SendBlock.NO_ADDRESS
    if profile.get("heldByAdmin"):
        return SendBlock.HELD_BY_ADMIN
    address = profile.get("address")
    if not isinstance(address, Mapping) or not address.get("receiver"):
        return SendBlock.NO_ADDRESS
    until = profile.get("coolingOffUntil")
    if isinstance(until, datetime) and until > now:
        return SendBlock.COOLING_OFF
    return None


def unclaimed_due(unclaimed_since: datetime | None, now: datetime, days: int) -> bool:
    """Whether an unclaimed item has waited long enough to be cancelled (and the money
    returned to the provider's earnings, for a payout to an address that works)."""
    return unclaimed_since is not None and unclaimed_since + timedelta(days=days) <= now


# -- the daily check -----------------------------------------------------------------------


def transit_mismatches(
    ledger_minor: Mapping[str, int], open_minor: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """Currency -> (in transit by the ledger, open payouts' sum), where they differ. The
    ledger's `payouts_in_transit` has a credit balance: what it holds is minus its sum."""
    currencies = set(ledger_minor) | set(open_minor)
    found = {c: (-int(ledger_minor.get(c, 0)), int(open_minor.get(c, 0))) for c in currencies}
    return {c: pair for c, pair in sorted(found.items()) if pair[0] != pair[1]}
