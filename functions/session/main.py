"""The `session` function: sign in, see and end sessions.

Routes (under /session):
  POST   /                 exchange a fresh Firebase ID token for a session cookie
  GET    /                 the current principal and CSRF token
  GET    /sessions         the caller's active sessions
  DELETE /                 sign out of this session
  DELETE /sessions/{id}    end another of the caller's sessions
  POST   /refresh          re-issue this session's cookie for a fresh ID token (rotation)
  POST   /revoke-all       end every session and revoke refresh tokens

The cookie is the project's own (shared.identity.sessions), not a Firebase session cookie:
making or rotating a session asks the Auth API nothing. A sign-in is one transaction that reads
the access record and creates the session record; an account's first sign-in here also sets
up its access record (from Auth), role and profile.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import flask
import functions_framework
from pydantic import Field

from shared.identity import access, accounts, auth, profiles, sessions, tokens
from shared.platform import clock, settings
from shared.platform.context import ROLES_NEEDING_APPROVAL, Role
from shared.platform.errors import Conflict, Unauthenticated
from shared.platform.models import Body, Page, View
from shared.platform.settings import MIN_SESSION_SECONDS
from shared.web.http import Call, Function, Reply

api = Function(
    "session",
    title="Alo Doktor sessions",
    description="Sign-in with Firebase ID tokens, server-side sessions, CSRF tokens.",
)


class SignIn(Body):
    id_token: str = Field(min_length=16, max_length=8192)


class Refresh(Body):
    id_token: str = Field(
        min_length=16,
        max_length=8192,
        description="A fresh Firebase ID token of the same account (the SDK's getIdToken())",
    )


class SessionOut(View):
    uid: str
    email: str | None
    role: Role
    approved: bool
    csrf_token: str | None = Field(
        description="Send as X-CSRF-Token on cookie-authenticated changes"
    )
    expires_at: datetime | None


class SessionItem(View):
    id: str
    ip: str | None
    user_agent: str | None
    created_at: datetime
    expires_at: datetime
    current: bool


class SessionList(View):
    items: list[SessionItem]
    next_cursor: str | None


class Revoked(View):
    revoked_sessions: int


def _cookie(value: str, max_age: int) -> dict[str, Any]:
    return {
        "key": auth.COOKIE_NAME,
        "value": value,
        "max_age": max_age,
        "httponly": True,
        "secure": True,
        "samesite": "Strict",
        "path": "/",
    }


def _clear_cookie(call: Call) -> None:
    call.set_cookies.append(_cookie("", 0) | {"expires": 0})


@api.route("POST", "/", body=SignIn, response=SessionOut, status=201, problems=(401,))
def sign_in(call: Call) -> SessionOut:
    """Exchange a Firebase ID token from a sign-in in the last 5 minutes for a session cookie."""
    s = settings.get()
    id_token: str = call.body.id_token
    claims = tokens.verify(id_token, tokens.TokenKind.ID_TOKEN)
    auth_time = int(claims["auth_time"])
    # auth_time is the Auth service's clock, which never moves: compared with the real one.
    if clock.real_timestamp() - auth_time > s.recent_sign_in_seconds:
        raise Unauthenticated(
            "Sign in again: a session needs a sign-in from the last few minutes.",
            code="recent_sign_in_required",
        )
    new = sessions.NewSession(
        claims["sub"], sessions.id_for_token(id_token), auth_time, call.client_ip, call.user_agent
    )
    expires_at = clock.now() + timedelta(seconds=s.session_seconds)
    try:
        issued = sessions.create(new, expires_at=expires_at)
    except sessions.AccountNotReady as first:
        # The account's first sign-in here: its access record (from Auth, when it has none),
        # its role and its profile; then the session, as for any other sign-in.
        account = first.account or access.adopt(new.uid)
        account.check(auth_time)
        profiles.ensure_on_sign_in(account, claims.get("name"))
        try:
            issued = sessions.create(new, expires_at=expires_at)
        except sessions.AccountNotReady:
            raise Unauthenticated(
                "This account is not known; sign in again.", code="user_not_found"
            ) from None
    if issued is None:
        raise Unauthenticated(
            "This sign-in was already used for a session that has ended; sign in again.",
            code="sign_in_reused",
        )
    call.set_cookies.append(_cookie(issued.cookie, s.session_seconds))
    return _session_out(issued.record)


def _session_out(record: sessions.SessionRecord) -> SessionOut:
    assert record.role is not None  # a new record always holds the account's role
    return SessionOut(
        uid=record.uid,
        email=record.email,
        role=record.role,
        approved=record.approved or record.role not in ROLES_NEEDING_APPROVAL,
        csrf_token=record.csrf_token,
        expires_at=record.expires_at,
    )


@api.route("POST", "/refresh", body=Refresh, response=SessionOut, problems=(401,))
def refresh(call: Call) -> SessionOut:
    """Rotate this cookie session: a new cookie and CSRF token for a fresh ID token of the same
    account, with the same absolute expiry; the old cookie is refused from now on."""
    p = call.principal
    if p.session_id is None:
        raise Conflict(
            "Only a cookie session can be refreshed; a bearer caller sends fresh ID tokens.",
            code="not_a_cookie_session",
        )
    id_token: str = call.body.id_token
    claims = tokens.verify(id_token, tokens.TokenKind.ID_TOKEN)
    if claims["sub"] != p.uid:
        raise Unauthenticated("The ID token is of another account.", code="token_mismatch")
    assert p.session_expires_at is not None  # a cookie session's
    remaining = int((p.session_expires_at - clock.now()).total_seconds())
    if remaining < MIN_SESSION_SECONDS:  # almost over anyway: a new sign-in gives a full one
        raise Unauthenticated(
            "This session is about to end; sign in again.", code="session_expiring"
        )
    issued = sessions.rotate(
        p.session_id,
        sessions.NewSession(
            p.uid,
            sessions.id_for_token(id_token),
            int(claims["auth_time"]),
            call.client_ip,
            call.user_agent,
        ),
    )
    call.set_cookies.append(_cookie(issued.cookie, remaining))
    return _session_out(issued.record)


@api.route("GET", "/", response=SessionOut)
def whoami(call: Call) -> SessionOut:
    """The signed-in caller, and the CSRF token of a cookie session."""
    p = call.principal
    return SessionOut(
        uid=p.uid,
        email=p.email,
        role=p.role,
        approved=p.approved,
        csrf_token=p.csrf_token,
        expires_at=p.session_expires_at,
    )


@api.route("GET", "/sessions", query=Page, response=SessionList)
def list_sessions(call: Call) -> SessionList:
    """The caller's active sessions, newest first."""
    p = call.principal
    records, cursor = sessions.list_active(p.uid, limit=call.query.limit, cursor=call.query.cursor)
    return SessionList(
        items=[
            SessionItem(
                id=r.id,
                ip=r.ip,
                user_agent=r.user_agent,
                created_at=r.created_at,
                expires_at=r.expires_at,
                current=r.id == p.session_id,
            )
            for r in records
        ],
        next_cursor=cursor,
    )


@api.route("DELETE", "/", status=204)
def sign_out(call: Call) -> None:
    """End this session: its cookie is refused from the next request on."""
    if call.principal.session_id:
        sessions.revoke(call.principal.session_id, "signed_out")
    _clear_cookie(call)


@api.route("DELETE", "/sessions/<id>", status=204)
def end_session(call: Call) -> None:
    """End one of the caller's other sessions (for example a lost device)."""
    record = sessions.get(call.params["id"]) if len(call.params["id"]) <= 128 else None
    call.authorize({"uid": record.uid} if record else None)
    assert record is not None
    if not record.revoked:
        sessions.revoke(record.id, "ended_by_user")
    if record.id == call.principal.session_id:
        _clear_cookie(call)


@api.route("POST", "/revoke-all", response=Revoked)
def revoke_all(call: Call) -> Reply:
    """End every session of the caller and revoke their refresh tokens everywhere."""
    count = accounts.revoke_access(call.principal.uid)
    _clear_cookie(call)
    return Reply(Revoked(revoked_sessions=count))


@functions_framework.http
def session(request: flask.Request) -> flask.Response:
    return api.handle(request)
