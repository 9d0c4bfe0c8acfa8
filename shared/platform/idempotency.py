"""`Idempotency-Key`: a retried create returns what the first one made, and makes nothing new.

A create that claims capacity or moves money records key -> resource id in its own
transaction (`remember`, run through `once`), so the resource and the record of its key exist
together or not at all. Keys are per caller and per scope (the
same key from two patients, or for two kinds of resource, are different keys), and a key sent
again with a different request is refused rather than silently answered with the first one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.platform import clients, clock, store
from shared.platform.errors import BadRequest, Conflict

HEADER = "Idempotency-Key"
COLLECTION = "idempotency"
# Kept at least this long: `expiresAt` carries a TTL policy (firestore.indexes.json), which
# removes a key some time after it expires.
KEEP_FOR = timedelta(days=1)
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


@dataclass(frozen=True)
class Key:
    scope: str  # what kind of create, e.g. "bookings.create"
    caller: str  # the uid that sent it
    value: str
    fingerprint: str  # of the request it came with

    @property
    def doc_id(self) -> str:
        raw = f"{self.scope}\n{self.caller}\n{self.value}".encode()
        return hashlib.sha256(raw).hexdigest()

    def ref(self) -> Any:
        return clients.db().collection(COLLECTION).document(self.doc_id)


def fingerprint(request: Any) -> str:
    """A stable digest of a request's meaningful content (JSON-serialisable)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def from_header(header: str | None, *, scope: str, caller: str, request: Any) -> Key | None:
    """The key of this request, None when it sent none; 400 for a malformed one."""
    if header is None:
        return None
    if not _KEY.fullmatch(header):
        raise BadRequest(
            f"{HEADER} must be 1 to 255 printable characters without spaces.",
            code="invalid_idempotency_key",
        )
    return Key(scope, caller, header, fingerprint(request))


def earlier(key: Key | None) -> str | None:
    """The id of what this key made before, if anything; 409 if it came with another request."""
    if key is None:
        return None
    snap = key.ref().get()
    if not snap.exists:
        return None
    seen = snap.to_dict()
    if seen["fingerprint"] != key.fingerprint:
        raise Conflict(
            f"This {HEADER} was used for a different request.", code="idempotency_key_reused"
        )
    resource_id: str = seen["resourceId"]
    return resource_id


def remember(key: Key | None, tx: Any, resource_id: str, *, now: datetime | None = None) -> None:
    """Inside the create's transaction: this key made `resource_id`.

    A create, not a read-then-write: concurrent requests with one key do not lock each other
    out reading it; the second commit fails with AlreadyExists and `once` replays the first.
    """
    if key is None:
        return
    at = now or clock.now()
    store.create(
        key.ref(),
        {
            "scope": key.scope,
            "caller": key.caller,
            "fingerprint": key.fingerprint,
            "resourceId": resource_id,
            "createdAt": at,
            "expiresAt": at + KEEP_FOR,
        },
        tx=tx,
    )


def once(key: Key | None, create: Callable[[], str]) -> tuple[str, bool]:
    """Run `create` (a transaction that calls `remember`) unless this key already made
    something; returns (resource id, replayed)."""
    from google.api_core.exceptions import AlreadyExists

    first = earlier(key)
    if first is not None:
        return first, True
    try:
        return create(), False
    except AlreadyExists:
        first = earlier(key)  # a concurrent request with this key committed first
        if first is None:
            raise
        return first, True
