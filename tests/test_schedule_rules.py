"""Availability maths and the appointment and prescription state machines (pure, no emulator)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.appointments import rules as ar
from shared.appointments.schedule import DayException, Interval, Schedule, is_slot, slots_between
from shared.platform.context import Role
from shared.prescriptions import rules as pr

NINE_TO_NOON = {d: [Interval(time(9), time(12))] for d in ("mon", "tue", "wed", "thu", "fri")}


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_slots_are_local_wall_clock_times_in_utc():
    s = Schedule("Asia/Jakarta", 30, NINE_TO_NOON)  # UTC+7, no DST
    slots = slots_between(s, _utc(2026, 12, 7), _utc(2026, 12, 8))  # a Monday
    assert slots[0] == _utc(2026, 12, 7, 2)  # 09:00 WIB
    assert slots[-1] == _utc(2026, 12, 7, 4, 30)  # 11:30 WIB, the last that ends by noon
    assert len(slots) == 6


def test_daylight_saving_keeps_local_times_and_never_duplicates():
    # Europe/Berlin leaves summer time on 2026-10-25 (Sunday): 03:00 CEST -> 02:00 CET.
    s = Schedule(
        "Europe/Berlin",
        60,
        {
            "sat": [Interval(time(9), time(11))],
            "sun": [Interval(time(0), time(5))],
            "mon": [Interval(time(9), time(11))],
        },
    )
    sat = slots_between(s, _utc(2026, 10, 24), _utc(2026, 10, 24, 12))
    mon = slots_between(s, _utc(2026, 10, 26), _utc(2026, 10, 27))
    assert sat == [_utc(2026, 10, 24, 7), _utc(2026, 10, 24, 8)]  # 09:00 CEST = 07:00Z
    assert mon == [_utc(2026, 10, 26, 8), _utc(2026, 10, 26, 9)]  # 09:00 CET = 08:00Z
    sunday = slots_between(s, _utc(2026, 10, 24, 12), _utc(2026, 10, 25, 12))
    # 00,01,02(first),03,04 local: five slots, 02:00 only once, all distinct instants
    assert len(sunday) == 5
    assert len(set(sunday)) == 5


def test_spring_forward_gap_yields_no_slot():
    # America/New_York skips 02:00-03:00 on 2026-03-08.
    s = Schedule("America/New_York", 60, {"sun": [Interval(time(0), time(5))]})
    slots = slots_between(s, _utc(2026, 3, 8), _utc(2026, 3, 9))
    assert len(slots) == 4  # 00, 01, 03, 04 local
    assert len(set(slots)) == 4


def test_exceptions_take_days_off_and_add_hours():
    s = Schedule(
        "UTC",
        60,
        NINE_TO_NOON,
        exceptions=[
            DayException(date(2026, 12, 7), off=True),
            DayException(date(2026, 12, 12), off=False, intervals=(Interval(time(10), time(12)),)),
        ],
    )
    assert slots_between(s, _utc(2026, 12, 7), _utc(2026, 12, 8)) == []
    assert slots_between(s, _utc(2026, 12, 12), _utc(2026, 12, 13)) == [
        _utc(2026, 12, 12, 10),
        _utc(2026, 12, 12, 11),
    ]
    assert is_slot(s, _utc(2026, 12, 8, 9))
    assert not is_slot(s, _utc(2026, 12, 8, 9, 15))


def test_ranges_are_bounded():
    s = Schedule("UTC", 30, NINE_TO_NOON)
    with pytest.raises(ValueError):
        slots_between(s, _utc(2026, 1, 1), _utc(2026, 3, 1))


@given(
    zone=st.sampled_from(
        [
            "Europe/Berlin",
            "America/New_York",
            "Australia/Sydney",
            "Asia/Jakarta",
            "America/Sao_Paulo",
            "Pacific/Chatham",
        ]
    ),
    minutes=st.sampled_from([10, 15, 20, 30, 45, 60]),
    start_day=st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 1)),
)
def test_slots_are_unique_sorted_and_spaced(zone, minutes, start_day):
    s = Schedule(
        zone,
        minutes,
        {
            d: [Interval(time(0), time(23, 59))]
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        },
    )
    begin = datetime.combine(start_day, time(), UTC)
    slots = slots_between(s, begin, begin + timedelta(days=7))
    assert slots == sorted(set(slots))
    zone = ZoneInfo(s.time_zone)
    for slot in slots:  # every slot sits on the local wall-clock grid of the schedule
        local = slot.astimezone(zone)
        assert (local.hour * 60 + local.minute) % minutes == 0
    assert all(is_slot(s, x) for x in slots[:3])


NOW = _utc(2026, 12, 1, 12)


def test_patients_cancel_only_before_the_cutoff():
    start = NOW + timedelta(hours=3)
    ar.check_cancel(ar.Status.CONFIRMED, Role.PATIENT, start, NOW, timedelta(hours=2))
    with pytest.raises(ar.TransitionRefused) as late:
        ar.check_cancel(ar.Status.CONFIRMED, Role.PATIENT, start, NOW, timedelta(hours=4))
    assert late.value.code == "cancellation_window_closed"
    ar.check_cancel(ar.Status.CONFIRMED, Role.DOCTOR, start, NOW, timedelta(hours=4))


@pytest.mark.parametrize("current", list(ar.Status))
@pytest.mark.parametrize("target", list(ar.Status))
def test_appointment_transitions_follow_the_table(current, target):
    allowed = (current, target) in {
        (ar.Status.PENDING_PAYMENT, ar.Status.CONFIRMED),
        (ar.Status.PENDING_PAYMENT, ar.Status.CANCELLED),
        (ar.Status.PENDING_PAYMENT, ar.Status.EXPIRED),
        (ar.Status.CONFIRMED, ar.Status.COMPLETED),
        (ar.Status.CONFIRMED, ar.Status.NO_SHOW),
        (ar.Status.CONFIRMED, ar.Status.CANCELLED),
    }
    if allowed:
        ar.check_transition(current, target)
    else:
        with pytest.raises(ar.TransitionRefused):
            ar.check_transition(current, target)


def test_outcomes_wait_for_the_start():
    with pytest.raises(ar.TransitionRefused) as early:
        ar.check_outcome(ar.Status.CONFIRMED, ar.Status.COMPLETED, NOW + timedelta(hours=1), NOW)
    assert early.value.code == "not_started"
    ar.check_outcome(ar.Status.CONFIRMED, ar.Status.NO_SHOW, NOW - timedelta(minutes=1), NOW)


def test_prescription_moves_belong_to_one_role_each():
    pr.check_move(pr.Status.ISSUED, pr.Status.SENT, Role.PATIENT)
    pr.check_move(pr.Status.SENT, pr.Status.RECEIVED, Role.PHARMACY)
    pr.check_move(pr.Status.READY, pr.Status.CANCELLED, Role.DOCTOR)
    with pytest.raises(pr.MoveRefused) as wrong_role:
        pr.check_move(pr.Status.SENT, pr.Status.RECEIVED, Role.PATIENT)
    assert wrong_role.value.code == "not_your_move"
    with pytest.raises(pr.MoveRefused) as final:
        pr.check_move(pr.Status.DISPENSED, pr.Status.CANCELLED, Role.DOCTOR)
    assert final.value.code == "prescription_final"
    with pytest.raises(pr.MoveRefused) as skip:
        pr.check_move(pr.Status.SENT, pr.Status.DISPENSED, Role.PHARMACY)
    assert skip.value.code == "illegal_transition"
