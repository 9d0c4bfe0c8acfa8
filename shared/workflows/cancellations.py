"""Ending a paid appointment or booking: cancel (or decline, or expire), queue the refund the
policy grants in the same transaction, and send it to PayPal once that has committed.

Scheduling code knows nothing of payments: every call that can end an appointment or a
booking (appointments.cancel, bookings.apply and bookings.sweep) requires an `Ending`, and
`REFUND` is the one that knows both halves. The functions pass it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.platform.context import Role


class _RefundOnEnd:
    """The refund policy applied to whatever ends: queued with the ending, sent after it."""

    # Payments (and the PayPal client) load when something paid ends, not on the cold start
    # of every function that can cancel.
    def in_transaction(
        self, tx: Any, subject: dict[str, Any], ended_by: Role | str, starts_in: timedelta
    ) -> str | None:
        from shared.payments import refunds

        return refunds.queue_for_cancellation(tx, subject, ended_by, starts_in)

    def after_commit(self, subject: dict[str, Any]) -> None:
        from shared.payments import refund_sending

        refund_sending.send_for_cancellation(subject)


REFUND = _RefundOnEnd()
