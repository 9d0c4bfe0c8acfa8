"""Firestore writes that stamp `_meta = {by, at, requestId, function}` on every document,
and the read of one document by an id that may come from outside.

Admin SDK writes carry no end-user identity, so the audit trigger learns who acted from
`_meta`. Every write in the codebase goes through these helpers; `tx` may be a transaction or
a write batch, whose create/set/update share one signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.platform import context, ids
from shared.platform.errors import Conflict


def read_by_id(ref_of: Callable[[str], Any], doc_id: object) -> dict[str, Any] | None:
    """The document `ref_of(doc_id)` names, or None if there is none: also when `doc_id` (a
    webhook's custom_id, a task's body) could name no document (`__x__`, `a/b`, a trailing
    newline), which Firestore would refuse with an error, a 500 and a retry without end."""
    if not isinstance(doc_id, str) or not ids.DOC_ID.fullmatch(doc_id):
        return None
    snap = ref_of(doc_id).get()
    data: dict[str, Any] | None = snap.to_dict() if snap.exists else None
    return data


def meta(by: str | None = None) -> dict[str, Any]:
    from google.cloud import firestore

    ctx = context.current()
    return {
        "by": by or (ctx.principal.uid if ctx and ctx.principal else "system"),
        "at": firestore.SERVER_TIMESTAMP,
        "requestId": ctx.request_id if ctx else None,
        "function": ctx.function if ctx else None,
    }


def stamped(data: dict[str, Any], by: str | None = None) -> dict[str, Any]:
    return {**data, "_meta": meta(by)}


def create(ref: Any, data: dict[str, Any], *, tx: Any = None, by: str | None = None) -> None:
    """Create the document; raises google.api_core.exceptions.Conflict if it exists."""
    _refuse_append_only(ref)
    if tx is None:
        ref.create(stamped(data, by))
    else:
        tx.create(ref, stamped(data, by))


def set(  # mirrors the Firestore verb on purpose
    ref: Any, data: dict[str, Any], *, merge: bool = False, tx: Any = None, by: str | None = None
) -> None:
    _refuse_append_only(ref)
    if tx is None:
        ref.set(stamped(data, by), merge=merge)
    else:
        tx.set(ref, stamped(data, by), merge=merge)


def update(
    ref: Any,
    data: dict[str, Any],
    *,
    tx: Any = None,
    by: str | None = None,
    unchanged_since: Any = None,
) -> None:
    """Update fields; with `unchanged_since` (an update_time read earlier), only if the
    document was not written since (else FailedPrecondition at commit)."""
    _refuse_append_only(ref)
    kwargs: dict[str, Any] = {}
    if unchanged_since is not None:
        from shared.platform import clients

        kwargs["option"] = clients.db().write_option(last_update_time=unchanged_since)
    if tx is None:
        ref.update(stamped(data, by), **kwargs)
    else:
        tx.update(ref, stamped(data, by), **kwargs)


def delete(ref: Any, *, tx: Any = None, by: str | None = None) -> None:
    """Delete a document, first stamping who deleted it.

    The stamp is its own write so the audit trigger sees the actor in the deleted document's
    last state; inside a transaction both would collapse into one change, so there the caller
    is expected to have stamped earlier.
    """
    _refuse_append_only(ref)
    if tx is None:
        snap = ref.get()
        if snap.exists:
            ref.update({"_meta": meta(by)})
            ref.delete()
    else:
        tx.delete(ref)


# -- append-only logs (issue 17) ---------------------------------------------------------
# The audit log's entries and checkpoints are written once, by `append`, and never changed or
# deleted by the application (audit records are kept at least HIPAA's six years; the export
# bucket's retention policy keeps its copies; firestore.rules deny clients everything).
APPEND_ONLY: frozenset[str] = frozenset({"audit", "auditCheckpoints"})


class AppendOnly(RuntimeError):
    """A change or deletion of an append-only record was asked for: refused."""


def _collection_id(ref: Any) -> str:
    parent = getattr(ref, "parent", None)
    return str(getattr(parent, "id", ""))


def _refuse_append_only(ref: Any) -> None:
    if _collection_id(ref) in APPEND_ONLY:
        raise AppendOnly(
            f"{ref.path}: an append-only log's records are written by store.append alone, "
            "and never changed or deleted"
        )


def append(ref: Any, data: dict[str, Any], *, tx: Any = None) -> None:
    """Create a record of an append-only log exactly as given: no `_meta` (the record names
    its own actor, and is hashed as stored). Raises google.api_core.exceptions.Conflict
    (AlreadyExists) if it exists: a record is written once."""
    if _collection_id(ref) not in APPEND_ONLY:
        raise ValueError(f"{ref.path} is not in an append-only log")
    if tx is None:
        ref.create(data)
    else:
        tx.create(ref, data)


class TransactionContended(Conflict):
    """Every attempt of a transaction lost to concurrent writers of the same documents: a
    409 the client may simply retry."""

    code = "contention"

    def __init__(self) -> None:
        super().__init__(
            "Too many changes to this at once; try again.", headers={"Retry-After": "1"}
        )


def run_transaction(body: Any, *, attempts: int = 10) -> Any:
    """Run `body(tx)` in a Firestore transaction, retried on contention.

    The body may run several times, so it must only read and write through `tx`: side effects
    (HTTP calls, e-mail, tasks) belong after this returns.
    """
    from google.api_core.exceptions import Aborted
    from google.cloud import firestore

    from shared.platform import clients

    try:
        return firestore.transactional(body)(clients.db().transaction(max_attempts=attempts))
    except Aborted as exc:
        raise TransactionContended() from exc
    except ValueError as exc:
        # The client reports exhausted retries as a ValueError caused by the last Aborted.
        if isinstance(exc.__cause__, Aborted):
            raise TransactionContended() from exc
        raise


class ReadAgain(Exception):
    """Raised by a `run_optimistic` body that found what it read inconsistent (a racer
    committed between two of its reads): the attempt is dropped and the body runs again."""


def count(query: Any) -> int:
    """How many documents a query matches, by a count aggregation (one read per 1,000 index
    entries counted), never by reading them."""
    result = query.count(alias="n").get()
    return int(result[0][0].value)


def changed_since(ref: Any, update_time: Any) -> bool:
    """Whether the document was written after the read that gave `update_time`."""
    return bool(ref.get().update_time != update_time)


def run_optimistic(body: Any, *, attempts: int = 5) -> Any:
    """Run `body(batch)` and commit the batch, retried from the start when it lost a race.

    The lock-free sibling of `run_transaction`, for writes that many requests may race to
    make at once (two captures of one order and PayPal's webhook for it): `body` reads without
    locks and guards every write with a precondition (`create`, or `update` with
    `unchanged_since` = the update time it read). The first commit wins; the others fail their
    preconditions, read again and see what the winner did. Pessimistic transactions serialise
    such racers on lock waits instead, which the emulator answers with lock timeouts.

    Reads without locks can also see two moments: a racer may commit between two reads of
    one attempt. A body that notices (a value that cannot be, such as more refunded than
    captured) checks with `changed_since` and raises `ReadAgain` to start over.
    """
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition

    from shared.platform import clients

    for attempt in range(1, attempts + 1):
        batch = clients.db().batch()
        try:
            result = body(batch)
        except ReadAgain as exc:
            if attempt == attempts:
                raise TransactionContended() from exc
            continue
        try:
            batch.commit()
        except (AlreadyExists, FailedPrecondition) as exc:
            if attempt == attempts:
                raise TransactionContended() from exc
            continue
        return result
    raise AssertionError("unreachable")
