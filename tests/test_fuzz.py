"""Property-based fuzzing of every operation of the API with schemathesis, on the local stack.

Each operation of the OpenAPI document the gateway serves is called signed in as one role the
policy allows it (the roles rotate over the operations; public ones unauthenticated), by
accounts and resources made for the fuzz alone. Per operation: 25 requests schemathesis draws
from the documented parameters and bodies, valid and deliberately invalid, whose path ids are
now and then swapped for real ids of the fuzz's own resources (so handlers run past their
lookups) or for hostile ids (`a/b`, a newline, `__x__`, 1600 characters...), which also go into
the body's id fields; then one request for each hostile id in the path, and, if it takes a body,
one whose JSON nests 20000 levels deep; and for every integer it carries (query or body), values
past what it allows and past what Firestore stores (int64): each integer query parameter alone
at each of them, and drawn valid requests with every integer swapped for one. Every answer must
be documented: no 5xx, a documented status code and content type, a body that matches its
schema. Bounded by example counts, never by time per request; reproducible (a fixed seed).

Run it alone: `make pytest PYTEST_ARGS='-k fuzz'`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.web import policy
from tests.fuzz_support import Target, World, plan, roles_used

# The document fuzzed, as paths on the gateway: the merged one. To fuzz each function's own
# document instead (base URL the gateway's too: their paths carry the function's name), this is
# the one line to change:
# DOCUMENTS = tuple(f"/{fn}/openapi.json" for fn in policy.FUNCTIONS)
DOCUMENTS: tuple[str, ...] = ("/openapi.json",)

# Bounded by example counts, never by time: a slow or busy machine takes longer, and still
# sends every operation all of its examples.
EXAMPLES_PER_OPERATION = 25
SEED = 20240611  # a fixed seed: every run draws the same requests
# The checks of every answer. Not positive_data_acceptance: the documents do not carry every
# rule the models enforce (an e-mail's form, a time zone's name, cross-field rules), so valid
# per the document is not always valid.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
HOSTILE_IDS = (
    "a/b",
    "a\nb",
    "/",
    "a%2Fb",
    "__x__",
    "..",
    "\x00",
    " ",
    "é",
    "x" * 1600,
    "99999999999999999999",  # a number in a path (a checkpoint's) past int64
)
# Integers past Firestore's int64, either way, and far past it.
BIG_INTEGERS = (2**63, -(2**63) - 1, 10**20, -(10**20), 10**40)
BIG_INTEGER_EXAMPLES = 5
NESTING = 20000  # a body of 40 kB, within the body limit
TARGETS = plan()
Operation = schemathesis.APIOperation[Any, Any, Any, Any]


@pytest.fixture(scope="module")
def fuzz_world(stack: Any) -> World:
    return World.make(stack, TARGETS)


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {
                # The fuzzer sends its own Authorization header, never a drawn cookie or token.
                "with-security-parameters": False,
            },
        }
    )


@pytest.fixture(scope="module")
def fuzz_operations(stack: Any) -> dict[tuple[str, str], Operation]:
    """Every documented operation, by (METHOD, path), from the documents the gateway serves."""
    found: dict[tuple[str, str], Operation] = {}
    for document in DOCUMENTS:
        schema = schemathesis.openapi.from_url(stack.gateway_url + document, config=_config())
        for path, item in schema.raw_schema["paths"].items():
            for method in item:
                found[(method.upper(), path)] = schema[path][method.upper()]
    return found


def test_every_operation_is_fuzzed_and_every_role_used(
    fuzz_operations: dict[tuple[str, str], Any],
) -> None:
    assert set(fuzz_operations) == set(TARGETS)
    every_role = {r for rule in policy.POLICY.values() for r in rule.roles}
    assert roles_used(TARGETS.values()) == every_role


def _is_id_field(name: str) -> bool:
    return name != "idToken" and (name == "id" or name.endswith(("Id", "Uid")))


@st.composite
def _requests(draw: st.DrawFn, operation: Operation, known: list[str]) -> Any:
    """A valid or invalid request as the document describes it; then, as often as not, a real
    or a hostile id in its path, or hostile ids in its body's id fields."""
    has_input = bool(list(operation.iter_parameters())) or bool(operation.body)
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_input else [])
    case = draw(st.one_of([operation.as_strategy(mode) for mode in modes]))
    how = draw(st.sampled_from(("as drawn", "as drawn", "known id", "hostile id")))
    names = [p.name for p in operation.path_parameters]
    if how == "known id" and names and known:
        case.path_parameters = {**case.path_parameters, names[0]: draw(st.sampled_from(known))}
    elif how == "hostile id":
        hostile = draw(st.sampled_from(HOSTILE_IDS))
        if names:
            case.path_parameters = {**case.path_parameters, names[0]: hostile}
        if isinstance(case.body, dict):
            case.body = {k: hostile if _is_id_field(k) else v for k, v in case.body.items()}
    # An empty or all-slash path value is not a value of this operation's path: the client
    # renders it as another operation's URL (`/appointments/` is the list). The server's
    # answer to such paths is held by test_hostile_input's empty-id and encoded-slash tests.
    assume(all(str(v).strip("/") for v in case.path_parameters.values()))
    return case


def _with_big_integers(value: Any, big: Callable[[], int]) -> Any:
    """The value with every integer in it (nested in objects and lists) swapped for big()."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return big()
    if isinstance(value, dict):
        return {k: _with_big_integers(v, big) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_big_integers(v, big) for v in value]
    return value


def _integer_bounds(schema: dict[str, Any]) -> list[int] | None:
    """Values just past an integer parameter's documented bounds, and past int64; None when
    the parameter is not an integer."""
    kinds = [schema, *schema.get("anyOf", [])]
    integer = next((k for k in kinds if k.get("type") == "integer"), None)
    if integer is None:
        return None
    past = [integer["maximum"] + 1] if "maximum" in integer else []
    past += [integer["minimum"] - 1] if "minimum" in integer else []
    return past + list(BIG_INTEGERS)


def _integer_queries(operation: Operation, known: list[str]) -> list[schemathesis.Case[Any]]:
    """For each integer query parameter, one request per value past its bounds, alone."""
    names = [p.name for p in operation.path_parameters]
    path = {n: (known or ["x"])[0] for n in names}
    cases = []
    for parameter in operation.query:
        for value in _integer_bounds(parameter.definition.get("schema", {})) or []:
            case = operation.Case(path_parameters=path, query={parameter.name: str(value)})
            if operation.body:
                case.body, case.media_type = {}, "application/json"
            cases.append(case)
    return cases


def _carries_integers(operation: Operation) -> bool:
    """Whether a request of it may hold an integer: in a body (its models nest), or a query."""
    query = (_integer_bounds(p.definition.get("schema", {})) for p in operation.query)
    return bool(operation.body) or any(bounds is not None for bounds in query)


def _sent(case: schemathesis.Case[Any], role: object) -> str:
    """Exactly what was sent: the curl line schemathesis prints drops control characters."""
    body = "no body" if isinstance(case.body, NotSet) else f"body={case.body!r}"
    return (
        f"sent as {role or 'nobody'}: {case.method} {case.path} path={case.path_parameters!r} "
        f"query={case.query!r} {body}"
    )


def _hostile_paths(operation: Operation) -> list[schemathesis.Case[Any]]:
    """One request for each hostile id in the path, with an empty body if it takes one."""
    names = [p.name for p in operation.path_parameters]
    cases = [
        operation.Case(path_parameters={n: hostile for n in names})
        for hostile in HOSTILE_IDS
        # A client resolves "." and ".." before sending, and renders "" and "/" as another
        # operation's path (see _requests).
        if names and hostile not in (".", "..", "/")
    ]
    for case in cases:
        if operation.body:
            case.body, case.media_type = {}, "application/json"
    return cases


def _nested_body(
    operation: Operation, known: list[str], world: World, headers: dict[str, str]
) -> None:
    """A JSON body nested NESTING levels deep must get a documented answer, not a 5xx."""
    names = [p.name for p in operation.path_parameters]
    case = operation.Case(path_parameters={n: (known or ["x"])[0] for n in names})
    response = requests.request(
        operation.method.upper(),
        world.base_url + case.formatted_path,
        data="[" * NESTING + "]" * NESTING,
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )
    try:
        case.validate_response(response, checks=CHECKS)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is the latter
        raise AssertionError(
            f"{operation.method.upper()} {case.formatted_path} with the JSON body "
            f"'[[[...]]]' nested {NESTING} deep answered {response.status_code}: "
            f"{response.text[:300]}\n{exc}"
        ) from None


@pytest.mark.parametrize("target", TARGETS.values(), ids=lambda t: t.label)
def test_fuzz(
    target: Target,
    fuzz_world: World,
    fuzz_operations: dict[tuple[str, str], Operation],
    sim: Any,  # PayPal's contract is checked too: no call of ours to PayPal may break it
) -> None:
    operation = fuzz_operations[(target.method, target.path)]
    names = [p.name for p in operation.path_parameters]
    known = fuzz_world.known_path_values(target, names[0]) if len(names) == 1 else []
    headers = fuzz_world.headers(target)
    session = requests.Session()

    def send(case: schemathesis.Case[Any]) -> None:
        sent = _sent(case, target.role)  # before the call, which percent-encodes the path
        try:
            case.call_and_validate(
                base_url=fuzz_world.base_url, session=session, headers=headers, checks=CHECKS
            )
        except BaseExceptionGroup as exc:  # schemathesis' FailureGroup
            exc.add_note(sent)
            raise

    @seed(SEED)
    @given(case=_requests(operation, known))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    def fuzz(case: schemathesis.Case[Any]) -> None:
        # A client resolves `.` and `..` segments before sending, so the server never sees them.
        assume(not any(v in (".", "..") for v in (case.path_parameters or {}).values()))
        send(case)

    @seed(SEED)
    @given(case=operation.as_strategy(GenerationMode.POSITIVE), data=st.data())
    @settings(
        max_examples=BIG_INTEGER_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    def big_integers(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        """A valid request with every integer it carries past int64."""
        big = functools.partial(data.draw, st.sampled_from(BIG_INTEGERS))
        if known and names:
            case.path_parameters = {**case.path_parameters, names[0]: known[0]}
        if isinstance(case.query, dict):
            case.query = _with_big_integers(case.query, big)
        if not isinstance(case.body, NotSet):
            case.body = _with_big_integers(case.body, big)
        send(case)

    failures: list[BaseException] = []
    probes: list[Callable[[], None]] = [fuzz]
    probes += [functools.partial(send, case) for case in _integer_queries(operation, known)]
    if _carries_integers(operation):
        probes.append(big_integers)
    probes += [functools.partial(send, case) for case in _hostile_paths(operation)]
    if operation.body:
        probes.append(functools.partial(_nested_body, operation, known, fuzz_world, headers))
    for probe in probes:
        try:
            probe()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise BaseExceptionGroup(f"{target.label}: {len(failures)} failing probes", failures)
