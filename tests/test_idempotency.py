"""Idempotency keys alone: what a key is, and what makes two keys the same."""

from __future__ import annotations

import pytest

from shared.platform import idempotency
from shared.platform.errors import BadRequest


def _key(value: str = "k-1", *, caller: str = "p1", scope: str = "s", request=None):
    return idempotency.from_header(value, scope=scope, caller=caller, request=request or {"a": 1})


def test_no_header_means_no_key():
    assert idempotency.from_header(None, scope="s", caller="p1", request={}) is None


@pytest.mark.parametrize("value", ["", "with space", "x" * 256, "tab\there", "é"])
def test_malformed_keys_are_refused(value):
    with pytest.raises(BadRequest) as caught:
        _key(value)
    assert caught.value.code == "invalid_idempotency_key"


def test_a_key_belongs_to_its_caller_and_scope():
    same = _key()
    assert same.doc_id == _key().doc_id
    assert same.doc_id != _key(caller="p2").doc_id
    assert same.doc_id != _key(scope="payments.create").doc_id
    assert same.doc_id != _key("k-2").doc_id


def test_the_fingerprint_is_the_request_not_its_key_order():
    assert (
        _key(request={"a": 1, "b": [1, 2]}).fingerprint
        == _key(request={"b": [1, 2], "a": 1}).fingerprint
    )
    assert _key(request={"a": 1}).fingerprint != _key(request={"a": 2}).fingerprint
