"""Every request model of every function takes ids, integers, dates and currencies only as the
types of shared/platform/fields.py, wherever they sit (path, query, body, nested, in lists).

A bare `str` id lets `a/b` or `..` reach Firestore (a 500); a pattern-only date string lets
2030-02-30 be stored (and every later read of it fail); a bare `date` escapes the 2000-2099
rule; an integer bounded on one side only lets 99999999999999999999 reach a Firestore query (a
500). The walk below finds such a field by its name or its type, so a new model cannot bring
one back.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import annotated_types
import pydantic
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from shared.platform import fields
from tests.functions_index import load
from tools.bundle import function_names

DATE_TYPES = (
    date,
    datetime,
    pydantic.AwareDatetime,
    pydantic.NaiveDatetime,
    pydantic.PastDate,
    pydantic.FutureDate,
    pydantic.PastDatetime,
    pydantic.FutureDatetime,
)
ID_NAME = re.compile(r"(^|_)(id|uid|ids|uids)$")
DATE_NAME = re.compile(r"(^|_)(date|dates|day|days)$|_at$|^(since|until|from_|to)$")
CURRENCY_NAME = re.compile(r"(^|_)currency$")


def _request_models() -> dict[str, tuple[type[BaseModel], dict[str, Any]]]:
    """Every body and query model, with the namespace its annotations are written in."""
    found: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {}
    for name in function_names():
        module = load(name)
        api = getattr(module, "api", None)
        for route in api.routes.values() if api is not None else ():
            for model in (route.body, route.query):
                if model is not None:
                    key = f"{name} {route.method} {route.path} {model.__name__}"
                    found[key] = (model, vars(module))
    return found


def _hints(model: type[BaseModel], namespace: dict[str, Any]) -> dict[str, Any]:
    # Function modules are loaded outside sys.modules, so pydantic may leave their
    # annotations as forward references: resolve them here, Annotated metadata kept, each
    # class's in the module it was written in.
    hints: dict[str, Any] = {}
    for klass in reversed(model.__mro__):
        if not isinstance(klass, type) or not issubclass(klass, BaseModel) or klass is BaseModel:
            continue
        own = sys.modules.get(klass.__module__)
        globalns = {**namespace, **(vars(own) if own is not None else {})}
        annotations = {k: v for k, v in vars(klass).get("__annotations__", {}).items()}
        for name, annotation in annotations.items():
            if name in model.model_fields:
                hints[name] = typing.get_type_hints(
                    _Holder.of(name, annotation), globalns=globalns, include_extras=True
                )[name]
    return hints


class _Holder:
    """A bare class carrying one annotation, for typing.get_type_hints to resolve."""

    @staticmethod
    def of(name: str, annotation: Any) -> type:
        return type("_Holder", (), {"__annotations__": {name: annotation}})


def _kind(metadata: list[Any]) -> str | None:
    """Which of the types in shared/platform/fields.py these Annotated metadata make."""
    kinds = [m.name for m in metadata if isinstance(m, fields.Kind)]
    return kinds[-1] if kinds else None


def _leaves(annotation: Any, metadata: list[Any]) -> Iterator[tuple[Any, list[Any]]]:
    """The scalar types inside an annotation (through Optional, unions, lists, dict values),
    each with the Annotated metadata that applies to it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        yield from _leaves(inner, metadata + list(extra))
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                yield from _leaves(arg, metadata)
    elif origin in (list, set, frozenset, tuple):
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                yield from _leaves(arg, [])
    elif origin is dict:
        yield from _leaves(typing.get_args(annotation)[1], [])
    else:
        yield annotation, metadata


def _int_defect(metadata: list[Any]) -> str | None:
    """Why an integer field is not declared as fields.Int with both bounds inside int64."""
    # A Field() inside Annotated (a list's items) holds its constraints in its own metadata.
    metadata = [c for m in metadata for c in (m.metadata if isinstance(m, FieldInfo) else [m])]
    if _kind(metadata) != "int":
        return "a bare int (use fields.Int with ge= and le=)"
    lows = [m.ge for m in metadata if isinstance(m, annotated_types.Ge)]
    highs = [m.le for m in metadata if isinstance(m, annotated_types.Le)]
    if not lows or not highs:
        return "an int bounded on one side only (give both ge= and le=)"
    if max(lows) < fields.INT64_MIN or min(highs) > fields.INT64_MAX:
        return "an int bounded past what Firestore stores (int64)"
    return None


def defects(
    model: type[BaseModel], namespace: dict[str, Any] | None = None, where: str = ""
) -> list[str]:
    found: list[str] = []
    hints = _hints(model, namespace or {})
    for name, info in model.model_fields.items():
        place = f"{where}{model.__name__}.{name}"
        for leaf, metadata in _leaves(hints[name], list(info.metadata)):
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                found += defects(leaf, namespace, f"{place} -> ")
                continue
            kind = _kind(metadata)
            if leaf is int and (why := _int_defect(metadata)):
                found.append(f"{place}: {why}")
            elif leaf in DATE_TYPES and kind not in ("day", "instant"):
                found.append(f"{place}: a bare {leaf.__name__} (use fields.Day or fields.Instant)")
            elif leaf is str and ID_NAME.search(name) and kind != "doc_id":
                found.append(f"{place}: an id as a bare str (use fields.DocId)")
            elif leaf is str and DATE_NAME.search(name) and kind is None:
                found.append(f"{place}: a date as a bare str (use fields.Day or fields.Instant)")
            elif leaf is str and CURRENCY_NAME.search(name) and kind != "currency":
                found.append(f"{place}: a currency as a bare str (use fields.Currency)")
    return found


def test_the_walk_finds_every_kind_of_defect() -> None:
    class Nested(BaseModel):
        clinic_uid: str
        when: date

    class Bad(BaseModel):
        order_id: str | None
        items: list[Nested]
        start_date: str
        currency: str
        limit: int = pydantic.Field(ge=1, le=10)
        cursor: fields.Int = pydantic.Field(ge=0)
        huge: fields.Int = pydantic.Field(ge=0, le=2**64)

    class Good(BaseModel):
        order_id: fields.DocId | None
        uids: list[fields.DocId]
        day: fields.Day
        at: fields.Instant
        currency: fields.Currency
        limit: fields.Int = pydantic.Field(default=20, ge=1, le=100)
        sizes: list[typing.Annotated[fields.Int, pydantic.Field(ge=0, le=7)]] | None = None

    namespace = {"Nested": Nested}
    assert len(defects(Bad, namespace)) == 8, defects(Bad, namespace)
    assert defects(Good, namespace) == []


def test_request_models_were_found() -> None:
    models = _request_models()
    assert len(models) > 20
    assert any("session POST" in key for key in models)


@pytest.mark.parametrize("key", sorted(_request_models()))
def test_request_model_uses_the_shared_value_types(key: str) -> None:
    model, namespace = _request_models()[key]
    assert defects(model, namespace) == []
