"""Build the deployable bundle of one function: its folder, the shared package, pinned requirements.

    python -m tools.bundle <function-name> <out-dir>

The bundle is exactly what Cloud Functions receives as source: `main.py` (and whatever else the
function folder holds) at the root, `shared/` beside it, and the repository's `requirements.txt`.
Nothing else from the repository goes in, so a function that quietly depends on `tests/`,
`dev/` or the repository root fails here and in tests/test_bundle.py, not after a deploy.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
SHARED_DIR = ROOT / "shared"
REQUIREMENTS = ROOT / "requirements.txt"

# Bytecode is built for the interpreter that happened to run the tests; the runtime compiles its
# own, and stale .pyc files of deleted modules could otherwise still be imported.
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
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
    target: str, port: int, *, source: str = "main.py", python: str = sys.executable
) -> list[str]:
    """The command that serves `target` of a bundle, run with the bundle as its cwd.

    -I keeps the environment's PYTHONPATH, the user site and the cwd off sys.path, so the only
    code found besides the installed requirements is what functions-framework itself adds: the
    bundle directory, as the Cloud Functions runtime does.
    """
    return [
        python,
        "-I",
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
