"""The audit log's pure core: what is audited, entry content, canonical form, keyed hashing,
the before/after diff, an entry's leaf and mac, and the legacy hash chain. No I/O here
(shared.audit.service does that), so all of it is tested without emulators.

Since issue 17 an entry is written on its own (no chain head to contend on); the sealer folds
entries into signed Merkle checkpoints (shared.audit.checkpoints) in the order of `writtenAt`
(the server's time of the write) and id. An entry's leaf is the canonical form of all it
stores, so an edit, a removal, an insertion or a move changes its checkpoint's root; its `mac`
(HMAC under the hash key) also names the edited entry itself. Entries written before issue 17
form a hash chain (`seq`, `prevHash`, `hash`), sealed by seq into the first checkpoints.
"""

from __future__ import annotations

import hashlib
import hmac
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
        "payoutProfiles",  # where a provider is paid: its changes are the takeover to catch
        "settings",
        "notifications",
        "auditAcknowledgements",  # what an admin did about a flagged entry: itself an entry
        "consents",
        "privacyRequests",
        "legalHolds",  # personal data (issue 27)
    }
)
# Not audited, and why: `directory` is a projection of `users` written in the same batch (its
# entry would only repeat the profile's); `ledgerEntries` and `ledgerAccounts` are written in
# the same commit as their `ledger` transaction, which holds every posting; `audit` and
# `auditHead` are the log; `reconciliation` is the Auth reconciliation's bookmark;
# `ledgerGuards` (no longer written: a debit's guard is now its `ledgerAccounts` document's
# version) only counted a provider's debits, each written with its `ledger` transaction.

# Fields that only record use, written often (a session's last request, at most once a
# minute): an update that changes nothing else records nothing.
UNAUDITED_FIELDS: Mapping[str, frozenset[str]] = {
    "sessions": frozenset({"lastUsedAt"}),
    # A notice's delivery bookkeeping (claims, leases, each channel's state): its history is
    # kept on the notice itself (`history`, every attempt); the queueing and a cancellation
    # are audited.
    "notifications": frozenset(
        {"channels", "history", "status", "lease", "dueAt", "updatedAt", "recipient", "outcome"}
    ),
}

# Health data: recorded by field name and keyed hash only, in every collection. The one list.
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
    # The cookie's secret is kept only as its SHA-256 (32 random bytes: no guess finds it),
    # redacted all the same: a digest of a credential belongs to no admin's reading.
    "sessions": frozenset({"csrfToken", "secretHash"}),
    "notifications": frozenset({"data"}),  # holds password and sign-in links
    # A new payout address's pending change holds its code's digest (a 6-digit code: as good
    # as the code itself to anyone who reads it).
    "payoutProfiles": frozenset({"pending"}),
}

META_FIELD = "_meta"
GENESIS_HASH = "0" * 64
LEGACY_HASH_PREFIX = "sha256:"  # how entries before issue 17 recorded health values
ENTRY_VERSION = 2  # entries written on their own, sealed into checkpoints (issue 17)
WRITTEN_AT = "writtenAt"  # the server's time of the write: the order entries are sealed in
MAC_FIELD = "mac"

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


# -- keys --------------------------------------------------------------------------------
# The hash key (AUDIT_HASH_KEY) makes the keyed hashes of health values and secrets (a guessed
# value cannot be checked against the log without it) and each entry's `mac` (an entry written
# or edited by anyone without the key does not verify); entries name its id (`keyId`). The
# variable holds one or more secrets, comma-separated, the current one first (rotation: put
# the new one in front; the others still verify what they made). The HMAC key is derived from
# the configured string, and the id from the key, so an id never reveals the secret.

HASH_ALGORITHM = "hmac-sha256"
_HASH_DOMAIN = b"alodoktor audit hash key\x00"


class KeyMissing(RuntimeError):
    """The key a step needs is not configured."""


@dataclass(frozen=True)
class HashKey:
    key_id: str
    secret: bytes  # derived: never the configured string itself

    @classmethod
    def of(cls, configured: bytes) -> HashKey:
        secret = hashlib.sha256(_HASH_DOMAIN + configured).digest()
        key_id = "h-" + hashlib.sha256(b"id\x00" + secret).hexdigest()[:16]
        return cls(key_id, secret)

    def _mac(self, purpose: bytes, data: bytes) -> str:
        sub = hmac.new(self.secret, purpose, hashlib.sha256).digest()
        return hmac.new(sub, data, hashlib.sha256).hexdigest()

    def redact(self, data: bytes) -> str:
        """The keyed hash a health value or secret is recorded as."""
        return f"{HASH_ALGORITHM}:{self._mac(b'value', data)}"

    def mac(self, data: bytes) -> str:
        """The keyed hash of an entry's content."""
        return self._mac(b"entry", data)


@dataclass(frozen=True)
class HashKeys:
    """The configured hash keys, the current one first."""

    keys: tuple[HashKey, ...]

    @classmethod
    def parse(cls, raw: str) -> HashKeys:
        return cls(tuple(HashKey.of(s.strip().encode()) for s in raw.split(",") if s.strip()))

    @property
    def current(self) -> HashKey:
        if not self.keys:
            raise KeyMissing("AUDIT_HASH_KEY is not set: audit entries cannot be written")
        return self.keys[0]

    def by_id(self, key_id: str) -> HashKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


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
    """One byte string per value: sorted keys, no whitespace, UTF-8, tagged times.

    Idempotent over its own output: the JSON of a canonical form, parsed and made canonical
    again, gives the same bytes (a time's tag is a plain {"$time": ...} map), so exported
    files verify as they were hashed."""
    return json.dumps(
        _canonical_value(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def canonical_json(data: bytes) -> dict[str, Any]:
    """A JSON object read back from its canonical form (an exported leaf or checkpoint);
    ValueError unless `data` is exactly that form."""
    value = json.loads(data)
    if not isinstance(value, dict) or canonical(value) != data:
        raise ValueError("not a JSON object in canonical form")
    return value


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def redact(value: Any, key: HashKey) -> str | None:
    """A health value or secret as the log keeps it: HMAC-SHA-256 under the hash key, so
    trying guesses against the log needs the key."""
    return None if value is None else key.redact(canonical(value))


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
    key: HashKey | None = None,
) -> dict[str, dict[str, Any]]:
    """Changed top-level fields (never `_meta`) as {field: {before, after}}; a field absent on
    one side is None there. Redacted fields carry keyed hashes of their values (`key`), never
    the values."""
    old, new = before or {}, after or {}
    changes: dict[str, dict[str, Any]] = {}
    for name in sorted(set(old) | set(new)):
        if name == META_FIELD:
            continue
        a, b = old.get(name), new.get(name)
        if name in old and name in new and canonical(a) == canonical(b):
            continue
        if name in redacted:
            if key is None:
                raise KeyMissing(f"{name} must be recorded as a keyed hash: no key given")
            changes[name] = {"before": redact(a, key), "after": redact(b, key), "redacted": True}
        else:
            changes[name] = {"before": a, "after": b}
    return changes


def _meta_of(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = (doc or {}).get(META_FIELD)
    return meta if isinstance(meta, Mapping) else {}


def _significant(path: str, changes: Mapping[str, Any]) -> bool:
    ignored = UNAUDITED_FIELDS.get(collection_of(path), frozenset())
    return any(name not in ignored for name in changes)


def entry_for_change(change: Change, key: HashKey) -> dict[str, Any] | None:
    """The entry content for a document write, or None when there is nothing to record: an
    update that touched only `_meta` (such as the stamp before a delete) or unaudited fields."""
    action = change.action
    changes = diff(change.before, change.after, redacted=redacted_fields(change.path), key=key)
    if action == "update" and not _significant(change.path, changes):
        return None
    # Whoever wrote the new state acted; for a delete, whoever stamped the last state.
    meta = _meta_of(change.before if action == "delete" else change.after)
    return {
        "v": ENTRY_VERSION,
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
        "keyId": key.key_id,
    }


def entry_for_read(
    *,
    resource: str,
    reason: str,
    actor: str,
    function: str | None,
    request_id: str | None,
    at: datetime,
    key: HashKey,
) -> dict[str, Any]:
    return {
        "v": ENTRY_VERSION,
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
        "keyId": key.key_id,
    }


def event_entry_id(event_id: str) -> str:
    """The entry's document id for an event: the same event always lands on the same id, so a
    redelivery finds its entry and writes nothing."""
    return "e-" + hashlib.sha256(event_id.encode()).hexdigest()[:40]


def _mac_input(entry_id: str, entry: Mapping[str, Any]) -> bytes:
    # Everything the writer knows: not the server's time of the write, nor the mac itself.
    return canonical(
        {"id": entry_id, **{k: v for k, v in entry.items() if k not in (WRITTEN_AT, MAC_FIELD)}}
    )


def with_mac(entry_id: str, content: Mapping[str, Any], key: HashKey) -> dict[str, Any]:
    """The entry as it is written (its `writtenAt` is added by the server): its content and
    the keyed hash of content and id, which no one without the key can make for an edited or
    invented entry."""
    return {**content, MAC_FIELD: key.mac(_mac_input(entry_id, content))}


def leaf(entry_id: str, entry: Mapping[str, Any]) -> bytes:
    """An entry as the Merkle tree hashes it (and the export writes it): the canonical form of
    everything stored, its id included, so moving or renaming an entry changes its leaf."""
    return canonical({"id": entry_id, **entry})


def is_legacy(entry: Mapping[str, Any]) -> bool:
    """An entry of the hash chain before issue 17 (sealed by its `seq`)."""
    return "seq" in entry and entry.get("v") is None


def _is_time(value: Any) -> bool:
    return isinstance(value, datetime) or (
        isinstance(value, Mapping) and isinstance(value.get("$time"), str)
    )


def entry_problem(entry_id: str, entry: Mapping[str, Any], keys: HashKeys | None) -> str | None:
    """Why a stored entry cannot be what the audit log wrote (None: it can be).

    Its mac must verify under the key it names (not checked without `keys`: offline, where
    the Merkle roots alone decide); a legacy entry carries its own chain hash."""
    if is_legacy(entry):
        if entry.get("hash") != entry_hash(entry):
            return "content does not match its hash"
        return None
    if entry.get("v") != ENTRY_VERSION or not _is_time(entry.get(WRITTEN_AT)):
        return "not an audit entry"
    if keys is None:
        return None
    key = keys.by_id(str(entry.get("keyId")))
    if key is None:
        return f"written under an unknown key {entry.get('keyId')!r}"
    if entry.get(MAC_FIELD) != key.mac(_mac_input(entry_id, entry)):
        return "content does not match its mac: edited, or not written by the audit log"
    return None


def storage_problem(
    written_at: datetime | None, created: datetime, updated: datetime, lag_seconds: float
) -> str | None:
    """What the store's own times of an entry say (None: nothing): an entry is created once
    and never written again, and commits within the sealer's lag of its `writtenAt` (else
    a seal may have passed its place: written late, or deleted and written again)."""
    if updated != created:
        return f"edited after it was written (at {format_time(updated)})"
    if written_at is not None and (created - written_at).total_seconds() > lag_seconds:
        return (
            f"stored at {format_time(created)}, more than {lag_seconds:g} s after its "
            "writtenAt: written late, or deleted and written again"
        )
    return None


# -- the hash chain before issue 17 (sealed into the first checkpoints) --------------------


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash of a legacy entry's content: everything but the hash itself."""
    return digest({k: v for k, v in entry.items() if k != "hash"})


def link(content: Mapping[str, Any], *, seq: int, prev_hash: str) -> dict[str, Any]:
    """Legacy: the content made a chain entry, numbered after and bound to the previous one
    (kept to build such chains in tests of the migration)."""
    entry = {**content, "seq": seq, "prevHash": prev_hash}
    entry["hash"] = entry_hash(entry)
    return entry


@dataclass(frozen=True)
class Verdict:
    ok: bool
    count: int
    broken_at: int | None = None  # seq of the first entry that does not fit
    entry_id: str | None = None
    reason: str | None = None


def verify_chain(
    entries: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    after_seq: int = 0,
    after_hash: str = GENESIS_HASH,
    through: int | None = None,
) -> Verdict:
    """Walk legacy (id, entry) pairs in seq order from the entry after `after_seq` (whose
    hash is `after_hash`) through seq `through`: the first that does not fit breaks it."""
    expected_seq, prev_hash, count = after_seq + 1, after_hash, 0
    for entry_id, entry in entries:
        if through is not None and expected_seq > through:
            break
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
    if through is not None and expected_seq <= through:
        return Verdict(False, count, expected_seq, None, f"entry {expected_seq} is missing")
    return Verdict(True, count)
