"""Build the deployable bundle of one function: its folder, the shared package, pinned requirements.

    python -m tools.bundle <function-name> <out-dir>

The bundle is exactly what Cloud Functions receives as source: `main.py` (and whatever else the
function folder holds) at the root, `shared/` beside it, and the repository's `requirements.txt`.
Nothing else from the repository goes in, so a function that quietly depends on `tests/`,
`dev/` or the repository root fails here and in tests/test_bundle.py, not after a deploy.

Beside every module goes its bytecode, compiled for the runtime's Python (Terraform's
`runtime = "python311"`): a cold instance starts from the deployed files, so whatever it
compiled itself is lost with it and the next cold start compiles again. The .pyc files are
unchecked-hash ones (PEP 552): the runtime loads them without reading the source's time or
hash, because deployment copies the files (new mtimes would make timestamp .pyc files stale,
and checked-hash ones would cost a read and a hash of every source). Unchecked, a .pyc is
believed even when its source changed, so a bundle is only ever built fresh, into an empty
directory, from the sources it compiles in the same step; never edit a built bundle.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
SHARED_DIR = ROOT / "shared"
REQUIREMENTS = ROOT / "requirements.txt"
TERRAFORM_DIR = ROOT / "terraform"

# The repository's own bytecode is whatever the last run happened to write (timestamp .pyc
# files, maybe of modules deleted since): never copied; build() compiles the bundle's afresh.
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
_RUNTIME = re.compile(r'^\s*runtime\s*=\s*"python(\d)(\d+)"', re.MULTILINE)
# The directory Cloud Functions' Python runtime serves the source from. Each code object names
# the file it was compiled from; the bundle's are compiled as if there, so the same source gives
# the same bytes wherever it is built (the zips are named by their content). The import system
# puts the real path back when it loads a .pyc (importlib's _fix_up_module), so tracebacks and
# `__file__` are unaffected.
RUNTIME_SOURCE_DIR = "/workspace"
# `name==version`, optionally with extras, an environment marker and --hash options; nothing
# looser, so the bundle installs the very versions the tests ran against.
_PINNED = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[^=<>~!*,;\s]+"
    r"(\s*;[^#]*?)?(\s+--hash=\S+)*$"
)


class BundleError(Exception):
    """A reason the bundle cannot be built, told in one line."""


def function_names() -> list[str]:
    """Every deployable function: a folder under functions/ with a main.py."""
    return sorted(p.name for p in FUNCTIONS_DIR.iterdir() if (p / "main.py").is_file())


def target_of(name: str) -> str:
    """The entry point of a function: its name with '-' as '_' (a Python identifier)."""
    return name.replace("-", "_")


def serve_command(
    target: str,
    port: int,
    *,
    source: str = "main.py",
    python: str = sys.executable,
    flags: Sequence[str] = (),
) -> list[str]:
    """The command that serves `target` of a bundle, run with the bundle as its cwd.

    -I keeps the environment's PYTHONPATH, the user site and the cwd off sys.path, so the only
    code found besides the installed requirements is what functions-framework itself adds: the
    bundle directory, as the Cloud Functions runtime does. -B writes no bytecode: a deployed
    instance's compiles are lost with it, so a bundle is served, measured and tested with the
    bytecode it was built with and nothing a previous process left in it. `flags`: more of the
    interpreter's own options (`-v` to see where each module's code came from).
    """
    return [
        python,
        "-I",
        "-B",
        *flags,
        "-m",
        "functions_framework",
        "--target",
        target,
        "--source",
        source,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def runtime_version() -> tuple[int, int]:
    """The deployed functions' Python, as Terraform names it (`python311` -> (3, 11))."""
    found = {
        (int(m[1]), int(m[2]))
        for tf in sorted(TERRAFORM_DIR.glob("*.tf"))
        for m in _RUNTIME.finditer(tf.read_text())
    }
    if len(found) != 1:
        raise BundleError(f"expected one Python runtime in {TERRAFORM_DIR}/*.tf, found {found}")
    return found.pop()


def runtime_python() -> str:
    """An interpreter of the runtime's Python version: this one, or python3.N on PATH."""
    major, minor = runtime_version()
    if sys.version_info[:2] == (major, minor):
        return sys.executable
    other = shutil.which(f"python{major}.{minor}")
    if other is None:
        raise BundleError(
            f"the functions run Python {major}.{minor} (terraform's runtime) and its bytecode "
            f"is compiled by that version: run this with python{major}.{minor} or put it on PATH"
        )
    return other


def compile_bytecode(root: Path) -> None:
    """Compile every .py under `root` into `__pycache__`, unchecked-hash, for the runtime.

    In a fresh process, with the same arguments for every bundle (cwd is the bundle, `.` the
    tree), so the bytes depend on the sources alone, not on what a long-lived process had
    loaded before (marshal's output can differ with the objects' reference counts)."""
    done = subprocess.run(
        [
            runtime_python(),
            "-I",
            "-m",
            "compileall",
            "-q",
            "-d",
            RUNTIME_SOURCE_DIR,
            "--invalidation-mode",
            "unchecked-hash",
            ".",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        failed = (done.stdout + done.stderr).strip().splitlines()
        raise BundleError(f"bytecode of {root} did not compile: {' | '.join(failed[-3:])}")


def unpinned(requirements: str) -> list[str]:
    """The lines of a requirements file that do not pin one exact version."""
    lines = (line.split("#", 1)[0].strip() for line in requirements.splitlines())
    return [line for line in lines if line and not _PINNED.match(line)]


def build(name: str, out: Path) -> Path:
    """Write the bundle of function `name` into `out` (absent or empty); return `out`."""
    known = function_names()
    if name not in known:
        raise BundleError(f"unknown function {name!r} (known: {', '.join(known) or 'none'})")
    source = FUNCTIONS_DIR / name
    # The bundle's shared/ and requirements.txt must be the repository's; a function folder
    # holding its own would be silently overwritten and deploy differently from what was tested.
    clashes = [p for p in ("shared", "requirements.txt") if (source / p).exists()]
    if clashes:
        raise BundleError(f"functions/{name} must not contain {', '.join(clashes)}")
    loose = unpinned(REQUIREMENTS.read_text())
    if loose:
        raise BundleError(f"requirements.txt has unpinned lines (use ==): {'; '.join(loose)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} exists and is not an empty directory")

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, out, ignore=_IGNORE, dirs_exist_ok=True)
    shutil.copytree(SHARED_DIR, out / "shared", ignore=_IGNORE)
    shutil.copyfile(REQUIREMENTS, out / "requirements.txt")
    compile_bytecode(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bundle",
        description="Build the deployable bundle of one function into a directory.",
    )
    parser.add_argument("function", help="a folder name under functions/")
    parser.add_argument("out", type=Path, help="the bundle directory (absent or empty)")
    args = parser.parse_args(argv)
    try:
        out = build(args.function, args.out)
    except BundleError as exc:
        print(f"bundle: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
