"""Telling people the audit log does not verify: one ERROR line that log-based alerting
matches (terraform/monitoring.tf, `audit_chain_broken`), and an `audit_alert` notice to each
admin shared/platform/alert_recipients.py names, through the outbox, once per finding (its
notice id is derived from it, so a break the scheduled check finds again every run is not
sent again)."""

from __future__ import annotations

import hashlib
from typing import Any

from shared.platform import alert_recipients, clients, logs, outbox

log = logs.get("alodoktor.audit")

ALERT_KIND = "audit_alert"


def finding_id(where: str, reason: str) -> str:
    """One finding's id: the same wherever it is found again."""
    return hashlib.sha256(f"{where}\x00{reason}".encode()).hexdigest()[:32]


def notice_id(where: str, reason: str, uid: str) -> str:
    return f"audit-alert-{finding_id(where, reason)}-{uid}"[:256]


def chain_broken(where: str, reason: str, **fields: Any) -> None:
    """The log does not verify at `where` (an entry or a checkpoint) for `reason`."""
    from google.api_core.exceptions import AlreadyExists

    log.error(
        "audit chain broken at %s: %s",
        where,
        reason,
        extra={"fields": {"audit": {"where": where, "reason": reason, **fields}}},
    )
    for uid, email in alert_recipients.admins():
        batch = clients.db().batch()
        data = {"where": where, "reason": reason}
        outbox.queue(
            batch, uid, email, ALERT_KIND, data, "system", notice_id=notice_id(where, reason, uid)
        )
        try:
            batch.commit()
        except AlreadyExists:
            continue  # told before about this very finding
