"""What the simulators' contracts (dev/paypal_contract.py, dev/twilio_contract.py) read from a
provider's published OpenAPI file the same way: where the files are, each operation with the
regex of its path template, and JSON pointers into the document."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

METHODS = ("get", "post", "put", "patch", "delete")

log = logging.getLogger("alodoktor.sim")
C = TypeVar("C")


def spec_dir(env: str, default: Path) -> Path:
    """The folder named by the environment variable `env`, else `default`."""
    configured = os.environ.get(env, "").strip()
    return Path(configured) if configured else default


def path_pattern(template: str) -> re.Pattern[str]:
    """`/Accounts/{AccountSid}/Messages/{Sid}.json` as a regex with a group per parameter (a
    parameter may share its segment with literal text, as Twilio's `{Sid}.json` does)."""
    regex, pos = "", 0
    for match in re.finditer(r"\{(\w+)\}", template):
        regex += re.escape(template[pos : match.start()]) + f"(?P<{match.group(1)}>[^/]+?)"
        pos = match.end()
    return re.compile(f"^{regex}{re.escape(template[pos:])}$")


def pointer_token(token: str) -> str:
    """One reference token of a JSON pointer (RFC 6901): `~` and `/` escaped."""
    return token.replace("~", "~0").replace("/", "~1")


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """(method, path template, operation object, its JSON pointer) for every operation."""
    for template, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                yield method, template, item[method], f"/paths/{pointer_token(template)}/{method}"


def schema_validator(registry: Any, uri: str, pointer: str, *, response: bool) -> Any:
    """A validator of the schema at `uri#pointer` in `registry`: OpenAPI 3.0's read rules for
    a response (readOnly allowed), its write rules for a request."""
    from openapi_schema_validator import OAS30ReadValidator, OAS30Validator, oas30_format_checker

    cls = OAS30ReadValidator if response else OAS30Validator
    return cls({"$ref": f"{uri}#{pointer}"}, registry=registry, format_checker=oas30_format_checker)


def contract_or_reason(
    make: Callable[[], C], given: C | None, *, validate: bool, unavailable: type[Exception]
) -> tuple[C | None, str]:
    """A simulator's contract: `given`, else made now; with validation off (asked for, or the
    files cannot be read here) None and the reason, which the simulator reports and logs."""
    if not validate:
        return None, "contract validation turned off"
    if given is not None:
        return given, ""
    try:
        return make(), ""
    except unavailable as exc:
        log.warning("contract validation is off: %s", exc)
        return None, str(exc)
