"""Verification of Firebase ID tokens (session cookies are the project's own records:
shared.identity.sessions).

In production a token must be an RS256 JWT signed by one of Google's published keys (fetched
from a configurable URL and cached per its Cache-Control), issued for this project. The Auth
emulator issues unsigned tokens, so when (and only when) FIREBASE_AUTH_EMULATOR_HOST is set the
signature is not checked; every claim still is.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from enum import Enum
from typing import Any, TypeGuard

from shared.platform import clock, settings
from shared.platform.errors import Unauthenticated

CLOCK_SKEW_SECONDS = 5
_transport_lock = threading.Lock()
_transport: Any = None


class TokenKind(Enum):
    ID_TOKEN = "ID token"


def _issuer(kind: TokenKind, project_id: str) -> str:
    return f"https://securetoken.google.com/{project_id}"


def _certs_url(kind: TokenKind) -> str:
    return settings.get().id_token_certs_url


def cached_transport() -> Any:
    """A google-auth transport whose HTTP cache honours the key endpoints' Cache-Control."""
    global _transport
    if _transport is None:
        with _transport_lock:
            if _transport is None:
                import cachecontrol
                import google.auth.transport.requests
                import requests

                session = cachecontrol.CacheControl(requests.Session())
                _transport = google.auth.transport.requests.Request(session=session)
    return _transport


def _segment(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: deeply nested JSON ("[[[[..."), which must be a 401, not a 500.
        raise Unauthenticated("The token is malformed.", code="invalid_token") from None
    if not isinstance(value, dict):
        raise Unauthenticated("The token is malformed.", code="invalid_token")
    return value


_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")


def _canonical(part: str) -> bool:
    """Whether a segment is unpadded base64url that encodes its bytes in the one way: a
    decoder also takes padding, stray characters and other last characters for the same bytes,
    and a token written another way must not count as another token (one ID token makes one
    session, shared.identity.sessions)."""
    if not _SEGMENT.fullmatch(part):
        return False
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") == part


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = token.split(".")
    if len(parts) != 3 or not all(_canonical(p) for p in parts):
        raise Unauthenticated("The token is malformed.", code="invalid_token")
    return _segment(parts[0]), _segment(parts[1])


def verify(token: str, kind: TokenKind) -> dict[str, Any]:
    """The token's claims, or Unauthenticated. Never trusts a claim it has not checked."""
    s = settings.get()
    if not token or len(token) > 8192:
        raise Unauthenticated(f"The {kind.value} is missing or too long.", code="invalid_token")
    header, claims = unverified(token)
    if not s.auth_emulated:
        if header.get("alg") != "RS256" or not header.get("kid"):
            raise Unauthenticated(
                f"The {kind.value} is not signed as Firebase signs.", code="invalid_token"
            )
        claims = _verify_signature(token, kind, s.project_id)
    _check_claims(claims, kind, s.project_id)
    return claims


def _verify_signature(token: str, kind: TokenKind, project_id: str) -> dict[str, Any]:
    return verify_signed(token, audience=project_id, certs_url=_certs_url(kind), what=kind.value)


def verify_signed(token: str, *, audience: str, certs_url: str, what: str) -> dict[str, Any]:
    """The claims of an RS256 JWT signed by a key published at `certs_url`, for `audience`,
    checked by google-auth (signature, `aud`, `exp`, `iat`); Unauthenticated otherwise."""
    from google.auth import exceptions as auth_exceptions
    from google.oauth2 import id_token

    try:
        claims: dict[str, Any] = dict(
            id_token.verify_token(
                token,
                cached_transport(),
                audience=audience,
                certs_url=certs_url,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
            )
        )
    except auth_exceptions.TransportError:
        raise  # the key endpoint is unreachable: a dependency failure (503), not a bad token
    except (ValueError, auth_exceptions.GoogleAuthError) as exc:
        expired = "expired" in str(exc).lower()
        raise Unauthenticated(
            f"The {what} has expired." if expired else f"The {what} is not valid.",
            code="token_expired" if expired else "invalid_token",
        ) from None
    return claims


def _is_time(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_claims(claims: dict[str, Any], kind: TokenKind, project_id: str) -> None:
    now = clock.real_timestamp()  # a token's times are its issuer's clock, never moved

    def refuse(reason: str, code: str = "invalid_token") -> Unauthenticated:
        return Unauthenticated(f"The {kind.value} {reason}.", code=code)

    if claims.get("aud") != project_id:
        raise refuse("was issued for another project")
    if claims.get("iss") != _issuer(kind, project_id):
        raise refuse("has the wrong issuer")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 128:
        raise refuse("has no valid subject")
    exp, iat, auth_time = claims.get("exp"), claims.get("iat"), claims.get("auth_time")
    if not (_is_time(exp) and _is_time(iat) and _is_time(auth_time)):
        raise refuse("lacks its time claims")
    if exp <= now - CLOCK_SKEW_SECONDS:
        raise refuse("has expired", code="token_expired")
    if iat > now + CLOCK_SKEW_SECONDS or auth_time > now + CLOCK_SKEW_SECONDS:
        raise refuse("was issued in the future")
