"""Production verification of Firebase ID tokens, without the emulators (session cookies are
the project's own records, tests/test_session.py).

Tokens are RS256 JWTs signed here with a key whose self-signed certificate a local server
publishes exactly as Google does ({kid: PEM certificate}, with Cache-Control). Each test gets
its own key server under a unique URL, so the module's HTTP cache (keyed by URL) never hands
one test another test's keys.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth.exceptions import TransportError

from shared.identity import tokens
from shared.identity.tokens import TokenKind
from shared.platform import errors, settings
from shared.platform.errors import Unauthenticated
from tests.support import emulator_claims, unsigned_token

PROJECT = "alodoktor-prod-test"
KID = "f1e2d3c4b5a697887766554433221100aabbccdd"
ID = TokenKind.ID_TOKEN
# What Firebase session cookies carry: the backend mints none and takes none for an ID token.
FIREBASE_SESSION_ISSUER = f"https://session.firebase.google.com/{PROJECT}"
NOW = int(time.time())
DROP = object()  # a claim override that removes the claim


@dataclass(frozen=True)
class Key:
    private: rsa.RSAPrivateKey
    cert_pem: str


def _new_key() -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return Key(private, cert.public_bytes(serialization.Encoding.PEM).decode())


@pytest.fixture(scope="module")
def google_key() -> Key:
    """The key 'Google' signs with; its certificate is published under KID."""
    return _new_key()


@pytest.fixture(scope="module")
def rogue_key() -> Key:
    """Anyone else's key."""
    return _new_key()


class KeyServer:
    """Serves {kid: PEM certificate} like Google's x509 endpoints, counting fetches."""

    def __init__(self, certs: dict[str, str]) -> None:
        self.certs = certs
        self.status = 200
        self.hits = 0
        prefix = f"/{uuid.uuid4().hex}"  # a URL no earlier test's cached response answers
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith(prefix):
                    self.send_error(404)
                    return
                owner.hits += 1
                payload = json.dumps(owner.certs).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header(
                    "Cache-Control", "public, max-age=21600, must-revalidate, no-transform"
                )
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self._server.server_address[:2]
        self.id_url = f"http://{host}:{port}{prefix}/x509/securetoken"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{uuid.uuid4().hex}/certs"


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, google_key: Key) -> Iterator[KeyServer]:
    """Production settings: no emulators, keys from a local stand-in for Google's endpoint."""
    server = KeyServer({KID: google_key.cert_pem})
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("ID_TOKEN_CERTS_URL", server.id_url)
    settings.get.cache_clear()
    try:
        yield server
    finally:
        server.close()
        settings.get.cache_clear()


@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Auth emulator mode; the key URLs lead nowhere, so any fetch would fail the test."""
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("ID_TOKEN_CERTS_URL", _closed_port_url())
    settings.get.cache_clear()
    yield
    settings.get.cache_clear()


def claims(**overrides: Any) -> dict[str, Any]:
    uid = "uid-" + uuid.uuid4().hex[:12]
    out = emulator_claims(PROJECT, uid, firebase={"sign_in_provider": "password"})
    for name, value in overrides.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def sign(payload: dict[str, Any], key: Key, kid: str = KID) -> str:
    return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": kid})


def refused(token: str, kind: TokenKind = ID, code: str = "invalid_token") -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        tokens.verify(token, kind)
    assert info.value.code == code
    assert info.value.status == 401
    return info.value


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- accepted --------------------------------------------------------------------------------


def test_a_valid_id_token_is_accepted_with_its_claims(production, google_key):
    issued = claims()

    verified = tokens.verify(sign(issued, google_key), ID)

    assert verified == issued


def test_a_sub_of_exactly_128_characters_is_accepted(production, google_key):
    assert tokens.verify(sign(claims(sub="u" * 128), google_key), ID)["sub"] == "u" * 128


def test_the_keys_are_fetched_once_while_their_max_age_lasts(production, google_key):
    tokens.verify(sign(claims(), google_key), ID)
    tokens.verify(sign(claims(), google_key), ID)

    assert production.hits == 1


# -- refused ---------------------------------------------------------------------------------


def test_a_firebase_session_cookie_is_not_an_id_token(production, google_key):
    exc = refused(sign(claims(iss=FIREBASE_SESSION_ISSUER), google_key), ID)
    assert "issuer" in str(exc.detail)


def test_another_key_under_the_published_kid_is_refused(production, rogue_key):
    refused(sign(claims(), rogue_key, kid=KID))


def test_an_unknown_kid_is_refused(production, google_key):
    refused(sign(claims(), google_key, kid="not-a-published-kid"))


def test_an_unsigned_token_as_the_emulator_issues_is_refused(production):
    refused(unsigned_token(claims()))


def test_hs256_keyed_with_the_public_certificate_is_refused(production, google_key):
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    body = _b64(json.dumps(claims()).encode())
    mac = hmac.new(google_key.cert_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256)

    refused(f"{header}.{body}.{_b64(mac.digest())}")


def test_an_expired_token_is_refused_as_expired(production, google_key):
    old = int(time.time()) - 7200
    expired = claims(iat=old, auth_time=old, exp=old + 3600)

    refused(sign(expired, google_key), code="token_expired")


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"aud": "another-project"}, id="another audience"),
        pytest.param({"iss": "https://securetoken.google.com/another-project"}, id="another iss"),
        pytest.param({"iss": "https://accounts.google.com"}, id="google sign-in issuer"),
        pytest.param({"sub": "", "user_id": ""}, id="empty sub"),
        pytest.param({"sub": "u" * 129}, id="sub over 128 chars"),
        pytest.param({"sub": 12345}, id="non-string sub"),
        pytest.param({"iat": NOW + 3600}, id="iat in the future"),
        pytest.param({"auth_time": NOW + 3600}, id="auth_time in the future"),
        pytest.param({"auth_time": DROP}, id="missing auth_time"),
        pytest.param({"auth_time": "1700000000"}, id="auth_time not a number"),
        pytest.param({"exp": DROP}, id="missing exp"),
    ],
)
def test_a_well_signed_token_with_bad_claims_is_refused(production, google_key, overrides):
    refused(sign(claims(**overrides), google_key))


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="one segment"),
        pytest.param("abc.def", id="two segments"),
        pytest.param("a.b.c.d", id="four segments"),
        pytest.param("!!!.@@@.###", id="not base64"),
        pytest.param(f"{_b64(b'not json')}.{_b64(b'{}')}.sig", id="header not json"),
        pytest.param(f"{_b64(b'[1]')}.{_b64(b'{}')}.sig", id="header not an object"),
        pytest.param(f"{_b64(bytes([0xFF, 0xFE]))}.{_b64(b'{}')}.sig", id="header not utf-8"),
        pytest.param(f"{_b64(b'[' * 6000)}.e30.sig", id="deeply nested header"),
        pytest.param("x" * 9000, id="too long"),
    ],
)
def test_a_malformed_token_is_refused(production, token):
    refused(token)
    assert production.hits == 0  # refused before any key was fetched


# -- the key server fails --------------------------------------------------------------------


def test_an_unreachable_key_server_is_a_dependency_failure(production, google_key, monkeypatch):
    monkeypatch.setenv("ID_TOKEN_CERTS_URL", _closed_port_url())
    settings.get.cache_clear()

    with pytest.raises(TransportError) as info:
        tokens.verify(sign(claims(), google_key), ID)

    assert errors.is_dependency_failure(info.value)
    assert not isinstance(info.value, errors.ApiError)


def test_a_failing_key_server_is_a_dependency_failure(production, google_key):
    production.status = 503

    with pytest.raises(TransportError) as info:
        tokens.verify(sign(claims(), google_key), ID)

    assert errors.is_dependency_failure(info.value)


# -- emulator mode ---------------------------------------------------------------------------


def test_emulator_mode_accepts_an_unsigned_token(emulated):
    issued = claims()

    assert tokens.verify(unsigned_token(issued), ID) == issued


def test_emulator_mode_still_checks_the_claims(emulated):
    old = int(time.time()) - 7200

    refused(unsigned_token(claims(aud="another-project")))
    refused(unsigned_token(claims(iat=old, auth_time=old, exp=old + 3600)), code="token_expired")
    refused(unsigned_token(claims(iss=FIREBASE_SESSION_ISSUER)))
