"""The audit log's pure core: what is audited, entry content, canonical form, hashing, the
before/after diff and chain verification. No I/O here (shared.audit.service does that), so
all of it is tested without emulators.

An entry's hash covers its canonical content, including `seq` and `prevHash`, so changing,
removing or reordering any entry breaks the chain at that entry.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

# Every domain collection whose document changes are audited (by collection id, so the same
# name as a subcollection is audited too). The audit log itself is never in this list: auditing
# it would feed the trigger its own writes.
AUDITED_COLLECTIONS: frozenset[str] = frozenset(
    {
        "users",
        "profiles",
        "access",
        "sessions",
        "clinics",
        "pharmacies",
        "availability",
        "appointments",
        "slots",
        "prescriptions",
        "bookings",
        "orders",
        "refunds",
        "ledger",
        "paypalEvents",
        "payouts",
        "settings",
        "notifications",
    }
)
# Not audited, and why: `directory` is a projection of `users` written in the same batch (its
# entry would only repeat the profile's); `ledgerEntries` and `ledgerAccounts` are written in
# the same commit as their `ledger` transaction, which holds every posting; `audit` and
# `auditHead` are the log; `reconciliation` is the Auth reconciliation's bookmark.

# Fields that only record use, written often (a session's last request, at most once a
# minute): an update that changes nothing else records nothing.
UNAUDITED_FIELDS: Mapping[str, frozenset[str]] = {
    "sessions": frozenset({"lastUsedAt"}),
}

# Health data: recorded by field name and SHA-256 only, in every collection. This is the one list.
HEALTH_FIELDS: frozenset[str] = frozenset(
    {
        "items",  # prescription items
        "notes",
        "note",  # an appointment's reason for the visit
        "diagnosis",
        "symptoms",
        "medications",
        "allergies",
        "medicalHistory",
        "instructions",
    }
)
# Credentials that must not be copied into a log readable by every admin.
SECRET_FIELDS: Mapping[str, frozenset[str]] = {
    "sessions": frozenset({"csrfToken"}),
    "notifications": frozenset({"data"}),  # holds password and sign-in links
}

META_FIELD = "_meta"
GENESIS_HASH = "0" * 64
HASH_PREFIX = "sha256:"

Action = Literal["create", "update", "delete", "read"]
ACTIONS: tuple[Action, ...] = ("create", "update", "delete", "read")


def collection_of(path: str) -> str:
    """The collection id of a document path (`users/u1` -> users, `a/b/c/d` -> c)."""
    parts = path.split("/")
    return parts[-2] if len(parts) >= 2 else ""


def is_audited(path: str) -> bool:
    parts = path.split("/")
    return len(parts) % 2 == 0 and collection_of(path) in AUDITED_COLLECTIONS


def redacted_fields(path: str) -> frozenset[str]:
    return HEALTH_FIELDS | SECRET_FIELDS.get(collection_of(path), frozenset())


# -- canonical form ----------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """UTC, always microseconds: Firestore keeps microseconds, so a stored time reads back equal."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$time": format_time(value)}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": repr(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    raise TypeError(f"not part of an audit entry: {type(value).__name__}")


def canonical(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, UTF-8, tagged times."""
    return json.dumps(
        _canonical_value(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash of an entry's content: everything but the hash itself."""
    return digest({k: v for k, v in entry.items() if k != "hash"})


def redact(value: Any) -> str | None:
    return None if value is None else HASH_PREFIX + digest(value)


# -- entries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One document write, as a Firestore event describes it (plain values, no protobuf)."""

    event_id: str
    path: str
    at: datetime
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None

    @property
    def action(self) -> Action:
        if self.before is None:
            return "create"
        if self.after is None:
            return "delete"
        return "update"


def diff(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    redacted: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """Changed top-level fields (never `_meta`) as {field: {before, after}}; a field absent on
    one side is None there. Redacted fields carry hashes of their values, never the values."""
    old, new = before or {}, after or {}
    changes: dict[str, dict[str, Any]] = {}
    for name in sorted(set(old) | set(new)):
        if name == META_FIELD:
            continue
        a, b = old.get(name), new.get(name)
        if name in old and name in new and canonical(a) == canonical(b):
            continue
        if name in redacted:
            changes[name] = {"before": redact(a), "after": redact(b), "redacted": True}
        else:
            changes[name] = {"before": a, "after": b}
    return changes


def _meta_of(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = (doc or {}).get(META_FIELD)
    return meta if isinstance(meta, Mapping) else {}


def _significant(path: str, changes: Mapping[str, Any]) -> bool:
    ignored = UNAUDITED_FIELDS.get(collection_of(path), frozenset())
    return any(name not in ignored for name in changes)


def entry_for_change(change: Change) -> dict[str, Any] | None:
    """The entry content (without seq and hashes) for a document write, or None when there is
    nothing to record: an update that touched only `_meta` (such as the stamp before a delete)."""
    action = change.action
    changes = diff(change.before, change.after, redacted=redacted_fields(change.path))
    if action == "update" and not _significant(change.path, changes):
        return None
    # Whoever wrote the new state acted; for a delete, whoever stamped the last state.
    meta = _meta_of(change.before if action == "delete" else change.after)
    return {
        "action": action,
        "resource": change.path,
        "collection": collection_of(change.path),
        "actor": str(meta.get("by") or "system"),
        "function": meta.get("function"),
        "requestId": meta.get("requestId"),
        "eventId": change.event_id,
        "at": change.at,
        "reason": None,
        "changes": changes,
    }


def entry_for_read(
    *,
    resource: str,
    reason: str,
    actor: str,
    function: str | None,
    request_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "action": "read",
        "resource": resource,
        "collection": collection_of(resource),
        "actor": actor,
        "function": function,
        "requestId": request_id,
        "eventId": None,
        "at": at,
        "reason": reason,
        "changes": {},
    }


def event_entry_id(event_id: str) -> str:
    """The entry's document id for an event: the same event always lands on the same id, so a
    redelivery finds its entry and writes nothing."""
    return "e-" + hashlib.sha256(event_id.encode()).hexdigest()[:40]


def link(content: Mapping[str, Any], *, seq: int, prev_hash: str) -> dict[str, Any]:
    """The content made a chain entry: numbered after, and bound to, the previous entry."""
    entry = {**content, "seq": seq, "prevHash": prev_hash}
    entry["hash"] = entry_hash(entry)
    return entry


# -- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    count: int
    broken_at: int | None = None  # seq of the first entry that does not fit
    entry_id: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "brokenAt": self.broken_at,
            "entryId": self.entry_id,
            "reason": self.reason,
        }


def verified_through(head: Mapping[str, Any] | None) -> int | None:
    """The last seq a verification anchored on `head` covers (None: no head, every entry)."""
    return None if head is None else int(head.get("seq", 0))


def verify(
    entries: Iterable[tuple[str, Mapping[str, Any]]],
    head: Mapping[str, Any] | None = None,
) -> Verdict:
    """Walk (id, entry) pairs in seq order; the first entry that does not fit breaks the chain.

    `head` (the chain-head document, read before the entries) bounds the walk: the chain is
    verified as it stood then, through the head's seq, and entries numbered after it (appended
    since the head was read) are not looked at, so appends running alongside a verification
    never break it. The head also catches removal of the newest entries, which leaves no gap
    behind it.
    """
    through = verified_through(head)
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    for entry_id, entry in entries:
        if through is not None and expected_seq > through:
            break  # the head's entry is verified; what follows was appended after it
        seq = entry.get("seq")
        if seq != expected_seq:
            missing = isinstance(seq, int) and seq > expected_seq
            return Verdict(
                False,
                count,
                expected_seq,
                None if missing else entry_id,
                f"entry {expected_seq} is missing" if missing else f"unexpected seq {seq!r}",
            )
        if entry.get("prevHash") != prev_hash:
            return Verdict(False, count, seq, entry_id, "does not link to the previous entry")
        if entry.get("hash") != entry_hash(entry):
            return Verdict(False, count, seq, entry_id, "content does not match its hash")
        prev_hash = str(entry["hash"])
        expected_seq += 1
        count += 1
    if head is not None:
        head_seq = int(head.get("seq", 0))
        if head_seq >= expected_seq:
            return Verdict(False, count, expected_seq, None, f"entry {expected_seq} is missing")
        if head_seq != count or head.get("hash", GENESIS_HASH) != prev_hash:
            return Verdict(False, count, None, None, "the chain head does not match the last entry")
    return Verdict(True, count)
