"""When what an order paid for took place, as payouts sees it: the port through which payouts
learn of appointments and bookings without importing them (shared/workflows/payout_deliveries.py
implements it; the payouts function passes it in)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from shared.payments.rules import Kind

Subject = tuple[Kind, str]


class Deliveries(Protocol):
    def delivered_at(self, subjects: Sequence[Subject]) -> dict[Subject, datetime | None]:
        """For each (kind, id): when it was delivered (an appointment or booking completed,
        or its patient did not come: either way the provider's time was theirs and the
        refund policy gives nothing back), or None while it has not been (or never will)."""
        ...
