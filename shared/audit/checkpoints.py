"""Checkpoints: what the sealer signs, how a chain of them and the entries of any range are
verified, and inclusion proofs. Pure: documents in, verdicts out (I/O is in
shared.audit.sealing and shared.audit.proofs; the offline verifier reads exported files).

A checkpoint seals a range of entries in one Merkle tree (RFC 9162 hashing, shared.audit.merkle):

    n           1, 2, 3, ...: its document id is n, zero-padded
    kind        "entries" (ordered by writtenAt, then id) or "legacy" (the hash chain from
                before issue 17, ordered by seq)
    range       {from, through}: after `from` (the previous checkpoint's end, exclusive) up to
                and including `through`; a cursor is {at, id} for entries, {seq, hash} for legacy
    state       where each kind stands after this checkpoint ({entries, legacy}): the next
                checkpoint of a kind starts where this says
    count, total    entries in this range, and in every range up to it
    chunkSize, chunks   the range in chunks of chunkSize entries (the last may be shorter), each
                {root, start}: a chunk is verified on its own, in one bounded read
    root        MTH of the chunk roots, which is the MTH of all the range's leaves
    prevHash    the previous checkpoint's hash (GENESIS_HASH for the first)
    flagged     entries the sealer found not to verify (sealed anyway, so the log never stalls,
                and alerted on), `flaggedCount` of them; every verdict on the range reports
                them until an admin acknowledges each (shared.audit.findings)
    keyId, sealedAt, cutoff, sealedBy
    hash        SHA-256 of the canonical form of all of the above
    signature   Ed25519 over a domain tag and that same canonical form

Late entries: an entry is sealed by its `writtenAt` (the server's time of its write), not by
the time of the change it records, so an event delivered after its period was sealed lands in
the next range. A seal takes only entries written before `cutoff` (the server's read time less
a lag), so a write still in flight when the sealer reads cannot land inside a sealed range.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shared.audit import merkle
from shared.audit import rules as audit_log

CHUNK_SIZE = 256  # a power of two: chunk roots are subtrees of the range's tree
VERSION = 1
SIGNING_DOMAIN = b"alodoktor audit checkpoint v1\n"
STORED_ONLY = ("hash", "signature")

Kind = Literal["entries", "legacy"]
KINDS: tuple[Kind, ...] = ("entries", "legacy")
Cursor = dict[str, Any]


def checkpoint_id(n: int) -> str:
    return f"{n:012d}"


def time_text(value: Any) -> str:
    """A stored time as sortable text: a datetime (Firestore) or its canonical tag (a file)."""
    if isinstance(value, datetime):
        return audit_log.format_time(value)
    if isinstance(value, Mapping) and isinstance(value.get("$time"), str):
        return str(value["$time"])
    raise TypeError(f"not a time: {value!r}")


SortKey = tuple[str, str]


def _seq_key(seq: Any) -> SortKey:
    return (f"{int(seq):020d}", "")


def entry_key(entry_id: str, entry: Mapping[str, Any]) -> SortKey:
    """Where an entry sorts in its kind's order: (writtenAt, id), or seq for legacy."""
    if audit_log.is_legacy(entry):
        return _seq_key(entry["seq"])
    return (time_text(entry.get(audit_log.WRITTEN_AT)), entry_id)


def cursor_key(kind: Kind, cursor: Mapping[str, Any]) -> SortKey:
    if kind == "legacy":
        return _seq_key(cursor["seq"])
    return (time_text(cursor["at"]), str(cursor["id"]))


def entry_cursor(entry_id: str, entry: Mapping[str, Any]) -> Cursor:
    if audit_log.is_legacy(entry):
        return {"seq": int(entry["seq"]), "hash": str(entry["hash"])}
    return {"at": entry[audit_log.WRITTEN_AT], "id": entry_id}


def chunk_sizes(count: int, size: int) -> list[int]:
    full, rest = divmod(count, size)
    return [size] * full + ([rest] if rest else [])


# -- making one --------------------------------------------------------------------------


@dataclass
class Builder:
    """Folds a range's entries, in order, into chunk roots (at most one chunk of leaves held)."""

    chunk_size: int = CHUNK_SIZE
    count: int = 0
    chunks: list[dict[str, Any]] = field(default_factory=list)
    first: Cursor | None = None
    last: Cursor | None = None
    _leaves: list[bytes] = field(default_factory=list)
    _start: Cursor | None = None

    def add(self, entry_id: str, entry: Mapping[str, Any]) -> None:
        cursor = entry_cursor(entry_id, entry)
        if not self._leaves:
            self._start = cursor
        self._leaves.append(merkle.leaf_hash(audit_log.leaf(entry_id, entry)))
        self.first = self.first or cursor
        self.last = cursor
        self.count += 1
        if len(self._leaves) == self.chunk_size:
            self._close()

    def _close(self) -> None:
        if self._leaves:
            root = merkle.root(self._leaves).hex()
            self.chunks.append({"root": root, "start": self._start})
            self._leaves = []

    def finish(self) -> tuple[list[dict[str, Any]], str]:
        self._close()
        return self.chunks, root_of(self.chunks)


def root_of(chunks: Sequence[Mapping[str, Any]]) -> str:
    return merkle.root([bytes.fromhex(str(c["root"])) for c in chunks]).hex()


def body_of(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What is hashed and signed: everything but the hash and the signature."""
    return {k: v for k, v in checkpoint.items() if k not in STORED_ONLY}


def hash_of(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(audit_log.canonical(body)).hexdigest()


def signing_message(body: Mapping[str, Any]) -> bytes:
    return SIGNING_DOMAIN + audit_log.canonical(body)


def next_state(previous: Mapping[str, Any] | None, kind: Kind, through: Cursor) -> dict[str, Any]:
    state = dict(previous["state"]) if previous else {k: None for k in KINDS}
    state[kind] = through
    return state


def make_body(
    *,
    previous: Mapping[str, Any] | None,
    kind: Kind,
    builder: Builder,
    cutoff: datetime,
    sealed_at: datetime,
    sealed_by: str,
    key_id: str,
    flagged: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The body of the checkpoint after `previous` sealing what `builder` folded."""
    if builder.count == 0 or builder.last is None:
        raise ValueError("a checkpoint seals at least one entry")
    chunks, root = builder.finish()
    start = previous["state"][kind] if previous else None
    body: dict[str, Any] = {
        "v": VERSION,
        "n": int(previous["n"]) + 1 if previous else 1,
        "kind": kind,
        "prevHash": str(previous["hash"]) if previous else audit_log.GENESIS_HASH,
        "range": {"from": start, "through": builder.last},
        "state": next_state(previous, kind, builder.last),
        "count": builder.count,
        "total": (int(previous["total"]) if previous else 0) + builder.count,
        "chunkSize": builder.chunk_size,
        "chunks": chunks,
        "root": root,
        "cutoff": cutoff,
        "sealedAt": sealed_at,
        "sealedBy": sealed_by,
        "keyId": key_id,
        "flagged": [dict(f) for f in flagged],
        # How many: the query that finds the checkpoints holding flagged entries (`flagged`
        # itself is not indexed).
        "flaggedCount": len(flagged),
    }
    # Flat copies of the range's end, for the query that finds an entry's checkpoint.
    if kind == "entries":
        body["throughAt"] = builder.last["at"]
    else:
        body["throughSeq"] = builder.last["seq"]
    return body


# -- verifying the chain -----------------------------------------------------------------


def own_problem(checkpoint: Mapping[str, Any], public_keys: Mapping[str, bytes]) -> str | None:
    """What is wrong with a checkpoint on its own (None: nothing): hash, signature, shape."""
    from shared.audit import signing

    body = body_of(checkpoint)
    if checkpoint.get("hash") != hash_of(body):
        return "its content does not match its hash"
    why = signing.verify_signature(
        public_keys,
        str(checkpoint.get("keyId")),
        signing_message(body),
        str(checkpoint.get("signature")),
    )
    if why:
        return why
    try:
        kind: Kind = checkpoint["kind"]
        count, size = int(checkpoint["count"]), int(checkpoint["chunkSize"])
        chunks = list(checkpoint["chunks"])
        if kind not in KINDS or count < 1 or size < 1 or size & (size - 1):
            return "not a checkpoint"
        if len(chunks) != len(chunk_sizes(count, size)):
            return f"{len(chunks)} chunks for {count} entries"
        if root_of(chunks) != checkpoint["root"]:
            return "its root is not the root of its chunks"
        if checkpoint["state"][kind] != checkpoint["range"]["through"]:
            return "its state does not end where its range does"
    except (KeyError, TypeError, ValueError):
        return "not a checkpoint"
    return None


def link_problem(checkpoint: Mapping[str, Any], previous: Mapping[str, Any] | None) -> str | None:
    """What is wrong with a checkpoint as the one after `previous` (None: the first)."""
    n = int(checkpoint["n"])
    kind: Kind = checkpoint["kind"]
    if previous is None:
        if n != 1:
            return f"checkpoint {n} is the first one there is: 1 to {n - 1} are missing"
        start, prev_hash, total = None, audit_log.GENESIS_HASH, 0
        prev_state: Mapping[str, Any] = {k: None for k in KINDS}
    else:
        if n != int(previous["n"]) + 1:
            return f"checkpoint {int(previous['n']) + 1} is missing"
        prev_state = previous["state"]
        start, prev_hash, total = prev_state[kind], previous["hash"], int(previous["total"])
    if checkpoint["prevHash"] != prev_hash:
        return "it does not link to the previous checkpoint"
    if checkpoint["range"]["from"] != start:
        return "its range does not start where the previous one ended"
    if start is not None and not cursor_key(kind, start) < cursor_key(
        kind, checkpoint["range"]["through"]
    ):
        return "its range ends before it starts"
    other = [k for k in KINDS if k != kind]
    if any(checkpoint["state"][k] != prev_state[k] for k in other):
        return "it moves another kind's range"
    if int(checkpoint["total"]) != total + int(checkpoint["count"]):
        return "its total does not add up"
    return None


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    checked: int  # checkpoints verified before any break
    entries: int  # the entries those checkpoints seal
    through: int | None  # the last checkpoint verified
    broken_at: int | None = None  # the checkpoint that does not verify
    reason: str | None = None


def verify_chain(
    checkpoints: Iterable[Mapping[str, Any]],
    previous: Mapping[str, Any] | None,
    public_keys: Mapping[str, bytes],
) -> ChainVerdict:
    """Checkpoints in n order, each against its own hash and signature and as the one after
    the previous (`previous`: the one before the first given, already verified, or None
    when the first given must be checkpoint 1)."""
    checked = entries = 0
    through = int(previous["n"]) if previous else None
    for cp in checkpoints:
        n = int(cp.get("n", 0))
        why = own_problem(cp, public_keys) or link_problem(cp, previous)
        if why:
            return ChainVerdict(False, checked, entries, through, n, why)
        checked += 1
        entries += int(cp["count"])
        previous, through = cp, n
    return ChainVerdict(True, checked, entries, through)


# -- verifying a range -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A stored entry as a range verification reads it."""

    entry_id: str
    entry: Mapping[str, Any]
    problem: str | None = None  # what the store itself says is wrong (edited after writing)


@dataclass(frozen=True)
class RangeBreak:
    position: int  # the entry's place in the checkpoint's range (0-based)
    entry_id: str | None
    reason: str


def chunk_bounds(checkpoint: Mapping[str, Any], chunk: int) -> tuple[int, int]:
    """(first position, number of entries) of a chunk."""
    size = int(checkpoint["chunkSize"])
    return chunk * size, chunk_sizes(int(checkpoint["count"]), size)[chunk]


def verify_chunk(
    checkpoint: Mapping[str, Any],
    chunk: int,
    rows: Sequence[Row],
    keys: audit_log.HashKeys | None,
) -> RangeBreak | None:
    """A chunk's entries against its root. `rows` are the entries stored in order from where
    the chunk starts (the first chunk: right after the range's start, so nothing can hide
    before it) through the range's end; one more than the chunk holds is looked at (it must
    be the next chunk's first, or none after the last), so nothing can hide between chunks.

    The first entry that cannot be the audit log's breaks it (a bad mac, edited after it was
    written, out of order or of range), else the chunk as a whole when its root differs (an
    entry removed, inserted or moved)."""
    kind: Kind = checkpoint["kind"]
    first, expected = chunk_bounds(checkpoint, chunk)
    spec = checkpoint["chunks"][chunk]
    # Entries the sealer flagged were alerted on then; their leaves still bind them.
    known = {str(f.get("id")) for f in checkpoint.get("flagged") or []}
    lower = checkpoint["range"]["from"]
    upper = cursor_key(kind, checkpoint["range"]["through"])
    leaves: list[bytes] = []
    last: SortKey | None = None
    for offset, row in enumerate(rows[:expected]):
        position = first + offset
        why = None
        if row.entry_id not in known:
            why = row.problem or audit_log.entry_problem(row.entry_id, row.entry, keys)
        if why is None and audit_log.is_legacy(row.entry) != (kind == "legacy"):
            why = "an entry of the other kind inside this range"
        if why is None:
            key = entry_key(row.entry_id, row.entry)
            if (lower is not None and not key > cursor_key(kind, lower)) or key > upper:
                why = "outside the checkpoint's range"
            elif last is not None and not key > last:
                why = "out of order"
            last = key
        if why:
            return RangeBreak(position, row.entry_id, why)
        leaves.append(merkle.leaf_hash(audit_log.leaf(row.entry_id, row.entry)))
    span = f"entries {first}-{first + expected - 1}"
    if len(leaves) < expected:
        missing = expected - len(leaves)
        return RangeBreak(
            first + len(leaves), None, f"{missing} of {span} missing (deleted or moved out)"
        )
    if spec["start"] != entry_cursor(rows[0].entry_id, rows[0].entry):
        return RangeBreak(
            first,
            rows[0].entry_id,
            "not the chunk's first entry: inserted before it, or it is gone",
        )
    if merkle.root(leaves).hex() != spec["root"]:
        return RangeBreak(
            first, None, f"{span} do not match the checkpoint (deleted, inserted or reordered)"
        )
    if len(rows) > expected:
        after = rows[expected]
        chunks = checkpoint["chunks"]
        following = chunks[chunk + 1]["start"] if chunk + 1 < len(chunks) else None
        if following != entry_cursor(after.entry_id, after.entry):
            return RangeBreak(
                first + expected,
                after.entry_id,
                "an entry inside the range the checkpoint does not seal",
            )
    return None


# -- inclusion proofs --------------------------------------------------------------------


def inclusion_proof(
    checkpoint: Mapping[str, Any],
    chunk: int,
    chunk_leaves: Sequence[bytes],
    offset: int,
) -> tuple[int, list[str]]:
    """(index in the range, path as hex) of leaf `offset` of `chunk`: its path in the chunk,
    then the chunk's path among the checkpoint's chunk roots."""
    roots = [bytes.fromhex(str(c["root"])) for c in checkpoint["chunks"]]
    path = merkle.inclusion_path(offset, chunk_leaves) + merkle.inclusion_path(chunk, roots)
    first, _ = chunk_bounds(checkpoint, chunk)
    return first + offset, [h.hex() for h in path]


def proof_problem(proof: Mapping[str, Any], public_keys: Mapping[str, bytes]) -> str | None:
    """Check a proof document (GET /audit/entries/<id>/proof) with the checkpoint it carries:
    None when the entry is in that checkpoint and the checkpoint is signed by a known key."""
    try:
        checkpoint = proof["checkpoint"]
        why = own_problem(checkpoint, public_keys)
        if why:
            return f"checkpoint {checkpoint.get('n')}: {why}"
        leaf = str(proof["leaf"]).encode()
        entry = audit_log.canonical_json(leaf)
        if entry.get("id") != proof["entryId"]:
            return "the leaf is another entry's"
        merkle.verify_inclusion(
            int(proof["index"]),
            int(checkpoint["count"]),
            merkle.leaf_hash(leaf),
            [bytes.fromhex(str(h)) for h in proof["path"]],
            bytes.fromhex(str(checkpoint["root"])),
        )
    except merkle.ProofError as exc:
        return str(exc)
    except (KeyError, TypeError, ValueError) as exc:
        return f"not a proof: {exc}"
    return None
