"""Notices about payouts, queued in the outbox in the same commit as what they tell of.

To the provider: `payout_sent`, `payout_unclaimed`, `payout_returned`, `payout_address_code`
(the code that verifies a new address, to that address), `payout_address_changed` (to the
account's own e-mail: the defence against a taken-over account redirecting payouts).
To the admins (shared/platform/alert_recipients.py): `payout_alert`, with an ERROR log line
that starts `PAYOUT_ALERT` so log-based alerting can match it (PayPal refused a batch, a paid
payout was taken back, money in transit does not match the open payouts).
"""

from __future__ import annotations

from typing import Any

from shared.identity import profiles
from shared.platform import alert_recipients, logs, outbox

log = logs.get("alodoktor.payouts")

ALERT_MARK = "PAYOUT_ALERT"


def to_provider(batch: Any, uid: str, kind: str, data: dict[str, Any]) -> None:
    """Queue notice `kind` to the provider's account e-mail in `batch` (none without one)."""
    profile = profiles.get(uid) or {}
    email = profile.get("email")
    if isinstance(email, str) and email:
        outbox.queue(batch, uid, email, kind, data, "system")


def to_address(batch: Any, uid: str, email: str, kind: str, data: dict[str, Any]) -> None:
    outbox.queue(batch, uid, email, kind, data, "system")


def alert_admins(batch: Any, what: str, message: str, data: dict[str, Any]) -> None:
    """Tell the admins (a notice each, in `batch`) and the log (one ERROR line)."""
    log.error("%s %s: %s", ALERT_MARK, what, message, extra={"fields": {"alert": what, **data}})
    for uid, email in alert_recipients.admins():
        outbox.queue(
            batch, uid, email, "payout_alert", {"alert": what, "message": message, **data}, "system"
        )
