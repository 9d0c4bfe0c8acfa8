"""The appointment state machine and who may move it where. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.platform.context import Role


class Status(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # an unpaid hold that ran out


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING_PAYMENT: frozenset({Status.CONFIRMED, Status.CANCELLED, Status.EXPIRED}),
    Status.CONFIRMED: frozenset({Status.COMPLETED, Status.NO_SHOW, Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.NO_SHOW: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.EXPIRED: frozenset(),
}


class TransitionRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_transition(current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        raise TransitionRefused(
            "illegal_transition", f"An appointment that is {current} cannot become {target}."
        )


def check_cancel(
    current: Status, role: Role, start: datetime, now: datetime, cutoff: timedelta
) -> None:
    """Patients cancel up to `cutoff` before the start; doctors and admins at any time."""
    check_transition(current, Status.CANCELLED)
    if role is Role.PATIENT and now > start - cutoff:
        raise TransitionRefused(
            "cancellation_window_closed",
            f"Patients can cancel up to {cutoff} before the start; contact the doctor.",
        )


def check_outcome(current: Status, target: Status, start: datetime, now: datetime) -> None:
    """Completed and no-show are recorded once the appointment has started."""
    check_transition(current, target)
    if now < start:
        raise TransitionRefused("not_started", "The appointment has not started yet.")


# The outcomes that deliver what a payment bought: the visit took place, or the patient did not
# come to it (the doctor's time was theirs either way).
DELIVERED = frozenset({Status.COMPLETED, Status.NO_SHOW})


def delivered_at(doc: Mapping[str, Any]) -> datetime | None:
    """When an appointment was delivered, for the payout hold: the end of its slot, once an
    outcome that delivers it is recorded; None until then (or for good). Never `outcomeAt`:
    an outcome is recorded any time after the start, and the hold counts from the visit's
    end. An end that is not a time (a damaged record) is not delivered."""
    if doc.get("status") not in DELIVERED:
        return None
    end = doc.get("end")
    return end if isinstance(end, datetime) else None


def check_reschedule(current: Status, start: datetime, now: datetime, cutoff: timedelta) -> None:
    if current is not Status.CONFIRMED:
        raise TransitionRefused("illegal_transition", "Only confirmed appointments move.")
    if now > start - cutoff:
        raise TransitionRefused(
            "reschedule_window_closed", f"Appointments move up to {cutoff} before the start."
        )


def hold_expired(status: Status, hold_expires_at: datetime | None, now: datetime) -> bool:
    return (
        status is Status.PENDING_PAYMENT and hold_expires_at is not None and hold_expires_at <= now
    )


def payment_refusal(doc: dict[str, Any], now: datetime) -> tuple[str, str] | None:
    """(code, message) saying why this appointment cannot be paid now; None while it waits
    for its payment within its hold."""
    status = Status(doc["status"])
    if status is Status.EXPIRED or hold_expired(status, doc.get("holdExpiresAt"), now):
        return "hold_expired", "The appointment's hold ran out; book again."
    if status is Status.CONFIRMED:
        return "already_paid", "This appointment is paid."
    if status is not Status.PENDING_PAYMENT:
        return "not_payable", f"A {status.value} appointment cannot be paid."
    return None


# A prescription is written for an appointment that took place or will (not one that failed).
PRESCRIBABLE = frozenset({Status.CONFIRMED, Status.COMPLETED})
