"""Who is told when something needs an admin (a payout PayPal refused, an audit log that does
not verify): the enabled admins, newest accounts first, at most MAX_RECIPIENTS of them, since
each gets a notice in the same commit as what it tells of and a commit holds at most 500 writes.

Read from the profiles (`users`, shared.identity.profiles.COLLECTION) by name: the rooms that
alert (payouts, audit) sit at different layers, and audit sits below identity."""

from __future__ import annotations

from shared.platform import clients

PROFILES = "users"
ADMIN_ROLE = "admin"
MAX_RECIPIENTS = 50


def admins() -> list[tuple[str, str]]:
    """(uid, e-mail) of each admin to tell."""
    from google.cloud.firestore import FieldFilter, Query

    query = (
        clients.db()
        .collection(PROFILES)
        .where(filter=FieldFilter("disabled", "==", False))
        .where(filter=FieldFilter("role", "==", ADMIN_ROLE))
        .order_by("createdAt", direction=Query.DESCENDING)
        .limit(MAX_RECIPIENTS)
    )
    found = []
    for snap in query.stream():
        email = (snap.to_dict() or {}).get("email")
        if isinstance(email, str) and email:
            found.append((snap.id, email))
    return found
