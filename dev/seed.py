"""Demo accounts for the local stack: one per role, the non-patient ones approved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared import accounts, clients
from shared.context import Role
from shared.profile_fields import ProfileFields

if TYPE_CHECKING:
    from dev.stack import Stack


@dataclass(frozen=True)
class Account:
    role: Role
    email: str
    password: str
    uid: str


def seed() -> list[Account]:
    """Create the demo accounts through the same service admins use (idempotent)."""
    from firebase_admin import auth

    app = clients.firebase_app()
    accounts_made = []
    for role in Role:
        email = f"{role.value}@alodoktor.test"
        password = f"{role.value}-pass-123"
        try:
            uid = auth.get_user_by_email(email, app=app).uid
        except auth.UserNotFoundError:
            created = accounts.create(
                accounts.NewAccount(
                    email=email,
                    role=role,
                    display_name=f"Demo {role.value}",
                    password=password,
                    approved=True,
                    profile=DEMO_PROFILES.get(role),
                ),
                actor="seed",
            )
            uid = created.profile["uid"]
        accounts_made.append(Account(role, email, password, uid))
    return accounts_made


DEMO_PLACE = {
    "address": {"line1": "Jl. Sudirman 1", "city": "Jakarta", "country": "ID"},
    "geo": {"lat": -6.2, "lng": 106.8},
    "openingHours": [
        {"day": d, "opens": "08:00", "closes": "20:00"} for d in ("mon", "tue", "wed", "thu", "fri")
    ],
}
DEMO_PROFILES = {
    Role.DOCTOR: ProfileFields.model_validate(
        {
            "licenseNumber": "SIP-DEMO-001",
            "specialty": "general-practice",
            "languages": ["id", "en"],
            "consultationPrice": {"currency": "USD", "value": "15.00"},
            "bio": "Demo general practitioner.",
        }
    ),
    Role.CLINIC: ProfileFields.model_validate(
        {**DEMO_PLACE, "name": "Klinik Demo", "services": ["general", "vaccination"]}
    ),
    Role.PHARMACY: ProfileFields.model_validate(
        {**DEMO_PLACE, "name": "Apotek Demo", "services": ["prescriptions"], "delivery": True}
    ),
}


def instructions(stack: Stack, accounts: list[Account]) -> str:
    lines = ["", "Demo accounts (e-mail / password):"]
    lines += [f"  {a.role.value:<9} {a.email:<26} {a.password}" for a in accounts]
    sign_in = (
        f"{stack.auth_url}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=demo"
    )
    credentials = (
        '{"email":"patient@alodoktor.test","password":"patient-pass-123","returnSecureToken":true}'
    )
    extract = 'import json,sys; print(json.load(sys.stdin)["idToken"])'
    lines += [
        "",
        "Get a session (curl; jq optional):",
        f"  TOKEN=$(curl -s '{sign_in}' -H 'Content-Type: application/json' \\",
        f"      -d '{credentials}' \\",
        f"      | python3 -c '{extract}')",
        f"  curl -si {stack.gateway_url}/session -H 'Content-Type: application/json' \\",
        '      -d "{\\"idToken\\":\\"$TOKEN\\"}"',
        "  # then send the __session cookie it sets (and X-CSRF-Token from the body on changes),",
        f'  # or skip cookies: curl {stack.gateway_url}/session -H "Authorization: Bearer $TOKEN"',
        f"API docs: {stack.gateway_url}/docs   OpenAPI: {stack.gateway_url}/openapi.json",
        "",
    ]
    return "\n".join(lines)
