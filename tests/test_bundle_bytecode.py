"""The bytecode in every bundle: compiled for the runtime's Python, unchecked-hash, of exactly
the sources beside it, and what the function's modules load from (no emulators needed; the
served check of a first request's modules is in tests/test_bundle.py).

An unchecked-hash .pyc is believed without looking at its source, which is what a deployed
copy needs (deployment changes every file's time) and also its hazard: a .pyc older than its
source would still be what runs. So bundles are built fresh, into an empty directory, from the
sources compiled in the same step; these tests hold build() to that.
"""

from __future__ import annotations

import importlib.util
import marshal
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import bundle

FLAGS_UNCHECKED_HASH = 0b01  # PEP 552: hash-based, check_source off
HTTP_AND_EVENT = bundle.function_names()


def _pyc_of(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def _header(pyc: Path) -> tuple[bytes, int, bytes, bytes]:
    data = pyc.read_bytes()
    return data[:4], int.from_bytes(data[4:8], "little"), data[8:16], data[16:]


def test_the_runtime_is_terraforms_and_the_tests_run_it() -> None:
    assert bundle.runtime_version() == (3, 11)
    # The bundle's bytecode is for the runtime; these tests (and `make test`) run on it too, so
    # what they load is what a deployed function loads.
    assert sys.version_info[:2] == bundle.runtime_version()
    assert bundle.runtime_python() == sys.executable


def test_a_runtime_that_is_not_here_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "runtime_version", lambda: (3, 99))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(bundle.BundleError, match=r"Python 3\.99 .*python3\.99"):
        bundle.runtime_python()


@pytest.mark.parametrize("name", ["session", "payouts"])
def test_every_module_has_unchecked_bytecode_of_its_current_source(
    tmp_path: Path, name: str
) -> None:
    out = bundle.build(name, tmp_path / "bundle")
    sources = sorted(out.rglob("*.py"))
    assert len(sources) > 50
    for source in sources:
        pyc = _pyc_of(source)
        assert pyc.is_file(), f"no bytecode for {source.relative_to(out)}"
        magic, flags, source_hash, code = _header(pyc)
        assert magic == importlib.util.MAGIC_NUMBER
        assert flags == FLAGS_UNCHECKED_HASH, f"{pyc}: not unchecked-hash (flags {flags:#b})"
        assert source_hash == importlib.util.source_hash(source.read_bytes()), (
            f"{pyc} is not the bytecode of {source.relative_to(out)} as it is now"
        )
        # Named as the runtime will find it, whatever directory it was built in.
        filename = marshal.loads(code).co_filename
        assert filename == f"{bundle.RUNTIME_SOURCE_DIR}/{source.relative_to(out).as_posix()}"
    # Nothing else in any __pycache__: no bytecode of a module that is not in the bundle.
    cached = {p for p in out.rglob("*") if p.is_file() and "__pycache__" in p.parts}
    assert cached == {_pyc_of(s) for s in sources}


def test_two_builds_are_the_same_bytes(tmp_path: Path) -> None:
    """The deploy zips are named by their content: bytecode must not make them differ."""
    first = bundle.build("session", tmp_path / "a")
    second = bundle.build("session", tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert [(first / f).read_bytes() for f in files] == [(second / f).read_bytes() for f in files]


def _loaded(bundle_dir: Path, statement: str) -> str:
    """Run `statement` as the runtime imports a bundle (-I, the bundle first on sys.path, no
    bytecode written) and return what `python -v` says about each module's code."""
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-B",
            "-v",
            "-c",
            f"import sys; sys.path.insert(0, '.'); {statement}",
        ],
        cwd=bundle_dir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def _code_from(verbose: str, bundle_dir: Path) -> list[str]:
    """The bundle's files (relative) that `python -v` says module code came from."""
    prefix = "# code object from "
    here = str(bundle_dir.resolve())
    out = []
    for line in verbose.splitlines():
        if line.startswith(prefix):
            path = str(Path(line.removeprefix(prefix).strip("'")).resolve())
            if path.startswith(here + "/"):
                out.append(path.removeprefix(here + "/"))
    return out


def test_importing_a_function_loads_every_module_from_the_bundled_bytecode(
    tmp_path: Path,
) -> None:
    """Every function's main.py and what it imports, as the runtime loads them: all from the
    .pyc files, none compiled from source."""
    for name in HTTP_AND_EVENT:
        out = bundle.build(name, tmp_path / name)
        verbose = _loaded(out, "import functions_framework, main")
        used = _code_from(verbose, out)
        assert importlib.util.cache_from_source("main.py") in used, (name, used)
        # One code object per module of the bundle that was imported: none missed.
        imported = re.findall(r"^import '(?:main|shared(?:\.[\w.]+)?)' #", verbose, re.MULTILINE)
        assert len(imported) > 10, (name, imported)
        assert len(used) == len(imported), (name, used, imported)
        compiled = [u for u in used if not u.endswith(".pyc")]
        assert not compiled, f"{name}: compiled from source at import: {compiled}"


def test_bytecode_is_of_the_sources_build_copied_and_a_stale_one_would_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built again after a change, the bundle's bytecode is of the changed source. And why it
    must be: an unchecked .pyc shadows a source changed after it was written, so editing a
    built bundle (or copying new sources over an old one) would deploy the old code."""
    repo = tmp_path / "repo"
    shutil.copytree(bundle.FUNCTIONS_DIR / "session", repo / "functions" / "session")
    shutil.copytree(bundle.SHARED_DIR, repo / "shared", ignore=bundle._IGNORE)
    shutil.copyfile(bundle.REQUIREMENTS, repo / "requirements.txt")
    (repo / "shared" / "built_value.py").write_text("VALUE = 'first'\n")
    monkeypatch.setattr(bundle, "FUNCTIONS_DIR", repo / "functions")
    monkeypatch.setattr(bundle, "SHARED_DIR", repo / "shared")
    monkeypatch.setattr(bundle, "REQUIREMENTS", repo / "requirements.txt")
    read = "from shared import built_value; print(built_value.VALUE)"
    run = [sys.executable, "-I", "-B", "-c", f"import sys; sys.path.insert(0, '.'); {read}"]

    old = bundle.build("session", tmp_path / "old")
    assert subprocess.run(run, cwd=old, capture_output=True, text=True, check=True).stdout == (
        "first\n"
    )

    (repo / "shared" / "built_value.py").write_text("VALUE = 'second'\n")
    new = bundle.build("session", tmp_path / "new")
    source = new / "shared" / "built_value.py"
    assert _header(_pyc_of(source))[2] == importlib.util.source_hash(source.read_bytes())
    assert subprocess.run(run, cwd=new, capture_output=True, text=True, check=True).stdout == (
        "second\n"
    )

    # The hazard, shown: the old bundle's source edited in place still runs its old bytecode.
    (old / "shared" / "built_value.py").write_text("VALUE = 'second'\n")
    assert subprocess.run(run, cwd=old, capture_output=True, text=True, check=True).stdout == (
        "first\n"
    )
    # Which is why build() only ever writes into an empty directory.
    with pytest.raises(bundle.BundleError, match="not an empty directory"):
        bundle.build("session", old)
