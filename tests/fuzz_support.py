"""The fuzzer's plan and its world: which role calls each operation, and the accounts and
resources it calls them with (tests/test_fuzz.py).

Everything here is made for the fuzzer alone: its own approved account of every role, its own
appointments, prescription, booking and order, a fresh account for each operation that would end
its caller's sign-ins or change its caller's profile, and a fresh victim account for each admin
operation that changes or deletes an account. Nothing another test made is ever named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.platform.context import Role, Service
from shared.web.openapi import openapi_path
from shared.web.policy import POLICY, RouteKey, Rule
from tests.support import (
    PRESCRIPTION_ITEM,
    Api,
    User,
    approved_doctor,
    bearer,
    clinic_setup,
    create_user,
    id_token,
    service_api,
    sign_in,
    slot_in,
)

# Routes that end the caller's own sign-ins or change the caller's own profile: each is called
# by an account of its own, made for it, so the other operations keep working accounts.
OWN_ACCOUNT_ROUTES: frozenset[RouteKey] = frozenset(
    {
        ("session", "DELETE", "/"),
        ("session", "DELETE", "/sessions/<id>"),
        ("session", "POST", "/revoke-all"),
        ("users", "PATCH", "/<uid>"),
    }
)
# Admin routes that change, disable or delete the account they name: the account they are
# pointed at is a victim made for that operation, never one of the accounts the fuzzer acts as.
VICTIM_ROUTES: frozenset[RouteKey] = frozenset(
    {
        ("admin-users", "PATCH", "/<uid>"),
        ("admin-users", "DELETE", "/<uid>"),
        ("admin-users", "POST", "/<uid>/approval"),
        ("admin-users", "POST", "/<uid>/password-reset"),
    }
)
# The order of preference when roles tie in the rotation (least used first).
ROLE_ORDER: tuple[Role, ...] = (
    Role.PATIENT,
    Role.DOCTOR,
    Role.CLINIC,
    Role.PHARMACY,
    Role.ADMIN,
)
CLINIC_ZONE = "Asia/Jakarta"


@dataclass(frozen=True)
class Target:
    """One operation of the API and who the fuzzer calls it as (None: unauthenticated)."""

    route: RouteKey
    rule: Rule
    role: Role | None
    # A route only Google-run callers may call (`policy.serve`) is fuzzed as that service.
    service: Service | None = None

    @property
    def function(self) -> str:
        return self.route[0]

    @property
    def method(self) -> str:
        return self.route[1]

    @property
    def path(self) -> str:
        """The path as the OpenAPI documents write it, function prefix included."""
        return openapi_path(self.route[0], self.route[2])

    @property
    def label(self) -> str:
        who = self.role.value if self.role else "unauthenticated"
        if self.service is not None:
            who = f"service {self.service.value}"
        return f"{self.method} {self.path} as {who}"


def plan(policy: Mapping[RouteKey, Rule] = POLICY) -> dict[tuple[str, str], Target]:
    """Every route, keyed by (METHOD, OpenAPI path), with the one role that fuzzes it.

    Public routes are fuzzed unauthenticated. Each other route gets one of the roles the policy
    allows it, the one used least so far in a fixed walk of the routes (ties in ROLE_ORDER), so
    the roles are spread over the operations, every role is exercised, and the choice is the
    same on every run.
    """
    used: Counter[Role] = Counter()
    targets: dict[tuple[str, str], Target] = {}
    for route in sorted(policy, key=lambda r: (r[0], r[2], r[1])):
        rule = policy[route]
        role: Role | None = None
        service: Service | None = None
        if not rule.roles and rule.services:
            service = min(rule.services)
        elif not rule.public:
            allowed = [r for r in ROLE_ORDER if r in rule.roles]
            role = min(allowed, key=lambda r: (used[r], ROLE_ORDER.index(r)))
            used[role] += 1
        target = Target(route, rule, role, service)
        targets[(target.method, target.path)] = target
    return targets


@dataclass
class Actor:
    user: User
    token: str

    @property
    def uid(self) -> str:
        return self.user.uid

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _actor(stack: Any, role: Role) -> Actor:
    user = create_user(stack, role)
    return Actor(user, id_token(stack, user))


def _created(response: Any, what: str) -> dict[str, Any]:
    if response.status_code not in (200, 201):
        raise AssertionError(f"fuzz setup: {what}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


@dataclass
class World:
    """The fuzzer's accounts and resources on the local stack, made once per run."""

    base_url: str
    actors: dict[Role, Actor]
    own_account: dict[RouteKey, Actor] = field(default_factory=dict)
    victims: dict[RouteKey, str] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    stack: Any = field(default=None, repr=False)  # mints service callers' tokens

    @classmethod
    def make(cls, stack: Any, targets: dict[tuple[str, str], Target]) -> World:
        with ThreadPoolExecutor(max_workers=4) as pool:
            made = dict(
                zip(
                    (Role.ADMIN, Role.PATIENT, Role.PHARMACY, Role.CLINIC),
                    pool.map(
                        lambda role: _actor(stack, role),
                        (Role.ADMIN, Role.PATIENT, Role.PHARMACY, Role.CLINIC),
                    ),
                    strict=True,
                )
            )
            own = [t for t in targets.values() if t.route in OWN_ACCOUNT_ROUTES and t.role]
            own_actors = pool.map(lambda t: _actor(stack, t.role or Role.PATIENT), own)
            victim_routes = sorted(t.route for t in targets.values() if t.route in VICTIM_ROUTES)
            victims = pool.map(lambda _: create_user(stack, Role.PATIENT).uid, victim_routes)
            admin = Api(stack.gateway_url, bearer=made[Role.ADMIN].token)
            clinic_api = Api(stack.gateway_url, bearer=made[Role.CLINIC].token)
            setup = pool.submit(
                clinic_api.request, "PUT", "/bookings/clinics/me", json=clinic_setup(CLINIC_ZONE)
            )
            doctor_user, doctor_api = approved_doctor(stack, admin)
            _created(setup.result(), "clinic setup")
            world = cls(stack.gateway_url, made, stack=stack)
            world.own_account = {t.route: a for t, a in zip(own, own_actors, strict=True)}
            world.victims = dict(zip(victim_routes, victims, strict=True))
        assert doctor_api.bearer is not None
        world.actors[Role.DOCTOR] = Actor(doctor_user, doctor_api.bearer)
        world._seed(stack, doctor_api)
        return world

    def _seed(self, stack: Any, doctor: Api) -> None:
        """An appointment awaiting payment (with its PayPal order), a confirmed one with a
        prescription, a clinic booking, and a browser session of the account that ends
        sessions: real ids for the operations to act on."""
        from shared.appointments import service as appointments

        patient = bearer(stack, self.actors[Role.PATIENT].user)
        doctor_uid = self.actors[Role.DOCTOR].uid
        pending = _created(
            patient.post("/appointments", json={"doctorUid": doctor_uid, "start": slot_in(72)}),
            "appointment",
        )["id"]
        confirmed = _created(
            patient.post("/appointments", json={"doctorUid": doctor_uid, "start": slot_in(96)}),
            "appointment",
        )["id"]
        appointments.confirm(confirmed)
        prescription = _created(
            doctor.post(
                "/prescriptions",
                json={"appointmentId": confirmed, "items": [PRESCRIPTION_ITEM]},
            ),
            "prescription",
        )["id"]
        day = datetime.now(ZoneInfo(CLINIC_ZONE)).date() + timedelta(days=2)
        booking = _created(
            patient.post(
                "/bookings",
                json={
                    "clinicUid": self.actors[Role.CLINIC].uid,
                    "serviceId": "checkup",
                    "windowStart": f"{day.isoformat()}T08:00:00+07:00",
                },
            ),
            "booking",
        )["id"]
        order = _created(patient.post("/paypal-create", json={"appointmentId": pending}), "order")
        ender = self.own_account.get(("session", "DELETE", "/sessions/<id>"))
        sessions = []
        if ender is not None:
            sign_in(stack, ender.user)
            listed = Api(stack.gateway_url, bearer=ender.token).get("/session/sessions")
            sessions = [item["id"] for item in _created(listed, "sessions")["items"]]
        self.ids = {
            "session": sessions,
            "appointment": [pending, confirmed],
            "prescription": [prescription],
            "booking": [booking],
            "order": [order["id"]],
        }

    # -- what each operation is called with ------------------------------------------------

    def actor(self, target: Target) -> Actor | None:
        if target.role is None:
            return None
        return self.own_account.get(target.route) or self.actors[target.role]

    def headers(self, target: Target) -> dict[str, str]:
        if target.service is not None:
            token = service_api(self.stack, target.service, target.function).bearer
            return {"Authorization": f"Bearer {token}"}
        actor = self.actor(target)
        return actor.headers if actor else {}

    def known_path_values(self, target: Target, name: str) -> list[str]:
        """Real values for a path parameter, mixed by the fuzzer with generated ones, so that
        handlers run past their lookups on resources the fuzzer owns."""
        actor = self.actor(target)
        own = [actor.uid, "me"] if actor else []
        fn = target.function
        if fn == "admin-users":
            victim = self.victims.get(target.route)
            return [victim] if victim else [a.uid for a in self.actors.values()]
        if fn == "users":
            return [*own, self.actors[Role.DOCTOR].uid]
        if fn == "appointments" and name == "uid":
            return [self.actors[Role.DOCTOR].uid, "me"]
        if fn == "bookings" and name == "clinic_uid":
            return [self.actors[Role.CLINIC].uid, "me"]
        by_function = {
            "appointments": "appointment",
            "prescriptions": "prescription",
            "bookings": "booking",
            "payments": "order",
            "session": "session",
        }
        return list(self.ids.get(by_function.get(fn, ""), []))


def roles_used(targets: Iterable[Target]) -> set[Role]:
    return {t.role for t in targets if t.role is not None}
