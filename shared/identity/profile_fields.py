"""What a profile may hold, who may change which part, and what the directory shows.

Pure: no I/O, so the rules are tested fast and used by both the admin and self-service APIs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from shared.platform.context import ROLES_NEEDING_APPROVAL, Role
from shared.platform.fields import Currency, DocId, Kind
from shared.platform.models import Body, View
from shared.platform.money import Money, MoneyError

Phone = Annotated[str, Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164")]
# A slug is also a valid document id (it begins with a letter): it may name one.
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,40}$"), Kind("doc_id")]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$", description="ISO 639-1")]
ShortText = Annotated[str, Field(min_length=1, max_length=120)]
HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


class Price(Body):
    """PayPal's money shape: currency code and a decimal string."""

    currency: Currency
    value: str = Field(max_length=16)

    @model_validator(mode="after")
    def _exact(self) -> Price:
        try:
            Money.parse(self.currency, self.value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from None
        return self

    def money(self) -> Money:
        return Money.parse(self.currency, self.value)


class Address(Body):
    line1: ShortText
    line2: str | None = Field(default=None, max_length=120)
    city: ShortText
    region: str | None = Field(default=None, max_length=80)
    postal_code: str | None = Field(default=None, max_length=16)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class Geo(Body):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class Opening(Body):
    day: Weekday
    opens: HHMM
    closes: HHMM

    @model_validator(mode="after")
    def _ordered(self) -> Opening:
        if self.closes <= self.opens:
            raise ValueError("closes must be after opens")
        return self


class ProfileFields(Body):
    """Every editable profile field; which of them a caller may send depends on role."""

    display_name: str | None = Field(default=None, min_length=1, max_length=80)
    phone: Phone | None = None
    # doctors
    license_number: str | None = Field(default=None, pattern=r"^[A-Za-z0-9/.-]{3,40}$")
    specialty: Slug | None = None
    languages: list[Language] | None = Field(default=None, min_length=1, max_length=10)
    consultation_price: Price | None = None
    bio: str | None = Field(default=None, max_length=2000)
    clinic_uid: DocId | None = Field(
        default=None, description="The clinic a doctor works for (admins set it)"
    )
    # clinics and pharmacies
    name: ShortText | None = None
    address: Address | None = None
    geo: Geo | None = None
    opening_hours: list[Opening] | None = Field(default=None, max_length=21)
    services: list[ShortText] | None = Field(default=None, max_length=50)
    # pharmacies
    delivery: bool | None = None

    @field_validator("languages")
    @classmethod
    def _unique_languages(cls, v: list[str] | None) -> list[str] | None:
        return list(dict.fromkeys(v)) if v is not None else None


COMMON = frozenset({"display_name", "phone"})
DOCTOR = frozenset(
    {"license_number", "specialty", "languages", "consultation_price", "bio", "clinic_uid"}
)
PLACE = frozenset({"name", "address", "geo", "opening_hours", "services"})

FIELDS_BY_ROLE: dict[Role, frozenset[str]] = {
    Role.ADMIN: COMMON,
    Role.PATIENT: COMMON,
    Role.DOCTOR: COMMON | DOCTOR,
    Role.CLINIC: COMMON | PLACE,
    Role.PHARMACY: COMMON | PLACE | {"delivery"},
}

# Fields an approved provider may no longer change about itself (the admin still can).
LOCKED_ONCE_APPROVED: dict[Role, frozenset[str]] = {Role.DOCTOR: frozenset({"license_number"})}
# Fields only an admin sets (they tie one account to another).
ADMIN_ONLY = frozenset({"clinic_uid"})


class FieldRefusal(Exception):
    def __init__(self, kind: str, fields: list[str]) -> None:
        super().__init__(f"{kind}: {', '.join(fields)}")
        self.kind = kind  # "not_applicable" or "locked"
        self.fields = fields


def check_editable(role: Role, approved: bool, sent: set[str], *, by_admin: bool) -> None:
    """Raise FieldRefusal if `sent` holds a field this role has not, or may not change now."""
    foreign = sorted(sent - FIELDS_BY_ROLE[role])
    if foreign:
        raise FieldRefusal("not_applicable", foreign)
    if not by_admin:
        locked = sent & ADMIN_ONLY
        if approved:
            locked |= sent & LOCKED_ONCE_APPROVED.get(role, frozenset())
        if locked:
            raise FieldRefusal("locked", sorted(locked))


def to_document(fields: ProfileFields) -> dict[str, Any]:
    """The Firestore form of the fields that were sent (camelCase; money in minor units)."""
    out: dict[str, Any] = {}
    for name in fields.model_fields_set:
        value = getattr(fields, name)
        key = ProfileFields.model_fields[name].alias or name
        if name == "consultation_price" and value is not None:
            money = value.money()
            out[key] = {"currency": money.currency, "amountMinor": money.amount_minor}
        elif isinstance(value, list):
            out[key] = [v.model_dump(by_alias=True) if isinstance(v, Body) else v for v in value]
        elif isinstance(value, Body):
            out[key] = value.model_dump(by_alias=True, exclude_none=True)
        else:
            out[key] = value
    return out


def price_view(stored: dict[str, Any] | None) -> dict[str, str] | None:
    if not stored:
        return None
    money = Money(stored["currency"], int(stored["amountMinor"]))
    return {"currency": money.currency, "value": money.value}


# -- the public directory --------------------------------------------------------------

LISTED_ROLES = ROLES_NEEDING_APPROVAL
PUBLIC_FIELDS: dict[Role, tuple[str, ...]] = {
    Role.DOCTOR: ("displayName", "specialty", "languages", "bio"),
    Role.CLINIC: ("displayName", "name", "address", "geo", "openingHours", "services"),
    Role.PHARMACY: (
        "displayName",
        "name",
        "address",
        "geo",
        "openingHours",
        "services",
        "delivery",
    ),
}


def directory_entry(profile: dict[str, Any]) -> dict[str, Any] | None:
    """The public listing of an approved, enabled provider; None when it must not be listed.

    Built field by field from an allow-list, so nothing private can reach the directory.
    """
    raw_role = profile.get("role")
    if raw_role not in {r.value for r in LISTED_ROLES}:
        return None
    role = Role(raw_role)
    if role not in LISTED_ROLES or not profile.get("approved") or profile.get("disabled"):
        return None
    entry: dict[str, Any] = {"uid": profile["uid"], "kind": role.value}
    for key in PUBLIC_FIELDS[role]:
        if profile.get(key) is not None:
            entry[key] = profile[key]
    if role is Role.DOCTOR and profile.get("consultationPrice"):
        price = profile["consultationPrice"]
        entry["priceMinor"] = int(price["amountMinor"])
        entry["currency"] = price["currency"]
    address = profile.get("address") or {}
    if address.get("city"):
        entry["cityKey"] = address["city"].strip().lower()
    entry["listedAt"] = profile.get("approval", {}).get("at") or profile.get("createdAt")
    return entry


class _ProviderFields(View):
    """The provider fields shown both in a whole profile and in a public listing."""

    display_name: str | None = None
    specialty: str | None = None
    languages: list[str] | None = None
    bio: str | None = None
    consultation_price: dict[str, str] | None = None
    name: str | None = None
    address: dict[str, Any] | None = None
    geo: dict[str, float] | None = None
    opening_hours: list[dict[str, str]] | None = None
    services: list[str] | None = None
    delivery: bool | None = None


class PublicListing(_ProviderFields):
    uid: str
    kind: Role

    @classmethod
    def of(cls, entry: dict[str, Any]) -> PublicListing:
        price = None
        if "priceMinor" in entry:
            price = price_view({"currency": entry["currency"], "amountMinor": entry["priceMinor"]})
        return cls(
            uid=entry["uid"],
            kind=Role(entry["kind"]),
            display_name=entry.get("displayName"),
            specialty=entry.get("specialty"),
            languages=entry.get("languages"),
            bio=entry.get("bio"),
            consultation_price=price,
            name=entry.get("name"),
            address=entry.get("address"),
            geo=entry.get("geo"),
            opening_hours=entry.get("openingHours"),
            services=entry.get("services"),
            delivery=entry.get("delivery"),
        )


class Approval(View):
    status: str
    reason: str | None = None
    at: Any = None
    by: str | None = None


class ProfileView(_ProviderFields):
    """A whole profile: for its owner and for admins only."""

    uid: str
    email: str | None = None
    phone: str | None = None
    role: Role
    approved: bool
    approval: Approval | None = None
    disabled: bool = False
    created_at: Any = None
    updated_at: Any = None
    license_number: str | None = None
    clinic_uid: str | None = None

    @classmethod
    def of(cls, doc: dict[str, Any]) -> ProfileView:
        data = {k: v for k, v in doc.items() if not k.startswith("_") and k != "emailLower"}
        data["consultationPrice"] = price_view(doc.get("consultationPrice"))
        return cls.model_validate(data)
