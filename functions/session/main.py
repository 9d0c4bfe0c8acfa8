"""The `session` function: sign in, see and end sessions.

Routes (under /session):
  POST   /                 exchange a fresh Firebase ID token for a session cookie
  GET    /                 the current principal and CSRF token
  GET    /sessions         the caller's active sessions
  DELETE /                 sign out of this session
  DELETE /sessions/{id}    end another of the caller's sessions
  POST   /revoke-all       end every session and revoke refresh tokens
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import functions_framework
from pydantic import Field

from shared.identity import auth, profiles, sessions, tokens
from shared.platform import clients, settings
from shared.platform.context import Role
from shared.platform.errors import DependencyUnavailable, Unauthenticated
from shared.platform.models import Body, Page, View
from shared.web.http import Call, Function, Reply

api = Function(
    "session",
    title="Alo Doktor sessions",
    description="Sign-in with Firebase ID tokens, server-side sessions, CSRF tokens.",
)


class SignIn(Body):
    id_token: str = Field(min_length=16, max_length=8192)


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
    from firebase_admin import auth as firebase_auth
    from firebase_admin import exceptions as firebase_exceptions

    s = settings.get()
    id_token: str = call.body.id_token
    claims = tokens.verify(id_token, tokens.TokenKind.ID_TOKEN)
    if time.time() - claims["auth_time"] > s.recent_sign_in_seconds:
        raise Unauthenticated(
            "Sign in again: a session needs a sign-in from the last few minutes.",
            code="recent_sign_in_required",
        )
    user = auth.load_user(claims["sub"])
    auth.check_not_revoked(user, int(claims["auth_time"]))
    role, approved = profiles.ensure_on_sign_in(user, claims.get("name"))

    try:
        cookie = firebase_auth.create_session_cookie(
            id_token, expires_in=timedelta(seconds=s.session_seconds), app=clients.firebase_app()
        )
    except firebase_exceptions.InvalidArgumentError:
        raise Unauthenticated("The ID token was refused.", code="invalid_token") from None
    except (firebase_exceptions.UnavailableError, firebase_exceptions.InternalError):
        raise DependencyUnavailable() from None
    expires_at = datetime.now(UTC) + timedelta(seconds=s.session_seconds)
    record = sessions.create(
        uid=user.uid,
        cookie=cookie,
        ip=call.client_ip,
        user_agent=call.user_agent,
        expires_at=expires_at,
    )
    if record is None:
        raise Unauthenticated(
            "This sign-in was already used for a session that has ended; sign in again.",
            code="sign_in_reused",
        )
    call.set_cookies.append(_cookie(cookie, s.session_seconds))
    return SessionOut(
        uid=user.uid,
        email=user.email,
        role=role,
        approved=approved,
        csrf_token=record.csrf_token,
        expires_at=record.expires_at,
    )


@api.route("GET", "/", response=SessionOut)
def whoami(call: Call) -> SessionOut:
    """The signed-in caller, and the CSRF token of a cookie session."""
    p = call.principal
    record = sessions.get(p.session_id) if p.session_id else None
    return SessionOut(
        uid=p.uid,
        email=p.email,
        role=p.role,
        approved=p.approved,
        csrf_token=p.csrf_token,
        expires_at=record.expires_at if record else None,
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
        sessions.revoke(call.principal.session_id)
    _clear_cookie(call)


@api.route("DELETE", "/sessions/<id>", status=204)
def end_session(call: Call) -> None:
    """End one of the caller's other sessions (for example a lost device)."""
    record = sessions.get(call.params["id"]) if len(call.params["id"]) <= 128 else None
    call.authorize({"uid": record.uid} if record else None)
    assert record is not None
    if not record.revoked:
        sessions.revoke(record.id)
    if record.id == call.principal.session_id:
        _clear_cookie(call)


@api.route("POST", "/revoke-all", response=Revoked)
def revoke_all(call: Call) -> Reply:
    """End every session of the caller and revoke their refresh tokens everywhere."""
    from firebase_admin import auth as firebase_auth

    uid = call.principal.uid
    firebase_auth.revoke_refresh_tokens(uid, app=clients.firebase_app())
    count = sessions.revoke_all(uid)
    _clear_cookie(call)
    return Reply(Revoked(revoked_sessions=count))


@functions_framework.http
def session(request: flask.Request) -> flask.Response:
    return api.handle(request)
