"""Authentication: turn a request's session cookie or bearer token into a caller.

One document read, no Auth API call:
- a session cookie (the project's own, shared.identity.sessions): its session record, read by
  the id the cookie names and opened by the secret it carries; the record holds the account's
  role and approval and is ended whenever they change;
- a Firebase ID token: its signature and claims, then the account's access record
  (shared.identity.access), which holds what the Auth record check would tell;
- a Google OIDC token of a configured service account (Cloud Scheduler, Cloud Tasks): its
  signature and claims only; the service is named by the account (shared.identity.services).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.identity import access, consent, services, sessions, tokens
from shared.platform import clock, logs
from shared.platform.context import Caller, Principal
from shared.platform.errors import Forbidden, Unauthenticated

COOKIE_NAME = "__session"

log = logs.get("alodoktor.auth")


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


def authenticate(creds: Credentials, *, function: str) -> Caller:
    if creds.bearer is not None:
        if services.is_google_token(creds.bearer):
            return services.authenticate(creds.bearer, function=function)
        principal, consents = _bearer(creds.bearer)
    else:
        assert creds.cookie is not None
        principal, consents = _cookie(creds.cookie)
    # On the record just read: no read of its own (service callers are never asked).
    consent.check(principal.role, consents, function=function)
    return principal


def _bearer(token: str) -> tuple[Principal, dict[str, int]]:
    claims = tokens.verify(token, tokens.TokenKind.ID_TOKEN)
    auth_time = int(claims["auth_time"])
    account = access.load(claims["sub"])
    account.check(auth_time)
    if account.role is None:
        raise Forbidden(
            "This account has no profile yet; exchange its ID token at POST /session first.",
            code="profile_missing",
        )
    principal = Principal(
        uid=account.uid,
        email=account.email,
        role=account.role,
        approved=account.approved,
        session_id=None,
        auth_time=auth_time,
    )
    return principal, account.consents


def _cookie(cookie: str) -> tuple[Principal, dict[str, int]]:
    session = sessions.authenticate(cookie)
    if session is None or session.role is None:
        raise Unauthenticated("This session is not known; sign in again.", code="session_unknown")
    if not session.active:
        raise Unauthenticated("This session has ended; sign in again.", code="session_revoked")
    now = clock.now()
    if session.idle_at(now):
        sessions.revoke(session.id, "idle")
        raise Unauthenticated(
            "This session ended after a time without use; sign in again.", code="session_idle"
        )
    if session.due_for_touch(now):
        sessions.touch(session.id, now)
    principal = Principal(
        uid=session.uid,
        email=session.email,
        role=session.role,
        approved=session.approved,
        session_id=session.id,
        csrf_token=session.csrf_token,
        auth_time=session.auth_time,
        session_expires_at=session.expires_at,
    )
    return principal, session.consents
