"""Server-side session records: who signed in, from where, until when, and whether revoked.

A record's id is the SHA-256 of its session cookie, so the cookie itself is never stored and
every request finds its record with one document read. Revoking a record takes effect on the
next request at every instance, because every cookie-authenticated request reads it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.platform import clients, pagination, store

COLLECTION = "sessions"


@dataclass(frozen=True)
class SessionRecord:
    id: str
    uid: str
    ip: str | None
    user_agent: str | None
    created_at: datetime
    expires_at: datetime
    revoked: bool
    csrf_token: str

    @property
    def active(self) -> bool:
        return not self.revoked and self.expires_at > datetime.now(UTC)

    @classmethod
    def from_doc(cls, doc_id: str, d: dict[str, Any]) -> SessionRecord:
        return cls(
            id=doc_id,
            uid=d["uid"],
            ip=d.get("ip"),
            user_agent=d.get("userAgent"),
            created_at=d["createdAt"],
            expires_at=d["expiresAt"],
            revoked=bool(d.get("revoked")),
            csrf_token=d["csrfToken"],
        )


def id_for_cookie(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def _ref(session_id: str) -> Any:
    return clients.db().collection(COLLECTION).document(session_id)


def get(session_id: str) -> SessionRecord | None:
    snap = _ref(session_id).get()
    data = snap.to_dict() if snap.exists else None
    return SessionRecord.from_doc(snap.id, data) if data is not None else None


def create(
    *, uid: str, cookie: str, ip: str | None, user_agent: str | None, expires_at: datetime
) -> SessionRecord | None:
    """Record a new session; if this very cookie was recorded before, that record (or None).

    Firebase mints the same cookie for the same ID token within one second, and the cookie is
    the session: a repeated exchange is the same session, and a revoked one stays revoked.
    """
    from google.api_core.exceptions import AlreadyExists

    record = SessionRecord(
        id=id_for_cookie(cookie),
        uid=uid,
        ip=ip,
        user_agent=user_agent,
        created_at=datetime.now(UTC),
        expires_at=expires_at,
        revoked=False,
        csrf_token=secrets.token_urlsafe(32),
    )
    try:
        _create(record)
    except AlreadyExists:
        existing = get(record.id)
        return existing if existing is not None and existing.active else None
    return record


def _create(record: SessionRecord) -> None:
    store.create(
        _ref(record.id),
        {
            "uid": record.uid,
            "ip": record.ip,
            "userAgent": record.user_agent,
            "createdAt": record.created_at,
            "expiresAt": record.expires_at,
            "revoked": False,
            "revokedAt": None,
            "csrfToken": record.csrf_token,
        },
        by=record.uid,
    )


def revoke(session_id: str) -> None:
    store.update(_ref(session_id), {"revoked": True, "revokedAt": datetime.now(UTC)})


def list_active(
    uid: str, *, limit: int, cursor: str | None
) -> tuple[list[SessionRecord], str | None]:
    """Unrevoked, unexpired sessions, latest expiry (newest sign-in) first."""
    from google.cloud.firestore import FieldFilter, Query

    collection = clients.db().collection(COLLECTION)
    query = (
        collection.where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("revoked", "==", False))
        .where(filter=FieldFilter("expiresAt", ">", datetime.now(UTC)))
    )
    snaps, next_cursor = pagination.run_page(
        collection, query, [("expiresAt", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    return [SessionRecord.from_doc(s.id, s.to_dict() or {}) for s in snaps], next_cursor


def revoke_all(uid: str) -> int:
    """Revoke every unrevoked session of the user; returns how many were revoked."""
    from google.cloud.firestore import FieldFilter

    db = clients.db()
    snaps = list(
        db.collection(COLLECTION)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("revoked", "==", False))
        .stream()
    )
    now = datetime.now(UTC)
    for start in range(0, len(snaps), 400):  # a batch holds at most 500 writes
        batch = db.batch()
        for snap in snaps[start : start + 400]:
            store.update(snap.reference, {"revoked": True, "revokedAt": now}, tx=batch)
        batch.commit()
    return len(snaps)
