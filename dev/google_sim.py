"""Google's OIDC identity tokens, locally: the key set and a token minting endpoint.

Cloud Scheduler and Cloud Tasks call our functions with an ID token Google signs for their
service account (`iss` https://accounts.google.com, `aud` the function's URL, `email` the
account). Offline nothing can sign as Google, so the local stack runs this instead and points
SERVICE_TOKEN_CERTS_URL at it: the functions verify its tokens with the very code (google-auth's
`verify_token`) that checks Google's in production; only the key set differs.

  GET  /oauth2/v1/certs   the public certificates, keyed by key id, in the shape of Google's
                          https://www.googleapis.com/oauth2/v1/certs
  POST /_sim/oidc-token   {"email", "audience", "expiresIn"?: seconds, "claims"?: {...}}
                          -> {"token"}: what the metadata server hands a service account
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from typing import Any

import flask

from dev.keys import KeyPair, self_signed

ISSUER = "https://accounts.google.com"
TOKEN_SECONDS = 3600


def key_id(pair: KeyPair) -> str:
    return hashlib.sha256(pair.cert_pem).hexdigest()[:40]  # Google's kids are 40 hex digits


def mint(pair: KeyPair, claims: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(claims, pair.private_pem, algorithm="RS256", headers={"kid": key_id(pair)})


def claims_for(
    email: str, audience: str, *, expires_in: int = TOKEN_SECONDS, now: float | None = None
) -> dict[str, Any]:
    issued = int(now if now is not None else time.time())
    # A service account's subject is its numeric unique id; derive a stable one from the email.
    subject = str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))
    return {
        "iss": ISSUER,
        "aud": audience,
        "azp": subject,
        "sub": subject,
        "email": email,
        "email_verified": True,
        "iat": issued,
        "exp": issued + expires_in,
    }


def create_app(pair: KeyPair | None = None) -> flask.Flask:
    pair = pair or self_signed("google-oidc-sim")
    app = flask.Flask("google-sim")

    @app.get("/oauth2/v1/certs")
    def certs() -> flask.Response:
        response = flask.jsonify({key_id(pair): pair.cert_pem.decode()})
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    @app.post("/_sim/oidc-token")
    def oidc_token() -> Any:
        body = flask.request.get_json(silent=True)
        if not isinstance(body, dict):
            return {"error": "send a JSON object"}, 400
        email, audience = body.get("email"), body.get("audience")
        if not isinstance(email, str) or not isinstance(audience, str):
            return {"error": "email and audience are required strings"}, 400
        expires_in = body.get("expiresIn", TOKEN_SECONDS)
        extra = body.get("claims") or {}
        if not isinstance(expires_in, int) or not isinstance(extra, dict):
            return {"error": "expiresIn is seconds; claims an object"}, 400
        return {"token": mint(pair, claims_for(email, audience, expires_in=expires_in) | extra)}

    @app.get("/_sim/health")
    def health() -> Any:
        return {"ok": True}

    return app


def main() -> None:
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description="The local stand-in for Google's OIDC tokens.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8096)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    run_simple(args.host, args.port, create_app(), threaded=True)


if __name__ == "__main__":
    main()
