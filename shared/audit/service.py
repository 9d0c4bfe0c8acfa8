"""The audit log in Firestore: appending to the hash chain, recording reads of health data,
querying and verifying. The pure rules are in shared.audit.rules.

Entries live in `audit/{id}`; the chain head (`auditHead/chain`: last seq and hash) is read and
written in the same transaction as every append, so two appends can never both follow the same
entry: one of the transactions is retried and numbered after the other.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.audit import rules as audit_log
from shared.audit.rules import Verdict
from shared.platform import clients, context, pagination

COLLECTION = "audit"
HEAD_COLLECTION = "auditHead"
HEAD_ID = "chain"
# Every append contends on the one head document. Appends of one instance take turns (a lock),
# so only appends of different instances ever race; the transaction keeps those correct, and an
# aborted one (the emulator's lock timeout aborts even a read) is tried again from the start.
MAX_ATTEMPTS = 20
_turn = threading.Lock()


def _head_ref() -> Any:
    return clients.db().collection(HEAD_COLLECTION).document(HEAD_ID)


def append(entry_id: str, content: Mapping[str, Any]) -> dict[str, Any] | None:
    """Append `content` as entry `entry_id`; None when that entry exists already (a redelivered
    event), which leaves the chain unchanged."""
    return append_all([(entry_id, content)])[0]


def append_all(
    items: Sequence[tuple[str, Mapping[str, Any]]],
) -> list[dict[str, Any] | None]:
    """Append several entries in order in one transaction (one turn on the head document);
    an entry whose id exists already is skipped (None in its place)."""
    from google.api_core.exceptions import Aborted
    from google.cloud import firestore

    db = clients.db()
    refs = [db.collection(COLLECTION).document(entry_id) for entry_id, _ in items]
    head_ref = _head_ref()

    @firestore.transactional  # type: ignore[untyped-decorator]
    def run(tx: Any) -> list[dict[str, Any] | None]:
        existing = [ref.get(transaction=tx).exists for ref in refs]
        head = head_ref.get(transaction=tx)
        state = head.to_dict() if head.exists else {}
        seq = int(state.get("seq", 0))
        prev = str(state.get("hash", audit_log.GENESIS_HASH))
        written: list[dict[str, Any] | None] = []
        last_id = None
        for ref, seen, (entry_id, content) in zip(refs, existing, items, strict=True):
            if seen:
                written.append(None)
                continue
            seq += 1
            entry = audit_log.link(content, seq=seq, prev_hash=prev)
            prev, last_id = entry["hash"], entry_id
            # The log is written here and nowhere else, so it does not go through
            # shared.platform.store (whose `_meta` stamp would be outside the hashed content).
            tx.create(ref, entry)
            written.append(entry)
        if last_id is not None:
            tx.set(head_ref, {"seq": seq, "hash": prev, "entryId": last_id})
        return written

    for attempt in range(MAX_ATTEMPTS):
        try:
            with _turn:
                result: list[dict[str, Any] | None] = run(db.transaction())
            return result
        except (Aborted, ValueError) as exc:
            # The client reports exhausted commit retries as ValueError caused by Aborted.
            contended = isinstance(exc, Aborted) or isinstance(exc.__cause__, Aborted)
            if not contended or attempt == MAX_ATTEMPTS - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.random())  # noqa: S311
    raise AssertionError("unreachable")


def record_change(change: audit_log.Change) -> dict[str, Any] | None:
    """The audit entry of one document write (None if not audited, already recorded, or a
    change of `_meta` alone)."""
    if not audit_log.is_audited(change.path):
        return None
    content = audit_log.entry_for_change(change)
    if content is None:
        return None
    return append(audit_log.event_entry_id(change.event_id), content)


def record_read(resource: str, reason: str, *, actor: str | None = None) -> dict[str, Any]:
    """Log that the current caller is being given health data of `resource` (a document path).

    Call it before returning the data: it writes synchronously into the chain and raises if it
    cannot, so health data is never handed out unlogged.
    """
    (entry,) = record_reads([resource], reason, actor=actor)
    return entry


def record_reads(
    resources: Sequence[str], reason: str, *, actor: str | None = None
) -> list[dict[str, Any]]:
    """`record_read` for every resource of a list answer, in one append to the chain."""
    for resource in resources:
        if not resource or resource.count("/") % 2 != 1:
            raise ValueError(f"not a document path: {resource!r}")
    if not reason:
        raise ValueError("a read of health data needs a reason")
    if not resources:
        return []
    ctx = context.current()
    who = actor or (ctx.principal.uid if ctx and ctx.principal else "system")
    now = datetime.now(UTC)
    items = [
        (
            "r-" + uuid.uuid4().hex,
            audit_log.entry_for_read(
                resource=resource,
                reason=reason,
                actor=who,
                function=ctx.function if ctx else None,
                request_id=ctx.request_id if ctx else None,
                at=now,
            ),
        )
        for resource in resources
    ]
    entries = append_all(items)
    assert all(e is not None for e in entries)  # fresh ids cannot exist
    return [e for e in entries if e is not None]


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
    """Entries matching every given filter, newest first."""
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


def _in_order(
    through: int | None = None, page_size: int = 500
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Entries in seq order, in pages of `page_size`; with `through`, only seq <= through.

    Entries are immutable once created, so pages read at different moments still form one
    list; only entries appended meanwhile can appear, and `through` leaves those out.
    """
    from google.cloud.firestore import FieldFilter

    collection = clients.db().collection(COLLECTION)
    last: int | None = None
    while True:
        query = collection.order_by("seq")
        if through is not None:
            query = query.where(filter=FieldFilter("seq", "<=", through))
        if last is not None:
            query = query.start_after({"seq": last})
        snaps = list(query.limit(page_size).stream())
        for snap in snaps:
            data = snap.to_dict() or {}
            yield snap.id, data
        if len(snaps) < page_size:
            return
        last = int((snaps[-1].to_dict() or {})["seq"])


def verify_chain() -> Verdict:
    """Verify the chain as it stood when its head was read, entries appended since left out.

    The head is read first; it is written in the same commit as the entries it counts, so
    every entry up to its seq is visible once it is, and the walk reads exactly those
    (seq <= the head's seq). An append committing during the walk numbers its entries after
    the head that was read, so it is neither read nor mistaken for a break; the next verify
    covers it. Without a head (an empty log) whatever entries exist are walked, unbounded.

    Reads: 1 (the head) + the entries up to the head's seq, in pages of 500 (an empty page,
    as after the last full one, still costs 1).
    """
    head = _head_ref().get()
    state: dict[str, Any] | None = head.to_dict() if head.exists else None
    through = audit_log.verified_through(state)
    return audit_log.verify(_in_order(through), state)
