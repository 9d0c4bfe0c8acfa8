"""Integers a request carries past what they count, or past what Firestore stores (int64): a
400 problem naming the field; a number past the end of a range: an empty answer or a 404. Never
a 500. (The fuzzer sends such values to every integer parameter of every route; these are the
cases a reader of the audit log meets first.)"""

from __future__ import annotations

from typing import Any

from shared.platform.context import Service
from tests.support import Api, eventually, problem, service_api

PAST_INT64 = "99999999999999999999"


def _fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


def test_a_checkpoint_number_past_int64_is_refused_by_name(admin: Api) -> None:
    body = problem(admin.get("/audit/verify", params={"from": PAST_INT64}), 400)
    assert _fields(body) == {"from"}
    body = problem(admin.get("/audit/verify", params={"from": "-1", "limit": PAST_INT64}), 400)
    assert _fields(body) == {"from", "limit"}


def test_page_sizes_and_chunk_numbers_past_int64_are_refused(admin: Api) -> None:
    for path, name in (
        ("/audit", "limit"),
        ("/audit/checkpoints", "limit"),
        ("/audit/checkpoints/1/verify", "chunk"),
        ("/audit/checkpoints/1/verify", "chunks"),
        ("/payments/ledger", "limit"),
        ("/users/directory/doctors", "limit"),
    ):
        body = problem(admin.get(path, params={name: PAST_INT64}), 400)
        assert _fields(body) == {name}, (path, body)


def test_a_checkpoint_number_past_any_checkpoint_is_not_found(admin: Api) -> None:
    problem(admin.get(f"/audit/checkpoints/{PAST_INT64}"), 404)
    problem(admin.get(f"/audit/checkpoints/{PAST_INT64}/verify"), 404)
    assert admin.get("/audit/verify", params={"from": 999_999_999_999}).json()["count"] == 0


def test_a_chunk_past_the_checkpoints_range_is_an_empty_answer(stack: Any, admin: Api) -> None:
    sealer = service_api(stack, Service.SCHEDULER, "audit")

    def newest() -> list[dict[str, Any]]:
        assert sealer.post("/audit/seal").status_code == 200
        return list(admin.get("/audit/checkpoints", params={"limit": 1}).json()["items"])

    checkpoint = eventually(newest, bool, "a checkpoint")[0]
    n, chunks = checkpoint["n"], checkpoint["chunks"]
    answer = admin.get(f"/audit/checkpoints/{n}/verify", params={"chunk": chunks + 3027})
    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert verdict["checkedChunks"] == 0
    assert verdict["entries"] == 0
    assert verdict["nextChunk"] is None
    # The range itself still verifies from its start.
    whole = admin.get(f"/audit/checkpoints/{n}/verify").json()
    assert whole["ok"]
    assert whole["checkedChunks"] >= 1
