"""The local stack: Google's Firestore emulator, the Firebase Auth emulator, the PayPal simulator
(dev/paypal_sim.py), the gateway and the event relay (dev/relay.py, local Eventarc).

`make dev` runs this module; the tests start the same Stack on free ports. Every child runs in
its own process group and is stopped with it, so no emulator outlives the stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO

import requests

ROOT = Path(__file__).resolve().parent.parent
PROJECT_ID = "demo-alodoktor"
# The simulator's own credentials; PayPal's real ones never belong in the local stack.
PAYPAL_SIM_CLIENT_ID = "sim-client-id"
PAYPAL_SIM_CLIENT_SECRET = "sim-client-secret"
PAYPAL_SIM_WEBHOOK_ID = "SIMWEBHOOK0000000001"
DEV_ORIGINS = "http://localhost:5173,http://127.0.0.1:5173,http://localhost:3000"
# The service accounts Cloud Scheduler and Cloud Tasks call as; dev/google_sim.py signs for them.
SCHEDULER_SERVICE_ACCOUNT = f"scheduler@{PROJECT_ID}.iam.gserviceaccount.com"
TASKS_SERVICE_ACCOUNT = f"tasks@{PROJECT_ID}.iam.gserviceaccount.com"
# Payouts (issue 15): the simulator's second webhook registration, and where the queues live.
PAYPAL_SIM_PAYOUTS_WEBHOOK_ID = "SIMPAYOUTSWEBHOOK0001"
# Notify (issue 16): the SMS simulator's account, the sender number, the mail sender and the
# key that signs unsubscribe links. Local only: production's come from Secret Manager.
TWILIO_SIM_ACCOUNT_SID = "AC" + "5a" * 16
TWILIO_SIM_AUTH_TOKEN = "sim-twilio-auth-token-0000000000"
TWILIO_SIM_FROM = "+15005550006"  # Twilio's own test sender number
LOCAL_MAIL_FROM = "Alo Doktor <no-reply@alodoktor.test>"
LOCAL_NOTIFY_SIGNING_KEY = "local-notify-signing-key"
CLOUD_TASKS_LOCATION = "us-central1"
# Audit (issue 17): the keys of keyed hashes and of checkpoint signatures, local only
# (production's come from Secret Manager), and a short sealing lag (production: 60 s).
LOCAL_AUDIT_HASH_KEY = "local-audit-hash-key"
LOCAL_AUDIT_SIGNING_KEY = "local-audit-signing-key"
LOCAL_AUDIT_SEAL_LAG_SECONDS = "3"


TEMP_PREFIX = "alodoktor-stack-"


class StackError(RuntimeError):
    """A problem the user can fix, told in one line."""


@dataclass(frozen=True)
class Ports:
    firestore: int = 8080
    auth: int = 9099
    gateway: int = 5001
    hub: int = 4400
    logging: int = 4500
    paypal: int = 8095
    google: int = 8096
    tasks: int = 9499  # Cloud Tasks (dev/cloud_tasks.py), issue 15
    # -- notify (issue 16): the SMTP sink and its HTTP controls, the SMS and push simulators
    smtp: int = 1025
    mail: int = 8025
    twilio: int = 8097
    fcm: int = 8098
    # -- the front end's origin (issue 18): hosting/public and /api/<function>/**, as Hosting
    hosting: int = 5000
    # -- where the Firestore emulator posts document events (dev/relay.py, local Eventarc)
    relay: int = 8099
    # -- Cloud Scheduler and the clock's control (dev/scheduler.py), issue 24
    scheduler: int = 8100

    @classmethod
    def free(cls) -> Ports:
        return cls(*_free_ports(len(fields(cls))))


# Stacks take their ports below the kernel's ephemeral range (Linux: 32768-60999), which
# outgoing connections draw from: a port the kernel handed out as free (bind to 0) can be taken
# by any process's next connection before the emulator that was to listen on it starts, and
# with parallel test workers that happened. Each worker of a test run (PYTEST_XDIST_WORKER,
# gw0, gw1, ...) draws from a block of its own, at random within it, so that neither another
# worker nor a second run on the same machine is likely to pick the same ones.
PORT_FLOOR = 10000
PORT_BLOCK = 4000


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    start = PORT_FLOOR + (index % 5) * PORT_BLOCK
    return range(start, start + PORT_BLOCK)


def _free_ports(n: int) -> list[int]:
    import random

    chosen: list[int] = []
    block = list(_port_block())
    random.SystemRandom().shuffle(block)
    for port in block:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
        chosen.append(port)
        if len(chosen) == n:
            return chosen
    raise StackError(f"no {n} free ports in {_port_block()}")


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def firestore_emulator() -> Path:
    """The emulator's launcher inside the Cloud SDK that holds `gcloud`."""
    gcloud = Path(shutil.which("gcloud") or "gcloud").resolve()
    return (
        gcloud.parent.parent / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator"
    )


def check_prerequisites() -> None:
    missing = []
    if shutil.which("java") is None:
        missing.append(
            "java is not installed: the Firestore emulator needs Java 11+ "
            "(apt install openjdk-17-jre-headless)"
        )
    if shutil.which("gcloud") is None:
        missing.append(
            "gcloud is not installed: install the Google Cloud SDK "
            "with its cloud-firestore-emulator component"
        )
    elif not firestore_emulator().exists():
        missing.append(
            f"the Firestore emulator is not installed ({firestore_emulator()}): "
            "apt install google-cloud-cli-firestore-emulator, "
            "or gcloud components install cloud-firestore-emulator"
        )
    if shutil.which("node") is None:
        missing.append("node is not installed: the Firebase Auth emulator needs Node.js 20+")
    elif not (ROOT / "node_modules" / ".bin" / "firebase").exists():
        missing.append("firebase-tools is not installed: run `npm ci` (make does this for you)")
    if missing:
        raise StackError("\n".join(missing))


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None


@dataclass
class Stack:
    ports: Ports = field(default_factory=Ports)
    project_id: str = PROJECT_ID
    # By default a temporary directory of its own, which stop() removes unless told to keep it.
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=TEMP_PREFIX)))
    gateway_output: IO[bytes] | None = None  # None: to a log file in workdir
    extra_env: dict[str, str] = field(default_factory=dict)
    # The scheduler fires Terraform's jobs on their schedules; paused, only when told to (the
    # test stacks: a sweep at a random minute would race the test that set up its state).
    scheduler_paused: bool = False
    children: list[Child] = field(default_factory=list)
    reaper: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to talk to this stack."""
        return {
            "GOOGLE_CLOUD_PROJECT": self.project_id,
            "GCLOUD_PROJECT": self.project_id,
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{self.ports.firestore}",
            "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{self.ports.auth}",
            # The front end's own origin too: a same-origin POST still carries Origin. And the
            # gateway's, which mails' links name locally: the unsubscribe page's button posts
            # from there (production's links are on the front end's origin).
            "ALLOWED_ORIGINS": ",".join((DEV_ORIGINS, *self.hosting_origins, self.gateway_url)),
            "FRONTEND_URL": self.hosting_url,  # where PayPal sends the buyer back
            "PAYPAL_API_BASE": self.paypal_url,
            "PAYPAL_CLIENT_ID": PAYPAL_SIM_CLIENT_ID,
            "PAYPAL_CLIENT_SECRET": PAYPAL_SIM_CLIENT_SECRET,
            "PAYPAL_WEBHOOK_ID": PAYPAL_SIM_WEBHOOK_ID,
            "FUNCTIONS_BASE_URL": self.gateway_url,
            "SCHEDULER_SERVICE_ACCOUNT": SCHEDULER_SERVICE_ACCOUNT,
            "TASKS_SERVICE_ACCOUNT": TASKS_SERVICE_ACCOUNT,
            "SERVICE_TOKEN_CERTS_URL": self.google_url + "/oauth2/v1/certs",
            # -- payouts (issue 15) --
            "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{self.ports.tasks}",
            "CLOUD_TASKS_LOCATION": CLOUD_TASKS_LOCATION,
            "PAYPAL_PAYOUTS_WEBHOOK_ID": PAYPAL_SIM_PAYOUTS_WEBHOOK_ID,
            # -- notify (issue 16) --
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.ports.smtp),
            "SMTP_STARTTLS": "false",
            "MAIL_FROM": LOCAL_MAIL_FROM,
            "TWILIO_API_BASE": self.twilio_url,
            "TWILIO_ACCOUNT_SID": TWILIO_SIM_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_SIM_AUTH_TOKEN,
            "TWILIO_FROM": TWILIO_SIM_FROM,
            "FCM_API_BASE": self.fcm_url,
            "NOTIFICATIONS_URL": self.gateway_url + "/notifications",
            "NOTIFY_SIGNING_KEY": LOCAL_NOTIFY_SIGNING_KEY,
            "NOTIFY_TIMEOUT_SECONDS": "3",  # a lost answer is waited for briefly here
            # -- audit (issue 17) --
            "AUDIT_HASH_KEY": LOCAL_AUDIT_HASH_KEY,
            "AUDIT_SIGNING_KEY": LOCAL_AUDIT_SIGNING_KEY,
            "AUDIT_SEAL_LAG_SECONDS": LOCAL_AUDIT_SEAL_LAG_SECONDS,
            "AUDIT_EXPORT_URL": str(self.workdir / "audit-export"),
            # -- time (issue 24): the business clock's offset, moved by the scheduler's control
            "ALODOKTOR_CLOCK_FILE": str(self.workdir / "clock.json"),
            **self.extra_env,
        }

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def hosting_url(self) -> str:
        """The front end's origin: its pages, and the API at /api/<function>/ beside them."""
        return f"http://127.0.0.1:{self.ports.hosting}"

    @property
    def hosting_origins(self) -> tuple[str, str]:
        return (self.hosting_url, f"http://localhost:{self.ports.hosting}")

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.auth}"

    @property
    def paypal_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.paypal}"

    @property
    def google_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.google}"

    @property
    def tasks_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.tasks}"

    @property
    def mail_url(self) -> str:
        """The SMTP sink's HTTP controls (what it received, faults)."""
        return f"http://127.0.0.1:{self.ports.mail}"

    @property
    def twilio_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.twilio}"

    @property
    def fcm_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.fcm}"

    @property
    def scheduler_url(self) -> str:
        """The local Cloud Scheduler and the clock's control (/_sim/clock)."""
        return f"http://127.0.0.1:{self.ports.scheduler}"

    @property
    def firestore_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.firestore}"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, *, gateway: bool = True) -> None:
        check_prerequisites()
        taken = [
            f"port {port} ({name}) is already in use: stop what holds it or choose another port"
            for name, port in vars(self.ports).items()
            if port_in_use(port)
        ]
        if taken:
            raise StackError("\n".join(taken))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_reaper()
        try:
            self._start_firestore(events=gateway)
            self._start_auth()
            self._start_paypal()
            self._start_google()
            self._wait("Firestore emulator", self.firestore_url + "/", 60, "firestore")
            self._wait("Auth emulator", self.auth_url + "/", 90, "auth")
            self._wait("PayPal simulator", self.paypal_url + "/_sim/health", 60, "paypal")
            self._wait("Google OIDC simulator", self.google_url + "/_sim/health", 60, "google")
            self._start_tasks()  # mints its tasks' tokens from the Google simulator
            self._wait("Cloud Tasks emulator", self.tasks_url + "/_sim/health", 90, "tasks")
            self._start_notify_parts()
            if gateway:
                self.start_gateway()
                self.start_relay()
                self.start_scheduler()
        except BaseException:
            self.stop(keep_files=True)  # the error names a log in the workdir
            raise

    def start_gateway(self) -> None:
        self._spawn(
            "gateway",
            [
                sys.executable,
                "-m",
                "dev.gateway",
                "--port",
                str(self.ports.gateway),
                "--hosting-port",
                str(self.ports.hosting),
            ],
            output=self.gateway_output,
        )
        self._wait("gateway", self.gateway_url + "/healthz", 60, "gateway")
        self._wait("front end's origin", self.hosting_url + "/__/firebase/init.json", 30, "gateway")

    def start_relay(self) -> None:
        """The emulator's document events to the event functions; live before anything is
        written, since the emulator posts each event once, when its write commits."""
        ready = self.workdir / "relay.ready"
        ready.unlink(missing_ok=True)
        self._spawn(
            "relay",
            [
                sys.executable,
                "-m",
                "dev.relay",
                "--gateway",
                self.gateway_url,
                "--port",
                str(self.ports.relay),
                "--ready-file",
                str(ready),
            ],
            output=self.gateway_output,
        )
        self._wait_for("event relay", ready.exists, 60, "relay")

    def start_scheduler(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "dev.scheduler",
            "--port",
            str(self.ports.scheduler),
            "--gateway",
            self.gateway_url,
            "--google-url",
            self.google_url,
        ]
        self._spawn(
            "scheduler",
            argv + (["--paused"] if self.scheduler_paused else []),
            output=self.gateway_output,
        )
        self._wait("Cloud Scheduler", self.scheduler_url + "/_sim/health", 60, "scheduler")

    def spawn_extra_gateway(self) -> str:
        """Another gateway process on a free port: a second instance of every function."""
        (port,) = _free_ports(1)
        name = f"gateway-{port}"
        self._spawn(name, [sys.executable, "-m", "dev.gateway", "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        self._wait(f"gateway on {port}", url + "/healthz", 60, name)
        return url

    def stop_extra_gateways(self) -> None:
        for child in [c for c in self.children if c.name.startswith("gateway-")]:
            _terminate(child.process)
            self.children.remove(child)

    def _start_firestore(self, *, events: bool) -> None:
        """Google's emulator, run as `gcloud emulators firestore start` runs it, plus what gcloud
        cannot pass: where to post document events (the relay), when they are wanted."""
        argv = [
            str(firestore_emulator()),
            "start",
            "--host=127.0.0.1",
            f"--port={self.ports.firestore}",
            f"--rules={ROOT / 'firestore.rules'}",
            "--database-mode=firestore-native",
        ]
        if events:
            argv.append(f"--functions_emulator=127.0.0.1:{self.ports.relay}")
        self._spawn("firestore", argv)

    def _start_paypal(self) -> None:
        self._spawn(
            "paypal",
            [
                sys.executable,
                "-m",
                "dev.paypal_sim",
                "--port",
                str(self.ports.paypal),
                "--webhook-url",
                self.gateway_url + "/paypal-webhook",
                "--payouts-webhook-url",
                self.gateway_url + "/payouts/webhook",
            ],
            output=self.gateway_output,
        )

    def _start_tasks(self) -> None:
        self._spawn(
            "tasks",
            [
                sys.executable,
                "-m",
                "dev.cloud_tasks",
                "--port",
                str(self.ports.tasks),
                "--google-url",
                self.google_url,
            ],
            output=self.gateway_output,
        )

    def _start_notify_parts(self) -> None:
        """Notify's (issue 16): the SMTP sink, the Twilio and FCM simulators."""
        for name, module, args in (
            ("smtp", "dev.smtp_sink", ["--smtp-port", str(self.ports.smtp)]),
            ("twilio", "dev.twilio_sim", []),
            ("fcm", "dev.fcm_sim", []),
        ):
            port = self.ports.mail if name == "smtp" else getattr(self.ports, name)
            self._spawn(
                name,
                [sys.executable, "-m", module, "--port", str(port), *args],
                output=self.gateway_output,
            )
        self._wait("SMTP sink", self.mail_url + "/_sim/health", 60, "smtp")
        self._wait("Twilio simulator", self.twilio_url + "/_sim/health", 60, "twilio")
        self._wait("FCM simulator", self.fcm_url + "/_sim/health", 60, "fcm")

    def _start_google(self) -> None:
        self._spawn(
            "google",
            [sys.executable, "-m", "dev.google_sim", "--port", str(self.ports.google)],
            output=self.gateway_output,
        )

    def _start_auth(self) -> None:
        config = self.workdir / "firebase.json"
        config.write_text(
            json.dumps(
                {
                    "emulators": {
                        "auth": {"host": "127.0.0.1", "port": self.ports.auth},
                        "hub": {"host": "127.0.0.1", "port": self.ports.hub},
                        "logging": {"host": "127.0.0.1", "port": self.ports.logging},
                        "ui": {"enabled": False},
                        "singleProjectMode": True,
                    }
                }
            )
        )
        self._spawn(
            "auth",
            [
                str(ROOT / "node_modules" / ".bin" / "firebase"),
                "emulators:start",
                "--only",
                "auth",
                "--project",
                self.project_id,
                "--config",
                str(config),
            ],
            cwd=self.workdir,
        )

    def _spawn(
        self, name: str, argv: list[str], *, output: IO[bytes] | None = None, cwd: Path = ROOT
    ) -> None:
        log_path = None
        if output is None:
            log_path = self.workdir / f"{name}.log"
            output = log_path.open("wb")
        env = {
            **os.environ,
            **self.env,
            "NO_UPDATE_NOTIFIER": "1",
            "FIREBASE_CLI_EXPERIMENTS": "",
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() reaches grandchildren
        )
        self.children.append(Child(name, process, log_path))
        with self._pgid_file.open("a") as pgids:  # for the reaper, should we die unstopped
            pgids.write(f"{process.pid}\n")

    @property
    def _pgid_file(self) -> Path:
        return self.workdir / "pgids"

    def _start_reaper(self) -> None:
        """A watcher that kills our children's groups if this process dies without stop()."""
        if self.reaper is not None:
            return
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "dev.reaper", str(os.getpid()), str(self._pgid_file)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait(self, what: str, url: str, timeout: float, child_name: str) -> None:
        def answers() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(url, timeout=1).ok
            return False

        self._wait_for(what, answers, timeout, child_name)

    def _wait_for(
        self, what: str, ready: Callable[[], bool], timeout: float, child_name: str
    ) -> None:
        deadline = time.monotonic() + timeout
        child = next(c for c in self.children if c.name == child_name)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise StackError(
                    f"{what} exited with code {child.process.returncode}{self._tail(child)}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise StackError(f"{what} did not come up within {timeout:.0f}s{self._tail(child)}")

    @staticmethod
    def _tail(child: Child) -> str:
        if child.log_path is None or not child.log_path.exists():
            return ""
        lines = child.log_path.read_text(errors="replace").splitlines()[-15:]
        return f" (log {child.log_path}):\n  " + "\n  ".join(lines)

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop every child; and remove the workdir (logs, exports) if it is a temporary one
        and `keep_files` is not asked for (a failed test run keeps its logs to read)."""
        for child in reversed(self.children):
            _terminate(child.process)
        self.children.clear()
        self._pgid_file.unlink(missing_ok=True)
        if self.reaper is not None:
            self.reaper.kill()
            self.reaper.wait()
            self.reaper = None
        temporary = self.workdir.parent == Path(tempfile.gettempdir())
        if temporary and self.workdir.name.startswith(TEMP_PREFIX) and not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # leftovers of an exited leader
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # The Firestore emulator's JVM is a grandchild: make sure the whole group is gone.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the Alo Doktor backend locally on emulators.")
    parser.add_argument("--no-seed", action="store_true", help="do not create the demo accounts")
    args = parser.parse_args()

    workdir = ROOT / ".stack"
    shutil.rmtree(workdir, ignore_errors=True)
    stack = Stack(workdir=workdir, gateway_output=sys.stdout.buffer)
    with _signals_stop():
        try:
            print(
                "Starting the Firestore and Auth emulators and the PayPal simulator "
                "(logs in .stack/) ...",
                flush=True,
            )
            stack.start()
            os.environ.update(stack.env)
            if not args.no_seed:
                from dev import seed

                accounts = seed.seed()
                print(seed.instructions(stack, accounts), flush=True)
            print(
                f"PayPal simulator on {stack.paypal_url} (client {PAYPAL_SIM_CLIENT_ID}, "
                f"webhooks to {stack.gateway_url}/paypal-webhook)",
                flush=True,
            )
            print(
                f"Cloud Tasks on {stack.tasks_url} (queue payouts; payout webhooks to "
                f"{stack.gateway_url}/payouts/webhook)",
                flush=True,
            )
            print(
                f"Mail: SMTP 127.0.0.1:{stack.ports.smtp}, received mail at "
                f"{stack.mail_url}/_sim/messages; SMS (Twilio) {stack.twilio_url}/_sim/messages; "
                f"push (FCM) {stack.fcm_url}/_sim/messages",
                flush=True,
            )
            print(
                f"Front end on {stack.hosting_url} (hosting/public; the API at /api/<function>/)",
                flush=True,
            )
            print(f"Gateway on {stack.gateway_url}  (Ctrl-C stops everything)", flush=True)
            while all(c.process.poll() is None for c in stack.children):
                time.sleep(0.5)
            dead = [c.name for c in stack.children if c.process.poll() is not None]
            print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
            return 1
        except StackError as exc:
            for line in str(exc).splitlines():
                print(f"error: {line}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
            return 0
        finally:
            # A second Ctrl-C or a group-wide SIGTERM must not cut the shutdown short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
