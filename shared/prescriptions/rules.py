"""The prescription lifecycle and who moves it. Pure."""

from __future__ import annotations

from enum import StrEnum

from shared.platform.context import Role


class Status(StrEnum):
    ISSUED = "issued"  # written by the doctor, no pharmacy chosen yet
    SENT = "sent"  # the patient chose a pharmacy
    RECEIVED = "received"
    READY = "ready"
    DISPENSED = "dispensed"
    REJECTED = "rejected"  # by the pharmacy, with a reason; the patient may send it elsewhere
    CANCELLED = "cancelled"  # by the doctor, before it is dispensed


# (from, to) -> the role that may make the move
MOVES: dict[tuple[Status, Status], Role] = {
    (Status.ISSUED, Status.SENT): Role.PATIENT,
    (Status.REJECTED, Status.SENT): Role.PATIENT,
    (Status.SENT, Status.RECEIVED): Role.PHARMACY,
    (Status.SENT, Status.REJECTED): Role.PHARMACY,
    (Status.RECEIVED, Status.READY): Role.PHARMACY,
    (Status.RECEIVED, Status.REJECTED): Role.PHARMACY,
    (Status.READY, Status.DISPENSED): Role.PHARMACY,
    **{
        (s, Status.CANCELLED): Role.DOCTOR
        for s in (Status.ISSUED, Status.SENT, Status.RECEIVED, Status.READY, Status.REJECTED)
    },
}

FINAL = frozenset({Status.DISPENSED, Status.CANCELLED})


class MoveRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_move(current: Status, target: Status, role: Role) -> None:
    if current in FINAL:
        raise MoveRefused("prescription_final", f"A {current} prescription cannot change.")
    mover = MOVES.get((current, target))
    if mover is None:
        raise MoveRefused("illegal_transition", f"A {current} prescription cannot become {target}.")
    if role is not mover:
        raise MoveRefused(
            "not_your_move", f"Only the {mover.value} moves it from {current} to {target}."
        )
