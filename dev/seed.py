"""Demo data for the local stack: one account per role (the non-patient ones approved), the
doctor's hours and the clinic's services, so a patient can book and pay at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.appointments import service as appointments
from shared.bookings import service as bookings
from shared.identity import accounts
from shared.identity.profile_fields import ProfileFields
from shared.platform import clients
from shared.platform.context import Role

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
    by_role = {a.role: a.uid for a in accounts_made}
    # Something to book and pay for: the doctor's hours and the clinic's services.
    appointments.save_availability(by_role[Role.DOCTOR], DEMO_AVAILABILITY)
    bookings.save_clinic(by_role[Role.CLINIC], DEMO_CLINIC, actor="seed")
    return accounts_made


WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEMO_AVAILABILITY = {
    "timeZone": "Asia/Jakarta",
    "slotMinutes": 30,
    "weekly": {d: [{"start": "08:00", "end": "20:00"}] for d in WEEK},
    "exceptions": [],
}
DEMO_CLINIC = {
    "schedule": {
        "timeZone": "Asia/Jakarta",
        "windowMinutes": 60,
        "weekly": [{"day": d, "opens": "08:00", "closes": "16:00", "capacity": 5} for d in WEEK],
        "closedDates": [],
    },
    "services": [
        {
            "id": "checkup",
            "name": "General check-up",
            "durationMinutes": 20,
            "price": {"currency": "USD", "amountMinor": 1250},
            "active": True,
        }
    ],
}


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
    doctor = next(a.uid for a in accounts if a.role is Role.DOCTOR)
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
        "",
        "Pay for a consultation as the patient (the doctor takes 08:00-20:00 Jakarta time):",
        f'  curl -s "{stack.gateway_url}/appointments/doctors/{doctor}/slots?from=<ISO>&to=<ISO>"'
        " \\",
        '      -H "Authorization: Bearer $TOKEN"',
        f'  curl -s {stack.gateway_url}/appointments -H "Authorization: Bearer $TOKEN" \\',
        "      -H 'Content-Type: application/json'"
        f' -d \'{{"doctorUid":"{doctor}","start":"<slot>"}}\'',
        f'  curl -s {stack.gateway_url}/paypal-create -H "Authorization: Bearer $TOKEN" \\',
        "      -H 'Content-Type: application/json' -d '{\"appointmentId\":\"<id>\"}'",
        "  curl -s -d action=approve '<approveLink>'   # the buyer approves, in PayPal's window",
        f'  curl -s {stack.gateway_url}/paypal-capture -H "Authorization: Bearer $TOKEN" \\',
        "      -H 'Content-Type: application/json' -d '{\"orderId\":\"<orderId>\"}'",
        f"API docs: {stack.gateway_url}/docs   OpenAPI: {stack.gateway_url}/openapi.json",
        "",
    ]
    return "\n".join(lines)
