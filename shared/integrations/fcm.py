"""Push through Firebase Cloud Messaging (HTTP v1), with `firebase_admin.messaging`.

In production the Admin SDK's own app (application default credentials) talks to
fcm.googleapis.com. FCM has no emulator, so when FCM_API_BASE is set (the local stack's FCM
simulator, dev/fcm_sim.py) a separate app is used whose requests to fcm.googleapis.com are
sent to that base instead: the Admin SDK's own code builds, sends and parses every message, as
its own tests do by mounting a transport adapter on the messaging service's session.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.platform import clients, settings

FCM_ORIGIN = "https://fcm.googleapis.com"
LOCAL_APP = "alodoktor-fcm-local"

_lock = threading.Lock()
_local_app: Any = None


@dataclass(frozen=True)
class TokenAnswer:
    """FCM's answer for one device token: a message name, or an error code
    (UNREGISTERED, QUOTA_EXCEEDED, INVALID_ARGUMENT, UNAVAILABLE, ...)."""

    token: str
    message_id: str | None = None
    error: str | None = None
    detail: str = ""


def _app() -> Any:
    base = settings.get().fcm_api_base
    if not base:
        return clients.firebase_app()
    global _local_app
    with _lock:
        if _local_app is None:
            _local_app = _redirected_app(base)
    return _local_app


def _redirected_app(base: str) -> Any:
    import firebase_admin
    import google.auth.credentials
    import requests
    from firebase_admin import _http_client, messaging

    class _LocalToken(google.auth.credentials.Credentials):  # type: ignore[misc]
        """A fixed bearer token: the simulator checks one is sent, as FCM does."""

        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.token = "local-fcm-token"

        def refresh(self, request: Any) -> None:
            return None

    class _Redirect(requests.adapters.HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            request.url = base.rstrip("/") + request.url[len(FCM_ORIGIN) :]
            return super().send(request, *args, **kwargs)

    app = firebase_admin.initialize_app(
        _LocalToken(),
        options={"projectId": settings.get().project_id, "httpTimeout": 10},
        name=LOCAL_APP,
    )
    service = messaging._get_messaging_service(app)
    service._client.session.mount(
        FCM_ORIGIN, _Redirect(max_retries=_http_client.DEFAULT_RETRY_CONFIG)
    )
    return app


def send(
    tokens: Sequence[str], title: str, body: str, data: Mapping[str, str]
) -> list[TokenAnswer]:
    """Send one notification to each token (at most 500); one answer per token, in order."""
    from firebase_admin import exceptions, messaging

    if not tokens:
        return []
    message = messaging.MulticastMessage(
        tokens=list(tokens),
        notification=messaging.Notification(title=title, body=body),
        data=dict(data),
    )
    batch = messaging.send_each_for_multicast(message, app=_app())
    answers = []
    for token, response in zip(tokens, batch.responses, strict=True):
        if response.success:
            answers.append(TokenAnswer(token, message_id=response.message_id))
            continue
        exc = response.exception
        if isinstance(exc, messaging.UnregisteredError):
            code = "UNREGISTERED"
        elif isinstance(exc, messaging.QuotaExceededError):
            code = "QUOTA_EXCEEDED"
        elif isinstance(exc, messaging.SenderIdMismatchError):
            code = "SENDER_ID_MISMATCH"
        elif isinstance(exc, exceptions.FirebaseError):
            code = str(exc.code)
        else:
            code = "UNKNOWN"
        answers.append(TokenAnswer(token, error=code, detail=str(exc)[:300]))
    return answers
