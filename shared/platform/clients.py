"""Firebase Admin app and Firestore client: created once per instance, on first use.

Against the emulators both libraries switch to anonymous credentials on their own when
FIRESTORE_EMULATOR_HOST / FIREBASE_AUTH_EMULATOR_HOST are set; in production they use the
application default credentials. The code is the same in both places.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from shared.platform import settings

if TYPE_CHECKING:
    from google.cloud import firestore

_lock = threading.Lock()
_app: Any = None
_db: firestore.Client | None = None

APP_NAME = "alodoktor"


def firebase_app() -> Any:
    """The firebase_admin App, for `firebase_admin.auth` calls (`app=firebase_app()`)."""
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                import firebase_admin

                _app = firebase_admin.initialize_app(
                    options={"projectId": settings.get().project_id}, name=APP_NAME
                )
    return _app


def db() -> firestore.Client:
    global _db
    if _db is None:
        with _lock:
            if _db is None:
                from google.cloud import firestore

                _db = firestore.Client(project=settings.get().project_id)
    return _db
