"""Every benchmark, one after the other, in one report: `make bench`.

    python -m bench [--json] [--strict] [--rounds N] [--requests N] [--seconds S]
                    [--notices N] [--providers A,B] [--quiet]

modules (bench/modules.py), cold start (bench/coldstart.py), warm requests (bench/requests.py),
the load run (bench/load.py), the notify sweep (bench/notify_sweep.py) and a payout run
(bench/payouts.py), each bounded, each in its own process on its own stack on free ports (the
Firebase app, the Firestore client and the settings are cached per process, so one stack's
addresses must not outlive it); the defaults take about twenty minutes on 2 cores. Each bench's
table goes to stdout as it ends (progress lines to stderr); --json prints one JSON object with
every bench's results at the end instead. --strict: exit 1 when any target is missed
(otherwise misses are only reported).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from bench import coldstart, load, modules, notify_sweep, payouts
from bench import requests as warm


def _run(module: str, args: list[str]) -> dict[str, Any] | None:
    """One bench's results, or None when it could not run (it said why on stderr): the others
    still run, so one emulator that did not start does not cost the whole report."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--json", *args],
        stdout=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        print(f"bench: bench.{module} failed (exit {done.returncode})", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="one JSON object at the end")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a missed target")
    parser.add_argument("--rounds", type=int, default=5, help="cold-start rounds (5)")
    parser.add_argument("--requests", type=int, default=150, help="warm requests per phase (150)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the load run (60)")
    parser.add_argument("--notices", type=int, default=400, help="notices the sweep sends (400)")
    parser.add_argument(
        "--providers", default="10,1000", help="payout run sizes, small first (10,1000)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    quiet = ["--quiet"] if args.quiet else []
    runs: list[tuple[str, list[str], Callable[[dict[str, Any]], str], Callable[..., bool]]] = [
        ("modules", [], modules.table, lambda r: True),
        ("coldstart", ["--rounds", str(args.rounds), *quiet], coldstart.render, coldstart.all_pass),
        ("requests", ["--requests", str(args.requests), *quiet], warm.render, warm.all_pass),
        ("load", ["--seconds", str(args.seconds), *quiet], load.render, load.passed),
        (
            "notify_sweep",
            ["--notices", str(args.notices)],
            notify_sweep.render,
            notify_sweep.passed,
        ),
        ("payouts", ["--providers", args.providers], payouts.render, payouts.passed),
    ]
    results: dict[str, Any] = {}
    met = True
    for name, options, render, passed in runs:
        got = _run(name, options)
        results[name] = got
        if got is None:
            met = False
            if not args.json:
                print(f"{name}: could not run (see above)\n", flush=True)
            continue
        met = met and passed(got)
        if not args.json:
            print(render(got) + "\n", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    if any(r is None for r in results.values()):
        return 1
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
