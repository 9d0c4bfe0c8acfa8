"""Twilio's published OpenAPI 3.0 file (api v2010) as an executable contract for SMS.

The file is read from TWILIO_OPENAPI_DIR (default ../shared/twilio-openapi beside the repo,
see its README) and never copied into the repo. Every request the backend sends to Twilio's
Messages API, and every answer the simulator gives, is checked against it: parameters, the
form-encoded body (values coerced to the types its schema names, as Twilio reads a form), and
the documented responses' JSON.

Twilio's document describes success answers only (201 for a new message, 200 for reads): its
errors (`{"code", "message", "more_info", "status"}`) are documented on its error pages, not
in this file, so error answers are not checked here and the simulator words them that way.
Formats Twilio invented (`phone-number`, `date-time-rfc-2822`) are unknown to any checker and
are ignored, as JSON Schema says unknown formats must be.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev import openapi_files

ROOT = Path(__file__).resolve().parent.parent
DIR_ENV = "TWILIO_OPENAPI_DIR"
DEFAULT_DIR = ROOT.parent / "shared" / "twilio-openapi"
FILE = "twilio_api_v2010.json"
SHA256 = "99cae87a6bb1725f71363364cbd30282a13140374b2d5f9bdd5bdfa5d4c8a6d7"
FORM = "application/x-www-form-urlencoded"


class ContractUnavailable(RuntimeError):
    """Twilio's OpenAPI file cannot be read here; the message says why."""


def spec_dir() -> Path:
    return openapi_files.spec_dir(DIR_ENV, DEFAULT_DIR)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    node: dict[str, Any]
    pointer: str


class Contract:
    def __init__(self, directory: Path | None = None) -> None:
        path = (directory or spec_dir()) / FILE
        if not path.is_file():
            raise ContractUnavailable(
                f"Twilio's OpenAPI file is not at {path}; set {DIR_ENV} to the folder holding it"
            )
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != SHA256:
            raise ContractUnavailable(f"{path} is not the pinned file (sha256 differs)")
        from referencing import Registry
        from referencing.jsonschema import DRAFT4

        self.document: dict[str, Any] = json.loads(raw)
        self.registry: Any = (
            Registry().with_resource(FILE, DRAFT4.create_resource(self.document)).crawl()
        )
        self.operations: list[Operation] = []
        for method, template, node, pointer in openapi_files.operations(self.document):
            self.operations.append(
                Operation(
                    node.get("operationId", f"{method} {template}"),
                    method.upper(),
                    template,
                    openapi_files.path_pattern(template),
                    node,
                    pointer,
                )
            )
        self._validators: dict[tuple[str, bool], Any] = {}

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for op in sorted(self.operations, key=lambda o: o.template.count("{")):
            if op.method == method.upper() and (match := op.pattern.match(path)):
                return op, match.groupdict()
        return None

    def _validator(self, pointer: str, *, response: bool) -> Any:
        key = (pointer, response)
        if key not in self._validators:
            self._validators[key] = openapi_files.schema_validator(
                self.registry, FILE, pointer, response=response
            )
        return self._validators[key]

    def _errors(self, pointer: str, instance: Any, where: str, *, response: bool) -> list[str]:
        from jsonschema.exceptions import best_match

        found = []
        for error in self._validator(pointer, response=response).iter_errors(instance):
            best = best_match([error]) if error.context else error
            path = "/".join(str(p) for p in best.absolute_path)
            found.append(f"{where}{'/' + path if path else ''}: {best.message[:300]}")
        return found

    def check_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        query: dict[str, list[str]],
        content_type: str,
        body: bytes,
    ) -> list[str]:
        """What is wrong with this request by Twilio's contract (empty when nothing)."""
        from urllib.parse import parse_qs

        problems: list[str] = []
        for index, param in enumerate(op.node.get("parameters", [])):
            where, name = param["in"], param["name"]
            values = [path_params[name]] if where == "path" and name in path_params else None
            if where == "query":
                values = query.get(name)
            if not values:
                if param.get("required"):
                    problems.append(f"{where} parameter {name}: required")
                continue
            schema = param.get("schema", {})
            value = _coerce(values[0], schema)
            problems += self._errors(
                f"{op.pointer}/parameters/{index}/schema", value, f"{where} {name}", response=False
            )
        known = {p["name"] for p in op.node.get("parameters", []) if p["in"] == "query"}
        problems += [f"query parameter {n}: not in the contract" for n in query if n not in known]
        request_body = op.node.get("requestBody")
        if request_body is None:
            if body.strip():
                problems.append("body: this operation takes none")
            return problems
        media = request_body.get("content", {}).get(FORM)
        if content_type.split(";")[0].strip() != FORM:
            return [*problems, f"body: Content-Type must be {FORM}, not {content_type!r}"]
        schema = media.get("schema", {}) if media else {}
        try:
            form = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            return [*problems, "body: not a form"]
        properties = schema.get("properties", {})
        unknown = sorted(set(form) - set(properties))
        problems += [f"body {name}: not in the contract" for name in unknown]
        instance = {
            name: (
                [_coerce(v, properties[name].get("items", {})) for v in values]
                if properties[name].get("type") == "array"
                else _coerce(values[-1], properties[name])
            )
            for name, values in form.items()
            if name in properties
        }
        pointer = f"{op.pointer}/requestBody/content/{openapi_files.pointer_token(FORM)}/schema"
        return problems + self._errors(pointer, instance, "body", response=False)

    def check_response(self, op: Operation, status: int, body: bytes) -> list[str]:
        """A documented status's body against its schema; undocumented statuses are Twilio's
        errors, which this file does not describe (see the module's docstring)."""
        responses = op.node.get("responses", {})
        if str(status) not in responses:
            if 200 <= status < 300:
                return [f"response {status}: not documented for {op.operation_id}"]
            return []
        media = responses[str(status)].get("content", {}).get("application/json")
        if not media or "schema" not in media:
            return []
        try:
            instance = json.loads(body) if body.strip() else None
        except ValueError:
            return [f"response {status}: not JSON"]
        pointer = f"{op.pointer}/responses/{status}/content/application~1json/schema"
        return self._errors(pointer, instance, f"response {status}", response=True)


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    """A form value as the type its schema names (a form carries only strings)."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
