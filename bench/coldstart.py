"""Cold start of every function against the floor, the naive function and hello-world, all
measured in the same run.

    python -m bench.coldstart [--rounds N] [--only f,g] [--no-bytecode] [--json] [--strict]

Each measurement is one new process serving a bundle (tools/bundle.py, the deployable unit) with
functions-framework, timed from just before it is spawned to the end of its first answered
request. Per function, two first requests, each in its own cold process:

  openapi  GET /openapi.json, public: module import and app creation only
  bearer   a signed-in GET (GET / for session) with a Firebase ID token: adds what the first
           authenticated request pays (token checks, Firebase Admin set-up, the Auth user lookup)

Baselines, each a one-file function served the same way:

  floor        bench/floor_function.py: verify the ID token as shared/identity/tokens.py does
               and read one Firestore document, importing lazily: the least work that can
               authenticate a request with these libraries, so the yardstick
  naive        bench/naive_function.py: the same work with every library of the card imported
               at module top (bench/requirements.txt installs the two the functions do not use)
  hello-world  a function that answers a constant: the process and framework alone

Target: each function's first authenticated request, and its peak memory, within TARGET_RATIO
of the floor's median (of 5 rounds by default). A miss is reported per row; only --strict makes
it the exit status. Rounds interleave all processes (in a shuffled order) so drift of the
machine hits every row alike, and the floor runs FLOOR_PER_ROUND times in each, spread evenly
through it: every row is divided by the floor's median, so that median is taken over the most
samples (on a shared machine one cold process's CPU time varies by a third from run to run).
One unreported warm-up round first fills the page cache so the first process measured does not
pay for everyone's disk reads.

Bytecode is what a deployed instance has: each bundle carries the .pyc files tools/bundle.py
compiled into it, the one-file baselines get theirs compiled the same way, and no served process
writes any (`python -B`, bundle.serve_command), since a cold instance keeps nothing a previous
one compiled. --no-bytecode serves the functions' bundles without their .pyc files instead
(every cold start compiles its modules, as a bundle without them would in production; the
baselines keep theirs): the difference is what the bundled bytecode saves.

Peak RSS is the largest VmHWM in the server's process group (gunicorn's worker, which serves)
after the first request; CPU is the user + system time of that group up to the answer, the
steadier figure when the machine is shared. Functions are served by the deployed requirements
alone when `make bench` has built them (bench/serving.py).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import serving
from bench.report import Progress, machine, machine_line, ratio, table, within
from dev.stack import Ports, Stack, StackError
from shared.platform.context import Role
from tools import bundle

TARGET_RATIO = 1.15  # of the floor's median, for time and for peak memory
BENCH_DIR = Path(__file__).resolve().parent
FLOOR_SOURCE = BENCH_DIR / "floor_function.py"
NAIVE_SOURCE = BENCH_DIR / "naive_function.py"
BASELINE_TARGET = "floor"  # the entry point of both one-file baselines
# What the naive baseline imports besides the functions' own requirements.
NAIVE_EXTRAS = ("google.cloud.tasks_v2", "google.cloud.logging")
FLOOR_PER_ROUND = 4  # the denominator of every ratio: sampled more than any row
START_TIMEOUT = 60.0
POLL_SECONDS = 0.005  # well under the resolution that matters, yet leaves the CPU to the server

HELLO = """\
import functions_framework


@functions_framework.http
def hello(request):
    return "Hello, World!"
"""


class BenchError(RuntimeError):
    """A measurement that could not be made, told in one line."""


@dataclass(frozen=True)
class Probe:
    """One kind of cold process: what it serves and what its first request is."""

    label: str
    cwd: Path
    target: str
    path: str
    role: Role | None = None  # signed in as a user of this role, with a bearer ID token
    # A function with no signed-in GET is timed with a signed-in POST of an empty JSON body:
    # its 400 (validation) comes after authentication, so the token path is what is paid.
    method: str = "GET"
    body: bytes | None = None
    expect: int = 200


@dataclass(frozen=True)
class Sample:
    """One cold process: spawn to first answer (wall clock), the CPU time its processes used
    by then (steadier than wall clock on a busy machine), their peak RSS, and the answer."""

    seconds: float
    cpu_seconds: float
    rss_kib: int
    body: Any


@dataclass
class Series:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.seconds.append(sample.seconds)
        self.rss_kib.append(sample.rss_kib)
        self.cpu_seconds.append(sample.cpu_seconds)

    def summary(self, floor: Series | None, hello: Series | None = None) -> dict[str, Any]:
        median = statistics.median(self.seconds)
        rss = statistics.median(self.rss_kib)
        cpu = statistics.median(self.cpu_seconds) if self.cpu_seconds else 0.0
        out: dict[str, Any] = {
            "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(median, 4),
            "min_s": round(min(self.seconds), 4),
            "cpu_median_s": round(cpu, 3),
            "rss_kib": self.rss_kib,
            "rss_median_kib": rss,
        }
        if hello is not None:
            out["hello_ratio"] = ratio(median, statistics.median(hello.seconds))
        if floor is not None:
            out["ratio"] = ratio(median, statistics.median(floor.seconds))
            if floor.cpu_seconds and statistics.median(floor.cpu_seconds) > 0:
                out["cpu_ratio"] = ratio(cpu, statistics.median(floor.cpu_seconds))
            out["rss_ratio"] = ratio(rss, statistics.median(floor.rss_kib))
            out["time_pass"] = within(out["ratio"], TARGET_RATIO)
            out["rss_pass"] = within(out["rss_ratio"], TARGET_RATIO)
            out["pass"] = out["time_pass"] and out["rss_pass"]
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_usage(pgid: int) -> tuple[float, int]:
    """The CPU seconds (user + system) used by the processes of a process group, and the
    largest VmHWM among them (gunicorn's arbiter imports the function, its worker serves)."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, peak = 0.0, 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            # Fields after the parenthesised command name: state ppid pgrp ... utime (12th)
            # stime (13th), counted from 0 after the name.
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while being read
    return cpu, peak


def kill_group(process: subprocess.Popen[bytes]) -> None:
    # SIGKILL, not a graceful stop: only the first request matters and gunicorn's graceful
    # shutdown would add seconds per measurement.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def measure(probe: Probe, env: dict[str, str], headers: dict[str, str], log: Path) -> Sample:
    """One cold process of `probe`, measured up to its first answered request."""
    port = free_port()
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            bundle.serve_command(probe.target, port, python=serving.python()),
            cwd=probe.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            if process.poll() is not None:
                raise BenchError(f"{probe.label} exited with {process.returncode}: {tail(log)}")
            if time.perf_counter() - started > START_TIMEOUT:
                raise BenchError(f"{probe.label} did not answer within {START_TIMEOUT:.0f}s")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=START_TIMEOUT)
            try:
                sent = {**headers, "Content-Type": "application/json"} if probe.body else headers
                conn.request(probe.method, probe.path, body=probe.body, headers=sent)
                response = conn.getresponse()
                body = response.read()
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                time.sleep(POLL_SECONDS)  # not listening yet
                continue
            finally:
                conn.close()
            elapsed = time.perf_counter() - started
            break
        if response.status != probe.expect:
            raise BenchError(
                f"{probe.label} answered {response.status}: {body[:300].decode(errors='replace')}"
            )
        cpu, rss = _group_usage(process.pid)
    finally:
        kill_group(process)
    try:
        payload = json.loads(body)
    except ValueError:
        payload = body.decode(errors="replace")
    return Sample(elapsed, cpu, rss, payload)


def _signed_in_get(doc: dict[str, Any], name: str, method: str = "get") -> tuple[str, Role] | None:
    """The first signed-in GET (or `method`) without required parameters, and a role it admits."""
    for path, ops in doc.get("paths", {}).items():
        op = ops.get(method)
        if op is None or "security" not in op:
            continue
        if any(p.get("required") for p in op.get("parameters", [])):
            continue
        return path.removeprefix(f"/{name}") or "/", Role(op["x-roles"][0])
    return None


def child_env(stack: Stack) -> dict[str, str]:
    # The stack's addresses and nothing that steers imports (-I ignores PYTHON* anyway).
    env = {k: v for k in ("PATH", "HOME", "LANG", "TMPDIR") if (v := os.environ.get(k))}
    return env | stack.env


def _verdict(row: dict[str, Any]) -> str:
    if row["pass"]:
        return "PASS"
    over = [
        what for what, ok in (("time", row["time_pass"]), ("memory", row["rss_pass"])) if not ok
    ]
    return f"OVER ({' and '.join(over)} > {TARGET_RATIO:g}x floor)"


def _cells(label: str, row: dict[str, Any], verdict: str) -> list[str]:
    return [
        label,
        f"{row['median_s'] * 1000:.0f}",
        f"{row['min_s'] * 1000:.0f}",
        f"{row['ratio']:.2f}",
        f"{row['hello_ratio']:.2f}",
        f"{row.get('cpu_median_s', 0) * 1000:.0f}",
        f"{row['cpu_ratio']:.2f}" if "cpu_ratio" in row else "",
        f"{row['rss_median_kib'] / 1024:.1f}",
        f"{row['rss_ratio']:.2f}",
        verdict,
    ]


def render(results: dict[str, Any]) -> str:
    """The results as a table: baselines first, then every function's rows."""
    headers = [
        "process / first request",
        "median ms",
        "min ms",
        "x floor",
        "x hello",
        "CPU ms",
        "CPU x floor",
        "RSS MiB",
        "RSS x floor",
        "verdict",
    ]
    rows = [
        _cells(f"{name} (baseline)  {results['baselines'][name]['request']}", b, what)
        for name, what in (
            ("floor", "the yardstick"),
            ("naive", "every import at top"),
            ("hello-world", "no work"),
        )
        for b in [results["baselines"][name]]
    ]
    for name, modes in results["functions"].items():
        for mode, row in modes.items():
            if "median_s" not in row:
                rows.append([f"{name}  {mode}", "n/a", *[""] * 7, row["note"]])
                continue
            rows.append(_cells(f"{name}  {mode}", row, _verdict(row)))
    lines = [
        f"Cold start: spawn -> first answered request; {results['rounds']} rounds "
        "(+1 warm-up, not counted), interleaved, the floor "
        f"{results.get('floor_per_round', 1)} times a round; medians; "
        + (
            "bundles with their compiled bytecode"
            if results.get("bytecode", True)
            else "bundles WITHOUT bytecode (--no-bytecode: every module compiled at start)"
        ),
        f"target: each function's first request and peak memory within {TARGET_RATIO:g}x the "
        "floor's (a function verifying a token and reading one document, imports deferred); "
        "CPU: user+system time of the server's processes up to the answer, steadier than the "
        "wall clock when the machine is shared",
        machine_line(*results["machine"]) + "; " + results["served_by"],
        "",
        table(headers, rows, left=1),
        "",
    ]
    for name, modes in results["functions"].items():
        measured = [row for row in modes.values() if "pass" in row]
        ok = bool(measured) and all(row["pass"] for row in measured)
        worst = max((row["ratio"] for row in measured), default=0.0)
        worst_rss = max((row["rss_ratio"] for row in measured), default=0.0)
        lines.append(
            f"{name}: {'PASS' if ok else 'OVER TARGET'} "
            f"(worst {worst:.2f}x the floor's time, {worst_rss:.2f}x its memory)"
        )
    return "\n".join(lines)


def all_pass(results: dict[str, Any]) -> bool:
    return all(
        row.get("pass", False)
        for modes in results["functions"].values()
        for row in modes.values()
        if "median_s" in row
    )


def _missing_naive_extras() -> list[str]:
    """What the naive baseline imports that the serving interpreter lacks."""
    missing = []
    for module in NAIVE_EXTRAS:
        probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
        done = subprocess.run([serving.python(), "-I", "-c", probe], check=False)
        if done.returncode != 0:
            missing.append(module)
    return missing


def _one_file_function(source: Path, directory: Path) -> Path:
    """A baseline served as a bundle is: its main.py with its bytecode compiled beside it."""
    directory.mkdir(parents=True)
    shutil.copyfile(source, directory / "main.py")
    bundle.compile_bytecode(directory)
    return directory


def _without_bytecode(root: Path) -> Path:
    for cache in sorted(root.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    return root


def round_order(
    probes: list[Probe], floor: Probe, rng: random.Random, floors: int = FLOOR_PER_ROUND
) -> list[Probe]:
    """One round: every probe but the floor once, shuffled, and the floor `floors` times at
    evenly spaced places (the first at the start), so drift within the round meets it too."""
    others = [p for p in probes if p != floor]
    rng.shuffle(others)
    step = len(others) / floors
    spots = {round(i * step) for i in range(floors)}
    out: list[Probe] = []
    for i, probe in enumerate(others):
        out += [floor] * (i in spots)
        out.append(probe)
    out += [floor] * (floors - out.count(floor))
    return out


def run(
    rounds: int, progress: bool = True, only: set[str] | None = None, bytecode: bool = True
) -> dict[str, Any]:
    say = Progress(progress)
    started_on = machine()
    missing = _missing_naive_extras()
    if missing:
        raise BenchError(
            f"the naive baseline needs {', '.join(missing)}: "
            "pip install -r bench/requirements.txt (make bench does it)"
        )

    from tests.support import create_user, id_token

    work = Path(tempfile.mkdtemp(prefix="alodoktor-coldstart-"))
    stack = Stack(ports=Ports.free(), workdir=work / "stack", scheduler_paused=True)
    try:
        hello_dir = work / "hello"
        hello_dir.mkdir()
        (hello_dir / "main.py").write_text(HELLO)
        bundle.compile_bytecode(hello_dir)
        floor_dir = _one_file_function(FLOOR_SOURCE, work / "floor")
        naive_dir = _one_file_function(NAIVE_SOURCE, work / "naive")
        # HTTP functions only: an event function (audit-trigger) answers CloudEvents, not routes.
        names = [
            n
            for n in bundle.function_names()
            if "@functions_framework.http" in (bundle.FUNCTIONS_DIR / n / "main.py").read_text()
            and (only is None or n in only)
        ]
        bundles = {n: bundle.build(n, work / "bundles" / n) for n in names}
        if not bytecode:
            bundles = {n: _without_bytecode(d) for n, d in bundles.items()}

        say("starting the Firestore and Auth emulators ...")
        stack.start(gateway=False)
        os.environ.update(stack.env)  # this process's Admin SDK calls go to the same emulators
        env = child_env(stack)
        logs = work / "logs"
        logs.mkdir()

        hello = Probe("hello-world  GET /", hello_dir, "hello", "/")
        floor = Probe("floor  GET / (bearer)", floor_dir, BASELINE_TARGET, "/", Role.PATIENT)
        naive = Probe("naive  GET / (bearer)", naive_dir, BASELINE_TARGET, "/", Role.PATIENT)
        openapi = {
            n: Probe(f"{n}  GET /openapi.json", d, bundle.target_of(n), "/openapi.json")
            for n, d in bundles.items()
        }
        # Warm-up: fills the page cache and tells which functions are HTTP and what to sign in to.
        say("warm-up round (not counted) ...")
        measure(hello, env, {}, logs / "warmup-hello.log")
        probes: list[Probe] = [hello, floor, naive]
        notes: dict[str, dict[str, str]] = {}
        for n, probe in openapi.items():
            try:
                doc = measure(probe, env, {}, logs / f"warmup-{n}.log").body
            except BenchError as exc:
                notes[n] = {"GET /openapi.json": f"not an HTTP function? {exc}"}
                continue
            probes.append(probe)
            found = _signed_in_get(doc if isinstance(doc, dict) else {}, n)
            if found is not None:
                path, role = found
                bearer = Probe(f"{n}  GET {path} (bearer)", probe.cwd, probe.target, path, role)
                probes.append(bearer)
                continue
            found = _signed_in_get(doc if isinstance(doc, dict) else {}, n, "post")
            if found is None:
                notes[n] = {"bearer": "no signed-in route without parameters"}
                continue
            path, role = found
            label = f"{n}  POST {path} {{}} (bearer, 400)"
            probes.append(Probe(label, probe.cwd, probe.target, path, role, "POST", b"{}", 400))
        users = {p.role: create_user(stack, role=p.role) for p in probes if p.role is not None}
        # Every signed-in request once too, uncounted: it does whatever a first request of an
        # account does once (an account made before its access record gets one on its first
        # request), and reads from disk what only a request imports.
        warm_tokens = {role: id_token(stack, user) for role, user in users.items()}
        signed_in = [(p, p.role) for p in probes if p.role is not None]
        for i, (probe, role) in enumerate(signed_in):
            headers = {"Authorization": f"Bearer {warm_tokens[role]}"}
            measure(probe, env, headers, logs / f"warmup-signed-in-{i}.log")

        series = {p.label: Series() for p in probes}
        order = random.Random(20240601)  # a fixed seed: runs are comparable
        for r in range(1, rounds + 1):
            # A fresh token per round (for every role) keeps each well inside its hour.
            tokens = {role: id_token(stack, user) for role, user in users.items()}
            shuffled = round_order(probes, floor, order)
            for i, probe in enumerate(shuffled):
                headers = (
                    {} if probe.role is None else {"Authorization": f"Bearer {tokens[probe.role]}"}
                )
                sample = measure(probe, env, headers, logs / f"r{r}-{i}.log")
                body = sample.body
                # A signed-in answer naming its caller must name ours: the token path really ran.
                user = users.get(probe.role) if probe.role is not None else None
                if (
                    user is not None
                    and isinstance(body, dict)
                    and body.get("uid", user.uid) != user.uid
                ):
                    raise BenchError(f"{probe.label} answered for another user: {body}")
                series[probe.label].add(sample)
                say(
                    f"round {r}/{rounds} [{i + 1}/{len(shuffled)}] {probe.label:<44} "
                    f"{sample.seconds * 1000:6.0f} ms (CPU {sample.cpu_seconds * 1000:4.0f}) "
                    f"{sample.rss_kib / 1024:6.1f} MiB"
                )

        base, hello_series = series[floor.label], series[hello.label]
        functions: dict[str, dict[str, Any]] = {}
        for n in names:
            rows: dict[str, Any] = {}
            for p in probes:
                if p.cwd == bundles[n]:
                    mode = p.label.removeprefix(f"{n}  ")
                    rows[mode] = series[p.label].summary(base, hello_series)
            for mode, note in notes.get(n, {}).items():
                rows[mode] = {"note": note}
            functions[n] = rows
        baselines = {
            name: series[probe.label].summary(base, hello_series)
            | {"request": probe.label.split("  ", 1)[1]}
            for name, probe in (("floor", floor), ("naive", naive), ("hello-world", hello))
        }
        return {
            "rounds": rounds,
            "bytecode": bytecode,
            "floor_per_round": FLOOR_PER_ROUND,
            "target_ratio": TARGET_RATIO,
            "machine": [started_on, machine()],
            "served_by": serving.description(),
            "baselines": baselines,
            "functions": functions,
        }
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.coldstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when any row misses the target"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--only", help="comma-separated function names (default: all)")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="serve the functions' bundles without their .pyc files (what the bytecode saves)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
        bytecode = not args.no_bytecode
        results = run(args.rounds, progress=not args.quiet, only=only, bytecode=bytecode)
    except (BenchError, StackError) as exc:
        print(f"coldstart: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 1 if args.strict and not all_pass(results) else 0


if __name__ == "__main__":
    sys.exit(main())
