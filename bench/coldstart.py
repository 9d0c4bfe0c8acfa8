"""Cold start of every function against a hello-world function, measured in the same run.

    python -m bench.coldstart [--rounds N] [--json]

Each measurement is one new process serving a bundle (tools/bundle.py, the deployable unit) with
functions-framework, timed from just before it is spawned to the end of its first answered
request. Per function, two first requests, each in its own cold process:

  openapi  GET /openapi.json, public: module import and app creation only
  bearer   a signed-in GET (GET / for session) with a Firebase ID token: adds what the first
           authenticated request pays (token checks, Firebase Admin set-up, the Auth user lookup)

The target is every function within 2x hello-world's median. Rounds interleave all processes
(in a shuffled order) so drift of the machine hits every row alike; one unreported warm-up round
first fills the page cache so the first process measured does not pay for everyone's disk reads.
Peak RSS is the largest VmHWM in the server's process group (gunicorn's worker, which serves)
after the first request.
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

from dev.stack import Ports, Stack, StackError
from shared.platform.context import Role
from tools import bundle

TARGET_RATIO = 2.0
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


@dataclass
class Series:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    def summary(self, baseline: Series | None) -> dict[str, Any]:
        median = statistics.median(self.seconds)
        rss = statistics.median(self.rss_kib)
        out: dict[str, Any] = {
            "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(median, 4),
            "min_s": round(min(self.seconds), 4),
            "rss_kib": self.rss_kib,
            "rss_median_kib": rss,
        }
        if baseline is not None:
            out["ratio"] = round(median / statistics.median(baseline.seconds), 3)
            out["rss_ratio"] = round(rss / statistics.median(baseline.rss_kib), 3)
            out["pass"] = out["ratio"] <= TARGET_RATIO
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_peak_rss_kib(pgid: int) -> int:
    """The largest VmHWM among the processes of a process group (master and worker)."""
    peak = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            # Fields after the parenthesised command name: state ppid pgrp ...
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while being read
    return peak


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # SIGKILL, not a graceful stop: only the first request matters and gunicorn's graceful
    # shutdown would add seconds per measurement.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def measure(
    probe: Probe, env: dict[str, str], headers: dict[str, str], log: Path
) -> tuple[float, int, Any]:
    """Seconds from spawn to the first answered request, the peak RSS after it, and its body."""
    port = _free_port()
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            bundle.serve_command(probe.target, port),
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
                raise BenchError(f"{probe.label} exited with {process.returncode}: {_tail(log)}")
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
        rss = _group_peak_rss_kib(process.pid)
    finally:
        _kill_group(process)
    try:
        payload = json.loads(body)
    except ValueError:
        payload = body.decode(errors="replace")
    return elapsed, rss, payload


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


def _child_env(stack: Stack) -> dict[str, str]:
    # The stack's addresses and nothing that steers imports (-I ignores PYTHON* anyway).
    env = {k: v for k in ("PATH", "HOME", "LANG", "TMPDIR") if (v := os.environ.get(k))}
    return env | stack.env


def _table(results: dict[str, Any], rounds: int) -> str:
    hello = results["hello"]
    lines = [
        f"Cold start: spawn -> first answered request; {rounds} rounds "
        "(+1 warm-up, not counted), interleaved",
        f"target: every function within {TARGET_RATIO:g}x hello-world (median)",
        "",
        f"{'process / first request':<40} {'median':>8} {'min':>8} {'x hello':>8} "
        f"{'RSS MiB':>8} {'x hello':>8}  verdict",
        f"{'hello-world  GET /':<40} {hello['median_s']:>7.3f}s {hello['min_s']:>7.3f}s "
        f"{1:>8.2f} {hello['rss_median_kib'] / 1024:>8.1f} {1:>8.2f}",
    ]
    for name, modes in results["functions"].items():
        for mode, row in modes.items():
            what = f"{name}  {mode}"
            if "median_s" not in row:
                lines.append(f"{what:<40} {'n/a':>8}  {row['note']}")
                continue
            verdict = "PASS" if row["pass"] else f"OVER TARGET (>{TARGET_RATIO:g}x)"
            lines.append(
                f"{what:<40} {row['median_s']:>7.3f}s {row['min_s']:>7.3f}s {row['ratio']:>8.2f} "
                f"{row['rss_median_kib'] / 1024:>8.1f} {row['rss_ratio']:>8.2f}  {verdict}"
            )
    lines.append("")
    for name, modes in results["functions"].items():
        measured = [row for row in modes.values() if "pass" in row]
        ok = bool(measured) and all(row["pass"] for row in measured)
        worst = max((row["ratio"] for row in measured), default=0.0)
        lines.append(f"{name}: {'PASS' if ok else 'OVER TARGET'} (worst {worst:.2f}x hello-world)")
    return "\n".join(lines)


def run(rounds: int, progress: bool = True) -> dict[str, Any]:
    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    from tests.support import create_user, id_token

    work = Path(tempfile.mkdtemp(prefix="alodoktor-coldstart-"))
    stack = Stack(ports=Ports.free(), workdir=work / "stack")
    try:
        hello_dir = work / "hello"
        hello_dir.mkdir()
        (hello_dir / "main.py").write_text(HELLO)
        # HTTP functions only: an event function (audit-trigger) answers CloudEvents, not routes.
        names = [
            n
            for n in bundle.function_names()
            if "@functions_framework.http" in (bundle.FUNCTIONS_DIR / n / "main.py").read_text()
        ]
        bundles = {n: bundle.build(n, work / "bundles" / n) for n in names}

        say("starting the Firestore and Auth emulators ...")
        stack.start(gateway=False)
        os.environ.update(stack.env)  # this process's Admin SDK calls go to the same emulators
        env = _child_env(stack)
        logs = work / "logs"
        logs.mkdir()

        hello = Probe("hello-world  GET /", hello_dir, "hello", "/")
        openapi = {
            n: Probe(f"{n}  GET /openapi.json", d, bundle.target_of(n), "/openapi.json")
            for n, d in bundles.items()
        }
        # Warm-up: fills the page cache and tells which functions are HTTP and what to sign in to.
        say("warm-up round (not counted) ...")
        measure(hello, env, {}, logs / "warmup-hello.log")
        probes: list[Probe] = [hello]
        notes: dict[str, dict[str, str]] = {}
        for n, probe in openapi.items():
            try:
                _, _, doc = measure(probe, env, {}, logs / f"warmup-{n}.log")
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

        series = {p.label: Series() for p in probes}
        order = random.Random(20240601)  # a fixed seed: runs are comparable
        for r in range(1, rounds + 1):
            # A fresh token per round (for every role) keeps each well inside its hour.
            tokens = {role: id_token(stack, user) for role, user in users.items()}
            shuffled = probes[:]
            order.shuffle(shuffled)
            for i, probe in enumerate(shuffled):
                headers = (
                    {} if probe.role is None else {"Authorization": f"Bearer {tokens[probe.role]}"}
                )
                seconds, rss, body = measure(probe, env, headers, logs / f"r{r}-{i}.log")
                # A signed-in answer naming its caller must name ours: the token path really ran.
                user = users.get(probe.role) if probe.role is not None else None
                if (
                    user is not None
                    and isinstance(body, dict)
                    and body.get("uid", user.uid) != user.uid
                ):
                    raise BenchError(f"{probe.label} answered for another user: {body}")
                series[probe.label].seconds.append(seconds)
                series[probe.label].rss_kib.append(rss)
                say(f"[round {r}/{rounds}] {probe.label:<40} {seconds:6.3f}s {rss / 1024:6.1f} MiB")

        base = series[hello.label]
        functions: dict[str, dict[str, Any]] = {}
        for n in names:
            rows: dict[str, Any] = {}
            for p in probes:
                if p.cwd == bundles[n]:
                    mode = p.label.removeprefix(f"{n}  ")
                    rows[mode] = series[p.label].summary(base)
            for mode, note in notes.get(n, {}).items():
                rows[mode] = {"note": note}
            functions[n] = rows
        return {
            "rounds": rounds,
            "target_ratio": TARGET_RATIO,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "hello": base.summary(None),
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
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        results = run(args.rounds)
    except (BenchError, StackError) as exc:
        print(f"coldstart: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2) if args.json else _table(results, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
