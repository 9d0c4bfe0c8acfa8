"""PayPal's published OpenAPI 3.0 files as an executable contract: find the operation a request
is for, and check its parameters, body and response against PayPal's own schemas.

The files are read from PAYPAL_OPENAPI_DIR (default ../shared/paypal-openapi beside the repo)
and never copied into the repo. Quirks of PayPal's documents handled here, in code, without
editing them:

- every `$ref` is document-local (`#/components/...`), so each file is registered whole under
  its own URI and schemas are validated through a `$ref` into it, which keeps nested refs
  resolvable;
- request bodies are checked without OpenAPI's readOnly rule: verify-webhook-signature must echo
  the webhook event PayPal sent, whose fields are all marked readOnly;
- formats PayPal invented (e.g. `ppaas_common_currency_code_v2`) are unknown to any checker and
  are ignored, as JSON Schema says unknown formats must be.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev import openapi_files

ROOT = Path(__file__).resolve().parent.parent
DIR_ENV = "PAYPAL_OPENAPI_DIR"
DEFAULT_DIR = ROOT.parent / "shared" / "paypal-openapi"
FILES = (
    "checkout_orders_v2.json",
    "payments_payment_v2.json",
    "notifications_webhooks_v1.json",
    "payments_payouts_batch_v1.json",  # issue 15: payouts
)


class ContractUnavailable(RuntimeError):
    """PayPal's OpenAPI files cannot be read here; the message says why."""


def spec_dir() -> Path:
    return openapi_files.spec_dir(DIR_ENV, DEFAULT_DIR)


@dataclass(frozen=True)
class Operation:
    document: str  # the file's name, also its URI in the registry
    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    pointer: str  # JSON pointer of the operation object in its document


class Contract:
    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or spec_dir()
        missing = [name for name in FILES if not (directory / name).is_file()]
        if missing:
            raise ContractUnavailable(
                f"PayPal's OpenAPI files are not in {directory} (missing {', '.join(missing)}); "
                f"set {DIR_ENV} to the folder holding them"
            )
        from referencing import Registry
        from referencing.jsonschema import DRAFT4

        self.documents: dict[str, dict[str, Any]] = {}
        self.operations: list[Operation] = []
        registry: Registry[Any] = Registry()
        for name in FILES:
            document = json.loads((directory / name).read_text())
            self.documents[name] = document
            # OpenAPI 3.0 schemas are a dialect of draft 4, which is how refs resolve.
            registry = registry.with_resource(name, DRAFT4.create_resource(document))
            for method, template, op, pointer in openapi_files.operations(document):
                self.operations.append(
                    Operation(
                        name,
                        op.get("operationId", f"{method} {template}"),
                        method.upper(),
                        template,
                        openapi_files.path_pattern(template),
                        pointer,
                    )
                )
        self.registry = registry.crawl()
        self._validators: dict[tuple[str, str, bool], Any] = {}

    # -- lookup -------------------------------------------------------------------------

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        # Literal segments beat templated ones (".../captures/{id}" vs ".../refunds/{id}").
        for op in sorted(self.operations, key=lambda o: o.template.count("{")):
            if op.method != method.upper():
                continue
            match = op.pattern.match(path)
            if match:
                return op, match.groupdict()
        return None

    def _resolve(self, document: str, pointer: str) -> tuple[Any, str]:
        """The node at `pointer`, following `$ref`s; returns it and where it really lives."""
        node: Any = self.documents[document]
        for raw in pointer.lstrip("/").split("/") if pointer.strip("/") else []:
            token = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 20:
            pointer = node["$ref"].removeprefix("#")
            node, pointer = self._resolve(document, pointer)
            seen += 1
        return node, pointer

    def _validator(self, document: str, pointer: str, *, response: bool) -> Any:
        key = (document, pointer, response)
        if key not in self._validators:
            self._validators[key] = openapi_files.schema_validator(
                self.registry, document, pointer, response=response
            )
        return self._validators[key]

    def _schema_errors(
        self, document: str, pointer: str, instance: Any, where: str, *, response: bool
    ) -> list[str]:
        validator = self._validator(document, pointer, response=response)
        found = []
        for error in validator.iter_errors(instance):
            # anyOf/oneOf failures say little at the top; their best sub-error says what.
            from jsonschema.exceptions import best_match

            best = best_match([error]) if error.context else error
            path = "/".join(str(p) for p in best.absolute_path)
            found.append(f"{where}{'/' + path if path else ''}: {best.message[:300]}")
        return found

    # -- checks -------------------------------------------------------------------------

    def check_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        headers: dict[str, str],
        query: dict[str, str],
        body: bytes,
    ) -> list[str]:
        """What is wrong with this request by PayPal's contract (empty when nothing)."""
        problems: list[str] = []
        operation, op_pointer = self._resolve(op.document, op.pointer)
        lowered = {k.lower(): v for k, v in headers.items()}
        for index, _ in enumerate(operation.get("parameters", [])):
            param, pointer = self._resolve(op.document, f"{op_pointer}/parameters/{index}")
            where = param["in"]
            name = param["name"]
            value: str | None
            if where == "path":
                value = path_params.get(name)
            elif where == "header":
                value = lowered.get(name.lower())
            elif where == "query":
                value = query.get(name)
            else:
                continue
            if value is None:
                if param.get("required"):
                    problems.append(f"{where} parameter {name}: required")
                continue
            if "schema" in param and param["schema"].get("type", "string") == "string":
                problems += self._schema_errors(
                    op.document, f"{pointer}/schema", value, f"{where} {name}", response=False
                )
        request_body = operation.get("requestBody")
        if request_body is not None:
            rb, rb_pointer = self._resolve(op.document, f"{op_pointer}/requestBody")
            if not body.strip():
                if rb.get("required"):
                    problems.append("body: required")
                return problems
            media = rb.get("content", {}).get("application/json")
            ctype = lowered.get("content-type", "").split(";")[0].strip()
            if ctype != "application/json":
                problems.append(f"body: Content-Type must be application/json, not {ctype!r}")
                return problems
            try:
                instance = json.loads(body)
            except ValueError:
                return [*problems, "body: not JSON"]
            if media and "schema" in media:
                problems += self._schema_errors(
                    op.document,
                    f"{rb_pointer}/content/application~1json/schema",
                    instance,
                    "body",
                    response=False,
                )
        elif body.strip():
            problems.append("body: this operation takes none")
        return problems

    def documents_status(self, op: Operation, status: int) -> bool:
        operation, _ = self._resolve(op.document, op.pointer)
        return str(status) in operation.get("responses", {})

    def check_response(self, op: Operation, status: int, body: bytes) -> list[str]:
        operation, op_pointer = self._resolve(op.document, op.pointer)
        responses = operation.get("responses", {})
        key = str(status) if str(status) in responses else "default"
        if key not in responses:
            return [f"response {status}: not documented for {op.operation_id}"]
        response, pointer = self._resolve(op.document, f"{op_pointer}/responses/{key}")
        media = response.get("content", {}).get("application/json")
        if not media or "schema" not in media:
            return []
        try:
            instance = json.loads(body) if body.strip() else None
        except ValueError:
            return [f"response {status}: not JSON"]
        return self._schema_errors(
            op.document,
            f"{pointer}/content/application~1json/schema",
            instance,
            f"response {status}",
            response=True,
        )


def issue_descriptions(contract: Contract, op: Operation) -> dict[str, tuple[int, str]]:
    """Every error `issue` PayPal documents for this operation: its status and description.

    The simulator answers negative-testing codes with exactly these, so its errors validate.
    """
    operation, op_pointer = contract._resolve(op.document, op.pointer)
    found: dict[str, tuple[int, str]] = {}

    def walk(node: Any, status: int) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                target, _ = contract._resolve(op.document, node["$ref"].removeprefix("#"))
                walk(target, status)
                return
            title = node.get("title")
            issue = node.get("properties", {}).get("issue", {}).get("enum")
            if title and issue == [title]:
                description = node["properties"].get("description", {}).get("enum", [""])[0]
                found.setdefault(title, (status, description))
            for value in node.values():
                walk(value, status)
        elif isinstance(node, list):
            for value in node:
                walk(value, status)

    for key in operation.get("responses", {}):
        if key.isdigit() and int(key) >= 400:
            response, _ = contract._resolve(op.document, f"{op_pointer}/responses/{key}")
            walk(response.get("content", {}), int(key))
    return found
