"""Health data in answers: marked where an answer is modelled, found in every answer sent.

A view (a response model) declares each field that holds health data as `Health[...]`, and the
field that holds the id of the document it shows as `Annotated[str, ResourceId("collection")]`:

    class PrescriptionOut(View):
        id: Annotated[str, ResourceId("prescriptions")]
        items: Health[list[dict[str, Any]]]
        notes: Health[str | None]

The request pipeline (shared.web.http) asks `disclosed(answer)` which documents an answer
shows health data of, whatever the route and its method, and writes their `read` entries
before it sends a byte (or refuses to answer). No handler records a read itself, so none can
forget to; tests/test_health_disclosure.py fails on a view whose field looks like health data
and is not marked. Pure: models and values only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel


@dataclass(frozen=True)
class HealthData:
    """Marks a view's field as health data (see `Health`)."""


HEALTH = HealthData()

T = TypeVar("T")

Health = Annotated[T, HEALTH]
"""A view's field that holds health data: `notes: Health[str | None]`. An answer that carries
a value in one (anything but None or empty) has its document's `read` entry written first."""


@dataclass(frozen=True)
class ResourceId:
    """Marks the field of a view that holds the id of the document it shows, in `collection`:
    the document a `read` entry names when the view's health data is handed out."""

    collection: str


class UnnamedResource(TypeError):
    """A view holds health data but does not say which document it shows."""


@dataclass(frozen=True)
class Plan:
    """What one view class discloses: its health fields, and where its document's id is."""

    health: tuple[str, ...]
    collection: str | None = None
    id_field: str | None = None


@functools.cache
def plan(model: type[BaseModel]) -> Plan:
    """The health fields of a (fully defined) view class and the field naming its document."""
    health = tuple(n for n, f in model.model_fields.items() if HEALTH in f.metadata)
    ids = [
        (name, mark.collection)
        for name, info in model.model_fields.items()
        for mark in info.metadata
        if isinstance(mark, ResourceId)
    ]
    if len(ids) > 1:
        raise UnnamedResource(f"{model.__name__} names more than one document: {ids}")
    if health and not ids:
        raise UnnamedResource(
            f"{model.__name__} holds health data ({', '.join(health)}) but does not say which "
            "document it shows: mark its id field ResourceId(<collection>)"
        )
    if not ids:
        return Plan(health)
    (id_field, collection) = ids[0]
    return Plan(health, collection, id_field)


def _present(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, str | list | tuple | dict) and len(value) == 0)


def _shown(value: Any) -> Iterator[str]:
    if isinstance(value, BaseModel):
        kind = plan(type(value))
        if kind.health and any(_present(getattr(value, name)) for name in kind.health):
            yield f"{kind.collection}/{getattr(value, str(kind.id_field))}"
        for name in type(value).model_fields:
            yield from _shown(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _shown(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _shown(item)


def disclosed(answer: Any) -> list[str]:
    """The documents (`collection/id`) whose health data this answer carries, each once, in
    the order they appear: views nested in views and in lists included."""
    return list(dict.fromkeys(_shown(answer)))
