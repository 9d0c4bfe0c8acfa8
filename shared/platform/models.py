"""Base models: request bodies refuse unknown fields; responses speak camelCase."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from shared.platform import stored
from shared.platform.errors import ValidationFailed
from shared.platform.fields import Int


class Body(BaseModel):
    """A request body or query: camelCase keys only, nothing unknown, strings bounded. Ids,
    dates, date-times and currencies are the types of shared/platform/fields.py."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        str_max_length=4096,
        frozen=True,
        defer_build=True,
    )


class View(BaseModel):
    """A response: built from Python names, serialized with camelCase names.

    A view is built from stored data: one that does not validate means a stored record no
    longer parses, which answers 409 `record_unreadable` (logged), never a 500."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        serialize_by_alias=True,
        defer_build=True,
    )

    @model_validator(mode="wrap")
    @classmethod
    def _from_stored_data(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        with stored.reading(f"shown as {cls.__name__}"):
            return handler(data)


class SweepQuery(Body):
    """How much one call of a sweep (a scheduler's job) may take on."""

    limit: Int = Field(default=100, ge=1, le=500)


class Page(Body):
    limit: Int = Field(default=20, ge=1, le=100)
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
