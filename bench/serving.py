"""Which interpreter serves the functions in the benchmarks.

A deployed function gets requirements.txt and nothing else, but the dev venv also holds the
tools (pytest, schemathesis, ...), and what is installed changes what libraries import: with
`rich` present, `import httpx` (which firebase-admin imports) also loads httpx's command-line
interface, rich and pygments, some 40-70 ms of a cold start no deployed function pays. So the
benches serve from SERVE_VENV, a venv holding requirements.txt and bench/requirements.txt only
(`make bench` builds it), and say so when they must fall back to the dev venv.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Inside .venv: ignored by git and removed by `make clean` with the dev venv.
SERVE_VENV = ROOT / ".venv" / "bench-serve"


def python() -> str:
    """The deployed requirements' interpreter when built, else this one."""
    candidate = SERVE_VENV / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def description() -> str:
    if python() == sys.executable:
        return (
            "served by the dev venv (SERVE_VENV not built: `make bench` builds it); its "
            "dev-only packages make some cold starts slower than deployed ones"
        )
    return "served by a venv of requirements.txt (+ bench/requirements.txt) only, as deployed"
