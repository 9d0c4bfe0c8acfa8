"""The audit log in Firestore: writing entries, recording reads of health data, reading them
back. The pure rules are in shared.audit.rules; sealing, proofs and export in their modules.

Each entry is one document, `audit/{id}`, created on its own with the server's time of the
write (`writtenAt`): no head document, no transaction, nothing two writers contend on. An
entry of a document change takes its id from the event's id, so a redelivered event finds its
entry there and writes nothing. The sealer (shared.audit.sealing) folds entries into signed
checkpoints afterwards; nothing here waits for it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.audit import rules as audit_log
from shared.platform import clients, clock, context, pagination, settings, store

COLLECTION = "audit"
# The legacy chain's head (before issue 17): read once more, by the sealer that seals the
# chain as the first checkpoints' history; never written again.
HEAD_COLLECTION = "auditHead"
HEAD_ID = "chain"
MAX_BATCH = 500  # Firestore's writes per commit


@functools.cache
def _hash_keys(raw: str) -> audit_log.HashKeys:
    return audit_log.HashKeys.parse(raw)


def hash_keys() -> audit_log.HashKeys:
    """AUDIT_HASH_KEY's keys (the current one first)."""
    return _hash_keys(settings.get().audit_hash_key)


def ref(entry_id: str) -> Any:
    return clients.db().collection(COLLECTION).document(entry_id)


def _stored(entry_id: str, content: dict[str, Any], key: audit_log.HashKey) -> dict[str, Any]:
    from google.cloud import firestore

    return {
        **audit_log.with_mac(entry_id, content, key),
        audit_log.WRITTEN_AT: firestore.SERVER_TIMESTAMP,
    }


def _written(entry_id: str, stored: dict[str, Any]) -> dict[str, Any]:
    """What a caller gets back: the entry as written, its server time not known here."""
    return {"id": entry_id, **{k: v for k, v in stored.items() if k != audit_log.WRITTEN_AT}}


def record_change(change: audit_log.Change) -> dict[str, Any] | None:
    """The audit entry of one document write (None if not audited, already recorded, or a
    change of `_meta` or of unaudited fields alone). One document created, nothing read."""
    from google.api_core.exceptions import AlreadyExists

    if not audit_log.is_audited(change.path):
        return None
    key = hash_keys().current
    content = audit_log.entry_for_change(change, key)
    if content is None:
        return None
    entry_id = audit_log.event_entry_id(change.event_id)
    stored = _stored(entry_id, content, key)
    try:
        store.append(ref(entry_id), stored)
    except AlreadyExists:
        return None  # a redelivered event: its entry is there
    return _written(entry_id, stored)


def record_read(resource: str, reason: str, *, actor: str | None = None) -> dict[str, Any]:
    """Log that the current caller is being given health data of `resource` (a document path).

    It writes synchronously and raises if it cannot. Routes never call it: the request
    pipeline calls `record_reads` for whatever health data an answer carries (the views'
    `Health` fields, shared.platform.disclosure) before sending it, and withholds the answer
    if it raises.
    """
    (entry,) = record_reads([resource], reason, actor=actor)
    return entry


def record_reads(
    resources: Sequence[str], reason: str, *, actor: str | None = None
) -> list[dict[str, Any]]:
    """`record_read` for every resource an answer shows: one entry each, in one commit (of up
    to MAX_BATCH; a page of a list is one)."""
    for resource in resources:
        if not resource or resource.count("/") % 2 != 1:
            raise ValueError(f"not a document path: {resource!r}")
    if not reason:
        raise ValueError("a read of health data needs a reason")
    if not resources:
        return []
    key = hash_keys().current
    ctx = context.current()
    who = actor or (ctx.principal.uid if ctx and ctx.principal else "system")
    now = clock.real_now()
    written: list[dict[str, Any]] = []
    db = clients.db()
    for start in range(0, len(resources), MAX_BATCH):
        batch = db.batch()
        for resource in resources[start : start + MAX_BATCH]:
            entry_id = "r-" + uuid.uuid4().hex
            content = audit_log.entry_for_read(
                resource=resource,
                reason=reason,
                actor=who,
                function=ctx.function if ctx else None,
                request_id=ctx.request_id if ctx else None,
                at=now,
                key=key,
            )
            stored = _stored(entry_id, content, key)
            store.append(ref(entry_id), stored, tx=batch)
            written.append(_written(entry_id, stored))
        batch.commit()
    return written


def get_entry(entry_id: str) -> dict[str, Any] | None:
    snap = ref(entry_id).get()
    return (snap.to_dict() or {}) if snap.exists else None


def list_entries(
    *,
    resource: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """Entries matching every given filter, newest first (by the time of what they record)."""
    from google.cloud.firestore import FieldFilter, Query

    collection = clients.db().collection(COLLECTION)
    query: Any = collection
    for name, value in (("resource", resource), ("actor", actor), ("action", action)):
        if value is not None:
            query = query.where(filter=FieldFilter(name, "==", value))
    if since is not None:
        query = query.where(filter=FieldFilter("at", ">=", since))
    if until is not None:
        query = query.where(filter=FieldFilter("at", "<", until))
    snaps, next_cursor = pagination.run_page(
        collection, query, [("at", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [(s.id, s.to_dict() or {}) for s in snaps], next_cursor
