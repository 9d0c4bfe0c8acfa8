"""Clinic bookings, the rules alone: the state machine, windows in the clinic's time zone,
capacity, queue keys and the dashboards' arithmetic.

Pure: no I/O, so every rule is tested fast (tests/test_booking_rules.py) and shared by the
bookings service (shared/bookings/service.py) and the function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo


class Status(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    CHECKED_IN = "checked_in"
    COMPLETED = "completed"
    NO_SHOW = "no_show"


class Action(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    EXPIRE = "expire"  # the sweep's decline of an unanswered request
    CANCEL = "cancel"
    CHECK_IN = "check-in"
    COMPLETE = "complete"
    NO_SHOW = "no-show"


# (from, action) -> to. Anything not listed is an illegal transition.
TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (Status.REQUESTED, Action.ACCEPT): Status.ACCEPTED,
    (Status.REQUESTED, Action.DECLINE): Status.DECLINED,
    (Status.REQUESTED, Action.EXPIRE): Status.DECLINED,
    (Status.REQUESTED, Action.CANCEL): Status.CANCELLED,
    (Status.ACCEPTED, Action.CANCEL): Status.CANCELLED,
    (Status.ACCEPTED, Action.CHECK_IN): Status.CHECKED_IN,
    (Status.ACCEPTED, Action.NO_SHOW): Status.NO_SHOW,
    (Status.CHECKED_IN, Action.COMPLETE): Status.COMPLETED,
}

# What the clinic records of the visit itself. Only once its window has started (as an
# appointment's outcome waits for its start): marked earlier, a paid booking could no longer be
# cancelled for its refund, and would count as delivered for the clinic's payout.
OUTCOMES = frozenset({Status.CHECKED_IN, Status.COMPLETED, Status.NO_SHOW})
# The outcomes that deliver what a payment bought: the visit took place, or the patient did not
# come to it (the clinic's time was theirs either way).
DELIVERED = frozenset({Status.COMPLETED, Status.NO_SHOW})

# Statuses that hold one of the window's places.
HOLDS_A_PLACE = frozenset({Status.ACCEPTED, Status.CHECKED_IN, Status.COMPLETED, Status.NO_SHOW})
# Statuses in which a booking counts against its patient's cap on open requests: still
# waiting for the clinic's answer (requested), or accepted and still to come (accepted). A
# booking leaves this set when it is declined (or expires), cancelled, checked in or marked a
# no-show, and also, without any transition, once its window has ended (see `still_open`):
# an accepted booking the clinic never checked in must not hold the patient's place forever.
OPEN_FOR_PATIENT = frozenset({Status.REQUESTED, Status.ACCEPTED})


class Refusal(Exception):
    """A rule says no; `code` is the problem code the API answers with (409), `extra` the
    problem's extension members."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def next_status(
    current: Status, action: Action, *, now: datetime, window_start: datetime
) -> Status:
    """The status `action` leads to from `current`, or Refusal."""
    target = TRANSITIONS.get((current, action))
    if target is None:
        raise Refusal(
            "illegal_transition", f"A {current.value} booking cannot take '{action.value}'."
        )
    if action in (Action.CANCEL, Action.ACCEPT) and now >= window_start:
        raise Refusal("window_started", "The booking's window has already started.")
    if target in OUTCOMES and now < window_start:
        raise Refusal("not_started", "The booking's window has not started yet.")
    return target


def delivered_at(doc: Mapping[str, Any]) -> datetime | None:
    """When a booking was delivered, for the payout hold: the end of its window, once the
    clinic has recorded an outcome that delivers it; None until then (or for good). Never the
    time the outcome was recorded, which a clinic chooses. An end that is not a time (a
    damaged record) is not delivered: better paid late than for a visit that never was."""
    if doc.get("status") not in DELIVERED:
        return None
    end = doc.get("windowEnd")
    return end if isinstance(end, datetime) else None


def check_capacity(held: int, capacity: int) -> None:
    """Accepting one more must keep the window's held places within its capacity."""
    if held + 1 > capacity:
        raise Refusal("window_full", f"All {capacity} places of this window are taken.")


def held(counts: Mapping[str, Any]) -> int:
    """Places taken in a window, from its counts by status."""
    return sum(int(counts.get(s.value, 0) or 0) for s in HOLDS_A_PLACE)


def leaves_open(old: Status, new: Status) -> bool:
    """Whether a move from `old` to `new` frees a place under the patient's cap."""
    return old in OPEN_FOR_PATIENT and new not in OPEN_FOR_PATIENT


def still_open(open_bookings: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Of a patient's open bookings (booking id -> its window's end), those that still count
    at `now`: the ones whose window has not ended. A value that is not a time counts, so a
    damaged record errs towards the cap."""
    return {
        booking_id: end
        for booking_id, end in open_bookings.items()
        if not isinstance(end, datetime) or end > now
    }


def check_open_limit(open_count: int, limit: int) -> None:
    """One more request must keep the patient's open bookings within `limit`."""
    if open_count + 1 > limit:
        raise Refusal(
            "too_many_open_requests",
            f"You already have {open_count} open clinic bookings (waiting for an answer or still "
            f"to come); a patient may have at most {limit} at once.",
            limit=limit,
        )


def moved_counts(old: Status | None, new: Status) -> dict[str, int]:
    """The counter deltas of a booking moving from `old` (None: new) to `new`."""
    deltas = {new.value: 1}
    if old is not None:
        deltas[old.value] = -1
    return deltas


# -- windows --------------------------------------------------------------------------

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Hours:
    day: str  # mon..sun
    opens: str  # HH:MM, local
    closes: str
    capacity: int


@dataclass(frozen=True)
class Schedule:
    time_zone: str
    window_minutes: int
    weekly: tuple[Hours, ...]
    closed_dates: frozenset[date] = frozenset()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Schedule:
        """From the `schedule` map of a clinic document."""
        return cls(
            time_zone=doc["timeZone"],
            window_minutes=int(doc["windowMinutes"]),
            weekly=tuple(
                Hours(h["day"], h["opens"], h["closes"], int(h["capacity"])) for h in doc["weekly"]
            ),
            closed_dates=frozenset(date.fromisoformat(d) for d in doc.get("closedDates", [])),
        )


@dataclass(frozen=True)
class Window:
    start: datetime  # UTC
    end: datetime  # UTC
    local_date: date
    capacity: int

    @property
    def id_part(self) -> str:
        return self.start.strftime("%Y%m%dT%H%MZ")


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def windows_on(schedule: Schedule, day: date) -> list[Window]:
    """The windows of a local day, in order; none on a closed date or day.

    Each opening period is cut into windows of `window_minutes` from its opening time; a
    remainder shorter than a window is not offered. A local time that does not exist (the
    hour skipped when clocks go forward) is not offered either.
    """
    if day in schedule.closed_dates:
        return []
    zone = schedule.zone
    weekday = WEEKDAYS[day.weekday()]
    step = timedelta(minutes=schedule.window_minutes)
    out: list[Window] = []
    for hours in sorted(
        (h for h in schedule.weekly if h.day == weekday), key=lambda h: (h.opens, h.closes)
    ):
        start = datetime.combine(day, _hhmm(hours.opens))
        closes = datetime.combine(day, _hhmm(hours.closes))
        while start + step <= closes:
            local = start.replace(tzinfo=zone)
            utc = local.astimezone(UTC)
            if utc.astimezone(zone).replace(tzinfo=None) == start:  # exists on this day
                end = (start + step).replace(tzinfo=zone).astimezone(UTC)
                out.append(Window(utc, end, day, hours.capacity))
            start += step
    return out


def local_date(schedule: Schedule, instant: datetime) -> date:
    return instant.astimezone(schedule.zone).date()


def window_at(schedule: Schedule, start: datetime) -> Window | None:
    """The scheduled window that starts at `start` (any time zone), if there is one."""
    start_utc = start.astimezone(UTC)
    for window in windows_on(schedule, local_date(schedule, start_utc)):
        if window.start == start_utc:
            return window
    return None


def windows_between(schedule: Schedule, first: date, days: int) -> list[Window]:
    return [w for i in range(days) for w in windows_on(schedule, first + timedelta(days=i))]


# -- queue ------------------------------------------------------------------------------


def queue_key(requested_at: datetime, booking_id: str) -> str:
    """Sorts bookings first come first served: request time (UTC, microseconds), then id."""
    return requested_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "~" + booking_id


def answer_by(requested_at: datetime, window_start: datetime, answer_seconds: int) -> datetime:
    """When an unanswered request is declined: the answer deadline or the window's start."""
    return min(requested_at + timedelta(seconds=answer_seconds), window_start)


# -- dashboards ---------------------------------------------------------------------------


def empty_counts() -> dict[str, int]:
    return {s.value: 0 for s in Status}


def clean_counts(counts: Mapping[str, Any] | None) -> dict[str, int]:
    out = empty_counts()
    for key, value in (counts or {}).items():
        if key in out:
            out[key] = int(value or 0)
    return out


@dataclass(frozen=True)
class WindowLoad:
    window: Window
    counts: dict[str, int]

    @property
    def held(self) -> int:
        return held(self.counts)

    @property
    def free(self) -> int:
        return max(self.window.capacity - self.held, 0)


def load(
    windows: Iterable[Window], counters: Mapping[datetime, Mapping[str, Any]]
) -> list[WindowLoad]:
    """Each scheduled window with its counts by status (counters keyed by window start, UTC)."""
    return [WindowLoad(w, clean_counts(counters.get(w.start))) for w in windows]


def open_to_request(rows: Iterable[WindowLoad], now: datetime) -> list[WindowLoad]:
    """The windows a patient may still ask for: not started yet (a request for a started
    window is refused), whatever their free places (a full window still shows, as full)."""
    return [row for row in rows if now < row.window.start]


@dataclass(frozen=True)
class RangeStats:
    totals: dict[str, int]
    by_day: list[tuple[date, dict[str, int]]]  # every day of the range, in order


def range_stats(
    first: date, last: date, day_counts: Mapping[date, Mapping[str, Any]]
) -> RangeStats:
    """Counts by status over a range of local dates (inclusive), in total and day by day."""
    totals = empty_counts()
    by_day: list[tuple[date, dict[str, int]]] = []
    day = first
    while day <= last:
        counts = clean_counts(day_counts.get(day))
        for key, value in counts.items():
            totals[key] += value
        by_day.append((day, counts))
        day += timedelta(days=1)
    return RangeStats(totals, by_day)


def payment_refusal(doc: Mapping[str, Any], now: datetime) -> tuple[str, str] | None:
    """(code, message) saying why this booking cannot be paid now; None while it is open,
    unpaid, and its window has not started."""
    status = Status(doc["status"])
    if (doc.get("payment") or {}).get("status") == "captured":
        return "already_paid", "This booking is paid."
    if status not in (Status.REQUESTED, Status.ACCEPTED):
        return "not_payable", f"A {status.value} booking cannot be paid."
    if now >= doc["windowStart"]:
        return "window_started", "The booking's window has already started."
    return None
