"""Idempotency-Key: a retried create answers exactly what the first attempt answered.

The key is remembered in the same atomic commit (transaction or batch) that makes the
resource, so a replay can never see the resource without its key or the key without its
resource; two concurrent first attempts cannot both commit, as the key document is created.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import clients, store
from shared.errors import BadRequest, Conflict

HEADER = "Idempotency-Key"
COLLECTION = "idempotency"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


@dataclass(frozen=True)
class Key:
    ref: Any
    fingerprint: str


def from_header(value: str | None, *, scope: str, uid: str, payload: Any) -> Key | None:
    """The key of this request (scoped to the caller and the operation), if it sent one."""
    if value is None:
        return None
    if not _KEY.match(value):
        raise BadRequest(
            f"{HEADER} must be 1-200 visible ASCII characters.", code="invalid_idempotency_key"
        )
    doc_id = hashlib.sha256(f"{scope}\0{uid}\0{value}".encode()).hexdigest()
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return Key(
        ref=clients.db().collection(COLLECTION).document(doc_id),
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def replay(key: Key | None, tx: Any = None) -> dict[str, Any] | None:
    """The first answer for this key, or None for a new request (inside `tx` if given)."""
    if key is None:
        return None
    snap = key.ref.get(transaction=tx) if tx is not None else key.ref.get()
    if not snap.exists:
        return None
    saved: dict[str, Any] = snap.to_dict()
    if saved["fingerprint"] != key.fingerprint:
        raise Conflict(
            f"This {HEADER} was used for a different request.", code="idempotency_key_reused"
        )
    answer: dict[str, Any] = saved["answer"]
    return answer


def remember(key: Key | None, tx: Any, answer: dict[str, Any]) -> None:
    if key is not None:
        store.create(
            key.ref,
            {"fingerprint": key.fingerprint, "answer": answer, "createdAt": datetime.now(UTC)},
            tx=tx,
        )
