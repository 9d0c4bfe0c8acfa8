"""The `admin-users` function: admins manage every account.

Routes (under /admin-users), admin only:
  POST   /                        create an account of any role
  GET    /                        list accounts (role, approved, disabled, e-mail prefix)
  GET    /{uid}                   one account: Auth record and profile
  PATCH  /{uid}                   change name, phone, role, disabled, profile fields
  DELETE /{uid}                   delete the account (force=true past upcoming appointments)
  POST   /{uid}/approval          approve or reject a doctor, clinic or pharmacy
  POST   /{uid}/password-reset    generate a password reset link
  POST   /reconcile               repair drift between Firebase Auth and the access records
                                  (Cloud Scheduler's job; admins by hand)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import flask
import functions_framework
from pydantic import Field, model_validator

from shared.identity import accounts, profiles
from shared.identity.profile_fields import FieldRefusal, Phone, ProfileFields, ProfileView
from shared.platform import clients, stored
from shared.platform.context import Role
from shared.platform.errors import BadRequest, Forbidden, NotFound
from shared.platform.fields import DocId, Int
from shared.platform.models import Body, Page, View
from shared.web.http import Call, Function

api = Function(
    "admin-users",
    title="Alo Doktor account administration",
    description=(
        "Admins create, list, change, approve and delete accounts of every role. A change of"
        " role or approval is made in Firestore first and Firebase Auth's claims follow it:"
        " with Auth unreachable the answer is still the change, which is in force (the Auth"
        " reconciliation sets the claims). Two 503s say a change was made, unlike every other:"
        " `decision_unfinished` (the change is made and in force, what follows it is not all"
        " done: send the same change again to finish it) and `deletion_unfinished` (the account"
        " is closed and refuses sign-ins; send the deletion again to finish it)."
    ),
)


class CreateAccount(Body):
    email: str = Field(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$", max_length=254)
    role: Role
    display_name: str | None = Field(default=None, min_length=1, max_length=80)
    phone: Phone | None = None
    password: str | None = Field(default=None, min_length=8, max_length=128)
    send_password_link: bool = False
    uid: DocId | None = Field(default=None, min_length=6, max_length=128)
    approved: bool | None = None
    profile: ProfileFields | None = None

    @model_validator(mode="after")
    def _one_way_in(self) -> CreateAccount:
        if self.password is None and not self.send_password_link:
            raise ValueError("give a password or set sendPasswordLink")
        if self.profile and self.profile.model_fields_set & {"display_name", "phone"}:
            raise ValueError("displayName and phone go at the top level, not in profile")
        return self


class CreatedAccount(View):
    profile: ProfileView
    password_link: str | None = Field(
        default=None, description="Only on the local stack; in production it is e-mailed."
    )


class AccountQuery(Page):
    role: Role | None = None
    approved: bool | None = None
    disabled: bool | None = None
    email_prefix: str | None = Field(default=None, min_length=1, max_length=254)


class AccountList(View):
    items: list[ProfileView]
    next_cursor: str | None


class AuthRecord(View):
    uid: str
    email: str | None
    email_verified: bool
    disabled: bool
    created_at: datetime | None
    last_sign_in_at: datetime | None
    claims: dict[str, Any]


class AccountDetail(View):
    auth: AuthRecord | None
    profile: ProfileView


class ChangeAccount(ProfileFields):
    role: Role | None = None
    disabled: bool | None = None


class DeleteQuery(Body):
    force: bool = False


class ApprovalDecision(Body):
    decision: Literal["approve", "reject"]
    reason: str | None = Field(default=None, min_length=3, max_length=500)

    @model_validator(mode="after")
    def _reason_for_rejection(self) -> ApprovalDecision:
        if self.decision == "reject" and not self.reason:
            raise ValueError("a rejection needs a reason")
        return self


class ResetLink(View):
    queued: bool
    link: str | None = Field(default=None, description="Only on the local stack.")


def _refuse(exc: FieldRefusal) -> BadRequest | Forbidden:
    if exc.kind == "locked":
        return Forbidden(f"Not editable now: {', '.join(exc.fields)}", code="field_locked")
    return BadRequest(
        f"Not fields of this role: {', '.join(exc.fields)}", code="field_not_applicable"
    )


@api.route("POST", "/", body=CreateAccount, response=CreatedAccount, status=201, problems=(409,))
def create_account(call: Call) -> CreatedAccount:
    """Create an Auth account, its role claims and profile as one operation."""
    b: CreateAccount = call.body
    try:
        created = accounts.create(
            accounts.NewAccount(
                email=b.email,
                role=b.role,
                display_name=b.display_name,
                phone=b.phone,
                password=b.password,
                send_password_link=b.send_password_link,
                uid=b.uid,
                approved=b.approved,
                profile=b.profile,
            ),
            actor=call.principal.uid,
        )
    except FieldRefusal as exc:
        raise _refuse(exc) from None
    return CreatedAccount(
        profile=ProfileView.of(created.profile),
        password_link=created.password_link if accounts.reveal_links() else None,
    )


@api.route("GET", "/", query=AccountQuery, response=AccountList)
def list_accounts(call: Call) -> AccountList:
    """Accounts, newest first (by e-mail when searching by prefix)."""
    q: AccountQuery = call.query
    items, cursor = profiles.list_profiles(
        role=q.role,
        approved=q.approved,
        disabled=q.disabled,
        email_prefix=q.email_prefix,
        limit=q.limit,
        cursor=q.cursor,
    )
    return AccountList(items=stored.readable(ProfileView.of, items), next_cursor=cursor)


def _uid(call: Call) -> str:
    uid: str = call.params["uid"]
    if not 1 <= len(uid) <= 128:
        raise NotFound()
    return uid


@api.route("GET", "/<uid>", response=AccountDetail)
def get_account(call: Call) -> AccountDetail:
    """One account: its Auth record and whole profile."""
    from firebase_admin import auth

    profile = accounts.load(_uid(call))
    try:
        user = auth.get_user(profile["uid"], app=clients.firebase_app())
        meta = user.user_metadata
        record: AuthRecord | None = AuthRecord(
            uid=user.uid,
            email=user.email,
            email_verified=bool(user.email_verified),
            disabled=bool(user.disabled),
            created_at=_ms(meta.creation_timestamp),
            last_sign_in_at=_ms(meta.last_sign_in_timestamp),
            claims=user.custom_claims or {},
        )
    except auth.UserNotFoundError:
        record = None
    return AccountDetail(auth=record, profile=ProfileView.of(profile))


def _ms(value: int | None) -> datetime | None:
    from datetime import UTC

    return datetime.fromtimestamp(value / 1000, UTC) if value else None


@api.route(
    "PATCH",
    "/<uid>",
    body=ChangeAccount,
    response=ProfileView,
    problems=(409,),
    summary="Change an account; a new role or disabling ends the user's sessions at once"
    " (503 decision_unfinished: the change is made; send it again to finish what follows it)",
)
def change_account(call: Call) -> ProfileView:
    """Change an account (the summary says what a 503 after the change means)."""
    b: ChangeAccount = call.body
    field_names = b.model_fields_set - {"role", "disabled"}
    fields = ProfileFields.model_validate(
        b.model_dump(include=field_names, by_alias=True, exclude_unset=True)
    )
    try:
        updated = accounts.update(
            _uid(call),
            accounts.AccountChanges(role=b.role, disabled=b.disabled, fields=fields),
            actor=call.principal.uid,
            by_admin=True,
        )
    except FieldRefusal as exc:
        raise _refuse(exc) from None
    return ProfileView.of(updated)


@api.route(
    "DELETE",
    "/<uid>",
    query=DeleteQuery,
    status=204,
    problems=(409,),
    summary="Delete the account; prescriptions, ledger entries and the like are kept (503"
    " deletion_unfinished: the account is closed already; send the deletion again to finish)",
)
def delete_account(call: Call) -> None:
    """Delete the account (the summary says what a 503 after the tombstone means)."""
    accounts.delete(_uid(call), force=call.query.force, actor=call.principal.uid)


@api.route(
    "POST",
    "/<uid>/approval",
    body=ApprovalDecision,
    response=ProfileView,
    problems=(409,),
    summary="Approve or reject a doctor, clinic or pharmacy (a rejection needs a reason); Auth"
    " unreachable still answers the decision, in force; 503 decision_unfinished: the decision"
    " is made, send it again to finish it",
)
def decide_approval(call: Call) -> ProfileView:
    """Approve or reject (the summary says what Auth or Firestore failing after it means)."""
    b: ApprovalDecision = call.body
    updated = accounts.decide_approval(
        _uid(call), b.decision == "approve", b.reason, actor=call.principal.uid
    )
    return ProfileView.of(updated)


@api.route("POST", "/<uid>/password-reset", response=ResetLink, problems=(409,))
def password_reset(call: Call) -> ResetLink:
    """Generate a password reset link and queue it for e-mail to the user."""
    link = accounts.password_reset_link(_uid(call), actor=call.principal.uid)
    return ResetLink(queued=True, link=link if accounts.reveal_links() else None)


class ReconcileQuery(Body):
    limit: Int = Field(default=1000, ge=1, le=1000, description="accounts (and records) per run")


class Reconciled(View):
    checked: int = Field(description="Auth accounts compared with their access records")
    repaired: list[str] = Field(description="uids whose record was corrected")
    sessions_ended: int
    cycle_complete: bool = Field(description="every account has been checked since the cycle began")


@api.route("POST", "/reconcile", query=ReconcileQuery, response=Reconciled)
def reconcile(call: Call) -> Reconciled:
    """One bounded step of the Auth reconciliation; the next run continues where it stopped."""
    from shared.identity import reconciliation

    report = reconciliation.run(limit=call.query.limit)
    return Reconciled(
        checked=report.checked,
        repaired=report.repaired,
        sessions_ended=report.sessions_ended,
        cycle_complete=report.cycle_complete,
    )


@functions_framework.http
def admin_users(request: flask.Request) -> flask.Response:
    return api.handle(request)
