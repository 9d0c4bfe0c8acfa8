"""One scheduled payout run on the local stack: 1,000 providers against 10 (how it grows).

    python -m bench.payouts [--providers 10,1000] [--orders 2] [--json]

Starts its own stack on free ports without the gateway and the relay (nothing but the run
touches Firestore; the tasks it enqueues are accepted by Cloud Tasks, whose deliveries then
find no gateway and back off), and for each size, on an emptied Firestore emulator:

1. seeds that many doctors as the payment flow leaves them (bench setup, not measured): each
   with `--orders` captured appointments, completed long enough ago to be paid out, their
   ledger payments, and a verified payout address out of its cooling-off;
2. runs `shared.payouts.scheduling.run` once, as the weekly Cloud Scheduler job does (payouts
   recorded with the money set aside, one named Cloud Task each), counting every Firestore
   call of this process with bench/counting.py's gRPC interceptor and every HTTP call (the
   Cloud Tasks API) with its `requests` hook.

Reports wall time, Firestore reads and writes (and per provider), Cloud Tasks calls, and the
per-provider ratios of the large run to the small one: 1.0 is linear growth.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from bench.report import table

# Firestore operations per provider before issue 26 (10 reads and 9 writes, two orders each,
# measured by this bench at 63a0449): not re-measured each run, since that code is
# gone; operation counts, unlike times, do not move with the machine.
BEFORE_OPS_PER_PROVIDER = 19
TARGET_SHARE = 0.5  # operations per provider at most half of BEFORE's, the same guarantees


def seed(providers: int, orders: int, tag: str) -> None:
    from shared.identity import profiles
    from shared.payments import ledger, ledger_store
    from shared.platform import clients, store

    db = clients.db()
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=30)
    batch, writes = db.batch(), 0
    for p in range(providers):
        uid = f"{tag}doc{p:05d}"
        account = ledger.earnings_account("doctor", uid)
        store.set(
            profiles.ref(uid),
            {"uid": uid, "email": f"{uid}@bench.alodoktor.test", "role": "doctor"},
            tx=batch,
            by="bench",
        )
        store.set(
            db.collection("payoutProfiles").document(uid),
            {
                "uid": uid,
                "providerKind": "doctor",
                "address": {
                    "recipientType": "EMAIL",
                    "receiver": f"{uid}@pay.bench.test",
                    "verifiedAt": long_ago,
                },
                "pending": None,
                "coolingOffUntil": long_ago,
                "heldByAdmin": False,
            },
            tx=batch,
            by="bench",
        )
        writes += 2
        for n in range(orders):
            appointment, order_id = f"{uid}a{n}", f"appointment_{uid}a{n}"
            store.set(
                db.collection("appointments").document(appointment),
                {
                    "id": appointment,
                    "doctorUid": uid,
                    "patientUid": "benchpatient",
                    "status": "completed",
                    "start": long_ago,
                    "end": long_ago + timedelta(minutes=30),
                    "outcomeAt": long_ago,
                },
                tx=batch,
                by="bench",
            )
            order = {
                "id": order_id,
                "kind": "appointment",
                "subjectId": appointment,
                "patientUid": "benchpatient",
                "providerKind": "doctor",
                "providerUid": uid,
                "providerAccount": account,
                "currency": "USD",
                "amountMinor": 2000,
                "feeMinor": 200,
                "status": "captured",
                "refundedMinor": 0,
                "refundingMinor": 0,
                "payoutId": None,
                "createdAt": long_ago,
            }
            store.set(db.collection("orders").document(order_id), order, tx=batch, by="bench")
            capture = ledger.Capture("benchpatient", account, "USD", 2000, 200)
            ledger_store.record(
                batch,
                f"payment-{order_id}",
                ledger.payment(capture),
                order_id=order_id,
                parties={"patientUid": "benchpatient", "providerUid": uid},
                at=long_ago,
            )
            writes += 2 + 1 + 5 + 2
        if writes > 400:
            batch.commit()
            batch, writes = db.batch(), 0
    if writes:
        batch.commit()


def measure(providers: int, orders: int, stack: Any, counters: Any) -> dict[str, Any]:
    from bench.counting import delta
    from shared.payouts import scheduling
    from shared.workflows.payout_deliveries import DELIVERIES

    requests.delete(
        f"{stack.firestore_url}/emulator/v1/projects/{stack.project_id}/databases/(default)"
        "/documents",
        timeout=120,
    ).raise_for_status()
    tag = f"b{providers}x{int(time.time())}"
    seed(providers, orders, tag)
    before = counters.snapshot()
    started = time.perf_counter()
    result = scheduling.run(deliveries=DELIVERIES)
    elapsed = time.perf_counter() - started
    used = delta(before, counters.snapshot())
    reads, writes = used.get("firestore.reads", 0), used.get("firestore.writes", 0)
    return {
        "providers": providers,
        "ordersPerProvider": orders,
        "recorded": result.recorded,
        "enqueued": result.enqueued,
        "enqueueFailed": result.enqueue_failed,
        "skipped": result.skipped,
        "seconds": round(elapsed, 2),
        "msPerProvider": round(1000 * elapsed / providers, 1),
        "firestoreReads": reads,
        "firestoreWrites": writes,
        "readsPerProvider": round(reads / providers, 2),
        "writesPerProvider": round(writes / providers, 2),
        "cloudTasksCalls": used.get("http.other", 0),
        "readsByCollection": {
            k.removeprefix("firestore.reads."): v
            for k, v in sorted(used.items())
            if k.startswith("firestore.reads.")
        },
        "firestoreCalls": {
            k.removeprefix("firestore.call."): v
            for k, v in sorted(used.items())
            if k.startswith("firestore.call.")
        },
    }


def run(sizes: list[int], orders: int) -> dict[str, Any]:
    from bench.counting import Counters, install
    from dev.stack import Ports, Stack

    stack = Stack(ports=Ports.free(), scheduler_paused=True)  # no job may fire mid-measure
    print("starting a stack (no gateway) ...", file=sys.stderr, flush=True)
    stack.start(gateway=False)
    saved = dict(os.environ)
    os.environ.update(stack.env)
    counters = Counters()
    undo = install(counters)  # before the first Firestore client is made
    try:
        runs = []
        for size in sizes:
            print(f"{size} providers ...", file=sys.stderr, flush=True)
            runs.append(measure(size, orders, stack, counters))
        small, large = runs[0], runs[-1]
        growth = {
            f"{key}Ratio": round(large[key] / small[key], 2) if small[key] else None
            for key in ("msPerProvider", "readsPerProvider", "writesPerProvider")
        }
        return {"runs": runs, "largeOverSmall": growth}
    finally:
        undo()
        os.environ.clear()
        os.environ.update(saved)
        stack.stop()


def ops_per_provider(run: dict[str, Any]) -> float:
    return float(run["readsPerProvider"] + run["writesPerProvider"])


def recorded_all(report: dict[str, Any]) -> bool:
    """Every seeded provider's payout recorded and enqueued (the run's own guarantee)."""
    return all(r["recorded"] == r["providers"] and not r["enqueueFailed"] for r in report["runs"])


def passed(report: dict[str, Any]) -> bool:
    limit = BEFORE_OPS_PER_PROVIDER * TARGET_SHARE
    return recorded_all(report) and all(ops_per_provider(r) <= limit for r in report["runs"])


def render(report: dict[str, Any]) -> str:
    runs = report["runs"]
    rows = [
        [
            str(r["providers"]),
            str(r["recorded"]),
            f"{r['seconds']:.1f}",
            f"{r['msPerProvider']:.1f}",
            f"{r['readsPerProvider']:g}",
            f"{r['writesPerProvider']:g}",
            f"{ops_per_provider(r):g}",
            f"{ops_per_provider(r) / BEFORE_OPS_PER_PROVIDER:.2f}",
        ]
        for r in runs
    ]
    growth = report["largeOverSmall"]
    verdict = "PASS" if passed(report) else "MISSED"
    return "\n".join(
        [
            f"Payout run: {runs[0]['ordersPerProvider']} paid visits per provider, one run each "
            "on an emptied Firestore; operations counted in the process",
            "",
            table(
                [
                    "providers",
                    "recorded",
                    "s",
                    "ms/provider",
                    "reads/provider",
                    "writes/provider",
                    "ops/provider",
                    "x before",
                ],
                rows,
            ),
            "",
            f"growth from {runs[0]['providers']} to {runs[-1]['providers']} providers, per "
            f"provider (1.0 is linear): time {growth['msPerProviderRatio']}, reads "
            f"{growth['readsPerProviderRatio']}, writes {growth['writesPerProviderRatio']}",
            *(
                f"{r['providers']} providers, reads by collection: {r['readsByCollection']}"
                for r in runs
            ),
            f"{verdict}: at most {BEFORE_OPS_PER_PROVIDER * TARGET_SHARE:g} operations per "
            f"provider (half of {BEFORE_OPS_PER_PROVIDER} before issue 26), every payout "
            f"{'recorded and enqueued' if recorded_all(report) else 'NOT all recorded'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--providers", default="10,1000", help="sizes, small first")
    parser.add_argument("--orders", type=int, default=2, help="paid visits per provider")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.providers.split(",") if s.strip()]
    # The functions' log lines (JSON on stdout, as Cloud Run reads them) go to stderr here:
    # stdout is the report's, which `python -m bench --json` parses.
    with contextlib.redirect_stdout(sys.stderr):
        report = run(sizes, args.orders)
    print(json.dumps(report) if args.json else render(report))
    return 0 if recorded_all(report) else 1


if __name__ == "__main__":
    sys.exit(main())
