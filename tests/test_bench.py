"""The benchmarks' own parts, fast and without the emulators: the arithmetic of their reports,
the checks of the load run, and the counters of bench/counting.py against a local fake
Firestore (a real gRPC server) and a local HTTP server standing for the Auth API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from bench import coldstart, counting, load, report
from bench import requests as bench_requests

# -- report arithmetic ----------------------------------------------------------------------


def test_percentiles_are_nearest_rank_values_that_were_measured() -> None:
    values = [float(v) for v in range(1, 201)]  # 1..200, shuffled order must not matter
    assert report.percentile(values[::-1], 50) == 100
    assert report.percentile(values, 99) == 198
    assert report.percentile(values, 100) == 200
    assert report.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        report.percentile([], 50)
    with pytest.raises(ValueError):
        report.percentile(values, 0)


def test_ratios_and_targets() -> None:
    assert report.ratio(23.0, 20.0) == 1.15
    assert report.within(1.15, 1.15)
    assert not report.within(1.151, 1.15)
    with pytest.raises(ValueError):
        report.ratio(1.0, 0.0)


def test_table_aligns_columns_and_refuses_ragged_rows() -> None:
    text = report.table(["name", "ms"], [["floor", "7.5"], ["appointments", "12.25"]])
    lines = text.splitlines()
    assert lines[0] == "name             ms"
    assert lines[2] == "floor           7.5"
    assert lines[3] == "appointments  12.25"
    with pytest.raises(ValueError):
        report.table(["a", "b"], [["only one"]])


def test_coldstart_rows_are_judged_against_the_floor_for_time_and_memory() -> None:
    floor = coldstart.Series([1.0, 1.2, 1.1], [100_000, 100_000, 100_000], [0.4, 0.5, 0.6])
    hello = coldstart.Series([0.5, 0.5, 0.5], [40_000, 40_000, 40_000])
    slower = coldstart.Series([1.3, 1.4, 1.3], [110_000, 112_000, 111_000], [0.5, 0.6, 0.7])
    near = slower.summary(floor, hello)
    assert near["ratio"] == round(1.3 / 1.1, 3)
    assert near["hello_ratio"] == 2.6
    assert near["cpu_ratio"] == 1.2
    assert near["time_pass"] is False
    assert near["rss_pass"] is True
    assert coldstart._verdict(near) == "OVER (time > 1.15x floor)"
    fat = coldstart.Series([1.0, 1.0, 1.0], [130_000] * 3).summary(floor, hello)
    assert coldstart._verdict(fat) == "OVER (memory > 1.15x floor)"
    assert coldstart.all_pass({"functions": {"f": {"bearer": fat}}}) is False


def test_requests_rows_take_the_median_counts_and_judge_p50_and_auth_calls() -> None:
    m = bench_requests.Measured(
        statuses={200: 10},
        counts=[
            {"firestore.reads": 2, "firestore.reads.users": 1, "http.auth": 1},
            {"firestore.reads": 2, "firestore.reads.users": 1, "http.auth": 1},
            {"firestore.reads": 3, "firestore.reads.users": 2, "http.auth": 1},
        ],
        latencies=[0.010, 0.012, 0.011, 0.013, 0.030],
        loaded=[0.02] * 5,
        throughput=80.0,
    )
    floor = {"p50_ms": 10.0, "req_per_s": 100.0}
    row = bench_requests.summarize(m, floor)
    assert row["p50_ms"] == 12.0
    assert row["p99_ms"] == 30.0
    assert row["firestore_reads"] == 2
    assert row["reads_by_collection"] == {"users": 1}
    assert row["auth_calls"] == 1
    assert row["counts_varied"] is True
    assert row["p50_ratio"] == 1.2
    assert row["throughput_ratio"] == 0.8
    assert row["p50_pass"] is True
    assert row["pass"] is False  # the Auth call
    assert bench_requests.verdict(row) == "OVER: 1 Auth call"
    both = bench_requests.pooled([m, bench_requests.Measured(latencies=[0.5], throughput=40.0)])
    assert both.throughput == 60.0
    assert len(both.latencies) == 6


# -- the load run's checks ------------------------------------------------------------------


def test_two_live_appointments_on_one_slot_are_a_double_booking() -> None:
    now = datetime.now(UTC)
    start = now + timedelta(days=1)
    held = {"holdExpiresAt": now + timedelta(minutes=5)}
    appointments = [
        {"id": "a", "doctorUid": "d", "start": start, "status": "confirmed"},
        {"id": "b", "doctorUid": "d", "start": start, "status": "cancelled"},
        {"id": "c", "doctorUid": "d", "start": start, "status": "pending_payment", **held},
        {"id": "e", "doctorUid": "other", "start": start, "status": "confirmed"},
        {
            "id": "f",
            "doctorUid": "other",
            "start": start,
            "status": "pending_payment",
            "holdExpiresAt": now - timedelta(minutes=1),  # run out: the slot is free again
        },
    ]
    assert load.double_bookings(appointments, now) == [f"d at {start}: a, c"]


def test_windows_over_capacity_and_payments_made_twice_are_found() -> None:
    w = "2030-01-01T08:00:00+07:00"
    bookings = [{"clinicUid": "c", "windowStart": w, "status": "accepted"}] * 3 + [
        {"clinicUid": "c", "windowStart": w, "status": "declined"}
    ]
    assert load.over_capacity(bookings, 3) == []
    assert load.over_capacity(bookings, 2) == [f"c at {w}: 3 > 2"]
    balanced = [
        {"currency": "USD", "amountMinor": 2000},
        {"currency": "USD", "amountMinor": -2000},
    ]
    ledger = [
        {"orderId": "o1", "kind": "payment", "postings": balanced},
        {"orderId": "o1", "kind": "refund", "postings": balanced},
        {"orderId": "o2", "kind": "payment", "postings": balanced},
    ]
    assert load.ledger_problems(ledger) == []
    ledger.append({"orderId": "o2", "kind": "payment", "postings": balanced[:1]})
    assert load.ledger_problems(ledger) == [
        "transaction of order o2 does not balance",
        "order o2: 2 payment transactions",
    ]


def _stats(latencies: dict[str, list[float]], status: int = 200) -> load.Stats:
    stats = load.Stats()
    for route, values in latencies.items():
        for v in values:
            stats.record(route, status, v, None)
    return stats


def test_the_load_report_pools_backend_requests_and_compares_them_with_the_floor() -> None:
    day = _stats(
        {
            "GET /session": [0.010] * 50,
            "POST /appointments": [0.100] * 49 + [0.900],
            # Not the backend: listed, never counted in its throughput or latencies.
            "POST [Auth emulator] accounts:signInWithPassword": [5.0] * 10,
        }
    )
    traffic = load.summarize(day, elapsed=10.0)
    assert traffic["requests"] == 100
    assert traffic["req_per_s"] == 10.0
    assert traffic["p50_ms"] == 10.0
    assert traffic["p99_ms"] == 100.0  # nearest rank: the 99th of 100, not the one 900 ms
    floor_stats = _stats({load.FLOOR_ROUTE: [0.005] * 99 + [0.020]})
    floor = load.floor_summary(floor_stats, elapsed=2.0)
    assert floor == {
        "elapsed_s": 2.0,
        "requests": 100,
        "req_per_s": 50.0,
        "p50_ms": 5.0,
        "p99_ms": 5.0,
        "errors": 0,
        "unexpected_answers": 0,
    }
    assert load.against_floor(traffic, floor) == {
        "throughput_ratio": 0.2,
        "p50_ratio": 2.0,
        "p99_ratio": 20.0,
    }
    with pytest.raises(load.LoadError):
        load.floor_summary(load.Stats(), elapsed=1.0)


def _load_results(floor_errors: int = 0) -> dict[str, Any]:
    traffic = load.summarize(_stats({"GET /session": [0.01, 0.02]}), elapsed=1.0)
    floor = load.floor_summary(_stats({load.FLOOR_ROUTE: [0.005, 0.006]}), elapsed=1.0)
    floor["errors"] = floor_errors
    chain = {"ok": True, "count": 1, "entries": 2, "written": 2, "seals": 1, "check": {"ok": True}}
    return {
        "people": "1 patients",
        "workers": 4,
        "days": {},
        "machine": [report.machine(), report.machine()],
        "traffic": traffic,
        "floor": floor,
        "vs_floor": load.against_floor(traffic, floor),
        "checks": {
            "double_bookings": [],
            "windows_over_capacity": [],
            "paid_twice": [],
            "audit_chain": chain,
            "appointments": 0,
            "confirmed_or_done": 0,
            "bookings": 0,
            "orders_captured": 0,
            "ledger_transactions": 0,
            "paypal_contract_violations": [],
        },
    }


def test_the_load_table_shows_the_day_against_the_floor_and_a_failing_floor_fails() -> None:
    results = _load_results()
    text = load.render(results)
    compared = load.compare(results).splitlines()
    assert compared[0].split() == ["load", "requests", "req/s", "p50", "ms", "p99", "ms"]
    assert compared[2].startswith("floor: GET / (token + 1 read), 4 threads")
    assert compared[3].startswith("the day: every backend request, 4 threads")
    assert compared[4].split()[-3:] == ["1.000", "2.00", "3.33"]
    assert "\n".join(compared) in text
    assert load.passed(results)
    assert not load.passed(_load_results(floor_errors=1))


def test_the_floor_load_drives_every_thread_until_the_time_is_up() -> None:
    seen: list[str] = []

    class Floor(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers["Authorization"])
            ok = self.headers["Authorization"] != "Bearer refused"
            body = b'{"uid": "u", "profile": true}' if ok else b'{"error": "invalid_token"}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Floor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        stats = load.Stats()
        elapsed = load.drive_floor(base, ["t1", "t2", "refused"], 0.5, stats)
    finally:
        server.shutdown()
        server.server_close()
    assert 0.5 <= elapsed < 5
    assert {"Bearer t1", "Bearer t2", "Bearer refused"} == set(seen)
    statuses = stats.statuses[load.FLOOR_ROUTE]
    assert statuses[200] > 2
    assert statuses[401] > 0
    assert stats.unexpected_count[load.FLOOR_ROUTE] == statuses[401]


def test_a_coldstart_round_runs_the_floor_often_and_every_other_probe_once() -> None:
    import itertools
    import random
    from pathlib import Path

    probes = [coldstart.Probe(f"p{i}", Path("."), "t", "/") for i in range(10)]
    floor = probes[3]
    order = coldstart.round_order(probes, floor, random.Random(1), floors=4)
    assert order.count(floor) == 4
    assert sorted(p.label for p in order if p != floor) == sorted(
        p.label for p in probes if p != floor
    )
    assert order[0] == floor
    gaps = [i for i, p in enumerate(order) if p == floor]
    assert max(b - a for a, b in itertools.pairwise(gaps)) <= 4  # spread, not bunched
    # More floors than other probes still runs the floor that many times.
    assert (
        coldstart.round_order(probes[:2], probes[0], random.Random(1), floors=3).count(probes[0])
        == 3
    )


def test_coldstart_baselines_carry_bytecode_and_no_bytecode_strips_it(tmp_path: Any) -> None:
    import importlib.util

    served = coldstart._one_file_function(coldstart.FLOOR_SOURCE, tmp_path / "floor")
    assert (served / importlib.util.cache_from_source("main.py")).is_file()
    stripped = coldstart._without_bytecode(served)
    assert sorted(p.name for p in stripped.rglob("*")) == ["main.py"]


# -- the counters ---------------------------------------------------------------------------


def test_urls_are_told_apart_and_snapshots_subtracted() -> None:
    emulated = "http://127.0.0.1:9099/identitytoolkit.googleapis.com/v1/projects/p/accounts:lookup"
    assert counting.classify_url(emulated) == "auth"
    assert counting.classify_url("https://identitytoolkit.googleapis.com/v1/accounts:lookup") == (
        "auth"
    )
    keys = (
        "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
    )
    assert counting.classify_url(keys) == "keys"
    assert counting.classify_url("http://127.0.0.1:8095/v2/checkout/orders") == "other"
    assert counting.delta({"a": 1, "b": 2}, {"a": 3, "c": 1}) == {"a": 2, "b": -2, "c": 1}
    name = "projects/p/databases/(default)/documents/bookingWindows/w1/places/0"
    assert counting.collection_of(name) == "places"


@pytest.fixture
def fake_firestore() -> Iterator[str]:
    """A real gRPC server answering three Firestore methods: lookups find documents whose id
    starts with 'found', queries return two documents, commits accept every write."""
    import grpc  # type: ignore[import-untyped]
    from google.cloud.firestore_v1.types import document, firestore, write
    from google.protobuf import timestamp_pb2

    def lookup(request: Any, context: Any) -> Iterator[Any]:
        for name in request.documents:
            if name.rsplit("/", 1)[-1].startswith("found"):
                yield firestore.BatchGetDocumentsResponse(
                    found=document.Document(name=name), read_time=timestamp_pb2.Timestamp()
                )
            else:
                yield firestore.BatchGetDocumentsResponse(
                    missing=name, read_time=timestamp_pb2.Timestamp()
                )

    def query(request: Any, context: Any) -> Iterator[Any]:
        for i in range(2):
            yield firestore.RunQueryResponse(
                document=document.Document(name=f"{request.parent}/appointments/a{i}"),
                read_time=timestamp_pb2.Timestamp(),
            )

    def commit(request: Any, context: Any) -> Any:
        return firestore.CommitResponse(
            write_results=[write.WriteResult() for _ in request.writes],
            commit_time=timestamp_pb2.Timestamp(),
        )

    def stream(fn: Any, req: Any, resp: Any) -> Any:
        return grpc.unary_stream_rpc_method_handler(
            fn, request_deserializer=req.deserialize, response_serializer=resp.serialize
        )

    handler = grpc.method_handlers_generic_handler(
        "google.firestore.v1.Firestore",
        {
            "BatchGetDocuments": stream(
                lookup, firestore.BatchGetDocumentsRequest, firestore.BatchGetDocumentsResponse
            ),
            "RunQuery": stream(query, firestore.RunQueryRequest, firestore.RunQueryResponse),
            "Commit": grpc.unary_unary_rpc_method_handler(
                commit,
                request_deserializer=firestore.CommitRequest.deserialize,
                response_serializer=firestore.CommitResponse.serialize,
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def fake_auth_api() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_counters_count_what_the_firestore_client_and_requests_really_send(
    fake_firestore: str, fake_auth_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", fake_firestore)
    counters = counting.Counters()
    undo = counting.install(counters)
    try:
        db = firestore.Client(project="demo-bench")  # its channel is made after install
        assert db.collection("users").document("found-1").get().exists
        assert not db.collection("sessions").document("gone").get().exists
        rows = list(db.collection("appointments").limit(5).stream())
        db.collection("users").document("found-1").set({"a": 1})
        base = f"http://{fake_auth_api}"
        requests.post(f"{base}/identitytoolkit.googleapis.com/v1/projects/p/accounts:lookup")
        requests.post(f"{base}/somewhere/else")
    finally:
        undo()
    assert len(rows) == 2
    got = counters.snapshot()
    assert got["firestore.call.BatchGetDocuments"] == 2
    assert got["firestore.call.RunQuery"] == 1
    assert got["firestore.call.Commit"] == 1
    assert got["firestore.reads"] == 4  # one found, one missing, two query rows
    assert got["firestore.reads.users"] == 1
    assert got["firestore.reads.sessions"] == 1
    assert got["firestore.reads.appointments"] == 2
    assert got["firestore.writes"] == 1
    assert got["http.auth"] == 1
    assert got["http.other"] == 1
    assert "http.keys" not in got

    requests.post(f"http://{fake_auth_api}/identitytoolkit.googleapis.com/v1/x")  # undone
    assert counters.snapshot() == got


# -- the floor checks what shared/identity/tokens.py checks ----------------------------------


def test_the_floor_accepts_and_refuses_emulator_tokens_as_the_pipeline_does() -> None:
    import time

    from bench import floor_function
    from shared.identity import tokens
    from shared.platform.errors import Unauthenticated
    from tests.support import emulator_claims, unsigned_token

    project = "demo-bench"
    now = int(time.time())
    cases = {
        "valid": emulator_claims(project, "u1"),
        "other project": emulator_claims(project, "u1", aud="demo-other"),
        "wrong issuer": emulator_claims(project, "u1", iss="https://example.test/x"),
        "no subject": emulator_claims(project, ""),
        "expired": emulator_claims(project, "u1", exp=now - 60),
        "from the future": emulator_claims(project, "u1", iat=now + 600),
        "no auth_time": {**emulator_claims(project, "u1"), "auth_time": None},
    }
    for name, claims in cases.items():
        token = unsigned_token(claims)
        try:
            tokens._check_claims(claims, tokens.TokenKind.ID_TOKEN, project)
            pipeline_accepts = True
        except Unauthenticated:
            pipeline_accepts = False
        try:
            floor_function._claims_of_unsigned(token, project)
            floor_accepts = True
        except floor_function.Refused:
            floor_accepts = False
        assert floor_accepts == pipeline_accepts == (name == "valid"), name


def _sweep_report(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "notices": 400,
        "users": 100,
        "sweepCalls": 2,
        "sent": 400,
        "mailsReceived": 400,
        "duplicates": 0,
        "seconds": 3.0,
        "messagesPerSecond": 133.3,
        "firestoreOpsPerMessage": 3.76,
        "floor": {
            "sent": 400,
            "seconds": 2.4,
            "messagesPerSecond": 166.7,
            "firestoreOpsPerMessage": 2.0,
        },
        "messagesPerSecondXFloor": 0.8,
        "firestoreCalls": {"Commit": 10},
    }
    return {**report, **changes}


def test_the_sweep_passes_at_its_share_of_the_floor_only_when_every_mail_came_once() -> None:
    from bench import notify_sweep

    assert notify_sweep.passed(_sweep_report())
    assert not notify_sweep.passed(_sweep_report(messagesPerSecondXFloor=0.79))
    assert not notify_sweep.passed(_sweep_report(duplicates=1))
    assert not notify_sweep.passed(_sweep_report(mailsReceived=399))
    assert not notify_sweep.passed(_sweep_report(sent=399, messagesPerSecondXFloor=2.0))
    text = notify_sweep.render(_sweep_report(messagesPerSecondXFloor=0.5))
    assert text.splitlines()[-1].startswith("MISSED: 0.5x the floor's rate")
    assert "floor (baseline)" in text


def _payout_run(providers: int, reads: float, writes: float, **changes: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "providers": providers,
        "ordersPerProvider": 2,
        "recorded": providers,
        "enqueueFailed": 0,
        "seconds": 1.0,
        "msPerProvider": 1000 / providers,
        "readsPerProvider": reads,
        "writesPerProvider": writes,
        "readsByCollection": {"orders": 2 * providers},
    }
    return {**run, **changes}


def test_a_payout_run_is_judged_by_operations_per_provider_against_the_run_before() -> None:
    from bench import payouts

    growth = {
        "msPerProviderRatio": 1.4,
        "readsPerProviderRatio": 1.0,
        "writesPerProviderRatio": 1.0,
    }
    half = payouts.BEFORE_OPS_PER_PROVIDER * payouts.TARGET_SHARE
    met = {
        "runs": [_payout_run(10, 5, half - 5), _payout_run(1000, 5, half - 5)],
        "largeOverSmall": growth,
    }
    assert payouts.passed(met)
    over = {"runs": [_payout_run(10, 7, 7), _payout_run(1000, 7, 7)], "largeOverSmall": growth}
    assert not payouts.passed(over)
    short = {"runs": [_payout_run(10, 5, 4, recorded=9)], "largeOverSmall": growth}
    assert not payouts.passed(short)
    assert not payouts.recorded_all(short)
    text = payouts.render(over)
    assert f"{14 / payouts.BEFORE_OPS_PER_PROVIDER:.2f}" in text
    assert text.splitlines()[-1].startswith("MISSED")
