"""What else happens when a booked thing ends: the seam that keeps scheduling and money apart.

An appointment or a clinic booking may end (cancelled, declined, expired) after it was paid.
Its feature does not know about payments; it takes an `Ending` from its caller and calls it
inside the ending's transaction, then after the commit. `shared/workflows/cancellations.py`
supplies the one that queues the refund the policy grants and then sends it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from shared.platform.context import Role


class Ending(Protocol):
    def in_transaction(
        self, tx: Any, subject: dict[str, Any], ended_by: Role | str, starts_in: timedelta
    ) -> str | None:
        """Inside the ending's transaction (which may run more than once): write what must
        commit with it, and return what to record on the ended record (the refund granted:
        "full" or "none"; None when nothing was paid). Writes only, through `tx`."""
        ...

    def after_commit(self, subject: dict[str, Any]) -> None:
        """After the ending committed: side effects (sending the refund). Must not raise for
        a failure the caller's answer should not turn into (the ending has committed)."""
        ...
