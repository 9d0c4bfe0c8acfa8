"""Opaque list cursors: the sort values of the last item returned, plus its document id."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from shared.errors import BadRequest

MAX_CURSOR_CHARS = 512


def encode(values: list[Any], doc_id: str) -> str:
    parts = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    raw = json.dumps([parts, doc_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[list[Any], str]:
    bad = BadRequest("The cursor is not one this API returned.", code="invalid_cursor")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad
    try:
        parts, doc_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values = [
            datetime.fromisoformat(p["t"]) if isinstance(p, dict) and set(p) == {"t"} else p
            for p in parts
        ]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(doc_id, str) or not doc_id:
        raise bad
    return values, doc_id
