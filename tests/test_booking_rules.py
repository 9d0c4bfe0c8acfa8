"""The booking rules alone: state machine, windows in the clinic's zone, capacity, dashboards."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from shared.bookings.rules import (
    OPEN_FOR_PATIENT,
    TRANSITIONS,
    Action,
    Hours,
    Refusal,
    Schedule,
    Status,
    answer_by,
    check_capacity,
    check_open_limit,
    held,
    leaves_open,
    load,
    moved_counts,
    next_status,
    queue_key,
    range_stats,
    still_open,
    window_at,
    windows_between,
    windows_on,
)

FUTURE = datetime(2030, 1, 1, tzinfo=UTC)
NOW = datetime(2029, 12, 31, tzinfo=UTC)
# What the clinic records of the visit itself, once its window has started (issue 23).
OUTCOMES = frozenset({Status.CHECKED_IN, Status.COMPLETED, Status.NO_SHOW})

JAKARTA = Schedule(
    time_zone="Asia/Jakarta",
    window_minutes=30,
    weekly=(
        Hours("mon", "09:00", "10:00", 4),
        Hours("mon", "13:00", "14:15", 2),  # the last 15 minutes make no window
        Hours("tue", "09:00", "09:30", 1),
    ),
    closed_dates=frozenset({date(2030, 1, 8)}),
)


@pytest.mark.parametrize(
    ("current", "action", "expected"),
    [
        (Status.REQUESTED, Action.ACCEPT, Status.ACCEPTED),
        (Status.REQUESTED, Action.DECLINE, Status.DECLINED),
        (Status.REQUESTED, Action.EXPIRE, Status.DECLINED),
        (Status.REQUESTED, Action.CANCEL, Status.CANCELLED),
        (Status.ACCEPTED, Action.CANCEL, Status.CANCELLED),
        (Status.ACCEPTED, Action.CHECK_IN, Status.CHECKED_IN),
        (Status.ACCEPTED, Action.NO_SHOW, Status.NO_SHOW),
        (Status.CHECKED_IN, Action.COMPLETE, Status.COMPLETED),
    ],
)
def test_legal_transitions(current, action, expected):
    # Answers and cancellations come before the window; what happened at it, once it began.
    now = FUTURE if expected in OUTCOMES else NOW
    assert next_status(current, action, now=now, window_start=FUTURE) is expected


@pytest.mark.parametrize(
    ("current", "action"),
    [
        (Status.ACCEPTED, Action.ACCEPT),
        (Status.DECLINED, Action.ACCEPT),
        (Status.CANCELLED, Action.ACCEPT),
        (Status.REQUESTED, Action.CHECK_IN),
        (Status.REQUESTED, Action.COMPLETE),
        (Status.ACCEPTED, Action.COMPLETE),
        (Status.ACCEPTED, Action.DECLINE),
        (Status.CHECKED_IN, Action.CANCEL),
        (Status.COMPLETED, Action.NO_SHOW),
        (Status.NO_SHOW, Action.CHECK_IN),
        (Status.ACCEPTED, Action.EXPIRE),
    ],
)
def test_illegal_transitions_are_refused(current, action):
    with pytest.raises(Refusal) as caught:
        next_status(current, action, now=NOW, window_start=FUTURE)
    assert caught.value.code == "illegal_transition"


@pytest.mark.parametrize(
    ("current", "action"),
    [(old, action) for (old, action), new in TRANSITIONS.items() if new in OUTCOMES],
)
def test_no_outcome_is_recorded_before_the_window_starts(current, action):
    # Derived from the table, so an outcome added later waits for the window too.
    start = datetime(2030, 1, 1, 9, tzinfo=UTC)
    for early in (start - timedelta(days=3), start - timedelta(microseconds=1)):
        with pytest.raises(Refusal) as caught:
            next_status(current, action, now=early, window_start=start)
        assert caught.value.code == "not_started"
    assert next_status(current, action, now=start, window_start=start) in OUTCOMES


def test_an_illegal_move_is_named_as_such_before_any_timing():
    with pytest.raises(Refusal) as caught:
        next_status(Status.REQUESTED, Action.COMPLETE, now=NOW, window_start=FUTURE)
    assert caught.value.code == "illegal_transition"


@pytest.mark.parametrize("action", [Action.CANCEL, Action.ACCEPT])
def test_cancel_and_accept_end_when_the_window_starts(action):
    start = datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert next_status(
        Status.REQUESTED, action, now=start - timedelta(seconds=1), window_start=start
    )
    with pytest.raises(Refusal) as caught:
        next_status(Status.REQUESTED, action, now=start, window_start=start)
    assert caught.value.code == "window_started"


def test_capacity_allows_up_to_and_refuses_beyond():
    check_capacity(held=3, capacity=4)
    with pytest.raises(Refusal) as caught:
        check_capacity(held=4, capacity=4)
    assert caught.value.code == "window_full"


def test_held_places_count_every_status_that_keeps_a_place():
    counts = {
        "requested": 5,
        "accepted": 1,
        "checked_in": 1,
        "completed": 1,
        "no_show": 1,
        "declined": 3,
        "cancelled": 2,
    }
    assert held(counts) == 4
    assert moved_counts(Status.REQUESTED, Status.ACCEPTED) == {"accepted": 1, "requested": -1}
    assert moved_counts(None, Status.REQUESTED) == {"requested": 1}


def test_windows_are_cut_in_the_clinic_time_zone():
    monday = date(2030, 1, 7)
    windows = windows_on(JAKARTA, monday)
    starts = [w.start for w in windows]
    # 09:00 Jakarta is 02:00 UTC
    assert starts == [
        datetime(2030, 1, 7, 2, 0, tzinfo=UTC),
        datetime(2030, 1, 7, 2, 30, tzinfo=UTC),
        datetime(2030, 1, 7, 6, 0, tzinfo=UTC),
        datetime(2030, 1, 7, 6, 30, tzinfo=UTC),
    ]
    assert [w.capacity for w in windows] == [4, 4, 2, 2]
    assert windows[0].end == datetime(2030, 1, 7, 2, 30, tzinfo=UTC)
    assert windows_on(JAKARTA, date(2030, 1, 8)) == []  # a closed date
    assert windows_on(JAKARTA, date(2030, 1, 9)) == []  # Wednesday: closed day
    assert len(windows_between(JAKARTA, monday, 7)) == 4  # next Tuesday is closed
    # the next Monday, and the Tuesday after it, which is open
    assert len(windows_between(JAKARTA, monday, 9)) == 4 + 4 + 1


def test_a_window_is_found_by_its_start_in_any_offset():
    found = window_at(JAKARTA, datetime.fromisoformat("2030-01-07T09:30:00+07:00"))
    assert found is not None
    assert found.start == datetime(2030, 1, 7, 2, 30, tzinfo=UTC)
    assert found.local_date == date(2030, 1, 7)
    assert window_at(JAKARTA, datetime.fromisoformat("2030-01-07T09:15:00+07:00")) is None
    assert window_at(JAKARTA, datetime.fromisoformat("2030-01-07T09:00:00+00:00")) is None


def test_the_hour_skipped_by_daylight_saving_is_not_offered():
    berlin = Schedule("Europe/Berlin", 60, (Hours("sun", "01:00", "04:00", 1),))
    spring_forward = date(2030, 3, 31)  # 02:00 -> 03:00
    local_starts = [
        w.start.astimezone(berlin.zone).strftime("%H:%M")
        for w in windows_on(berlin, spring_forward)
    ]
    assert local_starts == ["01:00", "03:00"]


def test_queue_keys_sort_first_come_first_served():
    early = datetime(2030, 1, 1, 9, 0, 0, 1, tzinfo=UTC)
    late = datetime(2030, 1, 1, 9, 0, 0, 2, tzinfo=UTC)
    keys = [queue_key(late, "a"), queue_key(early, "z"), queue_key(early, "b")]
    assert sorted(keys) == [queue_key(early, "b"), queue_key(early, "z"), queue_key(late, "a")]


def test_the_answer_deadline_never_passes_the_window_start():
    asked = datetime(2030, 1, 1, tzinfo=UTC)
    assert answer_by(asked, asked + timedelta(days=3), 86400) == asked + timedelta(days=1)
    assert answer_by(asked, asked + timedelta(hours=2), 86400) == asked + timedelta(hours=2)


def test_load_puts_counters_against_every_window():
    windows = windows_on(JAKARTA, date(2030, 1, 7))
    rows = load(windows, {windows[0].start: {"accepted": 3, "requested": 2, "unknown": 9}})
    assert [(r.held, r.free) for r in rows] == [(3, 1), (0, 4), (0, 2), (0, 2)]
    assert rows[0].counts["requested"] == 2
    assert "unknown" not in rows[0].counts


def test_range_stats_add_up_by_status_and_list_every_day():
    stats = range_stats(
        date(2030, 1, 1),
        date(2030, 1, 3),
        {
            date(2030, 1, 1): {"accepted": 2, "declined": 1},
            date(2030, 1, 3): {"accepted": 1, "completed": 4},
            date(2030, 1, 9): {"accepted": 100},  # outside the range
        },
    )
    assert stats.totals["accepted"] == 3
    assert stats.totals["completed"] == 4
    assert stats.totals["declined"] == 1
    assert [d for d, _ in stats.by_day] == [date(2030, 1, 1), date(2030, 1, 2), date(2030, 1, 3)]
    assert sum(stats.by_day[1][1].values()) == 0


# -- the patient's cap on open requests ------------------------------------------------------


def test_requested_and_accepted_bookings_are_open_and_every_other_status_is_not():
    assert {Status.REQUESTED, Status.ACCEPTED} == OPEN_FOR_PATIENT
    freeing = {(old, action) for (old, action), new in TRANSITIONS.items() if leaves_open(old, new)}
    assert freeing == {
        (Status.REQUESTED, Action.DECLINE),
        (Status.REQUESTED, Action.EXPIRE),
        (Status.REQUESTED, Action.CANCEL),
        (Status.ACCEPTED, Action.CANCEL),
        (Status.ACCEPTED, Action.CHECK_IN),
        (Status.ACCEPTED, Action.NO_SHOW),
    }
    assert not leaves_open(Status.REQUESTED, Status.ACCEPTED)  # an accept keeps it open
    assert not leaves_open(Status.CHECKED_IN, Status.COMPLETED)  # it was not open


def test_a_booking_stops_counting_once_its_window_has_ended():
    ends = {"past": NOW - timedelta(seconds=1), "now": NOW, "later": FUTURE, "odd": "x"}
    assert set(still_open(ends, NOW)) == {"later", "odd"}  # a damaged entry still counts
    assert still_open({}, NOW) == {}


def test_the_cap_refuses_one_more_than_the_limit_and_names_it():
    check_open_limit(4, 5)
    with pytest.raises(Refusal) as refused:
        check_open_limit(5, 5)
    assert (refused.value.code, refused.value.extra) == ("too_many_open_requests", {"limit": 5})
    with pytest.raises(Refusal):
        check_open_limit(7, 5)  # a cap lowered below what is open refuses too
