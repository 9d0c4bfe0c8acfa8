"""The weekly run: what each provider is owed becomes a payout, recorded before it is sent.

For every provider and currency with earnings, once a week (Cloud Scheduler, or an admin now):

1. *record* (`record`): one lock-free commit (store.run_optimistic) creates
   `payouts/{period}_{kind}_{uid}_{currency}` with its amount frozen and its statement (the
   orders it pays), moves that amount in the ledger from the provider's earnings to
   `payouts_in_transit` (under the provider's guard, so a refund or chargeback racing it can
   never take the earnings below zero), and marks those orders as paid out by it. The id is
   the period's: a second run, or two at once, finds the first's payout (the `create` of one
   of them fails and it reads again), never makes another.
2. *dispatch* (`dispatch`): after the commit, one named Cloud Task per payout asks the worker
   (shared/payouts/sending.py) to send it. The name is the payout's (and its dispatch count):
   two runs enqueueing the same payout make one task. Each run first offers Cloud Tasks every
   payout still `scheduled` again (an enqueue that failed after the commit, or a run that
   died between the two): a task made already is refused by its name, so nothing is sent
   twice, and no payout needs a second write to say it was enqueued.

What the run needs of every provider it reads in bulk first (`Seen`): the earnings accounts
(one query, whose versions then guard each debit), this period's payouts (one query) and the
payout profiles (get_all in pages); per provider it then reads only its unpaid orders, what
they paid for and its balance.

A provider with no verified payout address, in its cooling-off, or held by an admin is not
paid this week: nothing is recorded and the earnings wait.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.payments import ledger, ledger_store
from shared.payments import records as order_records
from shared.payments.rules import Kind, OrderStatus
from shared.payouts import records, rules
from shared.payouts.deliveries import Deliveries
from shared.payouts.rules import Status
from shared.platform import clients, clock, logs, settings, store

log = logs.get("alodoktor.payouts")

MAX_LINES = 200  # orders one payout pays (one commit writes each); more wait for the next run
MAX_CANDIDATES = 1000  # unpaid-out orders read per provider and currency
CONCURRENCY = 8  # providers recorded at once by one run
PAYABLE = [OrderStatus.CAPTURED.value, OrderStatus.PARTIALLY_REFUNDED.value]
PAGE = 300  # documents per get_all


@dataclass
class RunResult:
    period: str
    accounts: int = 0  # provider accounts and currencies looked at
    recorded: int = 0  # payouts recorded by this run
    found: int = 0  # payouts of this period recorded before (another run)
    enqueued: int = 0  # tasks this run made
    enqueue_failed: int = 0  # payouts left for the next run to enqueue
    skipped: dict[str, int] = field(default_factory=dict)  # why providers were not paid


def worker_url() -> str:
    base = settings.get().functions_base_url
    if not base:
        raise RuntimeError("FUNCTIONS_BASE_URL is not set: the payout tasks have no target")
    return f"{base}/payouts/tasks/send"


def dispatch(payout: dict[str, Any]) -> bool:
    """Enqueue the task that sends this payout; True if this call made it. Raises if Cloud
    Tasks could not be asked (the payout then waits for the next run)."""
    from shared.integrations import cloud_tasks

    s = settings.get()
    if not s.tasks_service_account:
        raise RuntimeError("TASKS_SERVICE_ACCOUNT is not set: no one could call the worker")
    made = cloud_tasks.enqueue(
        cloud_tasks.HttpTask(
            queue=s.payouts_queue,
            task_id=rules.task_id(payout["id"], int(payout.get("dispatch", 0))),
            url=worker_url(),
            body={"payoutId": payout["id"]},
            service_account=s.tasks_service_account,
            audience=f"{s.functions_base_url}/payouts",
        )
    )
    return made


def _dispatch_quietly(payout: dict[str, Any], result: RunResult) -> None:
    try:
        if dispatch(payout):
            result.enqueued += 1
    except Exception:  # Cloud Tasks unreachable: the payout is recorded; the next run enqueues
        log.exception("payout %s recorded but not enqueued; the next run will", payout["id"])
        result.enqueue_failed += 1


@dataclass(frozen=True)
class Seen:
    """What a run read in bulk before recording one provider's payout."""

    payouts: Mapping[str, dict[str, Any]]  # this period's payouts (everyone's) by id
    profile: dict[str, Any] | None  # the provider's payout profile
    account: Any  # the earnings account's snapshot: its version guards the debit


@dataclass(frozen=True)
class Account:
    kind: str
    uid: str
    currency: str
    snapshot: Any  # of ledgerAccounts/{account}, shared by the account's currencies


def earnings_accounts() -> list[Account]:
    """Every provider's earnings account and currency, sorted, each with its snapshot."""
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection(ledger_store.ACCOUNTS)
        .where(filter=FieldFilter("account", ">=", "earnings:"))
        .where(filter=FieldFilter("account", "<", "earnings;"))
    )
    found = []
    for snap in query.stream():
        doc = snap.to_dict() or {}
        _, kind, uid = str(doc.get("account", "")).split(":", 2)
        found += [Account(kind, uid, str(c), snap) for c in doc.get("currencies") or []]
    return sorted(found, key=lambda a: (a.kind, a.uid, a.currency))


def _periods_payouts(period: str) -> dict[str, dict[str, Any]]:
    """Every payout of `period` (one query: in a new week, one read in all)."""
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db().collection(records.PAYOUTS).where(filter=FieldFilter("period", "==", period))
    )
    return {s.id: s.to_dict() or {} for s in query.stream()}


def _profiles(uids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The payout profiles of `uids`, read in pages."""
    found: dict[str, dict[str, Any] | None] = {}
    refs = [records.profile_ref(uid) for uid in sorted(set(uids))]
    for start in range(0, len(refs), PAGE):
        for snap in clients.db().get_all(refs[start : start + PAGE]):
            found[snap.id] = snap.to_dict() if snap.exists else None
    return found


def _earnings(order_snaps: list[Any], currency: str, deliveries: Deliveries) -> list[rules.Earning]:
    orders = [s.to_dict() for s in order_snaps]
    subjects = [(Kind(o["kind"]), str(o["subjectId"])) for o in orders]
    delivered = deliveries.delivered_at(subjects) if subjects else {}
    return [
        rules.Earning(
            order_id=o["id"],
            currency=o["currency"],
            amount_minor=int(o["amountMinor"]),
            fee_minor=int(o.get("feeMinor", 0)),
            returned_minor=int(o.get("refundedMinor", 0))
            + int(o.get("refundingMinor", 0))
            + int(o.get("reversedMinor", 0)),
            delivered_at=delivered.get(subject),
        )
        for o, subject in zip(orders, subjects, strict=True)
        if o["currency"] == currency
    ]


def _unpaid_orders(uid: str, currency: str) -> list[Any]:
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection(order_records.ORDERS)
        .where(filter=FieldFilter("providerUid", "==", uid))
        .where(filter=FieldFilter("currency", "==", currency))
        .where(filter=FieldFilter("status", "in", PAYABLE))
        .where(filter=FieldFilter("payoutId", "==", None))
        .limit(MAX_CANDIDATES)
    )
    return list(query.stream())


def record(
    kind: str,
    uid: str,
    currency: str,
    *,
    period: str,
    now: datetime,
    deliveries: Deliveries,
    seen: Seen | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """Record this period's payout of one provider and currency. Returns (payout, outcome):
    outcome is `recorded`, `found` (recorded before), a `rules.SendBlock` value, or
    `nothing_due`. `seen`: what a run read for it in bulk (else it is read here)."""
    s = settings.get()
    known = seen.payouts.get if seen is not None else records.get
    payout_id, existing = _this_periods(rules.payout_id(period, kind, uid, currency), known)
    if existing is not None:
        return existing, "found"
    ref = records.payout_ref(payout_id)
    block = rules.send_block(seen.profile if seen is not None else records.profile(uid), now)
    if block is not None:
        return None, block.value
    account = ledger.earnings_account(kind, uid)
    holding = rules.holding_period(s.payout_hold_days, s.full_refund_notice_hours)
    minimum = rules.minimum_for(currency, dict(s.payout_minimums))

    def plan(earnings: list[rules.Earning], owed: int) -> rules.Plan | None:
        return rules.plan(
            earnings,
            currency=currency,
            owed_minor=owed,
            now=now,
            holding=holding,
            minimum_minor=minimum,
            max_lines=MAX_LINES,
        )

    tries = [0]

    def body(batch: Any) -> tuple[dict[str, Any] | None, str]:
        tries[0] += 1
        again = tries[0] > 1  # the last commit failed: what was read before may be stale
        if again:
            snap = ref.get()
            if snap.exists:  # a concurrent run recorded it first
                return snap.to_dict(), "found"
        order_snaps = _unpaid_orders(uid, currency)
        earnings = _earnings(order_snaps, currency, deliveries)
        if plan(earnings, owed=2**62) is None:
            return None, "nothing_due"  # the guard is not taken: nothing is debited
        # The run's snapshot of the account guards the first try; a retry reads it again.
        # (A payout recorded meanwhile by another run fails our `create` below.)
        guard = seen.account if seen is not None and not again else None
        owed = ledger_store.owed_guarded(batch, account, currency, seen=guard)
        chosen = plan(earnings, owed)
        if chosen is None:
            return None, "nothing_due"
        payout = {
            "id": payout_id,
            "period": period,
            "providerKind": kind,
            "providerUid": uid,
            "providerAccount": account,
            "currency": currency,
            "amountMinor": chosen.amount_minor,
            "lines": [
                {"orderId": ln.order_id, "amountMinor": ln.amount_minor} for ln in chosen.lines
            ],
            "linesMinor": chosen.lines_minor,
            "adjustmentMinor": chosen.adjustment_minor,
            "status": Status.SCHEDULED.value,
            "holdReason": None,
            "attempt": 0,
            "dispatch": 0,
            "leaseUntil": None,
            "paypalBatchId": None,
            "paypalItemId": None,
            "itemStatus": None,
            "createdAt": now,
            "updatedAt": now,
        }
        store.create(ref, payout, tx=batch, by="system")
        ledger_store.record(
            batch,
            f"payout-{payout_id}",
            ledger.payout_reserved(account, chosen.amount_minor, currency, owed),
            order_id=payout_id,
            parties={"providerUid": uid},
            at=now,
        )
        snaps = {s.id: s for s in order_snaps}
        for line in chosen.lines:
            order_snap = snaps[line.order_id]
            store.update(
                order_snap.reference,
                {"payoutId": payout_id},
                tx=batch,
                by="system",
                # A refund reserved against this order meanwhile changed it: read again.
                unchanged_since=order_snap.update_time,
            )
        return payout, "recorded"

    result: tuple[dict[str, Any] | None, str] = store.run_optimistic(body, attempts=8)
    return result


MAX_PER_PERIOD = 5  # payouts of one provider and currency in one period (see below)


def _this_periods(
    base: str, known: Callable[[str], dict[str, Any] | None]
) -> tuple[str, dict[str, Any] | None]:
    """The id of the period's payout to record, and that payout if it exists already
    (`known`: a payout by id, or None).

    One payout per provider, currency and period; but when the period's payout ended with
    its money back (returned, reversed, cancelled), the provider is owed again and the next
    run (an admin's, say) may pay it: that one takes the next id, `{base}-2`, and so on."""
    for n in range(1, MAX_PER_PERIOD + 1):
        candidate = base if n == 1 else f"{base}-{n}"
        payout = known(candidate)
        if payout is None:
            return candidate, None
        if Status(payout["status"]) not in rules.FINAL:
            return candidate, payout
    last = f"{base}-{MAX_PER_PERIOD}"
    return last, known(last)


def run(*, deliveries: Deliveries, now: datetime | None = None) -> RunResult:
    """This week's payouts: re-enqueue what an earlier run could not, then record and enqueue
    one payout per provider and currency that is owed enough."""
    at = now or clock.now()
    result = RunResult(period=rules.period_of(at))
    offered: set[str] = set()
    for waiting in _undispatched() + release_ended_holds(at):
        offered.add(waiting["id"])
        _dispatch_quietly(waiting, result)
    accounts = earnings_accounts()
    result.accounts = len(accounts)
    payouts = _periods_payouts(result.period)
    profiles = _profiles([a.uid for a in accounts])

    def one(a: Account) -> tuple[dict[str, Any] | None, str]:
        seen = Seen(payouts, profiles.get(a.uid), a.snapshot)
        try:
            return record(
                a.kind,
                a.uid,
                a.currency,
                period=result.period,
                now=at,
                deliveries=deliveries,
                seen=seen,
            )
        except Exception:  # one provider's failure must not stop everyone's payout
            log.exception("payout of %s %s in %s could not be recorded", a.kind, a.uid, a.currency)
            return None, "failed"

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        outcomes = list(pool.map(one, accounts))
    to_dispatch: list[dict[str, Any]] = []
    for payout, outcome in outcomes:
        if outcome == "recorded":
            result.recorded += 1
            assert payout is not None
            to_dispatch.append(payout)
        elif outcome == "found":
            result.found += 1
            assert payout is not None
            if payout["status"] == Status.SCHEDULED.value and payout["id"] not in offered:
                to_dispatch.append(payout)  # another run recorded it; maybe not enqueued yet
        else:
            result.skipped[outcome] = result.skipped.get(outcome, 0) + 1
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(lambda p: _dispatch_quietly(p, result), to_dispatch))
    log.info(
        "payout run %s: %d recorded, %d found, %d enqueued, %d to enqueue later, skipped %s",
        result.period,
        result.recorded,
        result.found,
        result.enqueued,
        result.enqueue_failed,
        result.skipped,
        extra={"fields": {"payoutRun": result.period}},
    )
    return result


def _undispatched() -> list[dict[str, Any]]:
    """Scheduled payouts, whose task may never have been made (Cloud Tasks failed after the
    commit); offering the others again costs a refused name each, never a second task."""
    return [s.to_dict() or {} for s in records.with_status([Status.SCHEDULED.value], limit=1000)]


AUTO_RELEASED = (rules.SendBlock.COOLING_OFF.value, rules.SendBlock.NO_ADDRESS.value)


def release_ended_holds(now: datetime) -> list[dict[str, Any]]:
    """Payouts the worker held because of the provider's address, whose hold has ended:
    scheduled again, each with a new task name. Returns them, to be enqueued."""
    from google.cloud.firestore import FieldFilter

    query = (
        clients.db()
        .collection(records.PAYOUTS)
        .where(filter=FieldFilter("status", "==", Status.HELD.value))
        .where(filter=FieldFilter("holdReason", "in", list(AUTO_RELEASED)))
        .limit(1000)
    )
    released = []
    for snap in query.stream():
        payout = snap.to_dict() or {}
        if rules.send_block(records.profile(payout["providerUid"]), now) is None:
            again = reschedule(payout["id"], from_statuses=(Status.HELD,), now=now)
            if again is not None:
                released.append(again)
    return released


def reschedule(
    payout_id: str, *, from_statuses: tuple[Status, ...], now: datetime, new_attempt: bool = False
) -> dict[str, Any] | None:
    """Back to `scheduled` with a new dispatch number (so a new task name), if it is in one of
    `from_statuses`; `new_attempt` also takes a new PayPal-Request-Id (after a refusal, which
    PayPal would otherwise replay). Returns the payout, or None if it was not in those states."""

    def body(batch: Any) -> dict[str, Any] | None:
        snap = records.payout_ref(payout_id).get()
        if not snap.exists:
            return None
        payout: dict[str, Any] = snap.to_dict()
        if Status(payout["status"]) not in from_statuses:
            return None
        change: dict[str, Any] = {
            "status": Status.SCHEDULED.value,
            "holdReason": None,
            "dispatch": int(payout.get("dispatch", 0)) + 1,
            "updatedAt": now,
        }
        if new_attempt:
            change["attempt"] = int(payout.get("attempt", 0)) + 1
            change["error"] = None
        store.update(snap.reference, change, tx=batch, by=None, unchanged_since=snap.update_time)
        return {**payout, **change}

    result: dict[str, Any] | None = store.run_optimistic(body)
    return result
