"""The checkpoints' signing key (AUDIT_SIGNING_KEY): Ed25519, so anyone holding the public key
verifies a checkpoint, offline, and only the audit function can sign one. Checkpoints name the
key's id (`keyId`).

The variable holds one or more secrets, comma-separated, the current one first; the others
verify checkpoints older keys signed (rotation: put the new secret in front). A secret is any
string (`openssl rand -base64 32`); the Ed25519 seed is SHA-256 of it, and the id is derived
from the public key. `cryptography` is imported only when signing or verifying.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from shared.audit.rules import KeyMissing

ALGORITHM = "ed25519"
_DOMAIN = b"alodoktor audit signing key\x00"


def public_key_id(public: bytes) -> str:
    return f"{ALGORITHM}:" + hashlib.sha256(public).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    seed: bytes
    public: bytes

    @classmethod
    def of(cls, configured: bytes) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        seed = hashlib.sha256(_DOMAIN + configured).digest()
        public = (
            Ed25519PrivateKey.from_private_bytes(seed)
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        return cls(public_key_id(public), seed, public)

    def sign(self, message: bytes) -> str:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)
        return base64.b64encode(signature).decode()


@dataclass(frozen=True)
class SigningKeys:
    """The configured signing keys, the current one first."""

    keys: tuple[SigningKey, ...]

    @classmethod
    def parse(cls, raw: str) -> SigningKeys:
        return cls(tuple(SigningKey.of(s.strip().encode()) for s in raw.split(",") if s.strip()))

    @property
    def current(self) -> SigningKey:
        if not self.keys:
            raise KeyMissing("AUDIT_SIGNING_KEY is not set: checkpoints cannot be signed")
        return self.keys[0]

    def public_keys(self) -> dict[str, bytes]:
        return {k.key_id: k.public for k in self.keys}


def verify_signature(
    public_keys: Mapping[str, bytes], key_id: str, message: bytes, signature: str
) -> str | None:
    """None when `signature` is the key's signature of `message`, else why not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = public_keys.get(key_id)
    if public is None:
        return f"signed by an unknown key {key_id!r}"
    try:
        raw = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(public).verify(raw, message)
    except (InvalidSignature, ValueError):
        return "the signature does not verify"
    return None


def encode_public_key(public: bytes) -> str:
    return base64.b64encode(public).decode()


def jwk(public: bytes) -> dict[str, str]:
    """The public key as a JSON Web Key (RFC 8037: `OKP`, `Ed25519`, `x` base64url unpadded),
    its id as `kid`."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(public).decode().rstrip("="),
        "kid": public_key_id(public),
        "alg": "EdDSA",
        "use": "sig",
    }


def _from_jwk(doc: Mapping[str, object]) -> bytes:
    if doc.get("kty") != "OKP" or doc.get("crv") != "Ed25519" or not isinstance(doc.get("x"), str):
        raise ValueError("a JWK of an Ed25519 key has kty OKP, crv Ed25519 and x")
    x = str(doc["x"])
    public = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    kid = doc.get("kid")
    if len(public) == 32 and kid is not None and kid != public_key_id(public):
        raise ValueError("the JWK's kid is not its key's id")
    return public


def parse_public_key(text: str) -> tuple[str, bytes]:
    """A public key, with its derived id: base64 of its 32 raw bytes (as the export's keys/
    files and `python -m tools.audit_verify --print-public-key` give it), the same 32 bytes in
    hex, or a JWK (as GET /audit/keys and the export's keys/*.jwk.json give it)."""
    import binascii
    import json

    text = text.strip()
    try:
        if text.startswith("{"):
            public = _from_jwk(json.loads(text))
        elif len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            public = bytes.fromhex(text)
        else:
            public = base64.b64decode(text, validate=True)
    except (binascii.Error, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"not a public key: {exc}") from None
    if len(public) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return public_key_id(public), public


@functools.cache
def _parsed(raw: str) -> SigningKeys:
    return SigningKeys.parse(raw)


def configured() -> SigningKeys:
    """AUDIT_SIGNING_KEY's keys (the current one first)."""
    from shared.platform import settings

    return _parsed(settings.get().audit_signing_key)
