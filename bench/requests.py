"""Warm latency, single-instance throughput and per-request Firestore and Auth API calls of
every HTTP function, against the floor function measured in the same run.

    python -m bench.requests [--requests N] [--concurrency C] [--only NAME,...] [--json]

Each function is served from its deployable bundle as in production: functions-framework's app
factory and its gunicorn server (one worker, its default threads), under bench/counting.py,
which counts in the server what each request asks of Firestore (gRPC calls, document reads by
collection, writes) and of the Firebase Auth API (HTTP calls). The floor
(bench/floor_function.py: verify the ID token as shared/identity/tokens.py does, read one
document; POST also writes one) is served the same way for the whole run, and every
function's request is paired with the floor's of the same kind, so drift of a shared machine
hits both alike.

Per function an authenticated read and an authenticated write (bearer ID tokens; the session
function also with its cookie), each:

  warm-up     3 requests, not counted (and 3 of the floor's)
  counts      5 requests one at a time; each request's counts are the difference of the
              running totals the server reports before and after it (median of the 5)
  latency     N requests one at a time on a kept-alive connection, alternating one for one
              with the floor's: p50, p99 of each
  throughput  N requests from C client threads at once, then the floor's likewise: req/s

The session's sign-in is paired with the sign-in floor (bench/sign_in_floor.py: verify the ID
token, then one transaction reading the access record and creating one document), its accounts
made as the backend makes them (with their access records; an account's first sign-in, which
asks Auth for it once, is held by tests/test_session.py).

Targets: p50 within P50_TARGET of the paired floor p50 (a write against the floor's write; a
sign-in within SIGN_IN_P50_TARGET of the sign-in floor, in at most SIGN_IN_OPERATIONS document
operations), and no Auth API call. Firestore reads are reported, counted; `session GET /`
(bearer) is authentication alone, so its reads are what authentication costs. A miss is
reported, not the exit status (unless --strict).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import serving
from bench.coldstart import (
    BASELINE_TARGET,
    FLOOR_SOURCE,
    BenchError,
    child_env,
    free_port,
    kill_group,
    tail,
)
from bench.counting import COUNTS_HEADER, delta
from bench.report import (
    Progress,
    fmt_ms,
    machine,
    machine_line,
    percentile,
    ratio,
    table,
    within,
)
from dev.stack import Ports, Stack, StackError
from shared.platform.context import Role
from tools import bundle

P50_TARGET = 1.3
SIGN_IN_P50_TARGET = 2.0  # issue 26: against the sign-in floor
SIGN_IN_OPERATIONS = 2  # documents read and written: the access record, the session
SIGN_IN_FLOOR_SOURCE = Path(__file__).resolve().parent / "sign_in_floor.py"
MAX_SIGN_INS = 30  # samples of the session's sign-in, each a fresh account's fresh ID token
AUTH_CALLS_TARGET = 0
WARM_UP = 3
COUNTED = 5
START_TIMEOUT = 60.0
COUNTING_SERVER = Path(__file__).resolve().parent / "counting.py"

# A clinic's setup as the bookings function takes it (a PUT is the clinic's write).
CLINIC_SETUP = {
    "timeZone": "Asia/Jakarta",
    "windowMinutes": 30,
    "weekly": [
        {"day": d, "opens": "08:00", "closes": "10:00", "capacity": 4}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    ],
    "services": [
        {
            "id": "checkup",
            "name": "General check-up",
            "durationMinutes": 20,
            "price": {"currency": "USD", "value": "12.50"},
        }
    ],
}
AVAILABILITY = {
    "timeZone": "UTC",
    "slotMinutes": 30,
    "weekly": {
        d: [{"start": "00:00", "end": "23:30"}]
        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    },
}

Request = tuple[dict[str, str], bytes | None]


@dataclass
class Probe:
    """One authenticated request of a function, repeated."""

    kind: str  # "read", "write" or "sign-in" (each paired with the floor's of its kind)
    method: str
    path: str
    make: Callable[[int], Request]  # the i-th request's headers and body
    expect: int = 200
    max_samples: int | None = None  # when each request uses up something (a fresh sign-in)
    prepare: Callable[[int], None] | None = None  # called with the number of requests to come
    auth: str = "bearer"

    @property
    def label(self) -> str:
        return f"{self.method} {self.path} ({self.auth})"


@dataclass
class Measured:
    statuses: dict[int, int] = field(default_factory=dict)
    counts: list[dict[str, int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    loaded: list[float] = field(default_factory=list)
    throughput: float = 0.0
    sample: str = ""

    def saw(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


class Client:
    """One kept-alive HTTP/1.1 connection to a local server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def call(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes, float]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                # The server closed an idle kept-alive connection (gunicorn keeps one 2 s):
                # reconnect once; the time of the failed attempt is not counted.
                self.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if response.will_close:
                self.close()
            return response.status, dict(response.getheaders()), data, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def counts_of(headers: dict[str, str]) -> dict[str, int]:
    raw = next((v for k, v in headers.items() if k.lower() == COUNTS_HEADER.lower()), None)
    if raw is None:
        raise BenchError(f"the server sent no {COUNTS_HEADER} header")
    parsed: dict[str, int] = json.loads(raw)
    return parsed


def per_request(counts: list[dict[str, int]]) -> dict[str, float]:
    """The median of each counter over the requests counted (absent = 0)."""
    names = sorted({n for c in counts for n in c})
    return {n: statistics.median(c.get(n, 0) for c in counts) for n in names}


class Target:
    """A probe sent to one server: numbers each request, records what came back."""

    def __init__(self, port: int, probe: Probe) -> None:
        self.port = port
        self.probe = probe
        self.m = Measured()
        self._next = 0
        self._lock = threading.Lock()

    def one(self, client: Client) -> tuple[dict[str, str], float]:
        with self._lock:
            index = self._next
            self._next += 1
        headers, body = self.probe.make(index)
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        status, got, data, elapsed = client.call(self.probe.method, self.probe.path, headers, body)
        with self._lock:
            self.m.saw(status)
            if status != self.probe.expect and not self.m.sample:
                self.m.sample = f"{status}: {data[:200].decode(errors='replace')}"
        return got, elapsed

    def throughput(self, n: int, concurrency: int) -> None:
        """n requests from `concurrency` threads, each on its own connection, at once."""
        remaining = [n]

        def worker() -> None:
            c = Client(self.port)
            try:
                while True:
                    with self._lock:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    _, elapsed = self.one(c)
                    with self._lock:
                        self.m.loaded.append(elapsed)
            finally:
                c.close()

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.m.throughput = n / (time.perf_counter() - started)


def count(target: Target, client: Client) -> dict[str, int]:
    """Warm up, then count COUNTED requests one at a time (the last one's counts are completed
    by the caller from its next answer, so no request is spent on counting alone); returns the
    running totals after the second-to-last."""
    for _ in range(WARM_UP):
        target.one(client)
    headers, _ = target.one(client)
    before = counts_of(headers)
    for _ in range(COUNTED - 1):
        headers, _ = target.one(client)
        after = counts_of(headers)
        target.m.counts.append(delta(before, after))
        before = after
    return before


def samples_of(probe: Probe, n: int) -> int:
    return n if probe.max_samples is None else min(n, probe.max_samples)


def measure_pair(
    fn: Target, floor: Target, n: int, concurrency: int, say: Callable[[str], None]
) -> Target | None:
    """Warm both; count the function's requests; then latency with the function's and the
    floor's requests alternating one for one (so drift of the shared machine hits both alike);
    then the function's throughput and, right after, the floor's.

    A function reading more than one document per request is also paired with the floor doing
    as many reads (`?reads=N`), returned: the least work for the same round trips."""
    samples = samples_of(fn.probe, n)
    if fn.probe.prepare is not None:
        fn.probe.prepare(WARM_UP + COUNTED + 2 * samples)
    mine, base = Client(fn.port), Client(floor.port)
    for _ in range(WARM_UP):
        floor.one(base)
    before = count(fn, mine)
    reads = round(statistics.median(c.get("firestore.reads", 0) for c in fn.m.counts))
    same = None
    if reads > 1 and fn.probe.kind != "sign-in":  # the sign-in floor reads what a sign-in must
        same = Target(floor.port, replace(floor.probe, path=f"/?reads={reads}"))
    targets = [(fn, mine), (floor, base)] + ([(same, Client(floor.port))] if same else [])
    for k in range(samples):
        # Which goes first rotates too, so none always follows another's work.
        for target, client in targets[k % len(targets) :] + targets[: k % len(targets)]:
            headers, elapsed = target.one(client)
            target.m.latencies.append(elapsed)
            if target is fn and k == 0:  # the last counted request ends with this answer
                fn.m.counts.append(delta(before, counts_of(headers)))
    for _, client in targets:
        client.close()
    fn.throughput(samples, concurrency)
    floor.throughput(samples, concurrency)
    also = f", floor with {reads} reads {fmt_ms(percentile(same.m.latencies, 50))}" if same else ""
    say(
        f"  {fn.probe.kind:<5} {fn.probe.label:<44} p50 "
        f"{fmt_ms(percentile(fn.m.latencies, 50))} ms (floor "
        f"{fmt_ms(percentile(floor.m.latencies, 50))}{also}), {fn.m.throughput:5.1f} req/s "
        f"(floor {floor.m.throughput:.1f})"
    )
    return same


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def serve(cwd: Path, target: str, env: dict[str, str], log: Path) -> Server:
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [serving.python(), "-I", str(COUNTING_SERVER), "--target", target, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise BenchError(f"{target} in {cwd.name} exited: {tail(log)}")
        if time.monotonic() > deadline:
            kill_group(process)
            raise BenchError(f"{target} in {cwd.name} did not answer in {START_TIMEOUT:.0f}s")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/__bench_ready__")
                conn.getresponse().read()
                return server
            finally:
                conn.close()
        time.sleep(0.05)


# -- the world the requests run in ----------------------------------------------------------


@dataclass
class World:
    """Accounts and records made once through the gateway, for every function's requests."""

    stack: Stack
    users: dict[Role, Any]
    tokens: dict[Role, str]
    cookie: str
    appointment_id: str
    unpaid_appointment_id: str
    order_id: str
    prescription_id: str
    sign_in_pool: list[Any]

    def bearer(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def build_world(stack: Stack, say: Callable[[str], None], sign_ins: int) -> World:
    import requests

    from shared.identity import access
    from tests.support import (
        PRESCRIPTION_ITEM,
        approved_doctor,
        bearer,
        create_user,
        id_token,
        session_cookie,
        slot_in,
    )

    say("setting up accounts, an appointment paid through the PayPal simulator, ...")
    admin_user = create_user(stack, Role.ADMIN)
    admin = bearer(stack, admin_user)
    doctor_user, doctor = approved_doctor(stack, admin)
    patient_user = create_user(stack, Role.PATIENT)
    patient = bearer(stack, patient_user)
    clinic_user = create_user(stack, Role.CLINIC)

    def ok(response: requests.Response, *expected: int) -> dict[str, Any]:
        if response.status_code not in expected:
            raise BenchError(
                f"setup: {response.request.method} {response.url} answered "
                f"{response.status_code}: {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body

    booked = ok(
        patient.post("/appointments", json={"doctorUid": doctor_user.uid, "start": slot_in(72)}),
        201,
    )
    unpaid = ok(
        patient.post("/appointments", json={"doctorUid": doctor_user.uid, "start": slot_in(96)}),
        201,
    )
    order = ok(patient.post("/paypal-create", json={"appointmentId": booked["id"]}), 201)
    requests.post(
        order["approveLink"], data={"action": "approve"}, timeout=30, allow_redirects=False
    ).raise_for_status()  # the buyer approves
    ok(patient.post("/paypal-capture", json={"orderId": order["id"]}), 200)
    ok(patient.post("/paypal-create", json={"appointmentId": unpaid["id"]}), 201)
    rx = ok(
        doctor.post(
            "/prescriptions", json={"appointmentId": booked["id"], "items": [PRESCRIPTION_ITEM]}
        ),
        201,
    )
    clinic = bearer(stack, clinic_user)
    ok(clinic.request("PUT", "/bookings/clinics/me", json=CLINIC_SETUP), 200)

    signed = requests.post(
        f"{stack.gateway_url}/session", json={"idToken": id_token(stack, patient_user)}, timeout=30
    )
    ok(signed, 201)
    cookie = session_cookie(signed)["__session"].value
    pool = [create_user(stack, Role.PATIENT) for _ in range(sign_ins)]
    for account in pool:  # as accounts the backend makes have them (shared.identity.accounts)
        access.refresh(account.uid, by="bench")
    users = {
        Role.ADMIN: admin_user,
        Role.DOCTOR: doctor_user,
        Role.PATIENT: patient_user,
        Role.CLINIC: clinic_user,
    }
    tokens = {role: id_token(stack, user) for role, user in users.items()}
    return World(
        stack, users, tokens, cookie, booked["id"], unpaid["id"], order["id"], rx["id"], pool
    )


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def probes_for(world: World) -> dict[str, list[Probe]]:
    """The read and the write of each function (and the floor's)."""
    from tests.support import PRESCRIPTION_ITEM, id_token

    w = world
    patient = w.users[Role.PATIENT]

    def as_(role: Role, body: Any = None) -> Callable[[int], Request]:
        return lambda i: (w.bearer(role), None if body is None else _json(body))

    fresh: list[str] = []

    def mint(count: int) -> None:
        # Minted just before use: a session needs a sign-in of the last few minutes.
        fresh[:] = [id_token(w.stack, user) for user in w.sign_in_pool[:count]]

    def sign_in(i: int) -> Request:
        return {}, _json({"idToken": fresh[i]})

    def renamed(i: int) -> Request:
        return w.bearer(Role.PATIENT), _json({"displayName": f"Patient {i}"})

    def renamed_by_admin(i: int) -> Request:
        return w.bearer(Role.ADMIN), _json({"displayName": f"Patient {i}"})

    cookie = {"Cookie": f"__session={w.cookie}"}
    return {
        "floor": [
            Probe("read", "GET", "/", as_(Role.PATIENT)),
            Probe("write", "POST", "/", as_(Role.PATIENT)),
            # The sign-in floor (its own server): one ID token will do, it keeps no session.
            Probe(
                "sign-in",
                "POST",
                "/",
                lambda i: ({}, _json({"idToken": w.tokens[Role.PATIENT]})),
                expect=201,
                auth="ID token in body",
            ),
        ],
        "session": [
            Probe("read", "GET", "/", as_(Role.PATIENT)),
            Probe("read", "GET", "/", lambda i: (cookie, None), auth="cookie"),
            Probe(
                "sign-in",
                "POST",
                "/",
                sign_in,
                expect=201,
                max_samples=(len(w.sign_in_pool) - WARM_UP - COUNTED) // 2,
                prepare=mint,
                auth="ID token in body",
            ),
        ],
        "users": [
            Probe("read", "GET", "/me", as_(Role.PATIENT)),
            Probe("write", "PATCH", "/me", renamed),
        ],
        "admin-users": [
            Probe("read", "GET", f"/{patient.uid}", as_(Role.ADMIN)),
            Probe("write", "PATCH", f"/{patient.uid}", renamed_by_admin),
        ],
        "appointments": [
            Probe("read", "GET", f"/{w.appointment_id}", as_(Role.PATIENT)),
            Probe("write", "PUT", "/availability", as_(Role.DOCTOR, AVAILABILITY)),
        ],
        "prescriptions": [
            Probe("read", "GET", f"/{w.prescription_id}", as_(Role.PATIENT)),
            Probe(
                "write",
                "POST",
                "/",
                as_(Role.DOCTOR, {"appointmentId": w.appointment_id, "items": [PRESCRIPTION_ITEM]}),
                expect=201,
            ),
        ],
        "bookings": [
            Probe("read", "GET", f"/clinics/{w.users[Role.CLINIC].uid}", as_(Role.PATIENT)),
            Probe("write", "PUT", "/clinics/me", as_(Role.CLINIC, CLINIC_SETUP)),
        ],
        "audit": [Probe("read", "GET", "/?limit=20", as_(Role.ADMIN))],
        "paypal-create": [
            # Asking again for an unpaid appointment's order answers the same order.
            Probe(
                "write", "POST", "/", as_(Role.PATIENT, {"appointmentId": w.unpaid_appointment_id})
            ),
        ],
        "paypal-capture": [
            # Capturing a captured order again answers the one capture.
            Probe("write", "POST", "/", as_(Role.PATIENT, {"orderId": w.order_id})),
        ],
        "payments": [
            Probe("read", "GET", f"/orders/{w.order_id}", as_(Role.PATIENT)),
            Probe("write", "POST", "/refunds/sweep", as_(Role.ADMIN)),
        ],
    }


# -- summary --------------------------------------------------------------------------------


def p50_target(kind: str) -> float:
    return SIGN_IN_P50_TARGET if kind == "sign-in" else P50_TARGET


def summarize(m: Measured, floor: dict[str, Any] | None, kind: str = "read") -> dict[str, Any]:
    """A row of the report; with `floor` (the summary of the floor's requests paired with
    these), the ratios to it and the verdicts."""
    counted = per_request(m.counts)
    row: dict[str, Any] = {
        "statuses": {str(k): v for k, v in sorted(m.statuses.items())},
        "p50_ms": round(percentile(m.latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(m.latencies, 99) * 1000, 2),
        "p50_loaded_ms": round(percentile(m.loaded, 50) * 1000, 2) if m.loaded else None,
        "req_per_s": round(m.throughput, 1),
        "samples": len(m.latencies),
        "firestore_reads": counted.get("firestore.reads", 0),
        "firestore_writes": counted.get("firestore.writes", 0),
        "auth_calls": counted.get("http.auth", 0),
        "key_fetches": counted.get("http.keys", 0),
        "other_http": counted.get("http.other", 0),
        "reads_by_collection": {
            k.removeprefix("firestore.reads."): v
            for k, v in counted.items()
            if k.startswith("firestore.reads.") and v
        },
        "firestore_calls": {
            k.removeprefix("firestore.call."): v
            for k, v in counted.items()
            if k.startswith("firestore.call.") and v
        },
        "counts_varied": any(
            len({c.get(n, 0) for c in m.counts}) > 1 for n in counted if n.startswith("fire")
        ),
    }
    if m.sample:
        row["unexpected"] = m.sample
    if floor is not None:
        row["floor_p50_ms"] = floor["p50_ms"]
        row["floor_req_per_s"] = floor["req_per_s"]
        row["p50_ratio"] = ratio(row["p50_ms"], floor["p50_ms"])
        row["throughput_ratio"] = ratio(row["req_per_s"], floor["req_per_s"])
        row["p50_target"] = p50_target(kind)
        row["p50_pass"] = within(row["p50_ratio"], row["p50_target"])
        row["auth_pass"] = row["auth_calls"] <= AUTH_CALLS_TARGET
        row["pass"] = row["p50_pass"] and row["auth_pass"] and not m.sample
        if kind == "sign-in":
            operations = row["firestore_reads"] + row["firestore_writes"]
            row["operations_pass"] = operations <= SIGN_IN_OPERATIONS
            row["pass"] = row["pass"] and row["operations_pass"]
    return row


def pooled(series: list[Measured]) -> Measured:
    """Several runs of one request as one series (throughput: their mean)."""
    out = Measured()
    for m in series:
        for status, n in m.statuses.items():
            out.statuses[status] = out.statuses.get(status, 0) + n
        out.counts += m.counts
        out.latencies += m.latencies
        out.loaded += m.loaded
        out.sample = out.sample or m.sample
    out.throughput = statistics.mean(m.throughput for m in series) if series else 0.0
    return out


def verdict(row: dict[str, Any]) -> str:
    if "pass" not in row:
        return ""
    if row.get("unexpected"):
        return f"ERROR {row['unexpected'][:40]}"
    misses = []
    if not row["p50_pass"]:
        misses.append(f"p50 > {row['p50_target']:g}x")
    if not row.get("operations_pass", True):
        misses.append(f"> {SIGN_IN_OPERATIONS} document operations")
    if not row["auth_pass"]:
        calls = row["auth_calls"]
        misses.append(f"{calls:g} Auth call{'' if calls == 1 else 's'}")
    return "PASS" if not misses else "OVER: " + ", ".join(misses)


def _reads(row: dict[str, Any]) -> str:
    parts = ", ".join(f"{k} {v:g}" for k, v in sorted(row["reads_by_collection"].items()))
    return f"{row['firestore_reads']:g}" + (f" ({parts})" if parts else "")


def _same_reads(row: dict[str, Any]) -> str:
    """The p50 ratio to the floor making as many reads, where the route makes more than one."""
    if "p50_ratio_same_reads" not in row:
        return "same" if "p50_ratio" in row else ""
    return f"{row['p50_ratio_same_reads']:.2f}"


def render(results: dict[str, Any]) -> str:
    headers = [
        "function",
        "kind",
        "request",
        "p50 ms",
        "p99 ms",
        "req/s",
        "floor p50",
        "p50 x floor",
        "x floor, same reads",
        "req/s x floor",
        "Auth/req",
        "writes/req",
        "Firestore reads/req",
        "verdict",
    ]
    rows = []
    for name, probes in [("floor (baseline)", results["floor"]), *results["functions"].items()]:
        for row in probes:
            paired = "floor_p50_ms" in row
            rows.append(
                [
                    name,
                    row["kind"],
                    row["request"],
                    f"{row['p50_ms']:.1f}",
                    f"{row['p99_ms']:.1f}",
                    f"{row['req_per_s']:.0f}",
                    f"{row['floor_p50_ms']:.1f}" if paired else "",
                    f"{row['p50_ratio']:.2f}" if paired else "",
                    _same_reads(row),
                    f"{row['throughput_ratio']:.2f}" if paired else "",
                    f"{row['auth_calls']:g}",
                    f"{row['firestore_writes']:g}",
                    _reads(row),
                    verdict(row),
                ]
            )
    for name, note in results["skipped"].items():
        rows.append([name, "-", "-", *[""] * 10, note])
    return "\n".join(
        [
            f"Warm requests, one instance each (functions-framework: gunicorn, 1 worker, "
            f"{results['server_threads']} threads): per request kind {results['requests']} one "
            "at a time, alternating with the floor's (p50, p99), then "
            f"{results['requests']} from {results['concurrency']} client threads (req/s), "
            "then the floor's likewise",
            f"targets: p50 within {P50_TARGET:g}x the floor's paired p50 (a read against its "
            f"read, a write against its write; a sign-in within {SIGN_IN_P50_TARGET:g}x the "
            f"sign-in floor's, in at most {SIGN_IN_OPERATIONS} document operations); "
            f"{AUTH_CALLS_TARGET} Auth API calls; Firestore "
            "and Auth calls counted in the server (median of 5 requests); 'same reads': "
            "against the floor reading as many documents as the route (not a target)",
            "the floor row pools every pairing; the Auth emulator answers in about a "
            "millisecond here, a real Auth API call costs a network round trip",
            machine_line(*results["machine"]) + "; " + results["served_by"],
            "",
            table(headers, rows, left=3),
        ]
    )


def all_pass(results: dict[str, Any]) -> bool:
    return all(row.get("pass", False) for rows in results["functions"].values() for row in rows)


def run(n: int, concurrency: int, only: set[str] | None, progress: bool = True) -> dict[str, Any]:
    say = Progress(progress)
    started_on = machine()
    names = [
        name
        for name in bundle.function_names()
        if "@functions_framework.http" in (bundle.FUNCTIONS_DIR / name / "main.py").read_text()
        and (only is None or name in only)
    ]
    work = Path(tempfile.mkdtemp(prefix="alodoktor-requests-"))
    stack = Stack(ports=Ports.free(), workdir=work / "stack", scheduler_paused=True)
    servers: list[Server] = []
    try:
        say("starting the emulators, the PayPal simulator and the gateway ...")
        stack.start(gateway=False)
        stack.start_gateway()  # for the setup only; no relay: its events would load the machine
        os.environ.update(stack.env)
        env = child_env(stack)
        world = build_world(stack, say, WARM_UP + COUNTED + 2 * min(n, MAX_SIGN_INS))
        probes = probes_for(world)
        floor_dir = work / "floor"
        floor_dir.mkdir()
        shutil.copyfile(FLOOR_SOURCE, floor_dir / "main.py")

        floor_server = serve(floor_dir, BASELINE_TARGET, env, work / "floor.log")
        servers.append(floor_server)
        say(f"floor: serving on :{floor_server.port} for the whole run")
        sign_in_dir = work / "sign-in-floor"
        sign_in_dir.mkdir()
        shutil.copyfile(SIGN_IN_FLOOR_SOURCE, sign_in_dir / "main.py")
        shutil.copyfile(FLOOR_SOURCE, sign_in_dir / "floor_function.py")
        sign_in_server = serve(sign_in_dir, BASELINE_TARGET, env, work / "sign-in-floor.log")
        servers.append(sign_in_server)
        say(f"sign-in floor: serving on :{sign_in_server.port} for the whole run")
        floor_ports = {"read": floor_server.port, "write": floor_server.port}
        floor_ports["sign-in"] = sign_in_server.port
        floor_counted: dict[str, Target] = {}
        for probe in probes["floor"]:
            floor_counted[probe.kind] = target = Target(floor_ports[probe.kind], probe)
            client = Client(floor_ports[probe.kind])
            before = count(target, client)
            headers, _ = target.one(client)
            target.m.counts.append(delta(before, counts_of(headers)))
            client.close()
        floor_pairs: dict[str, list[Measured]] = {kind: [] for kind in floor_ports}
        functions: dict[str, list[dict[str, Any]]] = {}
        skipped: dict[str, str] = {}
        for name in names:
            items = probes.get(name)
            if not items:
                skipped[name] = "public (PayPal-signed), no authenticated request"
                continue
            built = bundle.build(name, work / "bundles" / name)
            server = serve(built, bundle.target_of(name), env, work / f"{name}.log")
            servers.append(server)
            say(f"{name}: serving on :{server.port}")
            rows = []
            try:
                for probe in items:
                    fn = Target(server.port, probe)
                    floor_probe = next(p for p in probes["floor"] if p.kind == probe.kind)
                    floor = Target(floor_ports[probe.kind], floor_probe)
                    same = measure_pair(fn, floor, n, concurrency, say)
                    floor_pairs[probe.kind].append(floor.m)
                    row = {
                        "kind": probe.kind,
                        "request": probe.label,
                        **summarize(fn.m, summarize(floor.m, None), probe.kind),
                    }
                    if same is not None:
                        same_p50 = round(percentile(same.m.latencies, 50) * 1000, 2)
                        row["floor_same_reads_p50_ms"] = same_p50
                        row["p50_ratio_same_reads"] = ratio(row["p50_ms"], same_p50)
                    rows.append(row)
            finally:
                kill_group(server.process)
                servers.remove(server)
            functions[name] = rows
        floor_rows = []
        for probe in probes["floor"]:
            if not floor_pairs.get(probe.kind):
                continue  # no function's request of this kind was measured (--only)
            all_of_kind = pooled(floor_pairs[probe.kind])
            all_of_kind.counts = floor_counted[probe.kind].m.counts
            floor_rows.append(
                {"kind": probe.kind, "request": probe.label, **summarize(all_of_kind, None)}
            )
        return {
            "requests": n,
            "concurrency": concurrency,
            "server_threads": int(env.get("THREADS") or (os.cpu_count() or 1) * 4),
            "p50_target": P50_TARGET,
            "machine": [started_on, machine()],
            "served_by": serving.description(),
            "floor": floor_rows,
            "functions": functions,
            "skipped": skipped,
        }
    finally:
        for server in servers:
            kill_group(server.process)
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.requests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=150,
        help="requests per phase and request kind (default 150)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="client threads of the throughput phase (default 4)",
    )
    parser.add_argument("--only", help="comma-separated function names (default: all)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a row misses a target")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.requests < 5 or args.concurrency < 1:
        parser.error("--requests must be at least 5 and --concurrency at least 1")
    only = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else None
    try:
        results = run(args.requests, args.concurrency, only, progress=not args.quiet)
    except (BenchError, StackError) as exc:
        print(f"requests: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 1 if args.strict and not all_pass(results) else 0


if __name__ == "__main__":
    sys.exit(main())
