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
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--providers", default="10,1000", help="sizes, small first")
    parser.add_argument("--orders", type=int, default=2, help="paid visits per provider")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.providers.split(",") if s.strip()]
    report = run(sizes, args.orders)
    if args.json:
        print(json.dumps(report))
        return 0
    keys = [k for k in report["runs"][0] if not isinstance(report["runs"][0][k], dict)]
    print(f"{'':>20}" + "".join(f"{r['providers']:>12}" for r in report["runs"]))
    for key in keys[1:]:
        print(f"{key:>20}" + "".join(f"{r[key]!s:>12}" for r in report["runs"]))
    for key, value in report["largeOverSmall"].items():
        print(f"{key:>20}: {value}")
    for r in report["runs"]:
        print(f"{r['providers']} providers, reads by collection: {r['readsByCollection']}")
        print(f"{r['providers']} providers, Firestore calls: {r['firestoreCalls']}")
    ok = all(r["recorded"] == r["providers"] and not r["enqueueFailed"] for r in report["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
