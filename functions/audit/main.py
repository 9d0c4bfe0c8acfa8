"""The `audit` function: admins read and verify the audit log.

Routes (under /audit), admin only:
  GET /         entries by resource, actor, action and time range, newest first
  GET /verify   walk the hash chain: ok and the count, or the first entry where it breaks
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import flask
import functions_framework
from pydantic import Field, model_validator

from shared.audit import service as audit_store
from shared.audit.rules import Action
from shared.platform import stored
from shared.platform.fields import Instant
from shared.platform.models import Page, View
from shared.web.http import Call, Function

api = Function(
    "audit",
    title="Alo Doktor audit log",
    description="The hash-chained log of every change and every read of health data.",
)


class AuditQuery(Page):
    resource: str | None = Field(
        default=None, min_length=3, max_length=1500, description="a document path: users/u1"
    )
    actor: str | None = Field(default=None, min_length=1, max_length=128)
    action: Action | None = None
    since: Instant | None = Field(default=None, description="inclusive")
    until: Instant | None = Field(default=None, description="exclusive")

    @model_validator(mode="after")
    def _a_range(self) -> AuditQuery:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times need a zone (e.g. 2026-01-01T00:00:00Z)")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class AuditEntry(View):
    id: str
    seq: int
    at: datetime
    action: Action
    resource: str
    actor: str
    function: str | None
    request_id: str | None
    event_id: str | None
    reason: str | None
    changes: dict[str, Any] = Field(
        description="changed fields: {before, after}; redacted ones hold sha256 hashes"
    )
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, entry_id: str, d: dict[str, Any]) -> AuditEntry:
        return cls(
            id=entry_id,
            seq=d["seq"],
            at=d["at"],
            action=d["action"],
            resource=d["resource"],
            actor=d["actor"],
            function=d.get("function"),
            request_id=d.get("requestId"),
            event_id=d.get("eventId"),
            reason=d.get("reason"),
            changes=d.get("changes") or {},
            prev_hash=d["prevHash"],
            hash=d["hash"],
        )


class AuditPage(View):
    items: list[AuditEntry]
    next_cursor: str | None


class ChainVerdict(View):
    ok: bool
    count: int = Field(description="entries that verified before any break")
    broken_at: int | None = Field(description="seq of the first entry that does not fit")
    entry_id: str | None
    reason: str | None


@api.route("GET", "/", query=AuditQuery, response=AuditPage)
def list_entries(call: Call) -> AuditPage:
    """Audit entries matching every filter given, newest first."""
    q: AuditQuery = call.query
    rows, cursor = audit_store.list_entries(
        resource=q.resource,
        actor=q.actor,
        action=q.action,
        since=q.since,
        until=q.until,
        limit=q.limit,
        cursor=q.cursor,
    )
    return AuditPage(
        items=stored.readable(lambda row: AuditEntry.of(*row), rows), next_cursor=cursor
    )


@api.route("GET", "/verify", response=ChainVerdict)
def verify(call: Call) -> ChainVerdict:
    """Recompute the whole hash chain; the first entry that does not fit is reported."""
    return ChainVerdict.model_validate(audit_store.verify_chain().as_dict())


@functions_framework.http
def audit(request: flask.Request) -> flask.Response:
    return api.handle(request)
