"""Which composite index a Firestore query needs, and a recorder of the queries a run makes.

The Firestore emulator answers any query without an index; production refuses one whose
composite index is missing. The test run records the shape of every query the backend makes
(in the gateway and in the tests' own process) and checks each against firestore.indexes.json.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "ALODOKTOR_QUERY_LOG"
EQUALITY_OPS = {"EQUAL", "IN", "IS_NULL", "IS_NAN"}
ARRAY_OPS = {"ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY"}


@dataclass(frozen=True)
class QueryShape:
    collection: str
    equality: frozenset[str]
    array: str | None
    order: tuple[tuple[str, str], ...]  # (field, ASCENDING|DESCENDING), __name__ excluded

    def needs_composite(self) -> bool:
        fields = set(self.equality) | {f for f, _ in self.order}
        if self.array:
            fields.add(self.array)
        if len(fields) <= 1:
            return False
        # Equality-only queries are served by merging single-field indexes.
        return bool(self.order or self.array)

    def index_json(self) -> dict[str, Any]:
        fields: list[dict[str, str]] = [
            {"fieldPath": f, "order": "ASCENDING"} for f in sorted(self.equality)
        ]
        if self.array:
            fields.append({"fieldPath": self.array, "arrayConfig": "CONTAINS"})
        fields += [{"fieldPath": f, "order": d} for f, d in self.order]
        return {"collectionGroup": self.collection, "queryScope": "COLLECTION", "fields": fields}


def shape(structured: dict[str, Any]) -> QueryShape:
    """The shape of a StructuredQuery given as its JSON (protobuf field names)."""
    equality: set[str] = set()
    ranges: list[str] = []
    array = None
    for flt in _field_filters(structured.get("where") or {}):
        path, op = flt["field"]["fieldPath"], flt["op"]
        if op in EQUALITY_OPS:
            equality.add(path)
        elif op in ARRAY_OPS:
            array = path
        else:
            ranges.append(path)
    order = [
        (o["field"]["fieldPath"], o.get("direction", "ASCENDING"))
        for o in structured.get("orderBy", [])
        if o["field"]["fieldPath"] != "__name__"
    ]
    if not order and ranges:
        order = [(ranges[0], "ASCENDING")]  # Firestore orders by the inequality field first
    return QueryShape(
        collection=structured["from"][0]["collectionId"],
        equality=frozenset(equality),
        array=array,
        order=tuple(order),
    )


def _field_filters(where: dict[str, Any]) -> list[dict[str, Any]]:
    if "fieldFilter" in where:
        return [where["fieldFilter"]]
    if "unaryFilter" in where:
        u = where["unaryFilter"]
        return [{"field": u["field"], "op": u["op"]}]
    if "compositeFilter" in where:
        return [f for sub in where["compositeFilter"]["filters"] for f in _field_filters(sub)]
    return []


def covered(query: QueryShape, indexes: list[dict[str, Any]]) -> bool:
    if not query.needs_composite():
        return True
    for index in indexes:
        if index["collectionGroup"] != query.collection:
            continue
        fields = [f for f in index["fields"] if f["fieldPath"] != "__name__"]
        arrays = [f["fieldPath"] for f in fields if "arrayConfig" in f]
        ordered = [(f["fieldPath"], f["order"]) for f in fields if "order" in f]
        n = len(query.order)
        tail = ordered[len(ordered) - n :] if n else []
        head = ordered[: len(ordered) - n]
        if (
            tail == list(query.order)
            and arrays == ([query.array] if query.array else [])
            and {f for f, _ in head} == set(query.equality)
        ):
            return True
    return False


def load_indexes(path: Path) -> list[dict[str, Any]]:
    indexes: list[dict[str, Any]] = json.loads(path.read_text())["indexes"]
    return indexes


# -- recording ---------------------------------------------------------------------------

_lock = threading.Lock()


def install(log_path: str | None = None) -> None:
    """Append the JSON of every query this process runs to `log_path` (or $ALODOKTOR_QUERY_LOG)."""
    target = log_path or os.environ.get(ENV)
    if not target:
        return
    from google.cloud.firestore_v1 import base_query
    from google.protobuf import json_format

    original = base_query.BaseQuery._to_protobuf
    if getattr(original, "_recording", False):
        return

    def recording(self: Any) -> Any:
        pb = original(self)
        line = json.dumps(json_format.MessageToDict(pb._pb)) + "\n"
        with _lock, open(target, "a") as out:
            out.write(line)
        return pb

    recording._recording = True  # type: ignore[attr-defined]
    base_query.BaseQuery._to_protobuf = recording  # type: ignore[method-assign]
