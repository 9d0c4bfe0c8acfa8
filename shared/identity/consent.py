"""The consent gate: which versions of the privacy notice and of the health-data consent an
account must have accepted before it may use the product, checked on the record
authentication reads anyway (the session record or the access record), so it costs no
Firestore read of its own.

The texts and their acceptance live in the privacy room (shared/privacy/): accepting or
withdrawing writes the account's `consents` into its access record and every live session
record (`mirror`), as approval is written. This module holds only what authentication needs:
the current versions, who needs which, and the refusal.

Health-data consent (KVKK Art. 6, GDPR Art. 9(2)(a)) is asked of patients only: providers
process their patients' health data as professionals, not their own. A patient who withdraws it
(version 0) is asked again on every request: the product processes health data in everything
it does for a patient (appointments, prescriptions, reminders), so withdrawal stops the service,
not the rights: the routes to read and accept the notices, to export or erase one's data, and
to sign out stay open (`EXEMPT_FUNCTIONS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.platform import settings
from shared.platform.context import Role
from shared.platform.errors import Forbidden

PRIVACY = "privacy"  # the privacy notice (KVKK Art. 10, GDPR Arts. 13-14)
HEALTH = "health"  # explicit consent to process health data

# The versions in force: a text for each, per locale, is shared/privacy/notices/<locale>/
# <document>-v<version>.md (tests/test_privacy_rules.py holds the two together). Raising one
# asks every account that needs it to accept the new text on its next request.
CURRENT: Mapping[str, int] = {PRIVACY: 1, HEALTH: 1}

# What an account without the current consents may still call: signing in and out (session),
# and the privacy function itself (read and accept the notices, export, erase).
EXEMPT_FUNCTIONS = frozenset({"session", "privacy"})

FIELD = "consents"  # on access and session records: {document: accepted version, 0 withdrawn}


def required(role: Role) -> dict[str, int]:
    """The documents (and versions) this role must have accepted."""
    if role is Role.PATIENT:
        return dict(CURRENT)
    return {PRIVACY: CURRENT[PRIVACY]}


def accepted(raw: Any) -> dict[str, int]:
    """A record's `consents` map, read defensively (a record from before consents: none)."""
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(k): int(v)
        for k, v in raw.items()
        if isinstance(v, int) and not isinstance(v, bool) and k in CURRENT
    }


def missing(role: Role, consents: Mapping[str, int]) -> dict[str, int]:
    """What this role still has to accept: {document: current version}."""
    return {
        doc: version for doc, version in required(role).items() if consents.get(doc, 0) < version
    }


def check(role: Role, consents: Mapping[str, int], *, function: str) -> None:
    """Refuse (403 consent_required, naming what to accept) an account that lacks a consent
    its role needs, on every function but the exempt ones; nothing when the gate is off."""
    if function in EXEMPT_FUNCTIONS or not settings.get().consent_required:
        return
    needed = missing(role, consents)
    if needed:
        raise Forbidden(
            "Accept the current privacy notice"
            + (" and health-data consent" if HEALTH in needed else "")
            + " first (POST /privacy/consents).",
            code="consent_required",
            required=[{"document": doc, "version": v} for doc, v in sorted(needed.items())],
        )
