"""Print the Terraform files of a directory as JSON, parsed by python-hcl2.

    .venv-iac/bin/python tools/hcl_json.py terraform

Run by the interpreter of .venv-iac (Makefile), not the project's: checkov, in its own venv,
ships a different module named `hcl2`, so the two never share an environment. It imports
nothing of the project. Output: {"<file>.tf": <python-hcl2's dict>, ...}, with string
literals unquoted and comments kept (checkov's inline skips are read from them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hcl2  # type: ignore[import-not-found]
from hcl2.utils import SerializationOptions  # type: ignore[import-not-found]


def parse_dir(directory: Path) -> dict[str, Any]:
    options = SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, preserve_heredocs=False
    )
    parsed: dict[str, Any] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            parsed[path.name] = hcl2.load(handle, serialization_options=options)
    return parsed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: hcl_json.py <terraform-dir>", file=sys.stderr)
        return 2
    json.dump(parse_dir(Path(argv[0])), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
