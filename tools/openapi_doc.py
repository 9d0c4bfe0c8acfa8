"""Write the gateway's merged OpenAPI document (what it serves at /openapi.json) to a file,
without a server or emulators: each function is loaded as the gateway loads it and asked for
its own document, and the documents are merged by `dev.gateway.merge`.

    python -m tools.openapi_doc clients/web/openapi.json

The typed web client's types are generated from this file (`make client`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any


def document() -> dict[str, Any]:
    # Settings are read on every request, the document needs none of them but the project.
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "demo-alodoktor")
    from dev.gateway import build, merged_document

    _, apps = build()
    return merged_document(apps)


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("output", type=Path, help="where to write the document")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # each function's access log of its /openapi.json
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(document()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
