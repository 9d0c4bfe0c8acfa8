"""A provider's payout address: set, verified by a code, and trusted only after a cooling-off.

Someone who took over a provider's account would first point the payouts at themselves. So
a new address (an e-mail or a PayPal account id) counts only once the code sent to it (to an
e-mail address; to the account's own e-mail for a PayPal id) comes back, and even then
payouts wait PAYOUT_ADDRESS_COOLING_OFF_HOURS, while the account's own e-mail is told of the
change. An admin may also hold a provider's payouts outright.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from shared.payouts import notices, records, rules
from shared.platform import clock, settings, store
from shared.platform.errors import BadRequest, Conflict, ValidationFailed


def set_address(
    uid: str,
    kind: str,
    account_email: str | None,
    recipient_type: rules.RecipientType,
    receiver: str,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Ask to be paid at this address: a code goes to it, to be confirmed with `verify`."""
    at = now or clock.now()
    receiver = receiver.strip()
    if recipient_type is rules.RecipientType.EMAIL:
        receiver = receiver.lower()
    problem = rules.receiver_problem(recipient_type, receiver)
    if problem:
        raise ValidationFailed([{"field": "receiver", "message": problem, "type": "value_error"}])
    to = receiver if recipient_type is rules.RecipientType.EMAIL else account_email
    if not to:
        raise Conflict("Your account has no e-mail to send the code to.", code="no_account_email")
    code = f"{secrets.randbelow(10**6):06d}"
    pending = {
        "recipientType": recipient_type.value,
        "receiver": receiver,
        "codeDigest": rules.code_digest(uid, code),
        "tries": 0,
        "requestedAt": at,
        "expiresAt": at + rules.CODE_LIFETIME,
    }

    def body(batch: Any) -> dict[str, Any]:
        snap = records.profile_ref(uid).get()
        profile: dict[str, Any] = snap.to_dict() if snap.exists else _new_profile(uid, kind, at)
        changed = {**profile, "pending": pending, "updatedAt": at}
        if snap.exists:
            store.update(
                snap.reference,
                {"pending": pending, "updatedAt": at},
                tx=batch,
                unchanged_since=snap.update_time,
            )
        else:
            store.create(snap.reference, changed, tx=batch)
        notices.to_address(batch, uid, to, "payout_address_code", {"code": code})
        return changed

    result: dict[str, Any] = store.run_optimistic(body)
    return result


def verify(uid: str, code: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Confirm the pending address with its code: it becomes the payout address, after a
    cooling-off, and the account's own e-mail is told."""
    at = now or clock.now()
    hours = settings.get().payout_address_cooling_off_hours

    def body(batch: Any) -> tuple[dict[str, Any], str | None]:
        snap = records.profile_ref(uid).get()
        profile: dict[str, Any] | None = snap.to_dict() if snap.exists else None
        pending = (profile or {}).get("pending")
        if profile is None or not isinstance(pending, dict):
            raise Conflict("No payout address is waiting for its code.", code="nothing_to_verify")
        if pending["expiresAt"] <= at or int(pending["tries"]) >= rules.MAX_CODE_TRIES:
            store.update(
                snap.reference,
                {"pending": None, "updatedAt": at},
                tx=batch,
                unchanged_since=snap.update_time,
            )
            return {**profile, "pending": None}, "code_expired"
        if not secrets.compare_digest(pending["codeDigest"], rules.code_digest(uid, code)):
            tries = int(pending["tries"]) + 1
            store.update(
                snap.reference,
                {"pending.tries": tries, "updatedAt": at},
                tx=batch,
                unchanged_since=snap.update_time,
            )
            return profile, "code_incorrect"
        address = {
            "recipientType": pending["recipientType"],
            "receiver": pending["receiver"],
            "verifiedAt": at,
        }
        cooling_off_until = at + timedelta(hours=hours)
        change = {
            "address": address,
            "pending": None,
            # Every new address waits, the first too: a taken-over account may have had none.
            "coolingOffUntil": cooling_off_until,
            "updatedAt": at,
        }
        store.update(snap.reference, change, tx=batch, unchanged_since=snap.update_time)
        notices.to_provider(
            batch,
            uid,
            "payout_address_changed",
            {
                "receiver": address["receiver"],
                "recipientType": address["recipientType"],
                "coolingOffUntil": cooling_off_until.isoformat(),
            },
        )
        return {**profile, **change}, None

    profile, refusal = store.run_optimistic(body)
    if refusal == "code_expired":
        raise Conflict(
            "That code expired or was tried too often; ask for a new one.", code="code_expired"
        )
    if refusal == "code_incorrect":
        raise BadRequest("That code is not the one we sent.", code="code_incorrect")
    result: dict[str, Any] = profile
    return result


def hold_provider(uid: str, kind: str, reason: str, *, held: bool) -> dict[str, Any]:
    """An admin holds (or releases) every payout of a provider."""
    now = clock.now()

    def body(batch: Any) -> dict[str, Any]:
        snap = records.profile_ref(uid).get()
        change = {"heldByAdmin": held, "holdNote": reason if held else None, "updatedAt": now}
        if snap.exists:
            store.update(snap.reference, change, tx=batch, unchanged_since=snap.update_time)
            return {**snap.to_dict(), **change}
        made = {**_new_profile(uid, kind, now), **change}
        store.create(snap.reference, made, tx=batch)
        return made

    result: dict[str, Any] = store.run_optimistic(body)
    return result


def _new_profile(uid: str, kind: str, now: datetime) -> dict[str, Any]:
    return {
        "uid": uid,
        "providerKind": kind,
        "address": None,
        "pending": None,
        "coolingOffUntil": None,
        "heldByAdmin": False,
        "holdNote": None,
        "createdAt": now,
        "updatedAt": now,
    }
