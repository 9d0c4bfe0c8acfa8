"""The `users` function: one's own profile, and the directory of approved providers.

Routes (under /users), any signed-in account:
  GET   /{uid}                   a profile: one's own ("me"), or any for an admin
  PATCH /{uid}                   change one's own profile (the fields one's role may change)
  GET   /directory/doctors       approved doctors by specialty, language and price range
  GET   /directory/clinics       approved clinics by city
  GET   /directory/pharmacies    approved pharmacies by city and delivery
"""

from __future__ import annotations

from typing import Any

import flask
import functions_framework
from pydantic import Field, model_validator

from shared.identity import accounts, profiles
from shared.identity.profile_fields import (
    FieldRefusal,
    Language,
    ProfileFields,
    ProfileView,
    PublicListing,
    Slug,
)
from shared.platform import stored
from shared.platform.context import Role
from shared.platform.errors import BadRequest, Forbidden
from shared.platform.fields import Currency
from shared.platform.models import Page, View
from shared.platform.money import Money, MoneyError
from shared.web.http import Call, Function

api = Function(
    "users",
    title="Alo Doktor profiles and directory",
    description="Self-service profiles and the public directory of approved providers.",
)


class Directory(View):
    items: list[PublicListing]
    next_cursor: str | None


class DoctorQuery(Page):
    specialty: Slug | None = None
    language: Language | None = None
    currency: Currency | None = None
    min_price: str | None = Field(default=None, max_length=16)
    max_price: str | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _priced_in_a_currency(self) -> DoctorQuery:
        if (self.min_price or self.max_price) and not self.currency:
            raise ValueError("a price range needs a currency")
        return self

    def bound(self, value: str | None) -> int | None:
        if value is None or self.currency is None:
            return None
        try:
            return Money.parse(self.currency, value).amount_minor
        except MoneyError as exc:
            raise BadRequest(str(exc), code="invalid_price") from None


class PlaceQuery(Page):
    city: str | None = Field(default=None, min_length=1, max_length=120)


class PharmacyQuery(PlaceQuery):
    delivery: bool | None = None


def _subject(call: Call) -> str:
    uid: str = call.params["uid"]
    return call.principal.uid if uid == "me" else uid


def _load_visible(call: Call) -> tuple[dict[str, Any], Any]:
    """The profile the caller may see, and its update time."""
    uid = _subject(call)
    profile, read_at = profiles.read(uid) if 1 <= len(uid) <= 128 else (None, None)
    return call.authorize(profile), read_at


@api.route("GET", "/<uid>", response=ProfileView)
def get_profile(call: Call) -> ProfileView:
    """A whole profile: your own (`me`), or anyone's for an admin."""
    return ProfileView.of(_load_visible(call)[0])


@api.route("PATCH", "/<uid>", body=ProfileFields, response=ProfileView, problems=(409,))
def update_profile(call: Call) -> ProfileView:
    """Change your own profile: only the fields your role has, and not locked ones."""
    profile, read_at = _load_visible(call)
    try:
        updated = accounts.update(
            profile["uid"],
            accounts.AccountChanges(fields=call.body),
            actor=call.principal.uid,
            by_admin=False,
            current=profile,
            read_at=read_at,
        )
    except FieldRefusal as exc:
        if exc.kind == "locked":
            raise Forbidden(
                f"Fixed once approved: {', '.join(exc.fields)}", code="field_locked"
            ) from None
        raise BadRequest(
            f"Not fields of your role: {', '.join(exc.fields)}", code="field_not_applicable"
        ) from None
    return ProfileView.of(updated)


def _directory(items: list[dict[str, Any]], cursor: str | None) -> Directory:
    return Directory(items=stored.readable(PublicListing.of, items), next_cursor=cursor)


@api.route("GET", "/directory/doctors", query=DoctorQuery, response=Directory)
def list_doctors(call: Call) -> Directory:
    """Approved doctors; with a price range, cheapest first, else newest first."""
    q: DoctorQuery = call.query
    items, cursor = profiles.list_directory(
        Role.DOCTOR,
        specialty=q.specialty,
        language=q.language,
        currency=q.currency,
        min_price_minor=q.bound(q.min_price),
        max_price_minor=q.bound(q.max_price),
        limit=q.limit,
        cursor=q.cursor,
    )
    return _directory(items, cursor)


@api.route("GET", "/directory/clinics", query=PlaceQuery, response=Directory)
def list_clinics(call: Call) -> Directory:
    """Approved clinics, optionally in one city."""
    q: PlaceQuery = call.query
    items, cursor = profiles.list_directory(
        Role.CLINIC, city=q.city, limit=q.limit, cursor=q.cursor
    )
    return _directory(items, cursor)


@api.route("GET", "/directory/pharmacies", query=PharmacyQuery, response=Directory)
def list_pharmacies(call: Call) -> Directory:
    """Approved pharmacies, optionally in one city and only those that deliver."""
    q: PharmacyQuery = call.query
    items, cursor = profiles.list_directory(
        Role.PHARMACY, city=q.city, delivery=q.delivery, limit=q.limit, cursor=q.cursor
    )
    return _directory(items, cursor)


@functions_framework.http
def users(request: flask.Request) -> flask.Response:
    return api.handle(request)
