"""Every function imports and serves from its deployable bundle alone.

Each bundle (tools/bundle.py) is served by functions-framework in a separate `python -I`
process whose cwd is the bundle, with the stack's environment and no PYTHONPATH: the only code
it can find is the bundle and the installed requirements. The tests prove that isolation rather
than assume it: a bundle without shared/ must fail to start, and a probe served from the bundle
reports where every loaded module came from.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from dev.stack import Stack
from shared.platform.context import Role
from tests.support import create_user, id_token
from tools import bundle

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix).resolve()  # the installed requirements; it may live inside ROOT
REPO_PACKAGES = ("tests", "dev", "tools", "bench", "functions")
PINNED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[^\s=<>!~*,;]+")

# Served from the bundle beside main.py: imports the function as the runtime does, then answers
# every request with where that very process found its code (paths resolved in its own cwd).
PROBE = """
import importlib.util
import os
import sys

import functions_framework

import main
import shared


def where(name):
    spec = importlib.util.find_spec(name)
    if spec is None:
        return []
    places = list(spec.submodule_search_locations or []) + [spec.origin or ""]
    return [os.path.realpath(p) for p in places if p]


@functions_framework.http
def probe(request):
    files = (getattr(m, "__file__", None) for m in list(sys.modules.values()))
    return {
        "sys_path": sys.path,
        "sys_path_real": [os.path.realpath(p) for p in sys.path],
        "main": os.path.realpath(main.__file__),
        "shared": os.path.realpath(shared.__file__),
        "found": {n: where(n) for n in %(packages)r},
        "modules": sorted(os.path.realpath(f) for f in files if isinstance(f, str)),
    }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env(stack: Stack) -> dict[str, str]:
    # Only what any process needs plus the stack's addresses: nothing that steers imports.
    env = {k: v for k in ("PATH", "HOME", "LANG", "TMPDIR") if (v := os.environ.get(k))}
    env.update(stack.env)
    assert not any(k.startswith("PYTHON") for k in env)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        # gunicorn's worker is in the same group; nothing of it may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def _start(
    cwd: Path,
    env: dict[str, str],
    target: str,
    source: str = "main.py",
    flags: tuple[str, ...] = (),
) -> Server:
    port = _free_port()
    log = cwd.parent / f"{cwd.name}-{target}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            bundle.serve_command(target, port, source=source, flags=flags),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, port, log)


@contextlib.contextmanager
def _served(
    cwd: Path,
    env: dict[str, str],
    target: str,
    source: str = "main.py",
    flags: tuple[str, ...] = (),
) -> Iterator[Server]:
    """`target` served from `cwd`, once it answers any request; always stopped after."""
    server = _start(cwd, env, target, source, flags)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.process.poll() is not None:
                code = server.process.returncode
                pytest.fail(f"{target} exited with {code}:\n{server.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{target} did not answer within 60s:\n{server.output()}")
            try:
                requests.get(server.base + "/", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield server
    finally:
        server.stop()


def _is_http(bundle_dir: Path) -> bool:
    # Event functions (Firestore triggers) take CloudEvents, not routes: no document, no auth.
    return "@functions_framework.http" in (bundle_dir / "main.py").read_text()


def _check_session(stack: Stack, name: str, base: str, doc: dict[str, Any]) -> None:
    user = create_user(stack)
    response = requests.get(
        base + "/", headers={"Authorization": f"Bearer {id_token(stack, user)}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["uid"] == user.uid


def _check_any_signed_in_get(stack: Stack, name: str, base: str, doc: dict[str, Any]) -> None:
    """A signed-in GET without parameters, by an approved user of a role it allows.

    Authentication runs before anything else a route does, so any answer but 401/403/5xx shows
    the bundle verified the token and read the Auth user on its own.
    """
    for path, ops in doc["paths"].items():
        op = ops.get("get")
        if op is None or "security" not in op:
            continue
        roles = [r for r in op["x-roles"] if r in set(Role)]
        if not roles or any(p.get("required") for p in op.get("parameters", [])):
            continue
        user = create_user(stack, role=Role(roles[0]), approved=True)
        url = base + (path.removeprefix(f"/{name}") or "/")
        response = requests.get(
            url, headers={"Authorization": f"Bearer {id_token(stack, user)}"}, timeout=30
        )
        assert response.status_code not in (401, 403), (url, response.text)
        assert response.status_code < 500, (url, response.text)
        return
    pytest.fail(
        f"{name}: no signed-in GET without parameters; "
        "give the function its own entry in AUTHENTICATED in tests/test_bundle.py"
    )


def _check_patient_post(stack: Stack, name: str, base: str, doc: dict[str, Any]) -> None:
    """A patient's POST of an empty body: 400 (validation) shows authentication passed first."""
    user = create_user(stack, role=Role.PATIENT)
    response = requests.post(
        base + "/",
        json={},
        headers={"Authorization": f"Bearer {id_token(stack, user)}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_failed"


# One authenticated request per HTTP function that must succeed from the bundle alone. A
# function without an entry gets the generic check; None only for one with no signed-in route.
AUTHENTICATED: dict[str, Callable[[Stack, str, str, dict[str, Any]], None] | None] = {
    "session": _check_session,
    "paypal-create": _check_patient_post,
    "paypal-capture": _check_patient_post,
    "paypal-webhook": None,  # PayPal calls it; no user signs in
}


def _bundle_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _source_files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


def _with_bytecode(files: set[str]) -> set[str]:
    """`files` and, beside every module, the .pyc tools/bundle.py compiles for the runtime."""
    return files | {importlib.util.cache_from_source(f) for f in files if f.endswith(".py")}


# Libraries none of these first requests needs (docs/guides/dependencies.md: each imported where
# it is used): loading one on the way would cost every cold start its import. (firebase-admin,
# and cryptography with it, is not among them: an account's very first request makes its access
# record from its Auth record, and these accounts are new; bench.coldstart warms its accounts
# first and holds every function's first request to the floor's time and memory.)
DEFERRED = (
    "google.cloud.tasks_v2",  # payout runs that enqueue
    "shared.integrations.cloud_tasks",
    "google.cloud.storage",  # the audit export
    "shared.audit.export",
    "google.cloud.logging",  # not used at all: logs are JSON lines on stdout
)
_CODE_FROM = re.compile(r"^# code object from '?(?P<path>[^']+)'?$", re.MULTILINE)
_IMPORTED = re.compile(r"^import '(?P<name>[\w.]+)' #", re.MULTILINE)


def _code_loaded(verbose_log: str, bundle_dir: Path) -> tuple[list[str], list[str]]:
    """From a `python -v` log: the bundle's modules whose code came from a .pyc, and those
    compiled from source at run time (paths relative to the bundle)."""
    here = str(bundle_dir.resolve())
    real = (os.path.realpath(m["path"]) for m in _CODE_FROM.finditer(verbose_log))
    paths = [os.path.relpath(p, here) for p in real if p.startswith(here + os.sep)]
    return [p for p in paths if p.endswith(".pyc")], [p for p in paths if not p.endswith(".pyc")]


def _from_repo(paths: list[str], bundle_dir: Path) -> list[str]:
    """Those of `paths` inside the repository but neither in the venv nor the bundle."""
    return [
        p
        for p in paths
        if Path(p).is_relative_to(ROOT)
        and not Path(p).is_relative_to(VENV)
        and not Path(p).is_relative_to(bundle_dir)
    ]


@pytest.mark.parametrize("name", bundle.function_names())
def test_function_serves_from_its_bundle_alone(stack: Stack, tmp_path: Path, name: str) -> None:
    out = bundle.build(name, tmp_path / "bundle")

    # Exactly the function folder, the shared package and the pinned requirements, and the
    # bytecode of every module in them.
    assert _bundle_files(out) == _with_bytecode(
        _source_files(bundle.FUNCTIONS_DIR / name)
        | {f"shared/{f}" for f in _source_files(bundle.SHARED_DIR)}
        | {"requirements.txt"}
    )
    assert (out / "requirements.txt").read_text() == bundle.REQUIREMENTS.read_text()
    lines = [
        ln.split("#", 1)[0].strip() for ln in (out / "requirements.txt").read_text().split("\n")
    ]
    loose = [ln for ln in lines if ln and not PINNED.fullmatch(ln)]
    assert not loose, f"requirements.txt lines not pinned with ==: {loose}"

    env = _child_env(stack)
    target = bundle.target_of(name)
    # Served with -v: the interpreter names where each module's code came from.
    with _served(out, env, target, flags=("-v",)) as server:
        base = server.base
        if _is_http(out):
            response = requests.get(base + "/openapi.json", timeout=30)
            assert response.status_code == 200, response.text
            doc = response.json()
            # The same routes as the repository's function, mounted by the gateway.
            expected = requests.get(f"{stack.gateway_url}/{name}/openapi.json", timeout=30)
            assert expected.status_code == 200, expected.text
            assert doc["paths"] == expected.json()["paths"]
            assert set(doc["paths"]) > {f"/{name}/openapi.json"}
            check = AUTHENTICATED.get(name, _check_any_signed_in_get)
            if check is not None:
                check(stack, name, base, doc)

    # Every module of the bundle that starting and those first requests loaded came from the
    # bundled bytecode: none was compiled at run time (as a cold instance would, every time).
    verbose = server.output()
    from_pyc, compiled = _code_loaded(verbose, out)
    assert not compiled, f"compiled from source at run time, not loaded from the bundle: {compiled}"
    assert importlib.util.cache_from_source("main.py") in from_pyc, from_pyc
    assert any(p.startswith("shared/") for p in from_pyc), from_pyc
    imported = {m["name"] for m in _IMPORTED.finditer(verbose)}
    assert imported, "no import lines: was the function served with -v?"
    loaded = sorted(n for n in imported if n.startswith(DEFERRED))
    assert not loaded, f"{name}'s first requests loaded deferred libraries: {loaded}"

    # Where the served process found its code: the bundle and the venv, never the repository.
    (out / "_bundle_probe.py").write_text(PROBE % {"packages": REPO_PACKAGES})
    try:
        with _served(out, env, "probe", source="_bundle_probe.py") as server:
            probe = requests.get(server.base + "/", timeout=30).json()
    finally:
        (out / "_bundle_probe.py").unlink()
    here = out.resolve()
    assert Path(probe["main"]).is_relative_to(here), probe["main"]
    assert Path(probe["shared"]).is_relative_to(here), probe["shared"]
    # Importable at all only from elsewhere (an installed package of that name), never the repo.
    assert not [n for n, places in probe["found"].items() if _from_repo(places, here)], probe
    assert set(probe["found"]) == set(REPO_PACKAGES)
    assert "" not in probe["sys_path"], probe["sys_path"]  # no cwd, even if cwd were the repo
    assert not _from_repo(probe["sys_path_real"], here), probe["sys_path"]
    leaked = _from_repo(probe["modules"], here)
    assert not leaked, f"modules loaded from the repository, not the bundle: {leaked}"

    # Without its shared/ the bundle must not start: shared came from the bundle, not the repo.
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("shared", "__pycache__"))
    server = _start(bare, env, target)
    try:
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} kept running without shared/:\n{server.output()}")
    finally:
        server.stop()
    assert server.process.returncode != 0
    assert "No module named 'shared'" in server.output(), server.output()


def test_bundle_refuses_unknown_function_and_non_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(bundle.BundleError, match=r"unknown function .no-such.*known: "):
        bundle.build("no-such", tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(bundle.BundleError, match="not an empty directory"):
        bundle.build(bundle.function_names()[0], tmp_path / "b")


def test_bundle_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.bundle", "no-such", str(tmp_path / "x")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "unknown function 'no-such'" in result.stderr
    assert f"known: {', '.join(bundle.function_names())}" in result.stderr
