"""The `session` function: sign in, see and end sessions.

Routes (under /session):
  POST   /                 exchange a fresh Firebase ID token for a session cookie
  GET    /                 the current principal and CSRF token
  GET    /sessions         the caller's active sessions
  DELETE /                 sign out of this session
  DELETE /sessions/{id}    end another of the caller's sessions
  POST   /refresh          re-issue this session's cookie for a fresh ID token (rotation)
  POST   /revoke-all       end every session and revoke refresh tokens
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import flask
import functions_framework
from pydantic import Field

from shared.identity import access, accounts, auth, profiles, sessions, tokens
from shared.platform import clients, clock, settings
from shared.platform.context import ROLES_NEEDING_APPROVAL, Role
from shared.platform.errors import Conflict, DependencyUnavailable, Unauthenticated
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
    account = access.load(claims["sub"])
    account.check(auth_time)
    account = profiles.ensure_on_sign_in(account, claims.get("name"))

    cookie = _session_cookie(id_token, s.session_seconds)
    expires_at = clock.now() + timedelta(seconds=s.session_seconds)
    record = sessions.create(
        sessions.NewSession(account.uid, cookie, auth_time, call.client_ip, call.user_agent),
        expires_at=expires_at,
    )
    if record is None:
        raise Unauthenticated(
            "This sign-in was already used for a session that has ended; sign in again.",
            code="sign_in_reused",
        )
    call.set_cookies.append(_cookie(cookie, s.session_seconds))
    return _session_out(record)


def _session_cookie(id_token: str, seconds: int) -> str:
    from firebase_admin import auth as firebase_auth
    from firebase_admin import exceptions as firebase_exceptions

    try:
        cookie: str = firebase_auth.create_session_cookie(
            id_token, expires_in=timedelta(seconds=seconds), app=clients.firebase_app()
        )
    except firebase_exceptions.InvalidArgumentError:
        raise Unauthenticated("The ID token was refused.", code="invalid_token") from None
    except (firebase_exceptions.UnavailableError, firebase_exceptions.InternalError):
        raise DependencyUnavailable() from None
    return cookie


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
    current = sessions.get(p.session_id)
    if current is None or not current.active:
        raise Unauthenticated("This session has ended; sign in again.", code="session_revoked")
    remaining = int((current.expires_at - clock.now()).total_seconds())
    if remaining < MIN_SESSION_SECONDS:
        # Firebase mints no cookie this short, and the session is almost over anyway.
        raise Unauthenticated(
            "This session is about to end; sign in again.", code="session_expiring"
        )
    cookie = _session_cookie(id_token, remaining)
    auth_time = int(claims["auth_time"])
    record = sessions.rotate(
        p.session_id,
        sessions.NewSession(p.uid, cookie, auth_time, call.client_ip, call.user_agent),
    )
    call.set_cookies.append(_cookie(cookie, remaining))
    return _session_out(record)


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
