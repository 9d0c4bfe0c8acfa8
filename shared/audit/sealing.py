"""The sealer: folds the entries written since the last checkpoint into the next one.

One seal reads the latest checkpoint, then the entries after where it ended, in their order
(writtenAt, then id) up to the cutoff, builds their Merkle tree chunk by chunk and creates one
document, `auditCheckpoints/{n}`: one write however many entries (up to MAX_ENTRIES; more
are left to the next seal). Entries are never written by the sealer.

- The cutoff is the server's read time less AUDIT_SEAL_LAG_SECONDS. `writtenAt` is the time
  the server took the write, and it becomes visible a little later, at its commit: an entry
  whose write was still in flight when the sealer read could otherwise land inside a sealed
  range. Everything at or before the cutoff has long committed, so the range is final.
- Two sealers at once both read checkpoint n and both try to create n + 1; `create` lets one
  win, and the other answers the winner's checkpoint. Nothing is sealed twice or skipped.
- An entry that does not verify (an invalid mac, edited after it was written) is sealed anyway,
  so the log never stalls, listed in the checkpoint's `flagged` and alerted on.
- The hash chain from before issue 17 (`auditHead/chain` and entries with a seq) is sealed
  first, by seq, as the first checkpoints' history, once its links are verified; a chain that
  does not verify is not sealed (alert, and 409 audit_chain_broken).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.audit import alerts, signing
from shared.audit import checkpoints as cps
from shared.audit import rules as audit_log
from shared.audit import service as entries
from shared.platform import clients, settings, store

CHECKPOINTS = "auditCheckpoints"
MAX_ENTRIES = 50_000
PAGE = 1000


class ChainBroken(Exception):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def collection() -> Any:
    return clients.db().collection(CHECKPOINTS)


def get(n: int) -> dict[str, Any] | None:
    snap = collection().document(cps.checkpoint_id(n)).get()
    return (snap.to_dict() or {}) if snap.exists else None


def latest() -> dict[str, Any] | None:
    from google.cloud.firestore import Query

    snaps = list(collection().order_by("n", direction=Query.DESCENDING).limit(1).stream())
    return (snaps[0].to_dict() or {}) if snaps else None


@dataclass(frozen=True)
class Sealed:
    checkpoint: dict[str, Any] | None  # the new checkpoint, or a racing sealer's; None: nothing
    created: bool  # this call wrote it
    more: bool  # entries were left for the next seal


def _entry_rows(
    start: cps.Cursor | None, cutoff: datetime, limit: int, lag: float
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(id, entry, what the store says is wrong) after `start` up to `cutoff`, in order."""
    from google.cloud.firestore import FieldFilter

    col = clients.db().collection(entries.COLLECTION)
    after: dict[str, Any] | None = (
        {audit_log.WRITTEN_AT: start["at"], "__name__": start["id"]} if start else None
    )
    left = limit
    while left > 0:
        query = col.where(filter=FieldFilter(audit_log.WRITTEN_AT, "<=", cutoff))
        if after is not None:
            query = query.where(filter=FieldFilter(audit_log.WRITTEN_AT, ">=", after["writtenAt"]))
        query = query.order_by(audit_log.WRITTEN_AT).order_by("__name__")
        if after is not None:
            query = query.start_after(after)
        snaps = list(query.limit(min(PAGE, left)).stream())
        for snap in snaps:
            entry = snap.to_dict() or {}
            written = entry.get(audit_log.WRITTEN_AT)
            problem = audit_log.storage_problem(
                written if isinstance(written, datetime) else None,
                snap.create_time,
                snap.update_time,
                lag,
            )
            yield snap.id, entry, problem
        if len(snaps) < min(PAGE, left):
            return
        left -= len(snaps)
        last = snaps[-1]
        after = {audit_log.WRITTEN_AT: last.get(audit_log.WRITTEN_AT), "__name__": last.id}


def legacy_rows(after_seq: int, through: int) -> Iterator[tuple[str, dict[str, Any]]]:
    from google.cloud.firestore import FieldFilter

    col = clients.db().collection(entries.COLLECTION)
    last = after_seq
    while last < through:
        snaps = list(
            col.where(filter=FieldFilter("seq", ">", last))
            .where(filter=FieldFilter("seq", "<=", through))
            .order_by("seq")
            .limit(PAGE)
            .stream()
        )
        for snap in snaps:
            yield snap.id, snap.to_dict() or {}
        if len(snaps) < PAGE:
            return
        last = int(snaps[-1].get("seq"))


def legacy_head() -> dict[str, Any] | None:
    snap = clients.db().collection(entries.HEAD_COLLECTION).document(entries.HEAD_ID).get()
    return (snap.to_dict() or {}) if snap.exists else None


def _fold_legacy(
    previous: dict[str, Any] | None, builder: cps.Builder, limit: int
) -> tuple[bool, bool]:
    """Fold the legacy chain's unsealed part into `builder`: (anything, more left)."""
    head = legacy_head()
    if head is None:
        return False, False
    state = (previous or {}).get("state", {}).get("legacy") or {}
    after_seq = int(state.get("seq", 0))
    after_hash = str(state.get("hash", audit_log.GENESIS_HASH))
    head_seq = int(head.get("seq", 0))
    if head_seq <= after_seq:
        return False, False
    through = min(head_seq, after_seq + limit)

    def folded() -> Iterator[tuple[str, dict[str, Any]]]:
        for entry_id, entry in legacy_rows(after_seq, through):
            builder.add(entry_id, entry)
            yield entry_id, entry

    verdict = audit_log.verify_chain(
        folded(), after_seq=after_seq, after_hash=after_hash, through=through
    )
    if not verdict.ok:
        where = f"legacy entry {verdict.broken_at}" + (
            f" ({verdict.entry_id})" if verdict.entry_id else ""
        )
        raise ChainBroken(where, verdict.reason or "does not verify")
    if through == head_seq and builder.last and builder.last.get("hash") != head.get("hash"):
        raise ChainBroken(f"legacy entry {head_seq}", "the chain head does not match it")
    return True, through < head_seq


def seal(*, by: str, max_entries: int = MAX_ENTRIES, chunk_size: int = cps.CHUNK_SIZE) -> Sealed:
    """Seal what is there to seal into the next checkpoint (at most one per call).
    (`chunk_size`, a power of two, is for tests that want many chunks of few entries.)"""
    from google.api_core.exceptions import AlreadyExists

    key = signing.configured().current  # KeyMissing before anything is read
    s = settings.get()
    lag = float(s.audit_seal_lag_seconds)
    previous = latest()
    n = int(previous["n"]) + 1 if previous else 1
    probe = collection().document(cps.checkpoint_id(n)).get()
    if probe.exists:  # a racing sealer made it between our two reads
        return Sealed(probe.to_dict() or {}, created=False, more=True)
    sealed_at: datetime = probe.read_time
    cutoff = sealed_at - timedelta(seconds=lag)

    builder = cps.Builder(chunk_size=chunk_size)
    flagged: list[dict[str, str]] = []
    kind: cps.Kind = "legacy"
    try:
        found, more = _fold_legacy(previous, builder, max_entries)
    except ChainBroken as exc:
        alerts.chain_broken(exc.where, exc.reason)
        raise
    if not found:
        kind = "entries"
        start = (previous or {}).get("state", {}).get("entries")
        hash_keys = entries.hash_keys()
        for entry_id, entry, problem in _entry_rows(start, cutoff, max_entries, lag):
            builder.add(entry_id, entry)
            why = problem or audit_log.entry_problem(entry_id, entry, hash_keys)
            if why:
                flagged.append({"id": entry_id, "reason": why})
        more = builder.count == max_entries
    if builder.count == 0:
        return Sealed(None, created=False, more=False)

    body = cps.make_body(
        previous=previous,
        kind=kind,
        builder=builder,
        cutoff=cutoff,
        sealed_at=sealed_at,
        sealed_by=by,
        key_id=key.key_id,
        flagged=flagged,
    )
    stored = {
        **body,
        "hash": cps.hash_of(body),
        "signature": key.sign(cps.signing_message(body)),
    }
    try:
        store.append(collection().document(cps.checkpoint_id(n)), stored)
    except AlreadyExists:
        return Sealed(get(n), created=False, more=True)
    for f in flagged:
        alerts.chain_broken(f"entry {f['id']} (checkpoint {n})", f["reason"], checkpoint=n)
    return Sealed(stored, created=True, more=more)
