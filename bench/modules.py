"""Modules each function loads on cold start, counted in its deployable bundle.

    python -m bench.modules [--json]

Each function's bundle (tools/bundle.py) is imported the way the runtime does (its `main.py`
from a `python -I` process whose cwd is the bundle) and the loaded modules are counted: all of
them, those of `shared/` (package `__init__`s apart), and whether the PayPal client is among
them. The baseline, measured in the same run, is functions-framework and pydantic alone (what
every function needs before any of its own code): a function's own weight is the difference.
A cold start pays for every module loaded; this is the count the cold-start benchmark's times
come from, free of the machine's noise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import serving
from tools import bundle

COUNT = """
import json, sys
sys.path.insert(0, ".")  # as functions-framework puts the source's folder first
{imports}
names = sorted(sys.modules)
shared = [n for n in names if n == "shared" or n.startswith("shared.")]
packages = [n for n in shared if getattr(sys.modules[n], "__path__", None) is not None]
print(json.dumps({{
    "all": len(names),
    "shared": len(shared) - len(packages),
    "shared_packages": len(packages),
    "paypal": "shared.integrations.paypal" in sys.modules,
}}))
"""
BASELINE = "import functions_framework, pydantic"


def count(cwd: Path, imports: str) -> dict[str, Any]:
    done = subprocess.run(
        [serving.python(), "-I", "-c", COUNT.format(imports=imports)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing in {cwd} failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="alodoktor-modules-"))
    try:
        baseline = count(work, BASELINE)
        functions = {}
        for name in bundle.function_names():
            built = bundle.build(name, work / name)
            functions[name] = count(built, "import functions_framework, pydantic\nimport main")
            functions[name]["own"] = functions[name]["all"] - baseline["all"]
        return {"baseline": baseline, "functions": functions}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(results: dict[str, Any]) -> str:
    base = results["baseline"]
    lines = [
        "Modules loaded by importing each function's main.py from its bundle",
        f"baseline (functions_framework + pydantic): {base['all']} modules",
        "",
        f"{'function':<16} {'all':>6} {'own':>6} {'shared':>7} {'pkgs':>5}  PayPal client",
    ]
    for name, row in results["functions"].items():
        lines.append(
            f"{name:<16} {row['all']:>6} {row['own']:>6} {row['shared']:>7} "
            f"{row['shared_packages']:>5}  {'loaded' if row['paypal'] else '-'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modules", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    results = run()
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
