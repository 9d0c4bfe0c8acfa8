"""firestore.rules: a signed-in client can neither read nor write any collection directly."""

from __future__ import annotations

import pytest
import requests

from shared.platform.context import Role
from tests.support import create_user, id_token

COLLECTIONS = [
    "users",
    "sessions",
    "clinics",
    "pharmacies",
    "availability",
    "appointments",
    "prescriptions",
    "bookings",
    "bookingWindows",
    "bookingDays",
    "bookingPatients",
    "orders",
    "ledger",
    "ledgerEntries",
    "ledgerAccounts",
    "refunds",
    "paypalEvents",
    "payouts",
    "payoutProfiles",
    "ledgerGuards",
    "notifications",
    "events",
    "audit",
    "auditHead",
    "auditCheckpoints",
    "access",
    "directory",
    "slots",
    "idempotency",
    "reconciliation",
    "settings",
    "deviceTokens",
    "suppressions",
    "notificationPreferences",
    "analytics",
    "bookingWindows/w1/places",  # a subcollection: the rule matches every depth
]


def _documents(stack) -> str:
    return f"{stack.firestore_url}/v1/projects/{stack.project_id}/databases/(default)/documents"


@pytest.fixture(scope="module")
def client_token(stack):
    return id_token(stack, create_user(stack, Role.ADMIN))


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_clients_cannot_read_or_write(stack, client_token, collection):
    base = _documents(stack)
    doc = f"{base}/{collection}/probe"
    seeded = requests.patch(  # the backend's own (privileged) write, so a read has a target
        doc,
        json={"fields": {"x": {"integerValue": "1"}}},
        headers={"Authorization": "Bearer owner"},
        timeout=10,
    )
    assert seeded.status_code == 200, seeded.text
    as_client = {"Authorization": f"Bearer {client_token}"}

    attempts = {
        "get": requests.get(doc, headers=as_client, timeout=10),
        "list": requests.get(f"{base}/{collection}", headers=as_client, timeout=10),
        "create": requests.post(
            f"{base}/{collection}",
            json={"fields": {"x": {"integerValue": "2"}}},
            headers=as_client,
            timeout=10,
        ),
        "update": requests.patch(
            doc, json={"fields": {"x": {"integerValue": "3"}}}, headers=as_client, timeout=10
        ),
        "delete": requests.delete(doc, headers=as_client, timeout=10),
    }

    for what, response in attempts.items():
        assert response.status_code == 403, (what, response.status_code, response.text)
    after = requests.get(doc, headers={"Authorization": "Bearer owner"}, timeout=10).json()
    assert after["fields"]["x"]["integerValue"] == "1"
    # The probe is not a real record of its collection: leave nothing for other tests to list.
    requests.delete(doc, headers={"Authorization": "Bearer owner"}, timeout=10)


def test_anonymous_clients_cannot_read(stack):
    response = requests.get(f"{_documents(stack)}/users/anyone", timeout=10)
    assert response.status_code == 403


def test_the_rules_grant_nothing_anywhere_so_every_collection_is_closed():
    """The probes above are samples; what closes a collection added later is the rules' shape:
    one match of every document at every depth, and no `allow` but the deny."""
    import re
    from pathlib import Path

    rules = (Path(__file__).resolve().parent.parent / "firestore.rules").read_text()
    code = "\n".join(line.split("//")[0] for line in rules.splitlines())
    assert re.findall(r"match\s+(\S+)\s*\{", code) == [
        "/databases/{database}/documents",
        "/{document=**}",
    ]
    allows = [" ".join(a.split()) for a in re.findall(r"allow[^;]*;", code)]
    assert allows == ["allow read, write: if false;"]
