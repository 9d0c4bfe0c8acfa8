"""The `notify` event function: delivers each notice the outbox queues.

Eventarc delivers `google.cloud.firestore.document.v1.created` for `notifications/{noticeId}`
(binary mode, a protobuf DocumentEventData body); locally dev/relay.py posts the very same
events. The event only names the notice: delivery reads it fresh and claims it with a lease
(shared/notify/service.py), so a redelivered event, or the sweep reaching it at the same time,
never sends anything twice. A failed send is recorded on the notice for the sweep to retry; an
exception (Firestore unavailable) answers 500 and the event is delivered again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent

from shared.notify import service
from shared.platform import ids, logs

log = logs.get("alodoktor.notify")

EVENT_TYPES = frozenset(
    {
        "google.cloud.firestore.document.v1.created",
        "google.cloud.firestore.document.v1.written",
    }
)


def notice_of(attributes: Mapping[str, Any]) -> str | None:
    """The notice id an event names, or None when it names no notice."""
    if attributes.get("type") not in EVENT_TYPES:
        return None
    parts = str(attributes.get("document") or "").split("/")
    if len(parts) != 2 or parts[0] != service.NOTIFICATIONS or not ids.DOC_ID.fullmatch(parts[1]):
        return None
    return parts[1]


@functions_framework.cloud_event
def notify(event: CloudEvent) -> None:
    notice_id = notice_of(event.get_attributes())
    if notice_id is None:
        # Redelivering it cannot help: acknowledge it, and say so loudly.
        log.error("ignored event %s: not a new notice", event.get("id"))
        return
    delivery = service.deliver(notice_id)
    if delivery.claimed:
        log.info("notice %s: %s", notice_id, delivery.results or "nothing sent")
