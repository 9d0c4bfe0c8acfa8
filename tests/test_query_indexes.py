"""Every Firestore query the backend ran during this test run has its composite index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dev.query_indexes import QueryShape, covered, load_indexes, shape

ROOT = Path(__file__).resolve().parent.parent


def _q(collection, equality=(), array=None, order=()):
    return QueryShape(collection, frozenset(equality), array, tuple(order))


def test_equality_only_queries_need_no_composite_index():
    assert covered(_q("users", ["role", "approved"]), [])
    assert covered(_q("users", order=[("createdAt", "DESCENDING")]), [])


def test_the_matcher_needs_the_exact_order_and_fields():
    query = _q("users", ["role"], order=[("createdAt", "DESCENDING")])
    right = {
        "collectionGroup": "users",
        "fields": [
            {"fieldPath": "role", "order": "ASCENDING"},
            {"fieldPath": "createdAt", "order": "DESCENDING"},
        ],
    }
    wrong_direction = {
        "collectionGroup": "users",
        "fields": [
            {"fieldPath": "role", "order": "ASCENDING"},
            {"fieldPath": "createdAt", "order": "ASCENDING"},
        ],
    }
    assert not covered(query, [])
    assert not covered(query, [wrong_direction])
    assert covered(query, [right])


def test_shape_reads_a_structured_query():
    structured = {
        "from": [{"collectionId": "directory"}],
        "where": {
            "compositeFilter": {
                "op": "AND",
                "filters": [
                    {"fieldFilter": {"field": {"fieldPath": "kind"}, "op": "EQUAL", "value": {}}},
                    {
                        "fieldFilter": {
                            "field": {"fieldPath": "languages"},
                            "op": "ARRAY_CONTAINS",
                            "value": {},
                        }
                    },
                    {
                        "fieldFilter": {
                            "field": {"fieldPath": "priceMinor"},
                            "op": "GREATER_THAN_OR_EQUAL",
                            "value": {},
                        }
                    },
                ],
            }
        },
        "orderBy": [
            {"field": {"fieldPath": "priceMinor"}, "direction": "ASCENDING"},
            {"field": {"fieldPath": "__name__"}, "direction": "ASCENDING"},
        ],
    }
    assert shape(structured) == _q(
        "directory", ["kind"], "languages", [("priceMinor", "ASCENDING")]
    )


@pytest.mark.after_all
def test_every_query_run_has_an_index(query_dir):
    # Every process of the run recorded its stack's queries here (tests/conftest.py).
    logs = sorted(query_dir.glob("queries-*.jsonl"))
    assert logs, "no query was recorded: is the recorder installed?"
    shapes = {
        shape(json.loads(line)) for log in logs for line in log.read_text().splitlines() if line
    }
    indexes = load_indexes(ROOT / "firestore.indexes.json")
    missing = [s for s in shapes if not covered(s, indexes)]
    assert not missing, "add to firestore.indexes.json:\n" + json.dumps(
        [s.index_json() for s in missing], indent=2
    )
