"""Random histories of clinic bookings and of appointments, each move at a random time of the
one clock, replayed through the pure state machines as their services apply them, then handed
to payouts as shared/workflows/payout_deliveries.py hands them (issue 23). Whatever the history:

- no outcome of a visit (checked in, completed, no-show) is recorded before the visit starts,
  so a patient can still cancel a paid visit for its refund until then;
- a visit counts as delivered at its own end (its window's or slot's), never at the time the
  outcome was recorded, and only once an outcome that delivers it is recorded;
- so no payout run, whenever it runs, pays for a visit before its end plus the holding period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.appointments import rules as appointment_rules
from shared.bookings import rules as booking_rules
from shared.payments.rules import Kind
from shared.payouts import rules as payout_rules
from shared.platform.context import Role
from shared.workflows.payout_deliveries import delivery_time
from tests.test_payout_rules import HOLD
from tests.test_payout_rules import _plan as plan_of

START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
BOOKING_OUTCOMES = frozenset(
    {booking_rules.Status.CHECKED_IN, booking_rules.Status.COMPLETED, booking_rules.Status.NO_SHOW}
)
APPOINTMENT_OUTCOMES = frozenset(
    {appointment_rules.Status.COMPLETED, appointment_rules.Status.NO_SHOW}
)
DELIVERING = frozenset({"completed", "no_show"})

# How far the clock moves before each move, in minutes: often a little (within the visit),
# sometimes days (past it), sometimes not at all.
steps = st.one_of(st.integers(0, 45), st.integers(0, 4 * 24 * 60))
# When the history's first move happens, in minutes before the visit starts.
lead = st.integers(0, 5 * 24 * 60)
length = st.integers(5, 240)  # the visit's minutes


def _never_paid_before_the_end(delivered: datetime | None, end: datetime, last: datetime) -> None:
    """Whenever a run comes (the history's last moment, or about the visit's end plus the
    hold), it pays for the visit only once a holding period has passed since the visit's end;
    and once it has, a delivered visit is paid."""
    earning = payout_rules.Earning("o", "USD", 2000, 200, 0, delivered)
    due_from = end + HOLD
    for run_at in (last, end, due_from - timedelta(microseconds=1), due_from):
        due = plan_of([earning], minimum=1, now=run_at)
        assert (due is not None) == (delivered is not None and run_at >= due_from), (
            run_at,
            delivered,
            end,
        )


@settings(max_examples=400, deadline=None)
@given(lead, length, st.lists(st.tuples(st.sampled_from(list(booking_rules.Action)), steps)))
def test_random_booking_histories_never_deliver_before_the_window_ends(before, minutes, script):
    end = START + timedelta(minutes=minutes)
    clock = START - timedelta(minutes=before)
    status = booking_rules.Status.REQUESTED
    at: dict[str, datetime] = {status.value: clock}
    for action, step in script:
        clock += timedelta(minutes=step)
        try:
            status = booking_rules.next_status(status, action, now=clock, window_start=START)
        except booking_rules.Refusal as refused:
            # A refusal is an outcome of a random history; only these are the rules' own.
            assert refused.code in ("illegal_transition", "window_started", "not_started")  # noqa: PT017
            continue
        if status in BOOKING_OUTCOMES:
            assert clock >= START, (action, clock)
        at[status.value] = clock  # as the service stamps `at.{status}`

    doc: dict[str, Any] = {"status": status.value, "windowStart": START, "windowEnd": end}
    doc["at"] = at
    delivered = delivery_time(Kind.BOOKING, doc)
    assert delivered == (end if status.value in DELIVERING else None)
    _never_paid_before_the_end(delivered, end, clock)


APPOINTMENT_MOVES = ("confirm", "expire", "cancel", "complete", "no_show")


def _appointment_move(
    current: appointment_rules.Status, move: str, now: datetime
) -> appointment_rules.Status:
    """As shared/appointments/service.py checks each move (a doctor's cancel: any time)."""
    status = appointment_rules.Status
    if move == "cancel":
        appointment_rules.check_cancel(current, Role.DOCTOR, START, now, timedelta(hours=2))
        return status.CANCELLED
    if move in ("complete", "no_show"):
        target = status.COMPLETED if move == "complete" else status.NO_SHOW
        appointment_rules.check_outcome(current, target, START, now)
        return target
    target = status.CONFIRMED if move == "confirm" else status.EXPIRED
    appointment_rules.check_transition(current, target)
    return target


@settings(max_examples=400, deadline=None)
@given(lead, length, st.lists(st.tuples(st.sampled_from(APPOINTMENT_MOVES), steps)))
def test_random_appointment_histories_never_deliver_before_the_slot_ends(before, minutes, script):
    end = START + timedelta(minutes=minutes)
    clock = START - timedelta(minutes=before)
    doc: dict[str, Any] = {"status": "pending_payment", "start": START, "end": end}
    for move, step in script:
        clock += timedelta(minutes=step)
        try:
            target = _appointment_move(appointment_rules.Status(doc["status"]), move, clock)
        except appointment_rules.TransitionRefused as refused:
            assert refused.code in ("illegal_transition", "not_started")  # noqa: PT017
            continue
        if target in APPOINTMENT_OUTCOMES:
            assert clock >= START, (move, clock)
            doc["outcomeAt"] = clock  # as the service records it
        doc["status"] = target.value

    delivered = delivery_time(Kind.APPOINTMENT, doc)
    assert delivered == (end if doc["status"] in DELIVERING else None)
    _never_paid_before_the_end(delivered, end, clock)


# -- the same, by example ------------------------------------------------------------------


def test_a_booking_marked_done_long_ago_is_delivered_when_its_window_ends():
    marked = START - timedelta(days=20)  # a stored record from before the rule, or a forgery
    doc = {
        "status": "no_show",
        "windowStart": START,
        "windowEnd": START + timedelta(minutes=30),
        "at": {"no_show": marked},
    }
    assert delivery_time(Kind.BOOKING, doc) == START + timedelta(minutes=30)


def test_an_appointment_completed_early_in_its_slot_is_delivered_at_the_slots_end():
    doc = {
        "status": "completed",
        "start": START,
        "end": START + timedelta(minutes=30),
        "outcomeAt": START + timedelta(minutes=1),
    }
    assert delivery_time(Kind.APPOINTMENT, doc) == START + timedelta(minutes=30)


def test_a_visit_without_a_readable_end_is_not_delivered():
    # A damaged record errs towards not paying: an admin looks at it, the run goes on.
    booking = {"status": "completed", "windowStart": START, "windowEnd": "soon"}
    booking["at"] = {"completed": START - timedelta(days=30)}
    appointment = {"status": "completed", "start": START, "outcomeAt": START}
    assert delivery_time(Kind.BOOKING, booking) is None
    assert delivery_time(Kind.APPOINTMENT, appointment) is None
    assert delivery_time(Kind.BOOKING, None) is None
