"""Health data leaves only with its `read` entry: views mark it, the pipeline logs it.

Every view (response model) of every route marks the fields that hold health data
(`shared.platform.disclosure.Health`) and names the document it shows (`ResourceId`); the walk
below fails on a field that looks like health data and is not marked. The request pipeline
writes the read entries of whatever a response carries before it sends it, for any route and
method, and answers 503 with nothing of it when it cannot (tested here in-process, and against
the stack with the function served as functions-framework serves it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import flask
import pytest
from pydantic import BaseModel

from shared.audit import rules as audit_log
from shared.audit import service as audit
from shared.platform import disclosure, models, settings
from shared.platform.context import Role
from shared.platform.disclosure import Health, ResourceId
from shared.web import policy
from shared.web.http import Call, Function, Reply
from tests.functions_index import http_routes, load
from tests.test_request_models import _hints, _leaves
from tools.bundle import FUNCTIONS_DIR, target_of

# What a field holding health data is called: the audit log's one list (camelCase there) and
# what else a clinical record names. A name matches when it is one of these or one of its
# `_`-separated words is.
HEALTH_WORDS = frozenset(
    {re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() for name in audit_log.HEALTH_FIELDS}
    | {
        "medication",
        "dosage",
        "dose",
        "diagnoses",
        "symptom",
        "allergy",
        "condition",
        "conditions",
        "complaint",
        "treatment",
        "prescription",
        "prescriptions",
    }
)

# Fields named like health data that hold none, each with what it holds instead.
NOT_HEALTH = {
    "Acknowledgement.note": "an admin's account of what was done about an audit finding",
}


def looks_like_health(name: str) -> bool:
    return name in HEALTH_WORDS or any(word in HEALTH_WORDS for word in name.split("_"))


def _marked(annotation: Any) -> bool:
    """Marked on the field itself (where the pipeline reads it), not inside its type."""
    return typing.get_origin(annotation) is Annotated and any(
        isinstance(m, disclosure.HealthData) for m in typing.get_args(annotation)[1:]
    )


def _names_its_document(hints: dict[str, Any]) -> bool:
    return any(
        isinstance(m, ResourceId)
        for h in hints.values()
        if typing.get_origin(h) is Annotated
        for m in typing.get_args(h)[1:]
    )


def _nested(annotation: Any) -> Iterator[Any]:
    """The leaf types of an annotation, Annotated metadata aside (markers inside a type
    included, as leaves of their own)."""
    for leaf, metadata in _leaves(annotation, []):
        yield leaf
        yield from (m for m in metadata if isinstance(m, disclosure.HealthData))


def health_defects(
    model: type[BaseModel],
    namespace: dict[str, Any],
    where: str = "",
    seen: set[type] | None = None,
) -> list[str]:
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    found: list[str] = []
    hints = _hints(model, namespace)
    for name in model.model_fields:
        place = f"{where}{model.__name__}.{name}"
        leaves = list(_nested(hints[name]))
        views = [leaf for leaf in leaves if isinstance(leaf, type) and issubclass(leaf, BaseModel)]
        for view in views:
            found += health_defects(view, namespace, f"{place} -> ", seen)
        marked = _marked(hints[name])
        if not marked and any(isinstance(leaf, disclosure.HealthData) for leaf in leaves):
            found.append(f"{place}: marked inside its type (mark the field: Health[...])")
        elif marked and not _names_its_document(hints):
            found.append(f"{place}: health data in a view that names no document (ResourceId)")
        elif (
            not marked
            and looks_like_health(name)
            and len(views) < len(leaves)
            and f"{model.__name__}.{name}" not in NOT_HEALTH
        ):
            found.append(f"{place}: looks like health data and is not marked Health[...]")
    return found


@functools.cache
def _response_models() -> dict[str, tuple[type[BaseModel], dict[str, Any]]]:
    found: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {}
    for name, method, path in http_routes():
        module = load(name)
        view = module.api.routes[f"{method} {path}"].response
        if view is not None:
            found[f"{name} {method} {path} {view.__name__}"] = (view, vars(module))
    return found


def test_the_walk_finds_every_kind_of_defect() -> None:
    class Line(BaseModel):
        dosage: str

    class Bad(BaseModel):
        id: str
        notes: str | None  # not marked
        items: list[Line]  # a view inside: walked, and its dosage is not marked
        diagnosis: Health[str]  # marked, but the view names no document
        symptoms: list[Health[str]]  # marked inside its type

    class Good(BaseModel):
        id: Annotated[str, ResourceId("visits")]
        notes: Health[str | None]
        visit_note: Health[str]
        items: list[Good]  # views only: walked
        decline_reason: str | None  # not health

    namespace = {"Line": Line, "Good": Good}
    assert len(health_defects(Bad, namespace)) == 4, health_defects(Bad, namespace)
    assert health_defects(Good, namespace) == []


def test_the_views_that_carry_health_data_are_found() -> None:
    keys = set(_response_models())
    for route in (
        "prescriptions POST /<id>/receive PrescriptionOut",
        "prescriptions GET / PrescriptionList",
        "appointments POST /<id>/no-show AppointmentOut",
        "bookings GET /<booking_id> BookingView",
    ):
        assert route in keys


@pytest.mark.parametrize("key", sorted(_response_models()))
def test_every_view_marks_its_health_data(key: str) -> None:
    model, namespace = _response_models()[key]
    assert health_defects(model, namespace) == []


# -- the pipeline, in-process ----------------------------------------------------------------

NAME = "disclosure-test"


class Visit(models.View):
    id: Annotated[str, ResourceId("visits")]
    note: Health[str | None] = None
    status: str = "open"


class Unnamed(models.View):
    note: Health[str | None] = None


class Visits(models.View):
    items: list[Visit]


VISITS = {"v1": "sore throat", "v2": None, "v3": "rash"}
ROUTES = [
    ("GET", "/openapi.json"),
    ("GET", "/visits"),
    ("GET", "/visits/<id>"),
    ("POST", "/visits/<id>/close"),
    ("GET", "/unnamed"),
]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Function]:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "alodoktor-disclosure-test")
    public = {(NAME, method, path): policy.PUBLIC for method, path in ROUTES}
    monkeypatch.setattr(policy, "POLICY", {**policy.POLICY, **public})
    settings.get.cache_clear()
    fn = Function(NAME, title="Disclosure test")

    @fn.route("GET", "/visits", response=Visits)
    def visits(call: Call) -> Visits:
        return Visits(items=[Visit(id=k, note=v) for k, v in VISITS.items()])

    @fn.route("GET", "/visits/<id>", response=Visit)
    def visit(call: Call) -> Visit:
        return Visit(id=call.params["id"], note=VISITS[call.params["id"]])

    @fn.route("POST", "/visits/<id>/close", response=Visit, status=201, also=(200,))
    def close(call: Call) -> Reply:
        return Reply(Visit(id=call.params["id"], note=VISITS[call.params["id"]], status="closed"))

    @fn.route("GET", "/unnamed", response=Unnamed)
    def unnamed(call: Call) -> Unnamed:
        return Unnamed(note="sore throat")

    yield fn
    settings.get.cache_clear()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], str]]:
    calls: list[tuple[list[str], str]] = []
    monkeypatch.setattr(audit, "record_reads", lambda r, why, **kw: calls.append((list(r), why)))
    return calls


def send(api: Function, path: str, method: str = "GET") -> flask.Response:
    with flask.Flask(__name__).test_request_context(path, method=method):
        return api.handle(flask.request)


def test_an_answer_with_health_data_is_logged_first_whatever_the_method(api, recorded):
    assert send(api, "/visits/v1").status_code == 200
    closed = send(api, "/visits/v3/close", "POST")
    assert closed.status_code == 201
    assert closed.get_json()["status"] == "closed"
    assert recorded == [
        (["visits/v1"], "GET /visits/<id>"),
        (["visits/v3"], "POST /visits/<id>/close"),
    ]


def test_a_list_logs_each_document_it_shows_in_one_write(api, recorded):
    listed = send(api, "/visits")
    assert [v["id"] for v in listed.get_json()["items"]] == ["v1", "v2", "v3"]
    assert recorded == [(["visits/v1", "visits/v3"], "GET /visits")]  # v2 shows no note


def test_an_answer_without_health_values_writes_nothing(api, recorded):
    assert send(api, "/visits/v2").get_json() == {"id": "v2", "note": None, "status": "open"}
    assert send(api, "/openapi.json").status_code == 200
    assert recorded == []


@pytest.mark.parametrize(
    "failure", [audit_log.KeyMissing("no AUDIT_HASH_KEY"), RuntimeError("firestore is down")]
)
def test_when_the_read_cannot_be_logged_nothing_is_answered(api, monkeypatch, failure):
    def fail(*args: Any, **kw: Any) -> None:
        raise failure

    monkeypatch.setattr(audit, "record_reads", fail)
    for path, method in (("/visits/v1", "GET"), ("/visits/v1/close", "POST"), ("/visits", "GET")):
        response = send(api, path, method)
        assert response.status_code == 503
        body = json.loads(response.get_data())
        assert body["code"] == "audit_unavailable"
        assert "sore throat" not in response.get_data(as_text=True)


def test_health_data_in_a_view_that_names_no_document_is_never_sent(api, recorded):
    response = send(api, "/unnamed")
    assert response.status_code == 500
    assert "sore throat" not in response.get_data(as_text=True)
    assert recorded == []
    with pytest.raises(disclosure.UnnamedResource, match="ResourceId"):
        disclosure.disclosed(Unnamed(note="x"))


def test_the_documents_disclosed_are_found_in_nested_views_once_each() -> None:
    answer = {"a": [Visits(items=[Visit(id="v1", note="x"), Visit(id="v1", note="x")])]}
    assert disclosure.disclosed(answer) == ["visits/v1"]
    assert disclosure.disclosed([Visit(id="v2", note=""), Visit(id="v3")]) == []


# -- against the stack: a route whose read cannot be logged answers 503 ------------------------


@functools.cache
def _served(name: str) -> flask.Flask:
    """The function as functions-framework serves it (the gateway's way), in this process, on
    the stack's emulators: so its audit log can be made to fail."""
    import functions_framework

    app: flask.Flask = functions_framework.create_app(  # type: ignore[no-untyped-call]
        target=target_of(name), source=str(FUNCTIONS_DIR / name / "main.py")
    )
    return app


@contextlib.contextmanager
def _audit_unkeyed() -> Iterator[None]:
    """The audit log cannot write an entry: its hash key is gone (as in test_audit_tamper)."""
    unkeyed = dataclasses.replace(settings.get(), audit_hash_key="")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "get", lambda: unkeyed)
        yield


def _post_in_process(name: str, path: str, token: str | None, body: Any = None) -> Any:
    with _audit_unkeyed():
        return (
            _served(name)
            .test_client()
            .post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        )


def _refused(answered: Any, secret: str) -> None:
    assert answered.status_code == 503, answered.get_data(as_text=True)
    assert answered.mimetype == "application/problem+json"
    assert answered.get_json()["code"] == "audit_unavailable"
    assert secret not in answered.get_data(as_text=True)


def _confirmed_visit(stack: Any, admin: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(doctor user, doctor api, patient api, a confirmed appointment noting "cough")."""
    from shared.appointments import service as appointments
    from tests.support import approved_doctor, bearer, create_user, slot_in

    doctor, doctor_api = approved_doctor(stack, admin)
    patient = bearer(stack, create_user(stack, Role.PATIENT))
    booked = patient.post(
        "/appointments", json={"doctorUid": doctor.uid, "start": slot_in(80), "note": "cough"}
    )
    assert booked.status_code == 201, booked.text
    appointments.confirm(booked.json()["id"])
    return doctor, doctor_api, patient, booked.json()


def test_a_prescription_transition_whose_read_cannot_be_logged_discloses_nothing(stack, admin):
    from tests.test_prescriptions import _pharmacy, _write, reads_of

    _, doctor_api, patient, appt = _confirmed_visit(stack, admin)
    rx = _write(doctor_api, appt["id"]).json()
    pharmacy_uid, pharmacy = _pharmacy(stack, admin)
    sent = patient.post(f"/prescriptions/{rx['id']}/send", json={"pharmacyUid": pharmacy_uid})
    assert sent.status_code == 200, sent.text

    answered = _post_in_process("prescriptions", f"/{rx['id']}/receive", pharmacy.bearer)

    _refused(answered, "Amoxicillin")
    assert reads_of(f"prescriptions/{rx['id']}", pharmacy_uid) == 0


def test_an_appointment_outcome_whose_read_cannot_be_logged_discloses_nothing(stack, admin):
    from tests.test_appointments import _force
    from tests.test_prescriptions import reads_of

    doctor, doctor_api, _, appt = _confirmed_visit(stack, admin)
    _force(appt["id"], start=datetime.now(UTC) - timedelta(minutes=5))

    answered = _post_in_process("appointments", f"/{appt['id']}/complete", doctor_api.bearer)

    _refused(answered, "cough")
    assert reads_of(f"appointments/{appt['id']}", doctor.uid) == 0


def _documents_with_health(
    model: type[BaseModel], namespace: dict[str, Any], seen: set[type] | None = None
) -> Iterator[tuple[str, str]]:
    """(collection, field) of every health field a view (and the views inside it) shows."""
    seen = set() if seen is None else seen
    if model in seen:
        return
    seen.add(model)
    hints = _hints(model, namespace)
    collections = [
        m.collection
        for h in hints.values()
        if typing.get_origin(h) is Annotated
        for m in typing.get_args(h)[1:]
        if isinstance(m, ResourceId)
    ]
    for name, info in model.model_fields.items():
        if _marked(hints[name]):
            yield from ((c, info.alias or name) for c in collections)
        for leaf in _nested(hints[name]):
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                yield from _documents_with_health(leaf, namespace, seen)


def test_every_collection_an_answer_shows_health_of_is_health_to_personal_data() -> None:
    """A record the API hands out as health data is health data in an export too: a provider's
    export leaves it out and the patient's own logs its read (shared/privacy/rules.py
    HOLDINGS), and its stored field is one the audit log keeps as a keyed hash and an ended
    hold strips (shared/audit/rules.py HEALTH_FIELDS)."""
    from shared.privacy import rules as privacy

    shown = {
        pair
        for model, namespace in _response_models().values()
        for pair in _documents_with_health(model, namespace)
    }
    assert {c for c, _ in shown} >= {"appointments", "prescriptions", "bookings"}
    holdings = {h.collection: h for h in privacy.HOLDINGS}
    for collection, stored in sorted(shown):
        if collection not in holdings:
            continue  # not an account's record (no such view today)
        assert holdings[collection].health, f"{collection} shows {stored} but is not health"
        assert stored in audit_log.HEALTH_FIELDS, f"{collection}.{stored}"


def test_the_export_has_a_marked_view_for_every_health_holding() -> None:
    """The patient's own export writes a read entry for each health record it hands out: the
    privacy function shows each through a view marking its data as health."""
    from shared.privacy import rules as privacy

    module = load("privacy")
    health = {h.collection for h in privacy.HOLDINGS if h.health}
    assert set(module.HEALTH_RECORDS) == health
    for collection, view in module.HEALTH_RECORDS.items():
        assert disclosure.plan(view) == disclosure.Plan(("data",), collection, "id")
