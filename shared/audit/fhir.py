"""An audit entry as a FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html), the shape
Medplum and other FHIR servers keep their audit trail in. Pure.

    type        DICOM 110112 "Query" for reads of health data, else "rest" (a RESTful operation)
    subtype     the FHIR restful interaction: create, update, delete, read
    action      C, U, D or R
    recorded    when the log wrote it (writtenAt; a legacy entry: when it happened)
    period      when the change or read happened
    outcome     0 (success): entries record what was done
    agent       the actor (a uid, `system`, or `service:scheduler`), the requestor
    source      the function that acted, observed by the Alo Doktor backend
    entity      the document (`<collection>/<id>`), with the changed field names (values stay
                out: health values are keyed hashes in the entry, and not repeated here)
    purposeOfEvent  the reason a read gave
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.audit import rules as audit_log

_ACTION = {"create": "C", "update": "U", "delete": "D", "read": "R"}
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE = "Alo Doktor backend"


def _instant(value: Any) -> str | None:
    if isinstance(value, datetime):
        return audit_log.format_time(value)
    return None


def audit_event(entry_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    action = str(entry.get("action"))
    resource = str(entry.get("resource"))
    happened = _instant(entry.get("at"))
    recorded = _instant(entry.get(audit_log.WRITTEN_AT)) or happened
    if action == "read":
        event_type = {"system": _DICOM, "code": "110112", "display": "Query"}
    else:
        event_type = {"system": _EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
    changes = entry.get("changes") or {}
    entity: dict[str, Any] = {
        "what": {"reference": resource},
        "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
    }
    if changes:
        entity["detail"] = [
            {"type": "changedField", "valueString": name} for name in sorted(changes)
        ]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": entry_id,
        "type": event_type,
        "subtype": [{"system": _INTERACTION, "code": action}],
        "action": _ACTION.get(action, "E"),
        "recorded": recorded,
        "outcome": "0",
        "agent": [
            {
                "who": {"identifier": {"value": str(entry.get("actor"))}},
                "requestor": True,
            }
        ],
        "source": {
            "site": str(entry.get("function") or "backend"),
            "observer": {"display": SOURCE},
            "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [entity],
    }
    if happened:
        event["period"] = {"start": happened, "end": happened}
    if entry.get("reason"):
        event["purposeOfEvent"] = [{"text": str(entry["reason"])}]
    if entry.get("requestId"):
        event["extension"] = [
            {
                "url": "https://alodoktor.com/fhir/StructureDefinition/request-id",
                "valueString": str(entry["requestId"]),
            }
        ]
    return event
