"""The audit log at scale, on the local stack's Firestore emulator, against today's hash chain
as the baseline in the same run (issue 17).

    python -m bench.audit_seal [--writers 50] [--entries 1000] [--seconds 90] [--seal 1000,10000]
                               [--verify 100000] [--json] [--quiet]

Starts its own stack on free ports (no gateway, no relay: the bench writes and seals itself),
counts every Firestore call of this process with bench/counting.py's gRPC interceptor, plus
the documents each commit writes, and reports:

- writes: `--entries` audited changes by `--writers` concurrent writers, (a) through the hash
  chain as it was before issue 17 (one transaction reading and writing the head document
  `auditHead/chain` per entry: `chain_append`, that code as it was, its per-instance lock
  included), (b) the same with no lock shared between writers (many instances, as
  production runs it), and (c) through the new log (each entry one document created on its
  own: shared.audit.service.record_change). Per variant: entries per second, errors,
  Firestore reads and writes per entry, and the most writes any single document took per
  1,000 entries.
- seal: each size of `--seal` entries sealed into one checkpoint: seconds, reads, writes,
  writes to any single document.
- verify: `--verify` entries sealed, then verified from checkpoint 1 on as GET
  /audit/checkpoints/<n>/verify does it (chunk batches of shared.audit.proofs.RANGE_BATCH)
  and the chain as GET /audit/verify does: seconds and reads.

Each part runs in a Firestore project of its own on the same emulator, so each count is its
own. Times are this machine's (2 shared cores, loaded) on the emulator: compare the variants
with each other, not with production.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_ATTEMPTS = 20  # as the chain had it


def say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


# -- what each commit writes -------------------------------------------------------------------


class DocWrites:
    """Writes per document name, from every Commit this process sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, names: list[str]) -> None:
        with self._lock:
            self.counts.update(names)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


def _doc_interceptor(docs: DocWrites) -> Any:
    import grpc  # type: ignore[import-untyped]

    class Interceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            if str(details.method).endswith("/Commit"):
                raw = type(request).pb(request) if hasattr(type(request), "pb") else request
                names = []
                for write in raw.writes:
                    kind = write.WhichOneof("operation")
                    if kind == "update":
                        names.append(write.update.name)
                    elif kind == "delete":
                        names.append(write.delete)
                    elif kind == "transform":
                        names.append(write.transform.document)
                docs.add([n.split("/documents/", 1)[-1] for n in names])
            return continuation(details, request)

    return Interceptor()


def install(docs: DocWrites) -> Callable[[], None]:
    """Add the per-document count to every gRPC channel made from now on."""
    import grpc

    real = grpc.insecure_channel

    def insecure_channel(*args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(real(*args, **kwargs), _doc_interceptor(docs))

    grpc.insecure_channel = insecure_channel

    def undo() -> None:
        grpc.insecure_channel = real

    return undo


# -- the baseline: the hash chain as it was before issue 17 -------------------------------------


def chain_append(
    db: Any, entry_id: str, content: Mapping[str, Any], turn: Any, deadline: float
) -> None:
    """One entry appended to the chain through the head document, in a transaction: the code
    of shared/audit/service.py before issue 17 (`append_all` for one entry), unchanged but
    for giving up at the bench's time box (TimeoutError) rather than after 20 attempts."""
    from google.api_core.exceptions import Aborted
    from google.cloud import firestore

    from shared.audit import rules as audit_log

    ref = db.collection("audit").document(entry_id)
    head_ref = db.collection("auditHead").document("chain")

    @firestore.transactional
    def run(tx: Any) -> None:
        seen = ref.get(transaction=tx).exists
        head = head_ref.get(transaction=tx)
        state = head.to_dict() if head.exists else {}
        if seen:
            return
        seq = int(state.get("seq", 0)) + 1
        entry = audit_log.link(content, seq=seq, prev_hash=str(state.get("hash", "0" * 64)))
        tx.create(ref, entry)
        tx.set(head_ref, {"seq": seq, "hash": entry["hash"], "entryId": entry_id})

    for attempt in range(MAX_ATTEMPTS):
        if time.monotonic() > deadline:
            raise TimeoutError("still contending at the end of the time box")
        try:
            with turn:
                run(db.transaction())
            return
        except (Aborted, ValueError) as exc:
            contended = isinstance(exc, Aborted) or isinstance(exc.__cause__, Aborted)
            if not contended or attempt == MAX_ATTEMPTS - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.random())


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- helpers -----------------------------------------------------------------------------------


def _use_project(name: str) -> Any:
    """Point shared.platform.clients at a project of its own on the emulator."""
    from google.cloud import firestore

    from shared.platform import clients

    db = firestore.Client(project=name)
    clients._db = db
    return db


def _change(i: int, tag: str) -> Any:
    from shared.audit import rules as audit_log

    now = datetime.now(UTC)
    return audit_log.Change(
        f"{tag}-{i}-{uuid.uuid4().hex}",
        f"prescriptions/{tag}-{i % 97}",
        now,
        {"status": "draft", "notes": "cough", "_meta": {"by": "doc-1"}},
        {"status": "issued", "notes": "cough, fever", "_meta": {"by": "doc-1"}},
    )


def _usage(
    counters: Any, docs: DocWrites, before: tuple[dict[str, int], Counter[str]]
) -> tuple[int, int, Counter[str]]:
    from bench.counting import delta

    used = delta(before[0], counters.snapshot())
    written = docs.snapshot()
    written.subtract(before[1])
    return used.get("firestore.reads", 0), used.get("firestore.writes", 0), +written


def _mark(counters: Any, docs: DocWrites) -> tuple[dict[str, int], Counter[str]]:
    return counters.snapshot(), docs.snapshot()


def _settle(lag: float) -> None:
    """Wait until every entry written so far is older than the sealing lag (server's clock)."""
    from google.cloud.firestore import Query

    from shared.audit import rules as audit_log
    from shared.platform import clients

    db = clients.db()
    newest = list(
        db.collection("audit")
        .order_by(audit_log.WRITTEN_AT, direction=Query.DESCENDING)
        .limit(1)
        .stream()
    )
    if not newest:
        return
    written = newest[0].get(audit_log.WRITTEN_AT)
    while (
        db.collection("probe").document("clock").get().read_time - timedelta(seconds=lag) <= written
    ):
        time.sleep(0.5)


def _bulk_entries(n: int, tag: str) -> None:
    """n read entries, 500 per commit (as a list answer records them)."""
    from shared.audit import service

    for start in range(0, n, service.MAX_BATCH):
        count = min(service.MAX_BATCH, n - start)
        service.record_reads(
            [f"prescriptions/{tag}-{i}" for i in range(start, start + count)], "bench", actor="b"
        )


# -- the parts -----------------------------------------------------------------------------------


def writes(
    variant: str, entries: int, writers: int, seconds: float, counters: Any, docs: DocWrites
) -> dict[str, Any]:
    from shared.audit import rules as audit_log
    from shared.audit import service

    db = _use_project(f"demo-bench-{variant}-{uuid.uuid4().hex[:6]}")
    turn: Any = threading.Lock() if variant == "chain" else _NoLock()
    key = service.hash_keys().current
    errors: list[str] = []
    claimed = iter(range(entries))
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def writer() -> int:
        done = 0
        while time.monotonic() < deadline:
            with lock:
                i = next(claimed, None)
            if i is None:
                return done
            change = _change(i, variant)
            try:
                if variant == "log":
                    service.record_change(change)
                else:
                    content = audit_log.entry_for_change(change, key)
                    assert content is not None
                    entry_id = audit_log.event_entry_id(change.event_id)
                    chain_append(db, entry_id, content, turn, deadline)
                done += 1
            except Exception as exc:  # counted, not hidden: contention that outlived the retries
                errors.append(type(exc).__name__)
        return done

    before = _mark(counters, docs)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        landed = sum(pool.map(lambda _: writer(), range(writers)))
    took = time.perf_counter() - started
    reads, written, per_doc = _usage(counters, docs, before)
    snaps = list(db.collection("audit").select([audit_log.WRITTEN_AT]).stream())
    stored = len(snaps)
    # How long after the server took a write it committed: what AUDIT_SEAL_LAG_SECONDS must
    # exceed (the new log only: the chain has no writtenAt).
    delays = [
        (s.create_time - s.get(audit_log.WRITTEN_AT)).total_seconds()
        for s in snaps
        if variant == "log"
    ]
    hottest, hottest_writes = per_doc.most_common(1)[0] if per_doc else ("-", 0)
    return {
        "variant": variant,
        "writers": writers,
        "entries": entries,
        "landed": landed,
        "stored": stored,
        "errors": len(errors),
        "errorKinds": dict(Counter(errors)),
        "seconds": round(took, 2),
        "timeBox": seconds,
        "entriesPerSecond": round(landed / took, 1) if took else None,
        # per entry that landed, retried and failed attempts included: what they cost
        "readsPerEntry": round(reads / landed, 2) if landed else None,
        "writesPerEntry": round(written / landed, 2) if landed else None,
        "hottestDocument": hottest,
        "hottestDocumentWrites": hottest_writes,
        "maxCommitDelaySeconds": round(max(delays), 3) if delays else None,
    }


def seal_cost(size: int, lag: float, counters: Any, docs: DocWrites) -> dict[str, Any]:
    from shared.audit import sealing

    _use_project(f"demo-bench-seal-{size}-{uuid.uuid4().hex[:6]}")
    _bulk_entries(size, "seal")
    _settle(lag)
    before = _mark(counters, docs)
    started = time.perf_counter()
    sealed = sealing.seal(by="bench", max_entries=size)
    seconds = time.perf_counter() - started
    reads, written, per_doc = _usage(counters, docs, before)
    if sealed.checkpoint is None or sealed.checkpoint["count"] != size:
        raise RuntimeError(f"sealed {sealed}, not {size} entries")
    return {
        "entries": size,
        "seconds": round(seconds, 2),
        "reads": reads,
        "writes": written,
        "documentsWritten": sorted(per_doc),
        "mostWritesToOneDocument": max(per_doc.values()) if per_doc else 0,
        "chunks": len(sealed.checkpoint["chunks"]),
    }


def verify_cost(
    size: int, lag: float, counters: Any, docs: DocWrites, quiet: bool
) -> dict[str, Any]:
    from shared.audit import proofs, sealing

    _use_project(f"demo-bench-verify-{uuid.uuid4().hex[:6]}")
    say(f"  writing {size} entries ...", quiet)
    _bulk_entries(size, "verify")
    _settle(lag)
    checkpoints = []
    while True:
        sealed = sealing.seal(by="bench")
        if sealed.checkpoint is None or not sealed.created:
            break
        checkpoints.append(sealed.checkpoint)
        if not sealed.more:
            break
    assert sum(int(c["count"]) for c in checkpoints) == size
    say(f"  verifying {size} entries in {len(checkpoints)} checkpoints ...", quiet)
    before = _mark(counters, docs)
    started = time.perf_counter()
    chain = proofs.verify_checkpoints(1, proofs.CHAIN_BATCH)
    assert chain.ok, chain
    chain_seconds = time.perf_counter() - started
    verified = requests_made = 0
    for checkpoint in checkpoints:
        chunk: int | None = 0
        while chunk is not None:
            verdict = proofs.verify_range(int(checkpoint["n"]), chunk, proofs.RANGE_BATCH)
            if verdict is None or not verdict.ok:
                raise RuntimeError(f"checkpoint {checkpoint['n']} does not verify: {verdict}")
            verified += verdict.entries
            requests_made += 1
            chunk = verdict.next_chunk
    seconds = time.perf_counter() - started
    reads, _, _ = _usage(counters, docs, before)
    return {
        "entries": size,
        "checkpoints": len(checkpoints),
        "verified": verified,
        "batches": requests_made,
        "entriesPerBatch": proofs.RANGE_BATCH * 256,
        "chainSeconds": round(chain_seconds, 2),
        "seconds": round(seconds, 2),
        "entriesPerSecond": round(verified / seconds, 1) if seconds else None,
        "reads": reads,
    }


def run(
    *,
    writers: int,
    entries: int,
    seconds: float,
    seal_sizes: list[int],
    verify: int,
    quiet: bool,
) -> dict[str, Any]:
    from bench.counting import Counters
    from bench.counting import install as count_calls
    from dev.stack import Ports, Stack

    stack = Stack(ports=Ports.free(), scheduler_paused=True)  # no job may fire mid-measure
    say("starting the stack ...", quiet)
    stack.start(gateway=False)
    saved = dict(os.environ)
    os.environ.update(stack.env)
    counters, docs = Counters(), DocWrites()
    undo_docs = install(docs)  # before the first Firestore client is made
    undo_calls = count_calls(counters)
    lag = float(stack.env["AUDIT_SEAL_LAG_SECONDS"])
    try:
        result: dict[str, Any] = {"writes": [], "seal": [], "verify": None}
        for variant in ("chain", "chain-no-lock", "log"):
            say(f"writes: {entries} entries, {writers} writers, {variant} ...", quiet)
            result["writes"].append(writes(variant, entries, writers, seconds, counters, docs))
            say(f"  {json.dumps(result['writes'][-1])}", quiet)
        for size in seal_sizes:
            say(f"seal: {size} entries ...", quiet)
            result["seal"].append(seal_cost(size, lag, counters, docs))
            say(f"  {json.dumps(result['seal'][-1])}", quiet)
        if verify:
            say(f"verify: {verify} entries ...", quiet)
            result["verify"] = verify_cost(verify, lag, counters, docs, quiet)
        return result
    finally:
        undo_calls()
        undo_docs()
        os.environ.clear()
        os.environ.update(saved)
        stack.stop()


def render(result: dict[str, Any]) -> str:
    from bench.report import table

    lines = [
        "audited writes (today's chain against the new log; reads and writes per entry that "
        "landed, retries and failed attempts included)"
    ]
    lines.append(
        table(
            [
                "variant",
                "writers",
                "landed",
                "errors",
                "entries/s",
                "reads/entry",
                "writes/entry",
                "most writes to one document",
            ],
            [
                [
                    w["variant"],
                    str(w["writers"]),
                    f"{w['landed']}/{w['entries']}",
                    str(w["errors"]),
                    str(w["entriesPerSecond"]),
                    str(w["readsPerEntry"]),
                    str(w["writesPerEntry"]),
                    f"{w['hottestDocumentWrites']} ({w['hottestDocument'].split('/')[0]})",
                ]
                for w in result["writes"]
            ],
        )
    )
    lines.append("\nsealing (one checkpoint each)")
    lines.append(
        table(
            ["entries", "seconds", "reads", "writes", "max writes to one doc", "chunks"],
            [
                [
                    str(s["entries"]),
                    str(s["seconds"]),
                    str(s["reads"]),
                    str(s["writes"]),
                    str(s["mostWritesToOneDocument"]),
                    str(s["chunks"]),
                ]
                for s in result["seal"]
            ],
        )
    )
    v = result.get("verify")
    if v:
        lines.append("\nverification from checkpoint 1")
        lines.append(
            table(
                ["entries", "checkpoints", "batches", "chain s", "total s", "entries/s", "reads"],
                [
                    [
                        str(v["verified"]),
                        str(v["checkpoints"]),
                        str(v["batches"]),
                        str(v["chainSeconds"]),
                        str(v["seconds"]),
                        str(v["entriesPerSecond"]),
                        str(v["reads"]),
                    ]
                ],
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit_seal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument(
        "--seconds", type=float, default=90, help="time box of each write variant (90)"
    )
    parser.add_argument("--seal", default="1000,10000", help="sizes to seal, comma-separated")
    parser.add_argument("--verify", type=int, default=100_000, help="0: skip")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.seal.split(",") if s.strip()]
    result = run(
        writers=args.writers,
        entries=args.entries,
        seconds=args.seconds,
        seal_sizes=sizes,
        verify=args.verify,
        quiet=args.quiet,
    )
    print(json.dumps(result, indent=2) if args.json else render(result))
    landed = all(w["stored"] == w["entries"] for w in result["writes"] if w["variant"] == "log")
    return 0 if landed else 1


if __name__ == "__main__":
    sys.exit(main())
