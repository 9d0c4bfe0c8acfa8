"""The typed web client (clients/web) is generated from the current OpenAPI document.

`make client` writes the gateway's merged document (tools/openapi_doc.py, no server) and
generates clients/web/src/schema.d.ts from it with openapi-typescript; this fails when the
committed types are not what that makes now, i.e. when an API change was not carried over.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "clients" / "web" / "src" / "schema.d.ts"
GENERATOR = ROOT / "node_modules" / ".bin" / "openapi-typescript"


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The merged document as `make client` writes it (its own process, as make runs it)."""
    path = tmp_path_factory.mktemp("client") / "openapi.json"
    subprocess.run(
        [sys.executable, "-m", "tools.openapi_doc", str(path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return path


def test_the_document_written_offline_is_the_one_the_gateway_serves(
    stack: Any, document: Path
) -> None:
    served = requests.get(f"{stack.gateway_url}/openapi.json", timeout=30)
    assert served.status_code == 200
    assert json.loads(document.read_text()) == served.json()


def test_the_committed_client_types_match_the_current_openapi(
    document: Path, tmp_path: Path
) -> None:
    generated = tmp_path / "schema.d.ts"
    subprocess.run(
        [str(GENERATOR), str(document), "--default-non-nullable", "false", "-o", str(generated)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    assert SCHEMA.read_text() == generated.read_text(), (
        "clients/web/src/schema.d.ts is not what the current OpenAPI document generates: "
        "run `make client` and commit the result"
    )
