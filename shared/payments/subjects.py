"""What an order pays for (an appointment or a clinic booking), as payments sees it.

Payments never imports the scheduling features. It knows where subjects are stored and owns
the `payment` map on them; everything that needs a subject's own rules (is it payable, how
does it read now, confirming it, un-confirming it) goes through the `Subjects` port, which
shared/workflows/payment_subjects.py implements and the caller passes in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from shared.payments.rules import Kind
from shared.platform import clients, store
from shared.platform.money import Money

# Where each kind of subject lives; tests/test_architecture.py holds these to the features'.
COLLECTIONS = {Kind.APPOINTMENT: "appointments", Kind.BOOKING: "bookings"}


class Subjects(Protocol):
    def shown(self, kind: Kind, snap: Any) -> dict[str, Any] | None:
        """The subject in `snap` as its owner would see it now (a run-out hold as expired);
        None when it does not exist."""
        ...

    def check_payable(self, kind: Kind, doc: dict[str, Any], now: datetime) -> None:
        """Raise payments.rules.NotPayable unless the subject waits for its payment."""
        ...

    def confirm_in(
        self,
        tx: Any,
        kind: Kind,
        doc: dict[str, Any],
        payment: dict[str, Any],
        now: datetime,
        *,
        unchanged_since: Any = None,
    ) -> None:
        """Confirm the paid subject in `tx`; with `unchanged_since`, only if nobody changed
        it since."""
        ...

    def revoke_in(
        self,
        tx: Any,
        kind: Kind,
        doc: dict[str, Any],
        reason: str,
        now: datetime,
        *,
        unchanged_since: Any = None,
    ) -> None:
        """Un-confirm a subject whose payment PayPal took back, in `tx`."""
        ...


def ref(kind: Kind, subject_id: str) -> Any:
    return clients.db().collection(COLLECTIONS[kind]).document(subject_id)


def read(
    subjects: Subjects, kind: Kind, subject_id: str, *, tx: Any = None
) -> dict[str, Any] | None:
    """The subject as its owner would see it now; None for no such subject."""
    if not 1 <= len(subject_id) <= 128:
        return None
    return subjects.shown(kind, ref(kind, subject_id).get(transaction=tx))


def price(doc: dict[str, Any]) -> Money:
    """What the subject costs: copied from the doctor or the clinic when it was booked."""
    return Money(doc["price"]["currency"], int(doc["price"]["amountMinor"]))


def mark_payment_in(
    tx: Any, snap: Any, status: str, now: datetime, *, unchanged_since: Any = None
) -> None:
    """Show the paid subject's payment as refunded or partly refunded (writes only)."""
    store.update(
        snap.reference,
        {"payment.status": status, "updatedAt": now},
        tx=tx,
        by="system",
        unchanged_since=unchanged_since,
    )
