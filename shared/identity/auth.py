"""Authentication: turn a request's session cookie or bearer ID token into a Principal.

Every request re-reads the user's Auth record, so a disabled user, a revoked refresh token or a
changed role takes effect on the next request at every instance; cookie requests also read
their server-side session record, so a logout does too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.identity import sessions, tokens
from shared.platform import clients
from shared.platform.context import Principal, Role
from shared.platform.errors import Forbidden, Unauthenticated

COOKIE_NAME = "__session"


@dataclass(frozen=True)
class UserState:
    uid: str
    email: str | None
    role: Role | None
    approved: bool
    disabled: bool
    tokens_valid_after_ms: int


def load_user(uid: str) -> UserState:
    from firebase_admin import auth

    try:
        user = auth.get_user(uid, app=clients.firebase_app())
    except auth.UserNotFoundError:
        raise Unauthenticated("This account no longer exists.", code="user_not_found") from None
    claims: dict[str, Any] = user.custom_claims or {}
    raw_role = claims.get("role")
    role = Role(raw_role) if isinstance(raw_role, str) and raw_role in set(Role) else None
    return UserState(
        uid=user.uid,
        email=user.email,
        role=role,
        approved=claims.get("approved") is True,
        disabled=bool(user.disabled),
        tokens_valid_after_ms=int(user.tokens_valid_after_timestamp or 0),
    )


def check_not_revoked(user: UserState, auth_time: int) -> None:
    if user.disabled:
        raise Unauthenticated("This account is disabled.", code="user_disabled")
    # tokensValidAfter has second precision in practice; a token from that same second is valid.
    if auth_time * 1000 < user.tokens_valid_after_ms:
        raise Unauthenticated("This sign-in was revoked; sign in again.", code="token_revoked")


@dataclass(frozen=True)
class Credentials:
    """What a request presented, before it is verified."""

    bearer: str | None
    cookie: str | None


def credentials(authorization: str | None, cookie: str | None) -> Credentials | None:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "Use 'Authorization: Bearer <Firebase ID token>'.", code="invalid_authorization"
            )
        return Credentials(bearer=token.strip(), cookie=None)
    if cookie:
        return Credentials(bearer=None, cookie=cookie)
    return None


def authenticate(creds: Credentials) -> Principal:
    session: sessions.SessionRecord | None = None
    if creds.bearer is not None:
        claims = tokens.verify(creds.bearer, tokens.TokenKind.ID_TOKEN)
    else:
        assert creds.cookie is not None
        claims = tokens.verify(creds.cookie, tokens.TokenKind.SESSION_COOKIE)
        session = sessions.get(sessions.id_for_cookie(creds.cookie))
        if session is None or session.uid != claims["sub"]:
            raise Unauthenticated(
                "This session is not known; sign in again.", code="session_unknown"
            )
        if not session.active:
            raise Unauthenticated("This session has ended; sign in again.", code="session_revoked")
    user = load_user(claims["sub"])
    check_not_revoked(user, int(claims["auth_time"]))
    if user.role is None:
        raise Forbidden(
            "This account has no profile yet; exchange its ID token at POST /session first.",
            code="profile_missing",
        )
    return Principal(
        uid=user.uid,
        email=user.email,
        role=user.role,
        approved=user.approved,
        session_id=session.id if session else None,
        csrf_token=session.csrf_token if session else None,
        auth_time=int(claims["auth_time"]),
    )
