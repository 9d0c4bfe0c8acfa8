"""Every response a test gets through `tests.support.Api` is checked against the merged OpenAPI
document the gateway publishes, so the document cannot drift from what the functions answer.

For a response: the operation (method and path template; the gateway mounts each function at
`/<function-name>`), then its status, media type and JSON body against what that operation
documents. The merged document is fetched from the gateway once per test session; a schema's
validator (OpenAPI 3.1's dialect of JSON Schema 2020-12, `$ref`s resolved with `referencing`
inside the merged document) is compiled once, on first use.

Not failures: a 404 or 405 for a path or method no operation documents (unknown routes answer
those), a CORS preflight (OPTIONS: the pipeline answers it for every route, and OpenAPI does not
describe CORS), and the statuses in `PIPELINE_STATUSES`, which the pipeline
(shared/web/http.py) can answer on every route and the generator (shared/web/openapi.py)
documents on none; their problem+json bodies are still checked against the function's Problem.

Set ALODOKTOR_OPENAPI_REPORT=<file> to append every mismatch to that file (a JSON line each)
instead of failing the test: a way to list them all from one run of the suite.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

REPORT_ENV = "ALODOKTOR_OPENAPI_REPORT"
URI = "urn:alodoktor:openapi"  # the merged document's URI in the registry
SCHEMA_REF = "#/components/schemas/"
JSON_TYPES = ("application/json", "application/problem+json")
# Answered by the pipeline on any route, documented on none: an unhandled error (500, a bare
# problem). Everything the pipeline adds to routes is otherwise documented per route by
# shared/web/openapi.py (400, 409, 413 and 503 everywhere, 401/403 when signed-in, 403 on
# changing calls, 404 with ids or owners, 415 with a body).
PIPELINE_STATUSES = frozenset({500})
# Answered for a path or method that no operation documents.
UNROUTED_STATUSES = frozenset({404, 405})
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class ContractViolation(AssertionError):
    """A response the merged OpenAPI document does not describe."""


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    operation_id: str
    pointer: str  # JSON pointer of the operation object in the merged document
    pattern: re.Pattern[str]
    problem: str  # the name of its function's Problem schema in the merged document

    def describe(self) -> str:
        return f"{self.method} {self.template} ({self.operation_id})"


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class Contract:
    """The merged document, its operations, and a validator per schema, compiled on first use."""

    def __init__(self, document: dict[str, Any]) -> None:
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012

        from dev.gateway import namespace

        self.document = document
        self.registry: Registry[Any] = (
            Registry().with_resource(URI, DRAFT202012.create_resource(document)).crawl()
        )
        operations = []
        for template, item in document["paths"].items():
            regex = "/".join(
                "[^/]+" if seg.startswith("{") and seg.endswith("}") else re.escape(seg)
                for seg in template.split("/")
            )
            problem = f"{namespace(template.split('/')[1])}_Problem"  # /<function>/...
            for method in _METHODS:
                if method in item:
                    operations.append(
                        Operation(
                            method.upper(),
                            template,
                            item[method].get("operationId", f"{method.upper()} {template}"),
                            f"/paths/{_escape(template)}/{method}",
                            re.compile(f"^{regex}$"),
                            problem,
                        )
                    )
        # Literal segments beat templated ones: POST /appointments/sweep is not /{id}.
        self.operations = sorted(operations, key=lambda o: (o.template.count("{"), o.template))
        self._validators: dict[str, Any] = {}

    def find(self, method: str, path: str) -> tuple[Operation | None, bool]:
        """The operation for this request, and whether any operation has this path."""
        path = path.rstrip("/") or "/"
        on_path = False
        for op in self.operations:
            if op.pattern.match(path):
                if op.method == method.upper():
                    return op, True
                on_path = True
        return None, on_path

    def validator(self, pointer: str) -> Any:
        found = self._validators.get(pointer)
        if found is None:
            from openapi_schema_validator import OAS31Validator, oas31_format_checker

            found = OAS31Validator(
                {"$ref": f"{URI}#{pointer}"},
                registry=self.registry,
                format_checker=oas31_format_checker,
            )
            self._validators[pointer] = found
        return found

    def node(self, pointer: str) -> Any:
        node: Any = self.document
        for raw in pointer.strip("/").split("/"):
            node = node[raw.replace("~1", "/").replace("~0", "~")]
        return node

    # -- the check ------------------------------------------------------------------------

    def problems(
        self, method: str, path: str, response: requests.Response
    ) -> tuple[str, list[str]]:
        """What the document does not describe of this response, and the operation it is for."""
        status = response.status_code
        where = f"{method} {path}"
        if method.upper() == "OPTIONS":
            return where, []
        op, on_path = self.find(method, path)
        if op is None:
            if status in UNROUTED_STATUSES:
                return where, []
            what = "for this method" if on_path else "for this path"
            return where, [f"answered {status}, but no operation is documented {what}"]
        where = op.describe()
        responses = self.node(op.pointer).get("responses", {})
        key = next(
            (k for k in (str(status), f"{status // 100}XX", "default") if k in responses), None
        )
        content: dict[str, Any]
        if key is not None:
            content = responses[key].get("content", {})
            base = f"{op.pointer}/responses/{key}/content"
        elif status in PIPELINE_STATUSES and op.problem in self.schemas:
            content = {"application/problem+json": {}}
            base = ""
        else:
            documented = ", ".join(sorted(responses))
            return where, [f"answered {status}, which is not documented (only {documented})"]
        return where, self._body_problems(status, content, base, op, response)

    @property
    def schemas(self) -> dict[str, Any]:
        schemas: dict[str, Any] = self.document.get("components", {}).get("schemas", {})
        return schemas

    def _body_problems(
        self,
        status: int,
        content: dict[str, Any],
        base: str,
        op: Operation,
        response: requests.Response,
    ) -> list[str]:
        media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not response.content:
            if content:
                return [f"{status} has no body, but {', '.join(content)} is documented"]
            return []
        if not content:
            return [f"{status} has a {media or 'untyped'} body, but none is documented"]
        if media not in content:
            return [
                f"{status} is {media or 'untyped'}, but only {', '.join(content)} is documented"
            ]
        if media not in JSON_TYPES and not media.endswith("+json"):
            return []
        try:
            body = response.json()
        except ValueError:
            return [f"{status} {media} body is not JSON: {response.text[:200]!r}"]
        if base:
            if "schema" not in content[media]:
                return []
            pointer = f"{base}/{_escape(media)}/schema"
        else:  # a pipeline status: the function's problem
            pointer = f"/components/schemas/{_escape(op.problem)}"
        return [
            f"{status} {media} body at {_json_path(error)}: {error.message[:300]}"
            for error in _best(self.validator(pointer).iter_errors(body))
        ]


def _best(errors: Any) -> list[Any]:
    from jsonschema.exceptions import best_match

    # anyOf/oneOf failures say little at their top; their best sub-error says what.
    return [best_match([e]) if e.context else e for e in errors]


def _json_path(error: Any) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


# -- one contract per test session --------------------------------------------------------

_lock = threading.Lock()
_by_base: dict[str, Contract] = {}
_by_text: dict[str, Contract] = {}


def contract(base: str) -> Contract:
    """The merged document `base` (a gateway) serves, fetched once; the same contract for every
    gateway serving the same document."""
    with _lock:
        found = _by_base.get(base)
        if found is None:
            answer = requests.get(f"{base.rstrip('/')}/openapi.json", timeout=60)
            assert answer.status_code == 200, f"{base}/openapi.json: {answer.status_code}"
            found = _by_text.get(answer.text)
            if found is None:
                found = _by_text[answer.text] = Contract(answer.json())
            _by_base[base] = found
        return found


def check(base: str, response: requests.Response) -> None:
    """Fail (or, with ALODOKTOR_OPENAPI_REPORT set, record) a response of the gateway at `base`
    that the merged OpenAPI document does not describe."""
    request = response.request
    method = (request.method or "GET").upper()
    path = urlsplit(request.url or "").path
    prefix = urlsplit(base).path.rstrip("/")
    path = path[len(prefix) :] if prefix and path.startswith(prefix) else path
    where, found = contract(base).problems(method, path, response)
    if not found:
        return
    report = os.environ.get(REPORT_ENV)
    if report:
        line = {"operation": where, "status": response.status_code, "problems": found}
        with _lock, open(report, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return
    raise ContractViolation(
        f"the merged OpenAPI document does not describe this response of {where}"
        f" (request {method} {path}):\n  " + "\n  ".join(found)
    )
