"""The notify sweep draining a backlog of queued notices on the local stack.

    python -m bench.notify_sweep [--notices 5000] [--users 100] [--limit 500] [--json]

Starts its own stack on free ports without the gateway and the relay (so nothing but the sweep
delivers), queues the notices as features do (the outbox, in batches), then calls
`shared.notify.service.sweep` until nothing is due, as Cloud Scheduler's job would, counting
every Firestore call of this process with bench/counting.py's gRPC interceptor. Each notice is a
`payment_received` for one of `--users` recipients (e-mail to the stack's SMTP sink; push
planned and skipped, no device). Reports messages per second and Firestore reads and writes
per message, and checks the sink received every message exactly once.

The baseline, run after it on the same stack: the floor, the least work that delivers the same
number of queued messages with the same libraries: read each queued document (one query),
send a plain text mail on one SMTP connection (smtplib, no template, no preferences, no lease),
and mark the document sent (one update). The sweep's rate is reported as a ratio of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import smtplib
import sys
import time
import uuid
from email.message import EmailMessage
from typing import Any

import requests

from bench.report import table

FLOOR_COLLECTION = "benchFloor"
TARGET = 0.8  # the sweep's messages per second as a share of the floor's, at least (issue 26)


def floor(notices: int, people: list[tuple[str, str]], counters: Any) -> dict[str, Any]:
    """The baseline (module docstring): its messages per second and Firestore calls each."""
    from bench.counting import delta
    from shared.platform import clients

    db = clients.db()
    for start in range(0, notices, 400):
        batch = db.batch()
        for n in range(start, min(start + 400, notices)):
            _, email = people[n % len(people)]
            batch.set(db.collection(FLOOR_COLLECTION).document(f"floor-{n:05d}"), {"to": email})
        batch.commit()
    before = counters.snapshot()
    started = time.perf_counter()
    sent = 0
    with smtplib.SMTP(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"])) as smtp:
        for snap in db.collection(FLOOR_COLLECTION).stream():
            message = EmailMessage()
            message["From"] = os.environ.get("MAIL_FROM", "bench@alodoktor.test")
            message["To"] = snap.get("to")
            message["Subject"] = "Payment received"
            message["Message-ID"] = f"<{snap.id}@bench.alodoktor.test>"
            message.set_content("We received your payment of 20.00 USD.")
            smtp.send_message(message)
            snap.reference.update({"status": "sent"})
            sent += 1
    elapsed = time.perf_counter() - started
    used = delta(before, counters.snapshot())
    reads, writes = used.get("firestore.reads", 0), used.get("firestore.writes", 0)
    return {
        "sent": sent,
        "seconds": round(elapsed, 2),
        "messagesPerSecond": round(sent / elapsed, 1) if elapsed else None,
        "firestoreOpsPerMessage": round((reads + writes) / sent, 2) if sent else None,
    }


def run(notices: int, users: int, limit: int) -> dict[str, Any]:
    from bench.counting import Counters, delta, install
    from dev.stack import Ports, Stack

    stack = Stack(ports=Ports.free(), scheduler_paused=True)  # no job may fire mid-measure
    stack.start(gateway=False)
    saved = dict(os.environ)
    os.environ.update(stack.env)
    counters = Counters()
    undo = install(counters)  # before the first Firestore client is made
    try:
        from shared.identity import profiles
        from shared.notify import service
        from shared.platform import clients, outbox, store

        people = []
        batch = clients.db().batch()
        for i in range(users):
            uid = f"bench-{i:04d}"
            email = f"{uid}@bench.alodoktor.test"
            store.set(profiles.ref(uid), {"uid": uid, "email": email, "displayName": uid}, tx=batch)
            people.append((uid, email))
        batch.commit()
        for start in range(0, notices, 400):
            batch = clients.db().batch()
            for n in range(start, min(start + 400, notices)):
                uid, email = people[n % users]
                outbox.queue(
                    batch,
                    uid,
                    email,
                    "payment_received",
                    {"orderId": f"o-{n}", "currency": "USD", "amount": "20.00"},
                    "bench",
                    notice_id=f"bench-{n:05d}-{uuid.uuid4().hex[:6]}",
                )
            batch.commit()

        before = counters.snapshot()
        started = time.perf_counter()
        sent = calls = 0
        while True:
            result = service.sweep(limit=limit)
            calls += 1
            sent += result.sent
            if result.examined == 0:
                break
        elapsed = time.perf_counter() - started
        used = delta(before, counters.snapshot())
        received = requests.get(stack.mail_url + "/_sim/messages", timeout=120).json()["messages"]
        ids = [m["messageId"] for m in received]
        reads, writes = used.get("firestore.reads", 0), used.get("firestore.writes", 0)
        base = floor(notices, people, counters)
        rate = sent / elapsed if elapsed else 0.0
        return {
            "notices": notices,
            "users": users,
            "sweepCalls": calls,
            "sent": sent,
            "mailsReceived": len(received),
            "duplicates": len(ids) - len(set(ids)),
            "seconds": round(elapsed, 2),
            "messagesPerSecond": round(sent / elapsed, 1) if elapsed else None,
            "firestoreReadsPerMessage": round(reads / sent, 2) if sent else None,
            "firestoreWritesPerMessage": round(writes / sent, 2) if sent else None,
            "firestoreOpsPerMessage": round((reads + writes) / sent, 2) if sent else None,
            "floor": base,
            "messagesPerSecondXFloor": (
                round(rate / base["messagesPerSecond"], 2) if base["messagesPerSecond"] else None
            ),
            "firestoreCalls": {
                k.removeprefix("firestore.call."): v
                for k, v in used.items()
                if k.startswith("firestore.call.")
            },
        }
    finally:
        undo()
        os.environ.clear()
        os.environ.update(saved)
        stack.stop()


def delivered_once(report: dict[str, Any]) -> bool:
    """Every queued notice reached the sink, and none twice (the guarantee, whatever the pace)."""
    return (
        report["mailsReceived"] == report["notices"] == report["sent"] and not report["duplicates"]
    )


def passed(report: dict[str, Any]) -> bool:
    """Delivered once each, at TARGET of the floor's rate or better."""
    ratio = report.get("messagesPerSecondXFloor")
    return delivered_once(report) and ratio is not None and ratio >= TARGET


def render(report: dict[str, Any]) -> str:
    floor = report["floor"]
    rows = [
        [
            "sweep",
            str(report["sent"]),
            f"{report['seconds']:.2f}",
            str(report["messagesPerSecond"]),
            str(report["messagesPerSecondXFloor"]),
            str(report["firestoreOpsPerMessage"]),
        ],
        [
            "floor (baseline)",
            str(floor["sent"]),
            f"{floor['seconds']:.2f}",
            str(floor["messagesPerSecond"]),
            "1.0",
            str(floor["firestoreOpsPerMessage"]),
        ],
    ]
    verdict = "PASS" if passed(report) else "MISSED"
    return "\n".join(
        [
            f"Notify sweep: {report['notices']} queued notices to {report['users']} recipients, "
            f"{report['sweepCalls']} sweep calls; the floor sends as many on one SMTP connection",
            "",
            table(["", "sent", "s", "msg/s", "x floor", "Firestore ops/msg"], rows),
            "",
            f"{verdict}: {report['messagesPerSecondXFloor']}x the floor's rate (target at least "
            f"{TARGET}x); mails received {report['mailsReceived']} of {report['notices']}, "
            f"{report['duplicates']} twice; Firestore calls {report['firestoreCalls']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notices", type=int, default=5000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--limit", type=int, default=500, help="notices per sweep call")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    # The functions' log lines (JSON on stdout, as Cloud Run reads them) go to stderr here:
    # stdout is the report's, which `python -m bench --json` parses.
    with contextlib.redirect_stdout(sys.stderr):
        report = run(args.notices, args.users, args.limit)
    print(json.dumps(report) if args.json else render(report))
    return 0 if delivered_once(report) else 1


if __name__ == "__main__":
    sys.exit(main())
