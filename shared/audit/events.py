"""Firestore `document.v1.written` CloudEvents (as Eventarc delivers them) to plain changes.

The body is a serialized `google.events.cloud.firestore.v1.DocumentEventData`; values are made
plain (JSON-safe Python) here so nothing downstream touches protobuf.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.audit.rules import Change, format_time
from shared.platform import clock

EVENT_TYPE = "google.cloud.firestore.document.v1.written"
DATA_SCHEMA = (
    "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/"
    "firestore/v1/data.proto"
)


class NotAFirestoreEvent(ValueError):
    pass


def _plain(value: Any) -> Any:
    """A google.events Value message as a plain value; times as RFC 3339 strings."""
    kind = value.WhichOneof("value_type")
    if kind in (None, "null_value"):
        return None
    if kind == "boolean_value":
        return bool(value.boolean_value)
    if kind == "integer_value":
        return int(value.integer_value)
    if kind == "double_value":
        number = float(value.double_value)
        return number if math.isfinite(number) else repr(number)
    if kind == "timestamp_value":
        return format_time(value.timestamp_value.ToDatetime(tzinfo=UTC))
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bytes_value":
        return "base64:" + base64.b64encode(value.bytes_value).decode()
    if kind == "reference_value":
        return str(value.reference_value).partition("/documents/")[2] or value.reference_value
    if kind == "geo_point_value":
        point = value.geo_point_value
        return {"latitude": point.latitude, "longitude": point.longitude}
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "map_value":
        return {k: _plain(v) for k, v in value.map_value.fields.items()}
    raise NotAFirestoreEvent(f"unknown value kind {kind}")


def _fields(document: Any) -> dict[str, Any]:
    return {k: _plain(v) for k, v in document.fields.items()}


def parse(attributes: Mapping[str, Any], data: bytes | str | None) -> Change:
    """A Change from a CloudEvent's attributes and its protobuf body."""
    from google.events.cloud.firestore_v1.types import DocumentEventData
    from google.protobuf.message import DecodeError

    if attributes.get("type") != EVENT_TYPE:
        raise NotAFirestoreEvent(f"event type {attributes.get('type')!r}")
    document = attributes.get("document")
    event_id = attributes.get("id")
    if not document or not event_id:
        raise NotAFirestoreEvent("an event without document or id")
    raw = data.encode("latin-1") if isinstance(data, str) else (data or b"")
    try:
        payload = DocumentEventData.pb().FromString(raw)
    except DecodeError as exc:
        raise NotAFirestoreEvent("the body is not a DocumentEventData") from exc
    before = _fields(payload.old_value) if payload.HasField("old_value") else None
    after = _fields(payload.value) if payload.HasField("value") else None
    if before is None and after is None:
        raise NotAFirestoreEvent("an event with neither old nor new value")
    return Change(
        event_id=str(event_id),
        path=str(document),
        at=_event_time(attributes.get("time")),
        before=before,
        after=after,
    )


def _event_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        moment = clock.real_now()  # a commit time is Firestore's, which never moves
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Firestore keeps microseconds: store what reads back equal, so the entry's hash verifies.
    return moment.astimezone(UTC)
