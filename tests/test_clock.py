"""The business clock (shared/platform/clock.py): the system clock in production, movable only
beside the emulators, and with nothing in a deployable bundle that could move it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.platform import clock
from tools import bundle

WEEK = 7 * 24 * 3600


def _offset_file(path: Path, seconds: float) -> Path:
    path.write_text(json.dumps({"offsetSeconds": seconds}))
    return path


@pytest.fixture
def moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = _offset_file(tmp_path / "clock.json", WEEK)
    monkeypatch.setenv(clock.CLOCK_FILE_ENV, str(path))
    monkeypatch.setattr(clock, "_cache", None)
    return path


def test_beside_the_emulators_the_clock_follows_the_offset_file(
    moved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(clock.EMULATOR_ENV, "127.0.0.1:8080")
    ahead = (clock.now() - datetime.now(UTC)).total_seconds()
    assert WEEK - 5 < ahead < WEEK + 5
    assert WEEK - 5 < clock.timestamp() - datetime.now(UTC).timestamp() < WEEK + 5
    # A new offset (a whole file renamed into place) is read at the next reading.
    other = _offset_file(moved.with_name("next.json"), 2 * WEEK)
    other.replace(moved)
    assert clock.offset_seconds() == 2 * WEEK


def test_without_the_emulators_the_offset_file_is_never_read(
    moved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(clock.EMULATOR_ENV, raising=False)
    assert clock.clock_file() is None
    assert clock.offset_seconds() == 0
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5


def test_a_file_being_replaced_keeps_the_last_offset(
    moved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(clock.EMULATOR_ENV, "127.0.0.1:8080")
    assert clock.offset_seconds() == WEEK
    moved.write_text('{"offsetSec')  # half written: never seen so by a reader of ours
    assert clock.offset_seconds() == WEEK


CHECK = """
import json, sys
from datetime import UTC, datetime
from shared.platform import clock
print(json.dumps({"ahead": (clock.now() - datetime.now(UTC)).total_seconds(),
                  "module": clock.__file__}))
"""


def _bundled_clock(out: Path, env: dict[str, str]) -> dict[str, float | str]:
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, '.')\n{CHECK}"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found: dict[str, float | str] = json.loads(result.stdout)
    return found


def test_a_deployed_bundle_cannot_move_its_clock(tmp_path: Path) -> None:
    """Nothing in a bundle writes the offset or serves the control, and its clock ignores an
    offset file its environment names unless the emulators' settings are there too."""
    out = bundle.build("payouts", tmp_path / "bundle")
    sources = {p: p.read_text() for p in out.rglob("*.py")}
    assert not [p for p, text in sources.items() if "/_sim/clock" in text or "write_offset" in text]
    assert not (out / "dev").exists()

    path = _offset_file(tmp_path / "clock.json", WEEK)
    production = {"PATH": "/usr/bin:/bin", clock.CLOCK_FILE_ENV: str(path)}
    found = _bundled_clock(out, production)
    assert Path(str(found["module"])).is_relative_to(out)
    assert abs(float(found["ahead"])) < 5
    # The same bundle beside the emulators does follow it: the check above can fail.
    local = {**production, clock.EMULATOR_ENV: "127.0.0.1:8080"}
    assert WEEK - 5 < float(_bundled_clock(out, local)["ahead"]) < WEEK + 5


ROOT = Path(__file__).resolve().parent.parent
CLOCK_READS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
}


def _clock_reads(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if (name, node.func.attr) in CLOCK_READS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.{node.func.attr}()")
    return found


def test_all_business_time_comes_from_the_one_clock() -> None:
    """The product's code reads time through shared/platform/clock only (now(), or real_now()
    where it compares with a time made outside that never moves), so the local clock moves
    all of it: a rule reading the system clock itself would not live the week."""
    sources = [*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    reads = [
        read
        for path in sources
        if path != ROOT / "shared" / "platform" / "clock.py"
        for read in _clock_reads(path)
    ]
    assert not reads, "read the time through shared.platform.clock:\n" + "\n".join(reads)
    assert _clock_reads(ROOT / "shared" / "platform" / "clock.py")  # the walk sees calls
