"""Server-side session records: who signed in, as what, from where, until when, last used when,
and whether ended.

The session is the project's own credential, not a Firebase session cookie (whose minting is
an Auth API call): the record is the source of truth, so the cookie needs no signature, only
to name its record and prove it was handed out. It is `<id>.<secret>`: the record's id, the
SHA-256 of the ID token the session was made from, and 32 random bytes of which the record
keeps only the SHA-256. A request reads the record by id (one document read) and compares the
secret's hash in constant time; the cookie itself is never stored. Keyed by its ID token, a
sign-in makes one session at most: exchanging the same token again finds that session (and
re-keys it while it lives: a retry whose first answer was lost still gets a working cookie),
and is refused once it has ended. The record also carries the account's role, approval and
e-mail as they were when it was made: every change to those ends the account's sessions
(shared.identity.accounts), so a cookie request needs no other read.

A session ends at the first of: its absolute expiry (fixed at sign-in, kept across rotations),
`SESSION_IDLE_SECONDS` without a request, sign-out, rotation (its successor replaces it), or a
change of the account's access. Its last use is written at most once per
`SESSION_TOUCH_SECONDS`, so the idle timeout bites between `idle - touch` and `idle` seconds
after the last request, and a busy session costs one write a minute, not one a request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.identity import access, consent
from shared.platform import clients, clock, pagination, settings, store
from shared.platform.context import Role
from shared.platform.errors import Unauthenticated

COLLECTION = "sessions"
SECRET_BYTES = 32
_ID = re.compile(r"[0-9a-f]{64}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(SECRET_BYTES)

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
    # The SHA-256 (hex) of the cookie's secret; empty on records of Firebase session cookies,
    # which no cookie opens any more.
    secret_hash: str = ""
    auth_time: int = 0  # the sign-in's, in seconds (the ID token's auth_time)
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
            secret_hash=str(d.get("secretHash") or ""),
            auth_time=int(d.get("authTime") or 0),
            consents=consent.accepted(d.get(consent.FIELD)),
        )


def id_for_token(id_token: str) -> str:
    """The id of the session made from this ID token (there is at most one)."""
    return hashlib.sha256(id_token.encode()).hexdigest()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def cookie_for(session_id: str, secret: str) -> str:
    return f"{session_id}.{secret}"


def parse_cookie(cookie: str) -> tuple[str, str]:
    """The session id and secret a cookie carries; Unauthenticated if it is not one of ours."""
    session_id, dot, secret = cookie.partition(".")
    if not dot or not _ID.fullmatch(session_id) or not _SECRET.fullmatch(secret):
        raise Unauthenticated("The session cookie is malformed.", code="invalid_token")
    return session_id, secret


def id_for_cookie(cookie: str) -> str:
    return parse_cookie(cookie)[0]


def authenticate(cookie: str) -> SessionRecord | None:
    """The record the cookie opens (one document read), or None: no such record, or the
    secret is not the one the record keeps the hash of (compared in constant time)."""
    session_id, secret = parse_cookie(cookie)
    record = get(session_id)
    if record is None or not record.secret_hash:
        return None
    return record if hmac.compare_digest(record.secret_hash, _hash(secret)) else None


def _ref(session_id: str) -> Any:
    return clients.db().collection(COLLECTION).document(session_id)


def get(session_id: str, *, tx: Any = None) -> SessionRecord | None:
    snap = _ref(session_id).get(transaction=tx)
    data = snap.to_dict() if snap.exists else None
    return SessionRecord.from_doc(snap.id, data) if data is not None else None


@dataclass(frozen=True)
class NewSession:
    """A session about to be recorded: whose, made from which ID token (its id,
    `id_for_token`), signed in when, from where."""

    uid: str
    session_id: str
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
        "secretHash": record.secret_hash,
        "authTime": record.auth_time,
        consent.FIELD: record.consents,
    }


@dataclass(frozen=True)
class Issued:
    """A session and the cookie that opens it (handed out once: only its hash is kept)."""

    record: SessionRecord
    cookie: str


class AccountNotReady(Exception):
    """The account has no access record yet (`account` None), or no role: its first sign-in
    here, which must set it up (shared.identity.profiles) before a session can be made."""

    def __init__(self, account: access.AccessState | None) -> None:
        super().__init__("account not ready")
        self.account = account


def _current_account(uid: str, auth_time: int, tx: Any) -> access.AccessState:
    """The account's access state read inside the session's transaction (the sign-in's one
    read), so an access change either commits first (and this refuses) or finds the new session
    when it ends them all."""
    account = access.get(uid, tx=tx)
    if account is None or (account.role is None and not account.deleted):
        raise AccountNotReady(account)
    account.check(auth_time)
    return account


def _open(
    tx: Any,
    new: NewSession,
    secret: str,
    *,
    expires_at: datetime,
    started_at: datetime,
) -> SessionRecord:
    account = _current_account(new.uid, new.auth_time, tx)
    now = clock.now()
    record = SessionRecord(
        id=new.session_id,
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
        secret_hash=_hash(secret),
        auth_time=new.auth_time,
        consents=account.consents,
    )
    store.create(_ref(record.id), _document(record), tx=tx, by=new.uid)
    return record


def create(new: NewSession, *, expires_at: datetime) -> Issued | None:
    """Record a new session: one read (the access record) and one write (the session), in one
    transaction. None if this ID token's session has ended (a token makes one session).

    Raises AccountNotReady on the account's first sign-in here.
    """
    from google.api_core.exceptions import AlreadyExists

    secret = secrets.token_urlsafe(SECRET_BYTES)

    def body(tx: Any) -> SessionRecord:
        return _open(tx, new, secret, expires_at=expires_at, started_at=clock.now())

    try:
        record: SessionRecord = store.run_transaction(body)
    except AlreadyExists:  # the session exists: created, not read, so a sign-in reads one
        return _again(new)
    return Issued(record, cookie_for(record.id, secret))


def _again(new: NewSession) -> Issued | None:
    """This ID token was exchanged before: its session, with a new secret while it lives (the
    earlier cookie is refused from now on), or None once it has ended."""
    secret = secrets.token_urlsafe(SECRET_BYTES)

    def body(tx: Any) -> SessionRecord | None:
        existing = get(new.session_id, tx=tx)
        now = clock.now()
        if (
            existing is None
            or existing.uid != new.uid
            or not existing.active
            or existing.idle_at(now)
        ):
            return None
        # The session is the one who exchanged the token now: where from, a CSRF token of
        # their own, used now (the list of sessions shows them, not the earlier holder).
        secret_hash, csrf_token = _hash(secret), secrets.token_urlsafe(32)
        change = {
            "secretHash": secret_hash,
            "csrfToken": csrf_token,
            "ip": new.ip,
            "userAgent": new.user_agent,
            "lastUsedAt": now,
        }
        store.update(_ref(existing.id), change, tx=tx, by=new.uid)
        return replace(
            existing,
            secret_hash=secret_hash,
            csrf_token=csrf_token,
            ip=new.ip,
            user_agent=new.user_agent,
            last_used_at=now,
        )

    record: SessionRecord | None = store.run_transaction(body)
    return Issued(record, cookie_for(record.id, secret)) if record is not None else None


def rotate(old_id: str, new: NewSession) -> Issued:
    """Replace a live session with one for a fresh ID token: new id, secret and CSRF token, the
    same absolute expiry. The old cookie is refused from the moment this commits."""
    from google.api_core.exceptions import AlreadyExists

    secret = secrets.token_urlsafe(SECRET_BYTES)

    def body(tx: Any) -> SessionRecord:
        old = get(old_id, tx=tx)
        if old is None or old.uid != new.uid or not old.active:
            raise Unauthenticated("This session has ended; sign in again.", code="session_revoked")
        try:
            record = _open(
                tx,
                new,
                secret,
                expires_at=old.expires_at,
                started_at=old.started_at or old.created_at,
            )
        except AccountNotReady:
            raise Unauthenticated(
                "This session is not known; sign in again.", code="session_unknown"
            ) from None
        store.update(_ref(old_id), _ending("rotated") | {"rotatedTo": record.id}, tx=tx, by=new.uid)
        return record

    try:
        result: SessionRecord = store.run_transaction(body)
    except AlreadyExists:
        raise Unauthenticated(
            "This ID token was already used for a session; get a fresh one.",
            code="sign_in_reused",
        ) from None
    return Issued(result, cookie_for(result.id, secret))


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
