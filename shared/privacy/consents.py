"""Consent: the notices' texts, what an account accepted, acceptance and withdrawal.

The state is `consents/{uid}` (an audited collection: every acceptance and withdrawal is an
entry of the audit log, with the version before and after), mirrored into the account's access
record and live session records (shared.identity.consent), which authentication reads anyway.

Withdrawing the health-data consent (a patient's) records version 0: the gate then asks for it
again on every request outside the privacy and session functions, and the notices that reveal
care (visit reminders, booking answers) are turned off in the account's preferences on every
channel, so a notice already queued is skipped when it comes due. Accepting again turns
nothing back on: the account chooses its notices again itself.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from shared.identity import access, consent, sessions
from shared.notify import rules as notify_rules
from shared.platform import clients, clock, store
from shared.platform.context import Role
from shared.platform.errors import BadRequest, Conflict, NotFound

COLLECTION = "consents"
# notify's preferences (shared.notify.service.PREFERENCES), written as its unsubscribe writes
# them: not through its service, whose import would hand this function the senders' secrets.
PREFERENCES = "notificationPreferences"
NOTICES = Path(__file__).resolve().parent / "notices"
LOCALES = ("en", "tr")

# The notices health-data consent covers: they tell that a person sees a doctor or a clinic.
HEALTH_CATEGORIES = (notify_rules.Category.REMINDERS, notify_rules.Category.BOOKINGS)


@cache
def text(document: str, version: int, locale: str) -> str:
    path = NOTICES / locale / f"{document}-v{version}.md"
    if locale not in LOCALES or document not in consent.CURRENT or not path.is_file():
        raise NotFound("No such notice.", code="notice_not_found")
    return path.read_text(encoding="utf-8")


def _ref(uid: str) -> Any:
    return clients.db().collection(COLLECTION).document(uid)


def state(uid: str) -> dict[str, Any]:
    snap = _ref(uid).get()
    return (snap.to_dict() or {}) if snap.exists else {}


def _accepted(doc: dict[str, Any]) -> dict[str, int]:
    return consent.accepted(
        {k: (v or {}).get("version", 0) for k, v in doc.items() if isinstance(v, dict)}
    )


def _mirror(uid: str, accepted: dict[str, int], by: str) -> None:
    """Into the access record and the live sessions: the next request sees it."""
    store.set(access.ref(uid), {consent.FIELD: accepted}, merge=True, by=by)
    sessions.mirror_consents(uid, accepted)


def accept(uid: str, role: Role, document: str, version: int, locale: str) -> dict[str, Any]:
    if document not in consent.required(role):
        raise BadRequest(f"Your role is not asked for {document!r}.", code="consent_not_asked")
    current = consent.CURRENT[document]
    if version != current:
        raise Conflict(
            f"Version {current} of {document!r} is in force; accept that one.",
            code="consent_version_stale",
            current=current,
        )
    now = clock.now()
    store.set(
        _ref(uid),
        {
            "uid": uid,
            document: {
                "version": version,
                "acceptedAt": now,
                "withdrawnAt": None,
                "locale": locale,
            },
            "updatedAt": now,
        },
        merge=True,
        by=uid,
    )
    doc = state(uid)
    _mirror(uid, _accepted(doc), uid)
    return doc


def withdraw(uid: str, document: str) -> dict[str, Any]:
    if document != consent.HEALTH:
        # The privacy notice is information, not consent: it cannot be withdrawn, only the
        # account closed (erasure).
        raise BadRequest(
            "Only the health-data consent can be withdrawn.", code="consent_not_withdrawable"
        )
    doc = state(uid)
    if not (doc.get(document) or {}).get("version"):
        raise Conflict("There is no consent of yours to withdraw.", code="consent_not_given")
    now = clock.now()
    store.set(
        _ref(uid),
        {
            "uid": uid,
            document: {
                "version": 0,
                "withdrawnAt": now,
                "withdrawnVersion": doc[document]["version"],
            },
            "updatedAt": now,
        },
        merge=True,
        by=uid,
    )
    off = {
        category.value: {c.value: False for c in notify_rules.Channel}
        for category in HEALTH_CATEGORIES
    }
    store.set(
        clients.db().collection(PREFERENCES).document(uid),
        {"uid": uid, "channels": off, "updatedAt": now},
        merge=True,
        by=uid,
    )
    doc = state(uid)
    _mirror(uid, _accepted(doc), uid)
    return doc


def view(uid: str, role: Role) -> dict[str, Any]:
    doc = state(uid)
    accepted = _accepted(doc)
    return {
        "required": [
            {"document": d, "version": v} for d, v in sorted(consent.required(role).items())
        ],
        "missing": [
            {"document": d, "version": v}
            for d, v in sorted(consent.missing(role, accepted).items())
        ],
        "accepted": [
            {
                "document": d,
                "version": int((doc.get(d) or {}).get("version") or 0),
                "acceptedAt": (doc.get(d) or {}).get("acceptedAt"),
                "withdrawnAt": (doc.get(d) or {}).get("withdrawnAt"),
            }
            for d in sorted(consent.CURRENT)
            if isinstance(doc.get(d), dict)
        ],
    }
