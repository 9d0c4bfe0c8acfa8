"""Base models: request bodies refuse unknown fields; responses speak camelCase."""

from __future__ import annotations

from datetime import date
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from shared.platform.errors import ValidationFailed

MIN_YEAR, MAX_YEAR = 2000, 2099


class Body(BaseModel):
    """A request body or query: camelCase keys only, nothing unknown, strings bounded."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        str_max_length=4096,
        frozen=True,
    )

    @model_validator(mode="after")
    def _dates_in_range(self) -> Body:
        # Dates far from now are never meaningful here, and year-9999 arithmetic overflows.
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, date) and not MIN_YEAR <= value.year <= MAX_YEAR:
                raise ValueError(
                    f"{info.alias or name}: dates are between {MIN_YEAR} and {MAX_YEAR}"
                )
        return self


class View(BaseModel):
    """A response: built from Python names, serialized with camelCase names."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        serialize_by_alias=True,
    )


class SweepQuery(Body):
    """How much one call of a sweep (a scheduler's job) may take on."""

    limit: int = Field(default=100, ge=1, le=500)


class Page(Body):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=512)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None
