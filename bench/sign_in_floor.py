"""The sign-in floor: the least work that makes a server-side session (bench only).

Served by bench/requests.py as a one-file function (this file as `main.py`, target `floor`),
beside the floor (bench/floor_function.py), whose token check it shares: take a Firebase ID
token from the JSON body (`{"idToken"}`), verify it as shared/identity/tokens.py does, then one
Firestore transaction that reads the account's access record and creates one new document,
and answer 201. Any sign-in must do that much: check the token, see that the account may act
now (in the transaction, so a racing disable either commits first or finds the session), and
record the session. `POST /session`'s distance to this floor is the cost of its own code.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

import functions_framework

_floor: Any = None


def _the_floor() -> Any:
    """bench/floor_function.py, served beside this file: its token check, its Firestore client."""
    global _floor
    if _floor is None:
        import importlib.util
        from pathlib import Path

        path = Path(__file__).with_name("floor_function.py")
        spec = importlib.util.spec_from_file_location("floor_function", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _floor = module
    return _floor


@functions_framework.http
def floor(request: Any) -> tuple[dict[str, Any], int]:
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    check = _the_floor()
    try:
        token = str(json.loads(request.get_data() or b"{}").get("idToken", ""))
        if os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"):
            claims = check._claims_of_unsigned(token, project)
        else:
            claims = check._claims_of_signed(token, project)
    except (check.Refused, ValueError, AttributeError):
        return {"error": "invalid_token"}, 401
    from google.cloud import firestore

    db = check._firestore()
    access = db.collection("access").document(claims["sub"])
    session = db.collection("benchSessions").document(secrets.token_hex(32))

    @firestore.transactional
    def body(tx: Any) -> bool:
        found = access.get(transaction=tx).exists
        tx.create(session, {"uid": claims["sub"], "at": time.time()})
        return bool(found)

    known = body(db.transaction())
    return {"uid": claims["sub"], "known": known}, 201
