"""The `audit-trigger` event function: one audit entry per Firestore document write.

Eventarc delivers `google.cloud.firestore.document.v1.written` CloudEvents (binary mode, body a
protobuf DocumentEventData); locally dev/relay.py posts the very same events. Each entry is one
document created on its own (no chain head, nothing shared with other entries), later sealed
into a checkpoint by the audit function. Delivery is at least once: the entry id derives from
the event id, so a redelivery writes nothing. An exception answers 500, and the event is
delivered again.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.audit import events as firestore_events
from shared.audit import service as audit
from shared.platform import logs

log = logs.get("alodoktor.audit-trigger")


@functions_framework.cloud_event
def audit_trigger(event: CloudEvent) -> None:
    try:
        change = firestore_events.parse(event.get_attributes(), event.get_data())
    except firestore_events.NotAFirestoreEvent as exc:
        # Redelivering a malformed event cannot help: acknowledge it, and say so loudly.
        log.error("ignored event %s: %s", event.get("id"), exc)
        return
    entry = audit.record_change(change)
    if entry is not None:
        log.info(
            "audit %s %s by %s (%s)",
            entry["action"],
            entry["resource"],
            entry["actor"],
            entry["id"],
        )
