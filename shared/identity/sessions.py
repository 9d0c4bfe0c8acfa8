"""Server-side session records: who signed in, as what, from where, until when, last used when,
and whether ended.

A record's id is the SHA-256 of its session cookie, so the cookie itself is never stored and
every request finds its record with one document read. The record also carries the account's
role, approval and e-mail as they were when it was made: every change to those ends the
account's sessions (shared.identity.accounts), so a cookie request needs no other read.

A session ends at the first of: its absolute expiry (fixed at sign-in, kept across rotations),
`SESSION_IDLE_SECONDS` without a request, sign-out, rotation (its successor replaces it), or a
change of the account's access. Its last use is written at most once per
`SESSION_TOUCH_SECONDS`, so the idle timeout bites between `idle - touch` and `idle` seconds
after the last request, and a busy session costs one write a minute, not one a request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.identity import access, consent
from shared.platform import clients, clock, pagination, settings, store
from shared.platform.context import Role
from shared.platform.errors import Unauthenticated

COLLECTION = "sessions"

EndReason = Literal["signed_out", "ended_by_user", "rotated", "idle", "access_changed"]


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
    # The account as it was when the session began (None on records from before they held it).
    role: Role | None = None
    approved: bool = False
    email: str | None = None
    started_at: datetime | None = None  # the sign-in this session descends from
    last_used_at: datetime | None = None
    # The account's consents, mirrored as approval is (shared.identity.consent).
    consents: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return not self.revoked and self.expires_at > clock.now()

    def idle_at(self, now: datetime) -> bool:
        last = self.last_used_at or self.created_at
        return now - last > timedelta(seconds=settings.get().session_idle_seconds)

    def due_for_touch(self, now: datetime) -> bool:
        last = self.last_used_at or self.created_at
        return now - last >= timedelta(seconds=settings.get().session_touch_seconds)

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
            role=access.role_of(d.get("role")),
            approved=d.get("approved") is True,
            email=d.get("email"),
            started_at=d.get("startedAt"),
            last_used_at=d.get("lastUsedAt"),
            consents=consent.accepted(d.get(consent.FIELD)),
        )


def id_for_cookie(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def _ref(session_id: str) -> Any:
    return clients.db().collection(COLLECTION).document(session_id)


def get(session_id: str, *, tx: Any = None) -> SessionRecord | None:
    snap = _ref(session_id).get(transaction=tx)
    data = snap.to_dict() if snap.exists else None
    return SessionRecord.from_doc(snap.id, data) if data is not None else None


@dataclass(frozen=True)
class NewSession:
    """A session about to be recorded: whose, for which cookie, signed in when, from where."""

    uid: str
    cookie: str
    auth_time: int
    ip: str | None
    user_agent: str | None


def _document(record: SessionRecord) -> dict[str, Any]:
    return {
        "uid": record.uid,
        "ip": record.ip,
        "userAgent": record.user_agent,
        "createdAt": record.created_at,
        "expiresAt": record.expires_at,
        "revoked": False,
        "revokedAt": None,
        "endReason": None,
        "csrfToken": record.csrf_token,
        "role": record.role.value if record.role else None,
        "approved": record.approved,
        "email": record.email,
        "startedAt": record.started_at,
        "lastUsedAt": record.last_used_at,
        consent.FIELD: record.consents,
    }


def _current_account(uid: str, auth_time: int, tx: Any) -> access.AccessState:
    """The account's access state read inside the session's transaction, so an access change
    either commits first (and this refuses) or finds the new session when it ends them all."""
    account = access.get(uid, tx=tx)
    if account is None:
        raise Unauthenticated("This account is not known; sign in again.", code="user_not_found")
    account.check(auth_time)
    if account.role is None:
        raise Unauthenticated("This account has no profile yet.", code="profile_missing")
    return account


def _open(tx: Any, new: NewSession, *, expires_at: datetime, started_at: datetime) -> SessionRecord:
    account = _current_account(new.uid, new.auth_time, tx)
    now = clock.now()
    record = SessionRecord(
        id=id_for_cookie(new.cookie),
        uid=new.uid,
        ip=new.ip,
        user_agent=new.user_agent,
        created_at=now,
        expires_at=expires_at,
        revoked=False,
        csrf_token=secrets.token_urlsafe(32),
        role=account.role,
        approved=account.approved,
        email=account.email,
        started_at=started_at,
        last_used_at=now,
        consents=account.consents,
    )
    store.create(_ref(record.id), _document(record), tx=tx, by=new.uid)
    return record


def create(new: NewSession, *, expires_at: datetime) -> SessionRecord | None:
    """Record a new session; if this very cookie was recorded before, that record (or None).

    Firebase mints the same cookie for the same ID token within one second, and the cookie is
    the session: a repeated exchange is the same session, and an ended one stays ended.
    """
    session_id = id_for_cookie(new.cookie)

    def body(tx: Any) -> SessionRecord | None:
        existing = get(session_id, tx=tx)
        if existing is not None:
            return existing if existing.active else None
        return _open(tx, new, expires_at=expires_at, started_at=clock.now())

    result: SessionRecord | None = store.run_transaction(body)
    return result


def rotate(old_id: str, new: NewSession) -> SessionRecord:
    """Replace a live session with one for a new cookie: new id and CSRF token, the same
    absolute expiry. The old cookie is refused from the moment this commits."""

    def body(tx: Any) -> SessionRecord:
        old = get(old_id, tx=tx)
        if old is None or old.uid != new.uid or not old.active:
            raise Unauthenticated("This session has ended; sign in again.", code="session_revoked")
        record = _open(
            tx, new, expires_at=old.expires_at, started_at=old.started_at or old.created_at
        )
        store.update(_ref(old_id), _ending("rotated") | {"rotatedTo": record.id}, tx=tx, by=new.uid)
        return record

    result: SessionRecord = store.run_transaction(body)
    return result


def _ending(reason: EndReason) -> dict[str, Any]:
    return {"revoked": True, "revokedAt": clock.now(), "endReason": reason}


def revoke(session_id: str, reason: EndReason = "signed_out") -> None:
    store.update(_ref(session_id), _ending(reason))


def touch(session_id: str, now: datetime) -> None:
    """Record a use (not audited: shared.audit.rules.UNAUDITED_FIELDS)."""
    store.update(_ref(session_id), {"lastUsedAt": now})


def list_active(
    uid: str, *, limit: int, cursor: str | None
) -> tuple[list[SessionRecord], str | None]:
    """Unrevoked, unexpired, not idle sessions, latest expiry (newest sign-in) first."""
    from google.cloud.firestore import FieldFilter, Query

    collection = clients.db().collection(COLLECTION)
    now = clock.now()
    query = (
        collection.where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("revoked", "==", False))
        .where(filter=FieldFilter("expiresAt", ">", now))
    )
    snaps, next_cursor = pagination.run_page(
        collection, query, [("expiresAt", Query.DESCENDING)], limit=limit, cursor=cursor
    )
    records = [SessionRecord.from_doc(s.id, s.to_dict() or {}) for s in snaps]
    return [r for r in records if not r.idle_at(now)], next_cursor


def revoke_all(uid: str, reason: EndReason = "access_changed") -> int:
    """End every unrevoked session of the user; returns how many were ended."""
    return _update_all_live(uid, _ending(reason))


def grant_approval(uid: str) -> int:
    """Mark the user's live sessions approved (an admin approved the account just now)."""
    return _update_all_live(uid, {"approved": True})


def mirror_consents(uid: str, consents: dict[str, int]) -> int:
    """Write the account's consents into its live sessions (it accepted or withdrew one)."""
    return _update_all_live(uid, {consent.FIELD: consents})


def _update_all_live(uid: str, fields: dict[str, Any]) -> int:
    from google.cloud.firestore import FieldFilter

    db = clients.db()
    snaps = list(
        db.collection(COLLECTION)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("revoked", "==", False))
        .stream()
    )
    for start in range(0, len(snaps), 400):  # a batch holds at most 500 writes
        batch = db.batch()
        for snap in snaps[start : start + 400]:
            store.update(snap.reference, fields, tx=batch)
        batch.commit()
    return len(snaps)
