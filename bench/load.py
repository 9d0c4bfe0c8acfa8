"""A bounded load run of the whole day on the local stack, then the books checked.

    python -m bench.load [--seconds 60] [--floor-seconds 20] [--patients 12] [--doctors 3]
                         [--clinics 2] [--workers 4] [--json] [--strict]

Starts the local stack on free ports (Firestore and Auth emulators, the PayPal simulator, the
gateway and the event relay, as `make dev` does), makes the accounts, then lets simulated
people live their day through the gateway's HTTP routes, from a few worker threads, for a fixed
time (nothing is retried, and nothing waits between steps but a person signing in again
within a second of the last time, whose ID token would be the same):

  patients  sign in (the Auth emulator, then POST /session), browse the doctors' directory and
            a doctor's free slots, book one (another patient may take it first: 409), pay
            through the PayPal simulator (create, the buyer approves at the approve link,
            capture), cancel about one booking in four (a refund), book a clinic's window, read
            their prescriptions, sign out
  doctors   sign in, prescribe for their confirmed appointments, complete the visits that
            have begun (the setup books, pays and dates a few to this morning, as the
            emulator's clock cannot move), read their balance, sign out
  clinics   sign in, accept (or now and then decline) the requests in their queue, read the
            day's queue, sign out

Reported: requests per second, p50/p99 per route, answers by status; 5xx and answers no route
documents for that step are errors. Beside the day, in the same run, the floor load: the floor
function (bench/floor_function.py: verify the ID token, read one document) served as the
gateway serves every function (functions-framework's app factory under werkzeug's threaded
server, one process, the same interpreter) and driven by as many worker threads, each sending
its signed-in GET one after another, half of --floor-seconds before the day and half after (so
a machine growing busier during the run weighs on both alike). The day's throughput and its
p50/p99 over every backend request are reported as ratios to the floor's: figures a reader can
compare between runs and machines, where absolute ones move with how busy the machine is.
When the time is up (and the relay has delivered every change to the audit trigger) the books
are checked in Firestore and at PayPal: no two live appointments on one doctor's slot, no
window over its capacity, no order paid twice (one PayPal capture per captured order, one
payment transaction in the ledger per order, every transaction balanced), and the audit log
whole: sealed into checkpoints (POST /audit/seal until nothing is left), the scheduled
consistency check clean (POST /audit/check), and the chain of checkpoints verified with every
entry the run wrote inside it (GET /audit/verify). Targets: zero 5xx (the floor's too), zero
double bookings or captures, the chain whole. --strict makes a miss the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests

from bench.report import Progress, machine, machine_line, percentile, ratio, table
from bench.requests import AVAILABILITY, CLINIC_SETUP
from dev.stack import Ports, Stack, StackError
from shared.platform.context import Role

SETTLE_SECONDS = 90.0  # at most, for the relay to deliver every change before the checks
FLOOR_SOURCE = Path(__file__).resolve().parent / "floor_function.py"
FLOOR_ROUTE = "GET / (floor)"
# The floor function served as dev/gateway.py serves each function: functions-framework's app
# factory, werkzeug's threaded server, no access log.
FLOOR_SERVER = """
import sys
import functions_framework
from werkzeug.serving import WSGIRequestHandler, run_simple

class Quiet(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass

app = functions_framework.create_app(target="floor", source=sys.argv[1])
run_simple("127.0.0.1", int(sys.argv[2]), app, threaded=True, use_reloader=False,
           request_handler=Quiet)
"""
PAST_VISITS_PER_DOCTOR = 6
CLINIC_ZONE = ZoneInfo(str(CLINIC_SETUP["timeZone"]))
CLINIC_CAPACITY = 4
PRESCRIPTION = {
    "medication": "Amoxicillin",
    "strength": "500 mg",
    "form": "capsule",
    "dose": "1 capsule",
    "frequency": "3 times a day",
    "durationDays": 7,
    "quantity": 21,
    "refills": 0,
    "instructions": "After meals.",
}


class LoadError(RuntimeError):
    """The run could not be made (not a finding of the run), told in one line."""


@dataclass
class Stats:
    """Every answer, by route: latencies and statuses; thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    unexpected: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unexpected_count: Counter[str] = field(default_factory=Counter)

    def record(self, route: str, status: int, seconds: float, problem: str | None) -> None:
        with self.lock:
            self.latencies[route].append(seconds)
            self.statuses[route][status] += 1
            if problem is not None:
                self.unexpected_count[route] += 1
                if len(self.unexpected[route]) < 3:  # a few samples to show, not every one
                    self.unexpected[route].append(problem)

    def total(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.latencies.values())

    def errors(self) -> int:
        with self.lock:
            return sum(
                n for c in self.statuses.values() for s, n in c.items() if s >= 500 or s == 0
            )


class Unexpected(Exception):
    """An answer the step cannot go on from; the actor's day ends, the run goes on."""


@dataclass
class Browser:
    """One person's HTTP client of the gateway: a session cookie and its CSRF token."""

    base: str
    stats: Stats
    http: requests.Session = field(default_factory=requests.Session)
    cookie: str | None = None
    csrf: str | None = None

    def call(
        self,
        method: str,
        route: str,
        path: str | None = None,
        *,
        expect: tuple[int, ...] = (200,),
        tolerate: tuple[int, ...] = (),
        **kw: Any,
    ) -> requests.Response:
        """`route` names the operation in the report; `path` is the concrete one. An answer in
        `tolerate` is part of the day (a slot someone else took); anything else outside
        `expect` is counted as unexpected and ends the actor's day."""
        headers: dict[str, str] = kw.pop("headers", {})
        if self.cookie is not None:
            headers["Cookie"] = f"__session={self.cookie}"
            if self.csrf and method not in ("GET", "HEAD"):
                headers["X-CSRF-Token"] = self.csrf
        url = path if path is not None and path.startswith("http") else self.base + (path or route)
        started = time.perf_counter()
        try:
            response = self.http.request(method, url, headers=headers, timeout=60, **kw)
        except requests.RequestException as exc:
            self.stats.record(f"{method} {route}", 0, time.perf_counter() - started, str(exc))
            raise Unexpected(f"{method} {route}: {exc}") from None
        elapsed = time.perf_counter() - started
        ok = response.status_code in expect or response.status_code in tolerate
        problem = None if ok else f"{response.status_code} {response.text[:160]}"
        self.stats.record(f"{method} {route}", response.status_code, elapsed, problem)
        if not ok:
            raise Unexpected(f"{method} {route}: {problem}")
        return response

    def sign_in(self, stack: Stack, person: Person) -> None:
        person.wait_for_a_new_token()
        email, password = person.email, person.password
        signed = self.call(
            "POST",
            "[Auth emulator] accounts:signInWithPassword",
            f"{stack.auth_url}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword"
            "?key=bench",
            json={"email": email, "password": password, "returnSecureToken": True},
        )
        self.cookie = self.csrf = None
        made = self.call(
            "POST", "/session", json={"idToken": signed.json()["idToken"]}, expect=(201,)
        )
        jar: SimpleCookie = SimpleCookie()
        for header in made.raw.headers.getlist("Set-Cookie"):
            jar.load(header)
        self.cookie = jar["__session"].value
        self.csrf = made.json()["csrfToken"]

    def sign_out(self) -> None:
        self.call("DELETE", "/session", expect=(204,))
        self.cookie = self.csrf = None


@dataclass
class Person:
    uid: str
    email: str
    password: str
    role: Role
    signed_in_at: float = 0.0

    def wait_for_a_new_token(self) -> None:
        """The Auth emulator's tokens have a resolution of one second: two sign-ins of one
        person within it get the same ID token, which the session function rightly refuses to
        make a second session from (sign_in_reused). A person's days are that far apart."""
        wait = self.signed_in_at + 1.05 - time.time()
        if wait > 0:
            time.sleep(wait)
        self.signed_in_at = time.time()


@dataclass
class World:
    stack: Stack
    stats: Stats
    patients: list[Person]
    doctors: list[Person]
    clinics: list[Person]
    past_visits: dict[str, list[str]]  # doctor uid -> confirmed appointments already begun
    lock: threading.Lock = field(default_factory=threading.Lock)

    def browser(self) -> Browser:
        return Browser(self.stack.gateway_url, self.stats)

    def take_past_visit(self, doctor_uid: str) -> str | None:
        with self.lock:
            visits = self.past_visits.get(doctor_uid, [])
            return visits.pop() if visits else None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def patient_day(w: World, me: Person, rng: random.Random) -> Iterator[None]:
    b = w.browser()
    b.sign_in(w.stack, me)
    b.call("GET", "/session")
    yield
    listed = b.call("GET", "/users/directory/doctors", params={"limit": 20}).json()["items"]
    known = {d.uid for d in w.doctors}
    uids = [d["uid"] for d in listed if d.get("uid") in known] or [d.uid for d in w.doctors]
    doctor = rng.choice(uids)
    now = datetime.now(UTC)
    slots = b.call(
        "GET",
        "/appointments/doctors/{uid}/slots",
        f"/appointments/doctors/{doctor}/slots",
        params={"from": _iso(now + timedelta(hours=3)), "to": _iso(now + timedelta(days=4))},
    ).json()["slots"]
    yield
    booked: dict[str, Any] | None = None
    # Among the first few free slots, so patients now and then race for one (409, try another).
    for start in rng.sample(slots[:16], k=min(3, len(slots[:16]))):
        got = b.call(
            "POST",
            "/appointments",
            json={"doctorUid": doctor, "start": start, "note": "Sore throat"},
            expect=(201,),
            tolerate=(409,),  # someone else has this slot: the next one
        )
        if got.status_code == 201:
            booked = got.json()
            break
    yield
    if booked is not None:
        order = b.call(
            "POST", "/paypal-create", json={"appointmentId": booked["id"]}, expect=(201,)
        ).json()
        b.call(
            "POST",
            "[PayPal simulator] buyer approves",
            order["approveLink"],
            data={"action": "approve"},
            allow_redirects=False,  # PayPal sends the buyer back to the front end's page
            expect=(200, 303),
        )
        b.call("POST", "/paypal-capture", json={"orderId": order["id"]})
        yield
        if rng.random() < 0.25:
            b.call(
                "POST",
                "/appointments/{id}/cancel",
                f"/appointments/{booked['id']}/cancel",
                json={"reason": "Cannot come after all"},
            )
        b.call("GET", "/appointments", params={"limit": 10})
        yield
    clinic = rng.choice(w.clinics)
    b.call("GET", "/bookings/clinics/{uid}", f"/bookings/clinics/{clinic.uid}")
    day = datetime.now(CLINIC_ZONE).date() + timedelta(days=rng.randint(2, 9))
    window = f"{day.isoformat()}T{rng.choice(['08:00', '08:30', '09:00', '09:30'])}:00+07:00"
    b.call(
        "POST",
        "/bookings",
        json={"clinicUid": clinic.uid, "serviceId": "checkup", "windowStart": window},
        expect=(201,),
        tolerate=(409,),  # too many open requests of this patient
    )
    b.call("GET", "/bookings", params={"limit": 10})
    yield
    mine = b.call("GET", "/prescriptions", params={"limit": 5}).json()["items"]
    for rx in mine[:2]:
        b.call("GET", "/prescriptions/{id}", f"/prescriptions/{rx['id']}")
    b.sign_out()


def doctor_day(w: World, me: Person, rng: random.Random) -> Iterator[None]:
    b = w.browser()
    b.sign_in(w.stack, me)
    yield
    confirmed = b.call("GET", "/appointments", params={"status": "confirmed", "limit": 20}).json()[
        "items"
    ]
    for appointment in rng.sample(confirmed, k=min(2, len(confirmed))):
        b.call(
            "POST",
            "/prescriptions",
            json={"appointmentId": appointment["id"], "items": [PRESCRIPTION]},
            expect=(201,),
        )
    yield
    visit = w.take_past_visit(me.uid)
    if visit is not None:
        b.call("POST", "/appointments/{id}/complete", f"/appointments/{visit}/complete")
    b.call("GET", "/payments/balance")
    yield
    b.sign_out()


def clinic_day(w: World, me: Person, rng: random.Random) -> Iterator[None]:
    b = w.browser()
    b.sign_in(w.stack, me)
    yield
    waiting = b.call(
        "GET", "/bookings/clinics/{uid}/requests", f"/bookings/clinics/{me.uid}/requests"
    ).json()["items"]
    for booking in waiting[:5]:
        if rng.random() < 0.85:
            b.call(
                "POST",
                "/bookings/{id}/accept",
                f"/bookings/{booking['id']}/accept",
                tolerate=(409,),  # the window is full, or the patient cancelled meanwhile
            )
        else:
            b.call(
                "POST",
                "/bookings/{id}/decline",
                f"/bookings/{booking['id']}/decline",
                json={"reason": "Fully booked that day"},
                tolerate=(409,),
            )
    yield
    b.call("GET", "/bookings/clinics/{uid}/day", f"/bookings/clinics/{me.uid}/day")
    b.sign_out()


DAYS: dict[Role, Callable[[World, Person, random.Random], Iterator[None]]] = {
    Role.PATIENT: patient_day,
    Role.DOCTOR: doctor_day,
    Role.CLINIC: clinic_day,
}


# -- setup ----------------------------------------------------------------------------------


def build_world(
    stack: Stack, stats: Stats, counts: dict[Role, int], say: Callable[[str], None]
) -> World:
    from shared.appointments import service as appointments
    from shared.platform import store
    from tests.support import approved_doctor, bearer, create_user, slot_in

    say(
        f"setting up {counts[Role.PATIENT]} patients, {counts[Role.DOCTOR]} doctors, "
        f"{counts[Role.CLINIC]} clinics ..."
    )
    admin = bearer(stack, create_user(stack, Role.ADMIN))

    def person(user: Any) -> Person:
        return Person(user.uid, user.email, user.password, user.role)

    doctors = []
    past: dict[str, list[str]] = {}
    booker = create_user(stack, Role.PATIENT)
    booker_api = bearer(stack, booker)
    for _ in range(counts[Role.DOCTOR]):
        user, api = approved_doctor(stack, admin)
        published = api.request("PUT", "/appointments/availability", json=AVAILABILITY)
        if published.status_code != 200:
            raise LoadError(f"setup: availability answered {published.status_code}")
        doctors.append(person(user))
        # This morning's visits: booked and confirmed, then dated to hours ago, as the day's
        # earlier consultations would be (the emulators' clock cannot be moved).
        visits = []
        for k in range(PAST_VISITS_PER_DOCTOR):
            made = booker_api.post(
                "/appointments", json={"doctorUid": user.uid, "start": slot_in(24 * 20 + k)}
            )
            if made.status_code != 201:
                raise LoadError(f"setup: booking answered {made.status_code}: {made.text[:200]}")
            appointment_id = made.json()["id"]
            appointments.confirm(appointment_id)
            began = datetime.now(UTC) - timedelta(hours=k + 1)
            store.update(
                appointments.appointment_ref(appointment_id),
                {"start": began, "end": began + timedelta(minutes=30)},
                by="bench-setup",
            )
            visits.append(appointment_id)
        past[user.uid] = visits
    clinics = []
    for _ in range(counts[Role.CLINIC]):
        user = create_user(stack, Role.CLINIC)
        set_up = bearer(stack, user).request("PUT", "/bookings/clinics/me", json=CLINIC_SETUP)
        if set_up.status_code != 200:
            raise LoadError(f"setup: clinic answered {set_up.status_code}: {set_up.text[:200]}")
        clinics.append(person(user))
    patients = [person(create_user(stack, Role.PATIENT)) for _ in range(counts[Role.PATIENT])]
    return World(stack, stats, patients, doctors, clinics, past)


# -- the run --------------------------------------------------------------------------------


def drive(
    world: World, seconds: float, workers: int, seed: int, say: Callable[[str], None]
) -> tuple[float, dict[str, int]]:
    """Everyone's days, from `workers` threads, until the time is up; (elapsed, days by role)."""
    actors: queue.Queue[tuple[Person, Iterator[None] | None]] = queue.Queue()
    everyone = [*world.patients, *world.doctors, *world.clinics]
    random.Random(seed).shuffle(everyone)
    for p in everyone:
        actors.put((p, None))
    deadline = time.monotonic() + seconds
    days: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    lock = threading.Lock()

    def work(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < deadline:
            try:
                person, day = actors.get(timeout=1)
            except queue.Empty:
                continue
            if day is None:
                day = DAYS[person.role](world, person, rng)
            try:
                next(day)
            except StopIteration:
                with lock:
                    days[person.role.value] += 1
                day = None
            except Unexpected:
                with lock:
                    broken[person.role.value] += 1
                day = None
            actors.put((person, day))

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(workers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=5)
        if not any(t.is_alive() for t in threads):
            break
        done = world.stats.total()
        elapsed = time.monotonic() - started
        say(
            f"{min(elapsed, seconds):5.0f}/{seconds:.0f}s  {done} requests "
            f"({done / max(elapsed, 1e-9):.1f}/s), {world.stats.errors()} 5xx or failed"
        )
    elapsed = time.monotonic() - started
    return elapsed, {
        **{f"{k} days": v for k, v in days.items()},
        **{f"{k} days cut short": v for k, v in broken.items()},
    }


# -- the floor load -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def floor_server(stack: Stack, work: Path) -> Iterator[str]:
    """The floor function served on a free port for the block; its base URL."""
    source = work / "floor" / "main.py"
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FLOOR_SOURCE, source)
    port = _free_port()
    env = {k: v for k in ("PATH", "HOME", "LANG", "TMPDIR") if (v := os.environ.get(k))}
    log = work / "floor.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", FLOOR_SERVER, str(source), str(port)],
            cwd=source.parent,
            env=env | stack.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise LoadError(f"the floor exited: {log.read_text(errors='replace')[-300:]}")
            if time.monotonic() > deadline:
                raise LoadError("the floor did not answer within 60 s")
            try:
                requests.get(base + "/", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def floor_tokens(stack: Stack, n: int) -> list[str]:
    """ID tokens of `n` patients, one per worker thread of the floor load."""
    from tests.support import create_user, id_token

    return [id_token(stack, create_user(stack, Role.PATIENT)) for _ in range(n)]


def drive_floor(base: str, tokens: list[str], seconds: float, stats: Stats) -> float:
    """len(tokens) threads, each sending the floor's signed-in GET one after another for
    `seconds`; every answer recorded in `stats` (anything but 200 is unexpected). Elapsed s."""
    deadline = time.monotonic() + seconds

    def work(token: str) -> None:
        http = requests.Session()
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = http.get(base + "/", headers=headers, timeout=60)
            except requests.RequestException as exc:
                stats.record(FLOOR_ROUTE, 0, time.perf_counter() - started, str(exc))
                continue
            elapsed = time.perf_counter() - started
            ok = response.status_code == 200 and response.json().get("profile") is True
            problem = None if ok else f"{response.status_code} {response.text[:160]}"
            stats.record(FLOOR_ROUTE, response.status_code, elapsed, problem)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in tokens]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def floor_summary(stats: Stats, elapsed: float) -> dict[str, Any]:
    lat = stats.latencies[FLOOR_ROUTE]
    if not lat:
        raise LoadError("the floor load answered no request")
    return {
        "elapsed_s": round(elapsed, 1),
        "requests": len(lat),
        "req_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 1),
        "p99_ms": round(percentile(lat, 99) * 1000, 1),
        "errors": stats.errors(),
        "unexpected_answers": sum(stats.unexpected_count.values()),
    }


def against_floor(traffic: dict[str, Any], floor: dict[str, Any]) -> dict[str, float]:
    """The day's throughput and latencies as ratios to the floor's: throughput below 1 and
    latencies above it, each the price of the day's routes doing more than the floor does."""
    return {
        "throughput_ratio": ratio(traffic["req_per_s"], floor["req_per_s"]),
        "p50_ratio": ratio(traffic["p50_ms"], floor["p50_ms"]),
        "p99_ratio": ratio(traffic["p99_ms"], floor["p99_ms"]),
    }


# -- the checks -----------------------------------------------------------------------------


def _live(doc: dict[str, Any], now: datetime) -> bool:
    status = doc.get("status")
    if status in ("confirmed", "completed", "no_show"):
        return True
    hold = doc.get("holdExpiresAt")
    return status == "pending_payment" and hold is not None and hold > now


def double_bookings(appointments: list[dict[str, Any]], now: datetime) -> list[str]:
    """Doctor slots held by two live appointments at once."""
    held: dict[tuple[str, Any], list[str]] = defaultdict(list)
    for doc in appointments:
        if _live(doc, now):
            held[(doc["doctorUid"], doc["start"])].append(doc["id"])
    return [f"{d} at {s}: {', '.join(ids)}" for (d, s), ids in held.items() if len(ids) > 1]


def over_capacity(bookings: list[dict[str, Any]], capacity: int) -> list[str]:
    """Clinic windows with more bookings holding a place than the window has."""
    holding = ("accepted", "checked_in", "completed", "no_show")
    taken: Counter[tuple[str, Any]] = Counter(
        (b["clinicUid"], b["windowStart"]) for b in bookings if b.get("status") in holding
    )
    return [f"{c} at {w}: {n} > {capacity}" for (c, w), n in taken.items() if n > capacity]


def ledger_problems(transactions: list[dict[str, Any]]) -> list[str]:
    """More than one payment for an order, or a transaction whose postings do not balance."""
    problems = []
    payments: Counter[str] = Counter()
    for tx in transactions:
        if tx.get("kind") == "payment":
            payments[str(tx.get("orderId"))] += 1
        totals: Counter[str] = Counter()
        for posting in tx.get("postings", []):
            totals[posting["currency"]] += posting["amountMinor"]
        if any(totals.values()):
            problems.append(f"transaction of order {tx.get('orderId')} does not balance")
    problems += [f"order {o}: {n} payment transactions" for o, n in payments.items() if n > 1]
    return problems


SEAL_LAG_SECONDS = 3  # dev/stack.py LOCAL_AUDIT_SEAL_LAG_SECONDS: younger entries wait
MAX_SEALS = 200  # each seals up to its max_entries; a 60 s run writes a few thousand entries


def verify_audit(admin: Any, written: int) -> dict[str, Any]:
    """Seal what the run wrote (POST /audit/seal until nothing is left), run the scheduled
    consistency check (POST /audit/check), then verify the whole checkpoint chain batch by
    batch (GET /audit/verify, following `next`). Whole means: every call answered, nothing
    found, and the checkpoints seal at least the `written` entries counted when the run's
    changes settled (the admin made for the checks writes a few more)."""
    auth = {"Authorization": f"Bearer {admin.bearer}"}
    time.sleep(SEAL_LAG_SECONDS + 1)  # the newest entries are old enough to seal
    seals: list[int] = []
    for _ in range(MAX_SEALS):
        sealed = requests.post(admin.base + "/audit/seal", headers=auth, timeout=300)
        seals.append(sealed.status_code)
        if sealed.status_code != 200 or not sealed.json().get("more"):
            break
    checked = requests.post(admin.base + "/audit/check", headers=auth, timeout=300)
    check_body: dict[str, Any] = checked.json() if checked.status_code == 200 else {}
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] | None = None
    for _ in range(1000):  # bounded: a batch covers many checkpoints
        page: dict[str, Any] = admin.get("/audit/verify", params=params).json()
        pages.append(page)
        if not page.get("ok") or page.get("next") is None:
            break
        params = {"from": page["next"]}
    entries = sum(int(p.get("entries") or 0) for p in pages)
    return {
        "ok": (
            all(p.get("ok") is True for p in pages)
            and set(seals) == {200}
            and check_body.get("ok") is True
            and entries >= written
        ),
        "count": sum(int(p.get("count") or 0) for p in pages),
        "entries": entries,
        "written": written,
        "seals": len(seals),
        "sealed": seals[-1],
        "check": {k: check_body.get(k) for k in ("ok", "checkpoints_verified", "problems")}
        | {"status": checked.status_code},
        "pages": pages[-3:],
    }


def check(world: World, say: Callable[[str], None]) -> dict[str, Any]:
    from shared.platform import clients
    from tests.paypal_support import Sim
    from tests.support import bearer, create_user

    db = clients.db()

    def settled() -> int:
        # The relay delivers Firestore changes to the audit trigger a little after they commit:
        # wait until the audit log stops growing (bounded) before verifying its chain.
        counted = db.collection("audit").count().get()  # type: ignore[no-untyped-call]
        return int(counted[0][0].value)

    def docs(collection: str) -> list[dict[str, Any]]:
        return [d.to_dict() or {} for d in db.collection(collection).stream()]

    say("waiting for the relay to deliver every change to the audit trigger ...")
    deadline = time.monotonic() + SETTLE_SECONDS
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_count = settled()
        if now_count != last:
            last, stable_since = now_count, time.monotonic()
        elif time.monotonic() - stable_since >= 5:
            break
        time.sleep(1)

    say("checking the books ...")
    now = datetime.now(UTC)
    appointments, bookings = docs("appointments"), docs("bookings")
    orders, transactions = docs("orders"), docs("ledger")

    health = requests.get(world.stack.paypal_url + "/_sim/health", timeout=30).json()
    sim = Sim(world.stack.paypal_url, health["contract"], health["contractReason"])
    paypal = sim.client()
    captured = [o for o in orders if o.get("captureId")]
    twice = []
    for order in captured:
        found = paypal.get_order(order["paypalOrderId"])
        caps = [c for unit in found.get("purchase_units", []) for c in unit["payments"]["captures"]]
        if len(caps) != 1:
            twice.append(f"order {order['id']}: {len(caps)} PayPal captures")

    admin = bearer(world.stack, create_user(world.stack, Role.ADMIN))
    verdict = verify_audit(admin, last)
    violations = sim.control("GET", "/violations")["violations"]
    return {
        "appointments": len(appointments),
        "confirmed_or_done": sum(
            1 for a in appointments if a["status"] in ("confirmed", "completed")
        ),
        "bookings": len(bookings),
        "orders_captured": len(captured),
        "ledger_transactions": len(transactions),
        "double_bookings": double_bookings(appointments, now),
        "windows_over_capacity": over_capacity(bookings, CLINIC_CAPACITY),
        "paid_twice": twice + ledger_problems(transactions),
        "audit_chain": verdict,
        "audit_entries": last,
        "paypal_contract_violations": violations[:5],
    }


def summarize(stats: Stats, elapsed: float) -> dict[str, Any]:
    routes: dict[str, dict[str, Any]] = {}
    by_status: Counter[int] = Counter()
    total = unexpected = 0
    backend: list[float] = []
    for route in sorted(stats.latencies):
        lat = stats.latencies[route]
        routes[route] = {
            "count": len(lat),
            "p50_ms": round(percentile(lat, 50) * 1000, 1),
            "p99_ms": round(percentile(lat, 99) * 1000, 1),
            "statuses": {str(s): n for s, n in sorted(stats.statuses[route].items())},
            "unexpected": stats.unexpected.get(route, []),
        }
        # The Auth emulator's sign-in and the buyer's approval at PayPal are part of the day
        # but not requests to the backend: listed, not counted in its throughput.
        if route.split(" ", 1)[1].startswith("["):
            continue
        total += len(lat)
        backend += lat
        by_status.update(stats.statuses[route])
        unexpected += stats.unexpected_count[route]
    return {
        "elapsed_s": round(elapsed, 1),
        "requests": total,
        "req_per_s": round(total / elapsed, 1),
        "p50_ms": round(percentile(backend, 50) * 1000, 1) if backend else None,
        "p99_ms": round(percentile(backend, 99) * 1000, 1) if backend else None,
        "by_status": {str(s): n for s, n in sorted(by_status.items())},
        "errors_5xx": sum(n for s, n in by_status.items() if s >= 500 or s == 0),
        "unexpected_answers": unexpected,
        "routes": routes,
    }


def passed(results: dict[str, Any]) -> bool:
    c = results["checks"]
    return (
        results["traffic"]["errors_5xx"] == 0
        and results["floor"]["errors"] == 0
        and not c["double_bookings"]
        and not c["windows_over_capacity"]
        and not c["paid_twice"]
        and bool(c["audit_chain"].get("ok"))
    )


def _verified(chain: dict[str, Any]) -> str:
    return (
        f"{chain['count']} checkpoints sealing {chain['entries']} entries verified (the run "
        f"wrote {chain['written']}, the checks' admin the rest); {chain['seals']} seals; "
        "consistency check "
        f"{'clean' if (chain.get('check') or {}).get('ok') else 'FOUND PROBLEMS'}"
    )


def render(results: dict[str, Any]) -> str:
    t, c = results["traffic"], results["checks"]
    rows = [
        [
            route,
            str(v["count"]),
            f"{v['p50_ms']:.0f}",
            f"{v['p99_ms']:.0f}",
            " ".join(f"{s}x{n}" for s, n in v["statuses"].items()),
            "; ".join(v["unexpected"])[:70],
        ]
        for route, v in t["routes"].items()
    ]
    mark = "PASS" if passed(results) else "FAIL"

    def listed(items: list[str]) -> str:
        return "none" if not items else f"{len(items)}: " + "; ".join(items[:3])

    chain = c["audit_chain"]
    return "\n".join(
        [
            f"Load: {results['people']} for {t['elapsed_s']:.0f} s from {results['workers']} "
            f"worker threads through the gateway (one process)",
            f"{t['requests']} backend requests, {t['req_per_s']:.1f} req/s; by status: "
            + ", ".join(f"{s}: {n}" for s, n in t["by_status"].items()),
            "days: " + ", ".join(f"{k} {v}" for k, v in results["days"].items()),
            machine_line(*results["machine"]),
            "",
            compare(results),
            "",
            table(["route", "n", "p50 ms", "p99 ms", "statuses", "unexpected answers"], rows),
            "",
            f"{mark}: 5xx or failed {t['errors_5xx']} (other unexpected answers "
            f"{t['unexpected_answers']}); double bookings "
            f"{listed(c['double_bookings'])}; windows over capacity "
            f"{listed(c['windows_over_capacity'])}; paid twice {listed(c['paid_twice'])}; "
            f"audit chain {'whole' if chain.get('ok') else 'BROKEN'} "
            f"({_verified(chain)})",
            f"books: {c['appointments']} appointments ({c['confirmed_or_done']} confirmed or "
            f"completed), {c['bookings']} clinic bookings, {c['orders_captured']} captured "
            f"orders, {c['ledger_transactions']} ledger transactions; PayPal contract "
            f"violations: {len(c['paypal_contract_violations'])}",
        ]
    )


def compare(results: dict[str, Any]) -> str:
    """The day against the floor load, in one small table: the figures to compare over time."""
    t, f, x = results["traffic"], results["floor"], results["vs_floor"]
    rows = [
        [
            f"floor: GET / (token + 1 read), {results['workers']} threads",
            str(f["requests"]),
            f"{f['req_per_s']:.1f}",
            f"{f['p50_ms']:.1f}",
            f"{f['p99_ms']:.1f}",
        ],
        [
            f"the day: every backend request, {results['workers']} threads",
            str(t["requests"]),
            f"{t['req_per_s']:.1f}",
            f"{t['p50_ms']:.1f}",
            f"{t['p99_ms']:.1f}",
        ],
        [
            "the day x floor",
            "",
            f"{x['throughput_ratio']:.3f}",
            f"{x['p50_ratio']:.2f}",
            f"{x['p99_ratio']:.2f}",
        ],
    ]
    return table(["load", "requests", "req/s", "p50 ms", "p99 ms"], rows)


def run(
    seconds: float,
    counts: dict[Role, int],
    workers: int,
    seed: int,
    progress: bool = True,
    floor_seconds: float = 20.0,
) -> dict[str, Any]:
    say = Progress(progress)
    started_on = machine()
    work = Path(tempfile.mkdtemp(prefix="alodoktor-load-"))
    stack = Stack(ports=Ports.free(), workdir=work / "stack", scheduler_paused=True)
    saved = dict(os.environ)
    try:
        say("starting the local stack (emulators, PayPal simulator, gateway, relay) ...")
        stack.start()
        os.environ.update(stack.env)
        stats = Stats()
        world = build_world(stack, Stats(), counts, say)  # the setup's answers are not counted
        world.stats = stats
        tokens = floor_tokens(stack, workers)
        floor_stats, floor_elapsed = Stats(), 0.0
        with floor_server(stack, work) as floor_base:
            drive_floor(floor_base, tokens[:1], 1.0, Stats())  # its first request: not counted
            say(f"the floor load, {floor_seconds / 2:.0f} s with {workers} workers ...")
            floor_elapsed += drive_floor(floor_base, tokens, floor_seconds / 2, floor_stats)
            say(f"running the day for {seconds:.0f} s with {workers} workers ...")
            elapsed, days = drive(world, seconds, workers, seed, say)
            say(f"the floor load again, {floor_seconds / 2:.0f} s ...")
            floor_elapsed += drive_floor(floor_base, tokens, floor_seconds / 2, floor_stats)
        traffic, floor = summarize(stats, elapsed), floor_summary(floor_stats, floor_elapsed)
        return {
            "seconds": seconds,
            "workers": workers,
            "people": ", ".join(f"{n} {r.value}s" for r, n in counts.items()),
            "seed": seed,
            "days": days,
            "traffic": traffic,
            "floor": floor,
            "vs_floor": against_floor(traffic, floor),
            "checks": check(world, say),
            "machine": [started_on, machine()],
        }
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60, help="length of the run (60)")
    parser.add_argument(
        "--floor-seconds",
        type=float,
        default=20,
        help="length of the floor load, half before the day and half after (20)",
    )
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--doctors", type=int, default=3)
    parser.add_argument("--clinics", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="worker threads (4)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 3600 or min(args.patients, args.doctors, args.clinics) < 1:
        parser.error("--seconds must be in [1, 3600] and every count at least 1")
    if not 2 <= args.floor_seconds <= 3600:
        parser.error("--floor-seconds must be in [2, 3600]")
    counts = {Role.PATIENT: args.patients, Role.DOCTOR: args.doctors, Role.CLINIC: args.clinics}
    try:
        results = run(
            args.seconds,
            counts,
            max(args.workers, 1),
            args.seed,
            not args.quiet,
            args.floor_seconds,
        )
    except (LoadError, StackError) as exc:
        print(f"load: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2, default=str) if args.json else render(results))
    return 1 if args.strict and not passed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
