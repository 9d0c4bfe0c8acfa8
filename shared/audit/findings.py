"""What verifying the audit log found, what was done about it, and what is not sealed yet.

- Flagged entries: an entry that did not verify when it was sealed (edited or invented before
  its seal) is sealed anyway and listed in its checkpoint's signed `flagged`. Every verdict on
  a range holding one says so (`flagged`, `unresolved`, `clean`), every time, until an admin
  acknowledges it: `auditAcknowledgements/{n}-{entryId}`, created once with what was done
  (`resolution`), by whom and when. That collection is audited (shared.audit.rules), so each
  acknowledgement is itself an entry of the log, sealed and exported with the rest: an
  export's verifier finds it there (`acknowledgement_of_entry`).
- Known findings: what the scheduled check found is recorded once, `auditFindings/{id}` (the
  id is the finding's hash, as the alert's notice id is), so a run lists only new findings
  and counts the ones reported before.
- Unsealed: how many entries no checkpoint holds yet, and the oldest one's time, counted with a
  bounded count aggregation (at most UNSEALED_CAP index entries: a read per 1,000).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.audit import alerts, sealing
from shared.audit import checkpoints as cps
from shared.audit import rules as audit_log
from shared.audit import service as entries
from shared.platform import clients, store

ACKNOWLEDGEMENTS = "auditAcknowledgements"
FINDINGS = "auditFindings"
LISTED = 50  # flagged entries a verdict lists; it counts them all
FLAGGED_CHECKPOINTS = 200  # checkpoints with flagged entries the log-wide summary reads
UNSEALED_CAP = 100_000
MAX_RESOLUTION = 2000


class NotFlagged(LookupError):
    """No such checkpoint, or the entry is not among its flagged ones."""


class AlreadyAcknowledged(Exception):
    pass


def acknowledgement_id(n: int, entry_id: str) -> str:
    return f"{cps.checkpoint_id(n)}-{entry_id}"


def _acks() -> Any:
    return clients.db().collection(ACKNOWLEDGEMENTS)


@dataclass(frozen=True)
class Flag:
    checkpoint: int
    entry_id: str
    reason: str
    acknowledgement: dict[str, Any] | None = None  # {by, at, note}

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "entryId": self.entry_id,
            "reason": self.reason,
            "acknowledged": self.acknowledgement is not None,
            "acknowledgement": self.acknowledgement,
        }


@dataclass(frozen=True)
class Flagged:
    """The flagged entries of some checkpoints: all counted, the first LISTED listed."""

    count: int = 0
    unresolved: int = 0
    listed: list[Flag] = field(default_factory=list)
    complete: bool = True  # False: more checkpoints hold flags than were read

    @property
    def clean(self) -> bool:
        return self.unresolved == 0 and self.complete

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "unresolved": self.unresolved,
            "listed": [f.as_dict() for f in self.listed],
            "complete": self.complete,
        }

    def words(self) -> str:
        """How a summary line says it ('' when nothing is flagged)."""
        if not self.count:
            return ""
        first = next((f for f in self.listed if f.acknowledgement is None), None)
        text = f"{self.count} flagged when sealed, {self.unresolved} unresolved"
        if first is not None:
            text += (
                f" (first: checkpoint {first.checkpoint}, entry {first.entry_id}: {first.reason})"
            )
        return text


def flags_of(checkpoints: Iterable[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    """(checkpoint, entry id, reason) of every entry these checkpoints flagged, in order."""
    return [
        (int(cp["n"]), str(f.get("id")), str(f.get("reason")))
        for cp in checkpoints
        for f in cp.get("flagged") or []
    ]


def _acknowledgement(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"by": d.get("by"), "at": d.get("at"), "note": d.get("resolution")}


def summarize(checkpoints: Sequence[Mapping[str, Any]], *, complete: bool = True) -> Flagged:
    """The flagged entries of these checkpoints, with what was done about them: a count
    aggregation of their acknowledgements, and one read per listed entry."""
    flags = flags_of(checkpoints)
    if not flags:
        return Flagged(complete=complete)
    from google.cloud.firestore import FieldFilter

    numbers = [n for n, _, _ in flags]
    acknowledged = store.count(
        _acks()
        .where(filter=FieldFilter("checkpoint", ">=", min(numbers)))
        .where(filter=FieldFilter("checkpoint", "<=", max(numbers)))
    )
    shown = flags[:LISTED]
    refs = [_acks().document(acknowledgement_id(n, e)) for n, e, _ in shown]
    found = {s.id: s.to_dict() or {} for s in clients.db().get_all(refs) if s.exists}
    listed = []
    for n, e, why in shown:
        done = found.get(acknowledgement_id(n, e))
        listed.append(Flag(n, e, why, _acknowledgement(done) if done is not None else None))
    return Flagged(len(flags), max(len(flags) - acknowledged, 0), listed, complete)


def log_wide() -> Flagged:
    """Every flagged entry of the log: the checkpoints that flagged any (`flaggedCount`, a flat
    copy the sealer writes), at most FLAGGED_CHECKPOINTS of them."""
    from google.cloud.firestore import FieldFilter

    snaps = list(
        sealing.collection()
        .where(filter=FieldFilter("flaggedCount", ">", 0))
        .order_by("flaggedCount")
        .limit(FLAGGED_CHECKPOINTS + 1)
        .stream()
    )
    found = sorted((s.to_dict() or {} for s in snaps[:FLAGGED_CHECKPOINTS]), key=lambda d: d["n"])
    if not found:
        return Flagged(complete=len(snaps) <= FLAGGED_CHECKPOINTS)
    return summarize(found, complete=len(snaps) <= FLAGGED_CHECKPOINTS)


def acknowledge(n: int, entry_id: str, note: str, *, by: str) -> dict[str, Any]:
    """Record what was done about entry `entry_id` flagged by checkpoint n (one document,
    created once, audited as any change is)."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import firestore

    checkpoint = sealing.get(n)
    flag = next(
        (f for f in (checkpoint or {}).get("flagged") or [] if f.get("id") == entry_id), None
    )
    if flag is None:
        raise NotFlagged(entry_id)
    ref = _acks().document(acknowledgement_id(n, entry_id))
    data = {
        "checkpoint": n,
        "entryId": entry_id,
        "reason": str(flag.get("reason")),
        "resolution": note,
        "by": by,
        "at": firestore.SERVER_TIMESTAMP,
    }
    try:
        store.create(ref, data, by=by)
    except AlreadyExists:
        raise AlreadyAcknowledged(entry_id) from None
    written = ref.get().to_dict() or {}
    return Flag(n, entry_id, str(flag.get("reason")), _acknowledgement(written)).as_dict()


def acknowledgement_of_entry(
    entry: Mapping[str, Any],
) -> tuple[tuple[int, str], dict[str, Any]] | None:
    """An audit entry that records an acknowledgement: ((checkpoint, entry id), {by, at, note}),
    else None. How a verifier holding only the entries (an export) learns what was done."""
    resource = str(entry.get("resource", ""))
    if entry.get("action") != "create" or audit_log.collection_of(resource) != ACKNOWLEDGEMENTS:
        return None
    changes = entry.get("changes") or {}

    def after(name: str) -> Any:
        change = changes.get(name)
        return change.get("after") if isinstance(change, Mapping) else None

    try:
        key = (int(after("checkpoint")), str(after("entryId")))
    except (TypeError, ValueError):
        return None
    return key, {"by": entry.get("actor"), "at": after("at"), "note": after("resolution")}


def resolve_offline(
    flags: Sequence[tuple[int, str, str]],
    acknowledged: Mapping[tuple[int, str], dict[str, Any]],
) -> Flagged:
    """The flagged entries of an export, acknowledged by the entries found in it."""
    listed = [Flag(n, e, why, acknowledged.get((n, e))) for n, e, why in flags]
    unresolved = sum(1 for f in listed if f.acknowledgement is None)
    unresolved_first = sorted(listed, key=lambda f: f.acknowledgement is not None)
    return Flagged(len(listed), unresolved, unresolved_first[:LISTED])


# -- findings the scheduled check reported ------------------------------------------------


def register(found: Sequence[Mapping[str, str]], *, by: str) -> tuple[list[dict[str, str]], int]:
    """(the findings never reported before, how many were): each new one recorded once."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import firestore

    if not found:
        return [], 0
    col = clients.db().collection(FINDINGS)
    unique = {alerts.finding_id(f["where"], f["reason"]): f for f in found}
    known = {s.id for s in clients.db().get_all([col.document(k) for k in unique]) if s.exists}
    new: list[dict[str, str]] = []
    for key, finding in unique.items():
        if key in known:
            continue
        try:
            store.create(
                col.document(key),
                {**finding, "firstFoundAt": firestore.SERVER_TIMESTAMP},
                by=by,
            )
        except AlreadyExists:  # a check running at the same time reported it
            known.add(key)
            continue
        new.append(dict(finding))
    return new, len(known)


# -- not sealed yet -----------------------------------------------------------------------


@dataclass(frozen=True)
class Unsealed:
    count: int  # entries no checkpoint holds yet (at most UNSEALED_CAP counted)
    more: bool  # more than UNSEALED_CAP
    oldest: datetime | None  # the oldest one's writtenAt

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "more": self.more, "oldest": self.oldest}

    def words(self) -> str:
        if not self.count:
            return "nothing waits to be sealed"
        count = f"more than {UNSEALED_CAP}" if self.more else str(self.count)
        since = f", the oldest written {audit_log.format_time(self.oldest)}" if self.oldest else ""
        return f"{count} entries not sealed yet{since}"


def unsealed() -> Unsealed:
    """Entries after the newest checkpoint's end: a count aggregation of at most UNSEALED_CAP
    and one read for the oldest; the legacy chain's unsealed part from its head."""
    latest = sealing.latest()
    state = (latest or {}).get("state") or {}
    start = state.get("entries")
    written = audit_log.WRITTEN_AT
    query: Any = clients.db().collection(entries.COLLECTION).order_by(written)
    query = query.order_by("__name__")
    if start:
        query = query.start_after({written: start["at"], "__name__": start["id"]})
    count = store.count(query.limit(UNSEALED_CAP + 1))
    first = list(query.limit(1).stream())
    oldest = first[0].get(written) if first else None
    head = sealing.legacy_head()
    legacy = 0
    if head is not None:
        legacy = max(int(head.get("seq", 0)) - int((state.get("legacy") or {}).get("seq", 0)), 0)
    return Unsealed(
        min(count, UNSEALED_CAP) + legacy,
        count > UNSEALED_CAP,
        oldest if isinstance(oldest, datetime) else None,
    )
