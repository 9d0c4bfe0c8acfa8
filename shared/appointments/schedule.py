"""Availability maths: a doctor's weekly schedule in their time zone, turned into UTC slots.

Pure. Slots are generated on local wall-clock times, so a 09:00 slot stays at 09:00 local
across a daylight-saving change (its UTC instant moves); a local time that does not exist
(the spring-forward gap) yields no slot, and one that occurs twice (fall-back) yields one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RANGE_DAYS = 31


@dataclass(frozen=True)
class Interval:
    start: time
    end: time


@dataclass(frozen=True)
class DayException:
    day: date
    off: bool  # a day off; otherwise `intervals` are extra hours that day
    intervals: tuple[Interval, ...] = ()


@dataclass(frozen=True)
class Schedule:
    time_zone: str
    slot_minutes: int
    weekly: Mapping[str, Sequence[Interval]]
    exceptions: Sequence[DayException] = ()

    def intervals_on(self, day: date) -> list[Interval]:
        extra: list[Interval] = []
        for exc in self.exceptions:
            if exc.day == day:
                if exc.off:
                    return []
                extra.extend(exc.intervals)
        return [*self.weekly.get(WEEKDAYS[day.weekday()], ()), *extra]


def _exists(local: datetime, zone: ZoneInfo) -> bool:
    """False for wall-clock times skipped by a spring-forward change."""
    round_trip = local.astimezone(UTC).astimezone(zone)
    return round_trip.replace(tzinfo=None) == local.replace(tzinfo=None)


def local_slots(schedule: Schedule, day: date) -> Iterator[datetime]:
    """Slot starts (aware, local) on one local day, each fitting wholly in its interval."""
    zone = ZoneInfo(schedule.time_zone)
    step = timedelta(minutes=schedule.slot_minutes)
    seen: set[datetime] = set()
    for interval in sorted(schedule.intervals_on(day), key=lambda i: i.start):
        cursor = datetime.combine(day, interval.start)
        end = datetime.combine(day, interval.end)
        while cursor + step <= end:
            local = cursor.replace(tzinfo=zone, fold=0)  # the first of an ambiguous pair
            if _exists(local, zone) and cursor not in seen:
                seen.add(cursor)
                yield local
            cursor += step


def slots_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """UTC slot starts in [start, end), sorted; the range is bounded to MAX_RANGE_DAYS."""
    if end <= start:
        return []
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise ValueError(f"a range is at most {MAX_RANGE_DAYS} days")
    zone = ZoneInfo(schedule.time_zone)
    first = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    out: set[datetime] = set()
    day = first
    while day <= last:
        for local in local_slots(schedule, day):
            utc = local.astimezone(UTC)
            if start <= utc < end:
                out.add(utc)
        day += timedelta(days=1)
    return sorted(out)


def is_slot(schedule: Schedule, start: datetime) -> bool:
    """Whether `start` (aware) is one of the schedule's slot starts."""
    utc = start.astimezone(UTC)
    return utc in slots_between(schedule, utc - timedelta(hours=1), utc + timedelta(hours=1))
