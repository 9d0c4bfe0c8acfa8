"""Request and response models are built on their first use, not at import (a cold start
builds only what its first request needs), and that first use is safe under the threads a
function serves with: gunicorn's 8 threads may all meet a model nobody has used yet.

pydantic rebuilds a deferred model under one lock (pydantic.main._rebuild_lock, 2.12 and
later); before it, a thread arriving mid-build validated with the parent's validator and
refused good input as "extra inputs are not permitted". Each check runs in a fresh
interpreter, where nothing has been built.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FIRST_USE = """
import json, sys, threading
from shared.platform.models import Page, SweepQuery, parse
from shared.identity.profile_fields import Price
from shared.platform.errors import ValidationFailed

models = [Page, SweepQuery, Price]
deferred = [m.__name__ for m in models if not m.__pydantic_complete__]
cases = [
    (Page, {"limit": 7, "cursor": "c"}, {"limit": 7, "cursor": "c"}),
    (SweepQuery, {"limit": 50}, {"limit": 50}),
    (Price, {"currency": "USD", "value": "12.50"}, {"currency": "USD", "value": "12.50"}),
    (Page, {"limit": 7, "surplus": 1}, "refused"),
]
start = threading.Barrier(16)
results, lock = [], threading.Lock()

def use(model, data, want):
    start.wait()
    try:
        got = parse(model, data).model_dump(exclude_none=False)
        got = {k: got[k] for k in want} if isinstance(want, dict) else got
    except ValidationFailed:
        got = "refused"
    with lock:
        results.append(got == want)

threads = [threading.Thread(target=use, args=cases[i % len(cases)]) for i in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"deferred": deferred, "right": sum(results), "all": len(results)}))
"""


@pytest.mark.parametrize("attempt", range(3))
def test_first_use_from_many_threads_validates_right(attempt: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_USE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["deferred"] == ["Page", "SweepQuery", "Price"]  # not built at import
    assert report["right"] == report["all"] == 16


def test_a_deferred_model_still_documents_itself() -> None:
    """The OpenAPI document asks for schemas of models no request has used yet."""
    probe = (
        "from shared.platform.models import Page\n"
        "assert not Page.__pydantic_complete__\n"
        "import json; print(json.dumps(Page.model_json_schema(by_alias=True)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    schema = json.loads(out.stdout)
    assert set(schema["properties"]) == {"limit", "cursor"}
    assert schema["properties"]["limit"]["maximum"] == 100
