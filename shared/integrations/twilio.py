"""Twilio's Messages API (2010-04-01): send an SMS, list recent messages, check signatures.

The same code talks to api.twilio.com or the local simulator (dev/twilio_sim.py); only
TWILIO_API_BASE and the credentials differ. Requests are what Twilio's OpenAPI document
describes: form-encoded bodies, HTTP basic auth with the account SID and auth token.

Twilio has no idempotency key for creating a message, so a send whose answer was lost may or
may not have happened: `Answer.lost` says so, and the caller looks the message up
(`recent_messages`) before sending again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TWILIO_API = "https://api.twilio.com"
SIGNATURE_HEADER = "X-Twilio-Signature"


@dataclass(frozen=True)
class Answer:
    """Twilio's answer to a send: `status` 201 with the message, or an error (0 when none
    came). `lost`: the request may have reached Twilio and its answer did not reach us."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    lost: bool = False
    detail: str = ""

    @property
    def error_code(self) -> int | None:
        code = self.body.get("code")
        return code if isinstance(code, int) else None


@dataclass
class Twilio:
    base: str
    account_sid: str
    auth_token: str
    timeout: float = 10.0
    session: Any = None

    def _session(self) -> Any:
        if self.session is None:
            import requests

            self.session = requests.Session()
            self.session.auth = (self.account_sid, self.auth_token)
        return self.session

    def _messages_url(self) -> str:
        return f"{self.base.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def send(self, to: str, sender: str, body: str, status_callback: str | None) -> Answer:
        import requests

        form = {"To": to, "From": sender, "Body": body}
        if status_callback:
            form["StatusCallback"] = status_callback
        try:
            response = self._session().post(self._messages_url(), data=form, timeout=self.timeout)
        except requests.exceptions.ConnectionError as exc:
            # Refused before anything was sent, or broken after: only the first is certain.
            not_sent = isinstance(exc, requests.exceptions.ConnectTimeout) or _refused(exc)
            return Answer(0, lost=not not_sent, detail=f"{type(exc).__name__}")
        except requests.exceptions.Timeout as exc:
            return Answer(0, lost=True, detail=f"{type(exc).__name__}")
        return Answer(
            response.status_code,
            _json(response),
            retry_after=_seconds(response.headers.get("Retry-After")),
            detail=response.reason or "",
        )

    def recent_messages(self, to: str, sender: str, page_size: int = 20) -> list[dict[str, Any]]:
        """The newest messages from `sender` to `to` (raises on any failure: the caller then
        cannot tell whether an earlier send went out, and tries again later)."""
        response = self._session().get(
            self._messages_url(),
            params={"To": to, "From": sender, "PageSize": page_size},
            timeout=self.timeout,
        )
        response.raise_for_status()
        messages = _json(response).get("messages") or []
        return [m for m in messages if isinstance(m, dict)]


def _refused(exc: Exception) -> bool:
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's request signature: HMAC-SHA1, keyed with the auth token, of the full URL
    followed by every POST parameter's name and value, sorted by name; base64."""
    message = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_signature(auth_token: str, url: str, params: Mapping[str, str], given: str) -> bool:
    if not auth_token or not given:
        return False
    return hmac.compare_digest(signature(auth_token, url, params).encode(), given.encode())
