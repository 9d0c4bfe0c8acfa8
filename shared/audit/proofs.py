"""Verifying the audit log in Firestore, in bounded batches, and proving an entry is in it.

- `verify_checkpoints`: the chain of checkpoints from one of them, at most CHAIN_BATCH per call
  (one read each): hashes, signatures, links, ranges.
- `verify_range`: the entries of one checkpoint, chunk by chunk (at most RANGE_BATCH chunks
  of CHUNK_SIZE entries per call), against the chunk roots the checkpoint signed.
- `inclusion_proof`: an entry's RFC 9162 path to its checkpoint's root (one checkpoint and one
  chunk read), verifiable with the checkpoint alone (`tools.audit_verify --proof`).
- `check`: the scheduled consistency check. Each run re-reads the newest checkpoint it verified
  before (gone or changed: someone deleted or rewrote the log's end), verifies the chain from
  there to the newest, and verifies the next `chunks` chunks of entries in a sweep that goes
  round the whole log and starts again; anything that does not verify is alerted on
  (shared.audit.alerts) the first time it is found (shared.audit.findings keeps what was
  reported): a run lists its new findings and counts the known ones, and reports the
  entries flagged when sealed that nobody acknowledged yet. Its bookmark is one document,
  `auditCheck/state`, written once a run.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.audit import alerts, findings, sealing, signing
from shared.audit import checkpoints as cps
from shared.audit import rules as audit_log
from shared.audit import service as entries
from shared.platform import clients, clock, pagination, settings, store

CHAIN_BATCH = 500
RANGE_BATCH = 8  # chunks: 2,048 entries
CHECK_CHUNKS = 40  # chunks a scheduled check verifies per run by default: 10,240 entries
CHECK_STATE = ("auditCheck", "state")


class NotSealed(LookupError):
    """The entry is not in any checkpoint yet."""


class RangeBroken(Exception):
    def __init__(self, checkpoint: int, found: cps.RangeBreak) -> None:
        super().__init__(found.reason)
        self.checkpoint, self.found = checkpoint, found


def public_keys() -> dict[str, bytes]:
    return signing.configured().public_keys()


def portable(document: dict[str, Any]) -> dict[str, Any]:
    """A stored checkpoint or entry as plain JSON in its canonical form (times tagged), so
    whoever holds it can hash it exactly as it was hashed."""
    result: dict[str, Any] = json.loads(audit_log.canonical(document))
    return result


def list_checkpoints(
    limit: int, cursor: str | None
) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    from google.cloud.firestore import Query

    col = sealing.collection()
    snaps, next_cursor = pagination.run_page(
        col, col, [("n", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [(s.id, s.to_dict() or {}) for s in snaps], next_cursor


# -- the chain ---------------------------------------------------------------------------


def checkpoints_from(first: int, limit: int) -> list[dict[str, Any]]:
    from google.cloud.firestore import FieldFilter

    snaps = (
        sealing.collection()
        .where(filter=FieldFilter("n", ">=", first))
        .order_by("n")
        .limit(limit)
        .stream()
    )
    return [s.to_dict() or {} for s in snaps]


def verify_checkpoints(first: int = 1, limit: int = CHAIN_BATCH) -> cps.ChainVerdict:
    """Checkpoints `first` .. `first + limit - 1` (as many as exist), each as the one after
    its predecessor; checkpoint `first - 1` is the anchor (its own hash and signature checked
    too, its link not: that is the previous batch's verdict)."""
    return _verify_checkpoints(first, limit)[0]


def verify_batch(
    first: int = 1, limit: int = CHAIN_BATCH
) -> tuple[cps.ChainVerdict, findings.Flagged]:
    """verify_checkpoints, and the entries the verified checkpoints flagged (with what was
    done about them)."""
    verdict, batch = _verify_checkpoints(first, limit)
    return verdict, findings.summarize(batch[: verdict.checked])


def _verify_checkpoints(first: int, limit: int) -> tuple[cps.ChainVerdict, list[dict[str, Any]]]:
    keys = public_keys()
    batch = checkpoints_from(first, limit)
    previous = sealing.get(first - 1) if first > 1 else None
    if first > 1:
        if previous is None:
            if not batch:  # asked about checkpoints past the newest: nothing to verify
                return cps.ChainVerdict(True, 0, 0, None), batch
            why = "the checkpoint is missing"
            return cps.ChainVerdict(False, 0, 0, None, first - 1, why), batch
        why_not = cps.own_problem(previous, keys)
        if why_not:
            return cps.ChainVerdict(False, 0, 0, None, first - 1, why_not), batch
    return cps.verify_chain(batch, previous, keys), batch


# -- ranges ------------------------------------------------------------------------------


def read_chunk(checkpoint: dict[str, Any], chunk: int, chunks: int = 1) -> list[cps.Row]:
    """The entries stored where `chunk` of `checkpoint` is (and the `chunks - 1` after it, in
    the same query), in order, and the one after them (checkpoints.verify_chunk says why):
    from the chunk's start, or for the first chunk from right after the range's start, up to
    the range's end."""
    from google.cloud.firestore import FieldFilter

    last = min(chunk + chunks, len(checkpoint["chunks"]))
    expected = sum(cps.chunk_bounds(checkpoint, c)[1] for c in range(chunk, last))
    start = checkpoint["chunks"][chunk]["start"]
    after = checkpoint["range"]["from"] if chunk == 0 else None
    through = checkpoint["range"]["through"]
    col = clients.db().collection(entries.COLLECTION)
    query: Any
    if checkpoint["kind"] == "legacy":
        lower = FieldFilter("seq", ">", int(after["seq"])) if chunk == 0 and after else None
        if chunk > 0:
            lower = FieldFilter("seq", ">=", int(start["seq"]))
        query = col.where(filter=FieldFilter("seq", "<=", int(through["seq"])))
        if lower is not None:
            query = query.where(filter=lower)
        query = query.order_by("seq")
    else:
        written = audit_log.WRITTEN_AT
        query = col.where(filter=FieldFilter(written, "<=", through["at"]))
        if chunk == 0 and after is None:
            query = query.order_by(written).order_by("__name__")
        elif chunk == 0 and after is not None:
            query = (
                query.where(filter=FieldFilter(written, ">=", after["at"]))
                .order_by(written)
                .order_by("__name__")
                .start_after({written: after["at"], "__name__": after["id"]})
            )
        else:
            query = (
                query.where(filter=FieldFilter(written, ">=", start["at"]))
                .order_by(written)
                .order_by("__name__")
                .start_at({written: start["at"], "__name__": start["id"]})
            )
        query = query.end_at({written: through["at"], "__name__": through["id"]})
    lag = float(settings.get().audit_seal_lag_seconds)
    rows = []
    for snap in query.limit(expected + 1).stream():
        entry = snap.to_dict() or {}
        at = entry.get(audit_log.WRITTEN_AT)
        problem = audit_log.storage_problem(
            at if isinstance(at, datetime) else None, snap.create_time, snap.update_time, lag
        )
        rows.append(cps.Row(snap.id, entry, problem))
    return rows


def verify_chunks(
    checkpoint: dict[str, Any], first: int, count: int, keys: audit_log.HashKeys | None
) -> Iterator[tuple[int, cps.RangeBreak | None]]:
    """Chunks `first` .. `first + count - 1` of a checkpoint, read in one query, each with what
    is wrong with it (None: nothing). After a break each chunk left is read on its own: an
    entry missing or inserted would shift the rest of the read by one."""
    last = min(first + count, len(checkpoint["chunks"]))
    rows = read_chunk(checkpoint, first, last - first)
    offset, shifted = 0, False
    for chunk in range(first, last):
        part = read_chunk(checkpoint, chunk) if shifted else rows[offset:]
        found = cps.verify_chunk(checkpoint, chunk, part, keys)
        yield chunk, found
        shifted = shifted or found is not None
        offset += cps.chunk_bounds(checkpoint, chunk)[1]


@dataclass(frozen=True)
class RangeVerdict:
    ok: bool
    checkpoint: int
    chunks: int  # chunks in the checkpoint
    first_chunk: int
    checked_chunks: int
    entries: int  # entries verified before any break
    next_chunk: int | None  # where the next batch starts (None: the range is done)
    position: int | None = None  # the entry's place in the range
    entry_id: str | None = None
    reason: str | None = None
    flagged: findings.Flagged = field(default_factory=findings.Flagged)


def verify_range(n: int, first_chunk: int = 0, chunks: int = RANGE_BATCH) -> RangeVerdict | None:
    """Chunks `first_chunk` .. of checkpoint n against its chunk roots (None: no checkpoint n),
    with the entries the checkpoint flagged and what was done about them."""
    checkpoint = sealing.get(n)
    if checkpoint is None:
        return None
    verdict = _verify_range(checkpoint, n, first_chunk, chunks)
    return replace(verdict, flagged=findings.summarize([checkpoint]))


def _verify_range(
    checkpoint: dict[str, Any], n: int, first_chunk: int, chunks: int
) -> RangeVerdict:
    total = len(checkpoint["chunks"])
    if first_chunk >= total:  # past the range's end: nothing there to verify
        return RangeVerdict(True, n, total, first_chunk, 0, 0, None)
    why = cps.own_problem(checkpoint, public_keys())
    if why:
        return RangeVerdict(False, n, total, first_chunk, 0, 0, None, None, None, why)
    keys = entries.hash_keys()
    verified = checked = 0
    last = min(total, first_chunk + chunks)
    for chunk, found in verify_chunks(checkpoint, first_chunk, last - first_chunk, keys):
        if found:
            return RangeVerdict(
                False,
                n,
                total,
                first_chunk,
                checked,
                verified,
                None,
                found.position,
                found.entry_id,
                found.reason,
            )
        checked += 1
        verified += cps.chunk_bounds(checkpoint, chunk)[1]
    return RangeVerdict(
        True, n, total, first_chunk, checked, verified, last if last < total else None
    )


# -- inclusion proofs --------------------------------------------------------------------


def _checkpoint_of(entry_id: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    from google.cloud.firestore import FieldFilter

    key = cps.entry_key(entry_id, entry)
    if audit_log.is_legacy(entry):
        kind: cps.Kind = "legacy"
        query = sealing.collection().where(
            filter=FieldFilter("throughSeq", ">=", int(entry["seq"]))
        )
        query = query.order_by("throughSeq")
    else:
        kind = "entries"
        written = entry.get(audit_log.WRITTEN_AT)
        if not isinstance(written, datetime):
            return None
        query = sealing.collection().where(filter=FieldFilter("throughAt", ">=", written))
        query = query.order_by("throughAt")
    for snap in query.limit(5).stream():
        cp = snap.to_dict() or {}
        if cps.cursor_key(kind, cp["range"]["through"]) >= key:
            start = cp["range"]["from"]
            return cp if start is None or cps.cursor_key(kind, start) < key else None
    return None


def inclusion_proof(entry_id: str) -> dict[str, Any] | None:
    """The proof that entry `entry_id` is in its checkpoint (None: no such entry; NotSealed:
    not in a checkpoint yet; RangeBroken: its chunk does not verify)."""
    entry = entries.get_entry(entry_id)
    if entry is None:
        return None
    checkpoint = _checkpoint_of(entry_id, entry)
    if checkpoint is None:
        raise NotSealed(entry_id)
    kind: cps.Kind = checkpoint["kind"]
    starts = [cps.cursor_key(kind, c["start"]) for c in checkpoint["chunks"]]
    chunk = bisect.bisect_right(starts, cps.entry_key(entry_id, entry)) - 1
    rows = read_chunk(checkpoint, chunk)
    found = cps.verify_chunk(checkpoint, chunk, rows, entries.hash_keys())
    if found:
        raise RangeBroken(int(checkpoint["n"]), found)
    rows = rows[: cps.chunk_bounds(checkpoint, chunk)[1]]
    offset = next((i for i, r in enumerate(rows) if r.entry_id == entry_id), None)
    if offset is None:
        raise NotSealed(entry_id)  # between two of its checkpoint's entries: never sealed
    from shared.audit import merkle

    leaves = [merkle.leaf_hash(audit_log.leaf(r.entry_id, r.entry)) for r in rows]
    index, path = cps.inclusion_proof(checkpoint, chunk, leaves, offset)
    leaf = audit_log.leaf(entry_id, entry)
    return {
        "entryId": entry_id,
        "leaf": leaf.decode(),
        "leafHash": merkle.leaf_hash(leaf).hex(),
        "index": index,
        "size": int(checkpoint["count"]),
        "path": path,
        "checkpoint": portable(checkpoint),
    }


# -- the scheduled consistency check ------------------------------------------------------


LISTED_PROBLEMS = 20  # new findings a check lists; it counts them all


@dataclass
class CheckResult:
    ok: bool = True
    checkpoints_verified: int = 0
    newest: int | None = None  # the newest checkpoint verified so far
    chunks_verified: int = 0
    entries_verified: int = 0
    sweep: dict[str, int] | None = None  # where the next run's range sweep starts
    problems: list[dict[str, str]] = field(default_factory=list)  # after `check`: the new ones
    new: int = 0  # findings never reported before (alerted now)
    known: int = 0  # findings found again, reported by an earlier run
    flagged: findings.Flagged = field(default_factory=findings.Flagged)  # the whole log's

    def problem(self, where: str, reason: str) -> None:
        self.ok = False
        self.problems.append({"where": where, "reason": reason})

    @property
    def clean(self) -> bool:
        return self.ok and self.flagged.clean

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["flagged"] = self.flagged.as_dict()
        found["clean"] = self.clean
        return found


def _state_ref() -> Any:
    return clients.db().collection(CHECK_STATE[0]).document(CHECK_STATE[1])


def _chain(state: dict[str, Any], result: CheckResult) -> dict[str, Any] | None:
    """Verify the chain from the newest checkpoint verified before; the newest now verified."""
    remembered = state.get("verified")
    first = 1
    if isinstance(remembered, dict):
        n = int(remembered["n"])
        again = sealing.get(n)
        if again is None:
            result.problem(f"checkpoint {n}", "it was verified before and is gone")
            return remembered
        if again.get("hash") != remembered.get("hash"):
            result.problem(f"checkpoint {n}", "it changed since it was verified")
            return remembered
        first = n + 1
    verdict = verify_checkpoints(first, CHAIN_BATCH)
    result.checkpoints_verified = verdict.checked
    if not verdict.ok:
        result.problem(f"checkpoint {verdict.broken_at}", verdict.reason or "does not verify")
    if verdict.through is None:
        return remembered if isinstance(remembered, dict) else None
    newest = sealing.get(verdict.through) if verdict.checked else None
    if newest is None:
        return remembered if isinstance(remembered, dict) else None
    return {"n": int(newest["n"]), "hash": newest["hash"]}


def _sweep(state: dict[str, Any], newest: int, budget: int, result: CheckResult) -> dict[str, int]:
    """Verify up to `budget` chunks from the sweep's bookmark; where it stands after."""
    sweep = state.get("sweep") if isinstance(state.get("sweep"), dict) else None
    n, chunk = (int(sweep["n"]), int(sweep["chunk"])) if sweep else (1, 0)
    if n > newest:
        n, chunk = 1, 0
    keys = entries.hash_keys()
    laps = 0
    while budget > 0 and laps < 1:  # at most once round the log per run
        checkpoint = sealing.get(n)
        if checkpoint is None:  # the chain check reports a missing one
            n, chunk = n + 1, 0
        else:
            count = len(checkpoint["chunks"])
            while chunk < count and budget > 0:
                batch = min(RANGE_BATCH, budget, count - chunk)
                for done, found in verify_chunks(checkpoint, chunk, batch, keys):
                    if found:
                        where = f"checkpoint {n}, entry {found.position}" + (
                            f" ({found.entry_id})" if found.entry_id else ""
                        )
                        result.problem(where, found.reason)
                    else:
                        result.chunks_verified += 1
                        result.entries_verified += cps.chunk_bounds(checkpoint, done)[1]
                budget -= batch
                chunk += batch
            if chunk >= count:
                n, chunk = n + 1, 0
        if n > newest:
            n, chunk, laps = 1, 0, laps + 1
    return {"n": n, "chunk": chunk}


def check(*, chunks: int = CHECK_CHUNKS, by: str = "system") -> CheckResult:
    snap = _state_ref().get()
    state: dict[str, Any] = (snap.to_dict() or {}) if snap.exists else {}
    result = CheckResult()
    verified = _chain(state, result)
    result.newest = int(verified["n"]) if verified else None
    sweep = state.get("sweep") if isinstance(state.get("sweep"), dict) else None
    if verified and chunks > 0:
        sweep = _sweep(state, int(verified["n"]), chunks, result)
    result.sweep = sweep
    # Each finding is alerted on once; later runs count it as known instead of listing it.
    new, result.known = findings.register(result.problems, by=by)
    for found in new:
        alerts.chain_broken(found["where"], found["reason"])
    result.new, result.problems = len(new), new[:LISTED_PROBLEMS]
    result.flagged = findings.log_wide()
    store.set(
        _state_ref(),
        {
            "verified": verified,
            "sweep": sweep,
            "lastRunAt": clock.real_now(),
            "lastOk": result.ok,
            "lastProblems": result.problems,
            "lastKnown": result.known,
        },
        by=by,
    )
    return result
