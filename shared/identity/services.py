"""Service identities: Google-signed OIDC tokens from Cloud Scheduler and Cloud Tasks.

Google signs an ID token for the job's or queue's service account with the audience it was
configured with; ours is the function's URL (`{FUNCTIONS_BASE_URL}/{function}`), so a token
made for one function is refused by every other. The signature is checked with google-auth
against Google's published keys (`SERVICE_TOKEN_CERTS_URL`; the local stack's stand-in,
dev/google_sim.py, publishes its own), in the emulator too: only the key set differs.
"""

from __future__ import annotations

from typing import Any

from shared.identity import tokens
from shared.platform import settings
from shared.platform.context import Service, ServicePrincipal
from shared.platform.errors import Unauthenticated

GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})


def is_google_token(token: str) -> bool:
    """Whether the token says Google issued it (checked, with everything else, in
    `authenticate`; this only picks the verification)."""
    try:
        _, claims = tokens.unverified(token)
    except Unauthenticated:
        return False
    return claims.get("iss") in GOOGLE_ISSUERS


def accounts() -> dict[str, Service]:
    """The configured service account of each service, by e-mail."""
    s = settings.get()
    configured = {
        s.scheduler_service_account: Service.SCHEDULER,
        s.tasks_service_account: Service.TASKS,
    }
    return {email.lower(): service for email, service in configured.items() if email}


def audience(function: str) -> str | None:
    base = settings.get().functions_base_url
    return f"{base}/{function}" if base else None


def authenticate(token: str, *, function: str) -> ServicePrincipal:
    expected = audience(function)
    known = accounts()
    if expected is None or not known:
        raise Unauthenticated("Service tokens are not accepted here.", code="invalid_token")
    claims = _verified(token, expected)
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise Unauthenticated("The service token has the wrong issuer.", code="invalid_token")
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is not True:
        raise Unauthenticated("The service token names no verified account.", code="invalid_token")
    service = known.get(email.lower())
    if service is None:
        raise Unauthenticated("This service account may not call us.", code="unknown_service")
    return ServicePrincipal(service=service, email=email)


def _verified(token: str, expected_audience: str) -> dict[str, Any]:
    header, _ = tokens.unverified(token)
    if header.get("alg") != "RS256" or not header.get("kid"):
        raise Unauthenticated(
            "The service token is not signed as Google signs.", code="invalid_token"
        )
    return tokens.verify_signed(
        token,
        audience=expected_audience,
        certs_url=settings.get().service_token_certs_url,
        what="service token",
    )
