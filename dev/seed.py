"""Demo accounts for the local stack: one per role, the non-patient ones approved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared import clients, profiles, store
from shared.context import Role

if TYPE_CHECKING:
    from dev.stack import Stack


@dataclass(frozen=True)
class Account:
    role: Role
    email: str
    password: str
    uid: str


def seed() -> list[Account]:
    from firebase_admin import auth

    app = clients.firebase_app()
    accounts = []
    for role in Role:
        email = f"{role.value}@alodoktor.test"
        password = f"{role.value}-pass-123"
        try:
            user = auth.get_user_by_email(email, app=app)
        except auth.UserNotFoundError:
            user = auth.create_user(
                email=email,
                password=password,
                display_name=f"Demo {role.value}",
                email_verified=True,
                app=app,
            )
        auth.set_custom_user_claims(user.uid, {"role": role.value, "approved": True}, app=app)
        store.set(
            profiles.ref(user.uid),
            {
                "uid": user.uid,
                "email": email,
                "displayName": f"Demo {role.value}",
                "role": role.value,
                "approved": True,
                "disabled": False,
                "createdAt": datetime.now(UTC),
            },
            by="seed",
        )
        accounts.append(Account(role, email, password, user.uid))
    return accounts


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
