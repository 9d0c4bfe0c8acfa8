"""The one authorization policy: for every route of every function, who may call it.

A function can only register a route that has an entry here (shared.web.http refuses any other at
import time), so the table is the complete answer to "who can do what". A route's ownership
rule is applied by its handler to the resource it loaded; a resource the caller may not see is
answered 404, so ids cannot be probed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.platform.context import Caller, Principal, Role, Service, ServicePrincipal
from shared.platform.errors import Forbidden, NotFound, Unauthenticated


@dataclass(frozen=True)
class Owner:
    """The resource is the caller's when any of these fields holds the caller's uid."""

    fields: tuple[str, ...]

    def owns(self, principal: Principal, resource: Mapping[str, Any]) -> bool:
        return any(resource.get(f) == principal.uid for f in self.fields)


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role]  # empty, with no services: public, no authentication
    owner: Owner | None = None
    # Doctors, clinics and pharmacies must be approved to call this route.
    approved: bool = True
    # Admins pass the ownership rule (they manage every account).
    admin_sees_all: bool = True
    # Google-run callers (Cloud Scheduler, Cloud Tasks) let in with their OIDC identity.
    services: frozenset[Service] = frozenset()

    @property
    def public(self) -> bool:
        return not self.roles and not self.services


PUBLIC = Rule(roles=frozenset())
EVERY_ROLE = frozenset(Role)


def allow(
    *roles: Role,
    owner: Owner | None = None,
    approved: bool = True,
    admin_sees_all: bool = True,
    services: tuple[Service, ...] = (),
) -> Rule:
    return Rule(
        roles=frozenset(roles),
        owner=owner,
        approved=approved,
        admin_sees_all=admin_sees_all,
        services=frozenset(services),
    )


def serve(*services: Service) -> Rule:
    """Only these Google-run callers; no person, not even an admin."""
    if not services:
        raise ValueError("serve() needs at least one service")
    return Rule(roles=frozenset(), services=frozenset(services))


def signed_in(*, owner: Owner | None = None, admin_sees_all: bool = True) -> Rule:
    """Any signed-in account, approved or not (managing one's own sign-in is always allowed)."""
    return allow(*EVERY_ROLE, owner=owner, approved=False, admin_sees_all=admin_sees_all)


OWN_UID = Owner(("uid",))
APPOINTMENT_PARTIES = Owner(("patientUid", "doctorUid", "clinicUid"))
APPOINTMENT_PATIENT = Owner(("patientUid",))
APPOINTMENT_DOCTOR = Owner(("doctorUid",))
PRESCRIPTION_PARTIES = Owner(("patientUid", "doctorUid", "pharmacyUid"))
PRESCRIPTION_PATIENT = Owner(("patientUid",))
PRESCRIPTION_DOCTOR = Owner(("doctorUid",))
PRESCRIPTION_PHARMACY = Owner(("pharmacyUid",))
OWN_CLINIC = Owner(("clinicUid",))
BOOKING_PARTIES = Owner(("patientUid", "clinicUid"))
BOOKING_PATIENT = Owner(("patientUid",))
PAYER = Owner(("patientUid",))
ORDER_PARTIES = Owner(("patientUid", "providerUid"))
PAYOUT_PROVIDER = Owner(("providerUid",))  # issue 15

# Every deployable HTTP function; each also serves GET /openapi.json publicly.
FUNCTIONS: tuple[str, ...] = (
    "session",
    "admin-users",
    "users",
    "appointments",
    "prescriptions",
    "bookings",
    "audit",
    "paypal-create",
    "paypal-capture",
    "paypal-webhook",
    "payments",
    "payouts",  # issue 15
    "notifications",
    "privacy",  # issue 27
)
# Event functions (audit-trigger, notify) take CloudEvents, not routes: they have no entries here.

RouteKey = tuple[str, str, str]  # (function, METHOD, path in werkzeug rule syntax)

POLICY: dict[RouteKey, Rule] = {
    ("session", "POST", "/"): PUBLIC,  # sign in: the ID token in the body is the credential
    ("session", "GET", "/"): signed_in(),
    ("session", "DELETE", "/"): signed_in(),
    ("session", "GET", "/sessions"): signed_in(),
    # Sessions are private even from admins: revoking them goes through revoke-all.
    ("session", "DELETE", "/sessions/<id>"): signed_in(owner=OWN_UID, admin_sees_all=False),
    ("session", "POST", "/revoke-all"): signed_in(),
    # Re-issue this session's cookie for a fresh ID token: a cookie caller only (checked).
    ("session", "POST", "/refresh"): signed_in(),
    # Account administration: admins only.
    ("admin-users", "POST", "/"): allow(Role.ADMIN),
    ("admin-users", "GET", "/"): allow(Role.ADMIN),
    ("admin-users", "GET", "/<uid>"): allow(Role.ADMIN),
    ("admin-users", "PATCH", "/<uid>"): allow(Role.ADMIN),
    ("admin-users", "DELETE", "/<uid>"): allow(Role.ADMIN),
    ("admin-users", "POST", "/<uid>/approval"): allow(Role.ADMIN),
    ("admin-users", "POST", "/<uid>/password-reset"): allow(Role.ADMIN),
    # Repair drift between Firebase Auth and the access records (an account disabled in the
    # Firebase console): Cloud Scheduler's job, and admins by hand.
    ("admin-users", "POST", "/reconcile"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    # Profiles: one's own (admins may read any); providers fill theirs in before approval.
    ("users", "GET", "/<uid>"): signed_in(owner=OWN_UID),
    ("users", "PATCH", "/<uid>"): signed_in(owner=OWN_UID, admin_sees_all=False),
    # The directory shows public fields of approved providers to every signed-in account.
    ("users", "GET", "/directory/doctors"): signed_in(),
    ("users", "GET", "/directory/clinics"): signed_in(),
    ("users", "GET", "/directory/pharmacies"): signed_in(),
    # Appointments: doctors publish availability, patients book, the parties see their own.
    ("appointments", "PUT", "/availability"): allow(Role.DOCTOR),
    ("appointments", "GET", "/doctors/<uid>/availability"): signed_in(),
    ("appointments", "GET", "/doctors/<uid>/slots"): signed_in(),
    ("appointments", "POST", "/"): allow(Role.PATIENT),
    ("appointments", "GET", "/"): allow(Role.PATIENT, Role.DOCTOR, Role.CLINIC, Role.ADMIN),
    ("appointments", "GET", "/<id>"): allow(
        Role.PATIENT, Role.DOCTOR, Role.CLINIC, Role.ADMIN, owner=APPOINTMENT_PARTIES
    ),
    ("appointments", "POST", "/<id>/cancel"): allow(
        Role.PATIENT, Role.DOCTOR, Role.ADMIN, owner=Owner(("patientUid", "doctorUid"))
    ),
    ("appointments", "POST", "/<id>/complete"): allow(
        Role.DOCTOR, Role.ADMIN, owner=APPOINTMENT_DOCTOR
    ),
    ("appointments", "POST", "/<id>/no-show"): allow(
        Role.DOCTOR, Role.ADMIN, owner=APPOINTMENT_DOCTOR
    ),
    ("appointments", "POST", "/<id>/reschedule"): allow(Role.PATIENT, owner=APPOINTMENT_PATIENT),
    ("appointments", "POST", "/sweep"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    # Prescriptions: health data, seen only by its patient, doctor and chosen pharmacy (and
    # admins); each party makes only its own moves.
    ("prescriptions", "POST", "/"): allow(Role.DOCTOR),
    ("prescriptions", "GET", "/"): allow(Role.PATIENT, Role.DOCTOR, Role.PHARMACY, Role.ADMIN),
    ("prescriptions", "GET", "/<id>"): allow(
        Role.PATIENT, Role.DOCTOR, Role.PHARMACY, Role.ADMIN, owner=PRESCRIPTION_PARTIES
    ),
    ("prescriptions", "POST", "/<id>/send"): allow(Role.PATIENT, owner=PRESCRIPTION_PATIENT),
    ("prescriptions", "POST", "/<id>/receive"): allow(Role.PHARMACY, owner=PRESCRIPTION_PHARMACY),
    ("prescriptions", "POST", "/<id>/ready"): allow(Role.PHARMACY, owner=PRESCRIPTION_PHARMACY),
    ("prescriptions", "POST", "/<id>/dispense"): allow(Role.PHARMACY, owner=PRESCRIPTION_PHARMACY),
    ("prescriptions", "POST", "/<id>/reject"): allow(Role.PHARMACY, owner=PRESCRIPTION_PHARMACY),
    ("prescriptions", "POST", "/<id>/cancel"): allow(Role.DOCTOR, owner=PRESCRIPTION_DOCTOR),
    # The audit log holds who did what to whom: admins only.
    ("audit", "GET", "/"): allow(Role.ADMIN),
    ("audit", "GET", "/verify"): allow(Role.ADMIN),
    # -- audit at scale (issue 17) ---------------------------------------------------------
    # Entries, their inclusion proofs and FHIR view, checkpoints and range verification:
    # admins. Sealing, the consistency check and the export: Cloud Scheduler's jobs, and
    # admins by hand.
    ("audit", "GET", "/entries/<entry_id>"): allow(Role.ADMIN),
    ("audit", "GET", "/entries/<entry_id>/proof"): allow(Role.ADMIN),
    ("audit", "GET", "/entries/<entry_id>/fhir"): allow(Role.ADMIN),
    ("audit", "GET", "/checkpoints"): allow(Role.ADMIN),
    ("audit", "GET", "/checkpoints/<n>"): allow(Role.ADMIN),
    ("audit", "GET", "/checkpoints/<n>/verify"): allow(Role.ADMIN),
    ("audit", "POST", "/seal"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("audit", "POST", "/check"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("audit", "POST", "/export"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    # -- findings that stay visible, keys outsiders verify with (issue 29) -------------------
    ("audit", "POST", "/checkpoints/<n>/flagged/<entry_id>/acknowledge"): allow(Role.ADMIN),
    # Public keys are not secret, but the log's readers are admins (there is no auditor role).
    ("audit", "GET", "/keys"): allow(Role.ADMIN),
    # Clinic bookings: approved clinics set up and work their own queue; patients book and
    # cancel their own; admins see every clinic's dashboards and run the auto-decline sweep.
    ("bookings", "GET", "/clinics/<clinic_uid>"): allow(Role.PATIENT, Role.CLINIC, Role.ADMIN),
    ("bookings", "GET", "/clinics/<clinic_uid>/windows"): allow(
        Role.PATIENT, Role.CLINIC, Role.ADMIN
    ),
    ("bookings", "PUT", "/clinics/<clinic_uid>"): allow(Role.CLINIC, Role.ADMIN, owner=OWN_CLINIC),
    ("bookings", "GET", "/clinics/<clinic_uid>/requests"): allow(
        Role.CLINIC, Role.ADMIN, owner=OWN_CLINIC
    ),
    ("bookings", "GET", "/clinics/<clinic_uid>/day"): allow(
        Role.CLINIC, Role.ADMIN, owner=OWN_CLINIC
    ),
    ("bookings", "GET", "/clinics/<clinic_uid>/bookings"): allow(
        Role.CLINIC, Role.ADMIN, owner=OWN_CLINIC
    ),
    ("bookings", "GET", "/clinics/<clinic_uid>/load"): allow(
        Role.CLINIC, Role.ADMIN, owner=OWN_CLINIC
    ),
    ("bookings", "GET", "/clinics/<clinic_uid>/stats"): allow(
        Role.CLINIC, Role.ADMIN, owner=OWN_CLINIC
    ),
    ("bookings", "POST", "/"): allow(Role.PATIENT),
    ("bookings", "GET", "/"): allow(Role.PATIENT),
    ("bookings", "GET", "/<booking_id>"): allow(
        Role.PATIENT, Role.CLINIC, Role.ADMIN, owner=BOOKING_PARTIES
    ),
    ("bookings", "POST", "/<booking_id>/accept"): allow(Role.CLINIC, owner=OWN_CLINIC),
    ("bookings", "POST", "/<booking_id>/decline"): allow(Role.CLINIC, owner=OWN_CLINIC),
    ("bookings", "POST", "/<booking_id>/check-in"): allow(Role.CLINIC, owner=OWN_CLINIC),
    ("bookings", "POST", "/<booking_id>/complete"): allow(Role.CLINIC, owner=OWN_CLINIC),
    ("bookings", "POST", "/<booking_id>/no-show"): allow(Role.CLINIC, owner=OWN_CLINIC),
    ("bookings", "POST", "/<booking_id>/cancel"): allow(Role.PATIENT, owner=BOOKING_PATIENT),
    # The sweep: Cloud Scheduler's job, and admins by hand.
    ("bookings", "POST", "/sweep"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("bookings", "GET", "/unanswered"): allow(Role.ADMIN),
    # Payments: a patient pays only for their own appointment or booking, and captures only
    # their own order; PayPal's webhook carries no user (PayPal's API verifies it instead).
    ("paypal-create", "POST", "/"): allow(Role.PATIENT, owner=PAYER, admin_sees_all=False),
    ("paypal-capture", "POST", "/"): allow(Role.PATIENT, owner=PAYER, admin_sees_all=False),
    ("paypal-webhook", "POST", "/"): PUBLIC,
    # The parties see their orders and a provider its own earnings; admins see all and refund.
    ("payments", "GET", "/orders"): allow(Role.PATIENT, Role.DOCTOR, Role.CLINIC, Role.ADMIN),
    ("payments", "GET", "/orders/<order_id>"): allow(
        Role.PATIENT, Role.DOCTOR, Role.CLINIC, Role.ADMIN, owner=ORDER_PARTIES
    ),
    ("payments", "GET", "/ledger"): allow(Role.DOCTOR, Role.CLINIC, Role.ADMIN),
    ("payments", "GET", "/balance"): allow(Role.DOCTOR, Role.CLINIC, Role.ADMIN),
    ("payments", "POST", "/refunds"): allow(Role.ADMIN),
    ("payments", "POST", "/refunds/sweep"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    # -- payouts (issue 15) ----------------------------------------------------------------
    # A doctor or clinic sees its own payouts and sets its own payout address; admins see all
    # and hold, release, retry or cancel. The weekly run, the sweep and the daily check are
    # Cloud Scheduler's jobs (and admins'); the worker only Cloud Tasks may call; PayPal's
    # webhook carries no user (PayPal's API verifies it instead).
    ("payouts", "GET", "/"): allow(Role.DOCTOR, Role.CLINIC, Role.ADMIN),
    ("payouts", "GET", "/<payout_id>"): allow(
        Role.DOCTOR, Role.CLINIC, Role.ADMIN, owner=PAYOUT_PROVIDER
    ),
    ("payouts", "GET", "/address"): allow(Role.DOCTOR, Role.CLINIC),
    ("payouts", "PUT", "/address"): allow(Role.DOCTOR, Role.CLINIC),
    ("payouts", "POST", "/address/verify"): allow(Role.DOCTOR, Role.CLINIC),
    ("payouts", "GET", "/providers/<uid>"): allow(Role.ADMIN),
    ("payouts", "POST", "/providers/<uid>/hold"): allow(Role.ADMIN),
    ("payouts", "POST", "/providers/<uid>/release"): allow(Role.ADMIN),
    ("payouts", "POST", "/<payout_id>/hold"): allow(Role.ADMIN),
    ("payouts", "POST", "/<payout_id>/release"): allow(Role.ADMIN),
    ("payouts", "POST", "/<payout_id>/retry"): allow(Role.ADMIN),
    ("payouts", "POST", "/<payout_id>/cancel"): allow(Role.ADMIN),
    ("payouts", "POST", "/run"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("payouts", "POST", "/sweep"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("payouts", "POST", "/check"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("payouts", "POST", "/tasks/send"): serve(Service.TASKS),
    ("payouts", "POST", "/webhook"): PUBLIC,
    # -- notifications (issue 16) ---------------------------------------------------------
    # Each account manages its own push devices and preferences (admins too, their own).
    ("notifications", "POST", "/devices"): signed_in(),
    ("notifications", "GET", "/devices"): signed_in(),
    ("notifications", "DELETE", "/devices/<device_id>"): signed_in(
        owner=OWN_UID, admin_sees_all=False
    ),
    ("notifications", "GET", "/preferences"): signed_in(),
    ("notifications", "PUT", "/preferences"): signed_in(),
    # A mail client's one-click unsubscribe carries no session: the signed, expiring token in
    # the link is the credential. Twilio's reports are verified by X-Twilio-Signature.
    ("notifications", "GET", "/unsubscribe"): PUBLIC,
    ("notifications", "POST", "/unsubscribe"): PUBLIC,
    ("notifications", "POST", "/twilio/status"): PUBLIC,
    # Delivery history, retries, the event log and dashboards: admins only.
    ("notifications", "GET", "/notices"): allow(Role.ADMIN),
    ("notifications", "GET", "/notices/<notice_id>"): allow(Role.ADMIN),
    ("notifications", "POST", "/notices/<notice_id>/retry"): allow(Role.ADMIN),
    ("notifications", "GET", "/events"): allow(Role.ADMIN),
    ("notifications", "GET", "/analytics"): allow(Role.ADMIN),
    # The sweep: Cloud Scheduler's job, and admins by hand.
    ("notifications", "POST", "/sweep"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    # -- personal data (issue 27) ------------------------------------------------------------
    # Every account, approved or not, reads and accepts its notices, and exports or erases its
    # own data (the consent gate lets these in: shared.identity.consent); a request is its
    # owner's alone. Erasure runs on Cloud Scheduler (admins by hand); admins list requests.
    ("privacy", "GET", "/notices"): signed_in(),
    ("privacy", "GET", "/consents"): signed_in(),
    ("privacy", "POST", "/consents"): signed_in(),
    ("privacy", "POST", "/consents/withdraw"): signed_in(),
    ("privacy", "POST", "/exports"): signed_in(),
    ("privacy", "GET", "/exports/<request_id>"): signed_in(owner=OWN_UID, admin_sees_all=False),
    ("privacy", "GET", "/exports/<request_id>/data"): signed_in(
        owner=OWN_UID, admin_sees_all=False
    ),
    ("privacy", "GET", "/exports/<request_id>/fhir"): signed_in(
        owner=OWN_UID, admin_sees_all=False
    ),
    ("privacy", "GET", "/exports/<request_id>/parts/<part>"): signed_in(
        owner=OWN_UID, admin_sees_all=False
    ),
    # An export's build, one part a task: Cloud Tasks alone.
    ("privacy", "POST", "/tasks/export"): serve(Service.TASKS),
    ("privacy", "POST", "/erasure"): signed_in(),
    ("privacy", "GET", "/erasure/<request_id>"): signed_in(owner=OWN_UID, admin_sees_all=False),
    ("privacy", "POST", "/erasure/<request_id>/cancel"): signed_in(
        owner=OWN_UID, admin_sees_all=False
    ),
    ("privacy", "POST", "/erasure/run"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("privacy", "POST", "/holds/sweep"): allow(Role.ADMIN, services=(Service.SCHEDULER,)),
    ("privacy", "GET", "/requests"): allow(Role.ADMIN),
}
POLICY.update({(fn, "GET", "/openapi.json"): PUBLIC for fn in FUNCTIONS})


class PolicyMissing(LookupError):
    pass


def rule_for(function: str, method: str, path: str) -> Rule:
    try:
        return POLICY[(function, method, path)]
    except KeyError:
        raise PolicyMissing(
            f"{method} /{function}{path} has no entry in shared.policy.POLICY; "
            "add one before registering the route"
        ) from None


def check_access(rule: Rule, principal: Caller | None) -> None:
    """Role, service and approval gate, before the handler runs: 401 or 403."""
    if rule.public:
        return
    if principal is None:
        raise Unauthenticated("Sign in first.", code="unauthenticated")
    if isinstance(principal, ServicePrincipal):
        if principal.service not in rule.services:
            raise Forbidden("This service may not call this route.", code="service_not_allowed")
        return
    if principal.role not in rule.roles:
        raise Forbidden("Your role may not do this.", code="role_not_allowed")
    if rule.approved and not principal.may_act:
        raise Forbidden("Your account awaits approval by an admin.", code="not_approved")


def check_owner(rule: Rule, principal: Principal, resource: Mapping[str, Any] | None) -> None:
    """Ownership gate, applied to a loaded resource: a stranger's resource does not exist."""
    if resource is None:
        raise NotFound()
    if rule.admin_sees_all and principal.role is Role.ADMIN:
        return
    if rule.owner is not None and not rule.owner.owns(principal, resource):
        raise NotFound()
