"""The payout worker: the one place that pays through PayPal, idempotent on the payout's state.

A Cloud Task asks for a payout to be sent; Cloud Tasks retries any answer but 2xx, and may
deliver one task twice (at once, even). So:

1. *claim* (lock-free): a `scheduled` payout becomes `sending` with the address it is paid
   to frozen on it and a short lease; a `sending` one whose lease ran out (the worker before
   died, or PayPal was down) is taken over as it stands. A delivery that finds the lease held
   answers 503 (`payout_busy`): Cloud Tasks comes back later. Any other state is done: 200.
   A provider who may not be paid now (no address, cooling-off, an admin's hold) gets the
   payout `held` instead.
2. *send*: `sender_batch_id` = the payout id, and the same PayPal-Request-Id on every retry
   of one attempt, with the same body: a retry after a lost answer gets PayPal's first answer
   (or, should PayPal not know the request id, a duplicate-batch refusal naming the batch
   it made, which is taken as that answer).
3. *save* PayPal's batch id at once (`sent`), before anything else.

PayPal down or saying "not now" (the client's one rule, shared.integrations.paypal.transient:
5xx, timeouts, 429 RATE_LIMIT_REACHED, 409 PREVIOUS_REQUEST_IN_PROGRESS, a token it will not
take) answers 503 with Retry-After and frees the lease, so Cloud Tasks' retry resends the same
request. Only PayPal refusing (insufficient funds, a receiver it will not pay, a restricted
account: a 400, 403, 404 or 422) is no reason to retry: the payout is `refused`, admins are
alerted, and the answer is 200.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.integrations import paypal
from shared.payouts import notices, records, rules
from shared.payouts.rules import Status
from shared.platform import clock, errors, logs, store
from shared.platform.money import Money

log = logs.get("alodoktor.payouts")

LEASE = timedelta(seconds=120)  # longer than PayPal's tries of one call take


class PayoutBusy(errors.ApiError):
    status = 503
    code = "payout_busy"
    title = "Another worker is sending this payout"


def send(payout_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Send one payout if it is due to be sent; returns the payout as it now stands."""
    payout, action = _claim(payout_id, now or clock.now())
    if action != "send":
        return payout
    item = {
        "recipient_type": payout["recipientType"],
        "receiver": payout["receiver"],
        "amount": paypal.payout_amount(Money(payout["currency"], int(payout["amountMinor"]))),
        "note": f"Alo Doktor earnings, {payout['period']}",
        "sender_item_id": rules.sender_item_id(payout_id),
    }
    try:
        answer = paypal.get().create_payout(
            sender_batch_id=payout_id,
            items=[item],
            request_id=rules.request_id(payout_id, int(payout.get("attempt", 0))),
            email_subject="You have been paid by Alo Doktor",
        )
    except paypal.DuplicateBatch as exc:
        # An earlier attempt made the batch and its answer was lost: that batch is ours.
        log.warning("payout %s: PayPal has its batch already (%s)", payout_id, exc.batch_id)
        return _sent(payout_id, exc.batch_id, None)
    except paypal.PayPalUnavailable:
        _release(payout_id)
        raise  # 503: Cloud Tasks delivers again, and the retry sends the very same request
    except paypal.PayPalError as exc:  # a definite refusal (paypal.transient said so)
        return _refused(payout_id, exc)
    header = answer.get("batch_header") or {}
    return _sent(payout_id, header.get("payout_batch_id"), header.get("batch_status"))


def _claim(payout_id: str, now: datetime) -> tuple[dict[str, Any], str]:
    def body(batch: Any) -> tuple[dict[str, Any], str]:
        snap = records.payout_ref(payout_id).get()
        if not snap.exists:
            raise errors.NotFound("No such payout.", code="payout_not_found")
        payout: dict[str, Any] = snap.to_dict()
        status = Status(payout["status"])
        if status not in rules.SENDABLE:
            return payout, "done"
        lease = payout.get("leaseUntil")
        if status is Status.SENDING and isinstance(lease, datetime) and lease > now:
            return payout, "busy"
        change: dict[str, Any] = {"leaseUntil": now + LEASE, "updatedAt": now}
        if status is Status.SCHEDULED:
            profile = records.profile(payout["providerUid"])
            block = rules.send_block(profile, now)
            if block is not None:
                change = {"status": Status.HELD.value, "holdReason": block.value, "updatedAt": now}
                action = "held"
            else:
                assert profile is not None
                address = profile["address"]
                change |= {
                    "status": Status.SENDING.value,
                    "recipientType": address["recipientType"],
                    "receiver": address["receiver"],
                    "sendingAt": now,
                }
                action = "send"
        else:
            action = "send"  # resumed as it stands: same receiver, same PayPal-Request-Id
        store.update(
            snap.reference, change, tx=batch, by="system", unchanged_since=snap.update_time
        )
        return {**payout, **change}, action

    payout, action = store.run_optimistic(body, attempts=10)
    if action == "busy":
        raise PayoutBusy(
            "Another delivery is sending this payout; try again shortly.",
            headers={"Retry-After": "30"},
        )
    if action == "held":
        log.info("payout %s held: %s", payout_id, payout["holdReason"])
    return payout, action


def _release(payout_id: str) -> None:
    """PayPal was unreachable: free the lease so the next delivery resends at once."""
    try:
        store.update(
            records.payout_ref(payout_id),
            {"leaseUntil": None, "updatedAt": clock.now()},
            by="system",
        )
    except Exception:  # the lease runs out by itself anyway
        log.exception("payout %s: its lease could not be freed", payout_id)


def _sent(payout_id: str, batch_id: str | None, batch_status: str | None) -> dict[str, Any]:
    """Save PayPal's batch id; a webhook that got here first may have moved the payout on."""
    now = clock.now()

    def body(batch: Any) -> dict[str, Any]:
        snap = records.payout_ref(payout_id).get()
        payout: dict[str, Any] = snap.to_dict()
        change: dict[str, Any] = {"updatedAt": now, "leaseUntil": None}
        if batch_id and not payout.get("paypalBatchId"):
            change["paypalBatchId"] = batch_id
        if payout["status"] == Status.SENDING.value:
            change |= {"status": Status.SENT.value, "sentAt": now, "batchStatus": batch_status}
            if not batch_id:
                notices.alert_admins(
                    batch,
                    "payout_batch_unknown",
                    f"PayPal has a batch for payout {payout_id} but did not say which; "
                    "find it in PayPal's activity and reconcile by hand.",
                    {"payoutId": payout_id},
                )
        store.update(
            snap.reference, change, tx=batch, by="system", unchanged_since=snap.update_time
        )
        return {**payout, **change}

    result: dict[str, Any] = store.run_optimistic(body, attempts=10)
    log.info("payout %s sent to PayPal as batch %s", payout_id, result.get("paypalBatchId"))
    return result


def _refused(payout_id: str, exc: paypal.PayPalError) -> dict[str, Any]:
    now = clock.now()
    error = {
        "name": exc.name or None,
        "issue": exc.issue or None,
        "status": exc.status,
        "debugId": exc.debug_id or None,
        "at": now,
    }

    def body(batch: Any) -> dict[str, Any]:
        snap = records.payout_ref(payout_id).get()
        payout: dict[str, Any] = snap.to_dict()
        if payout["status"] != Status.SENDING.value:
            return payout
        change = {
            "status": Status.REFUSED.value,
            "error": error,
            "leaseUntil": None,
            "updatedAt": now,
        }
        store.update(
            snap.reference, change, tx=batch, by="system", unchanged_since=snap.update_time
        )
        notices.alert_admins(
            batch,
            "payout_refused",
            f"PayPal refused payout {payout_id}: {exc.name or exc.issue or exc.status}. "
            "The money stays set aside; retry it or cancel it.",
            {"payoutId": payout_id, "paypalError": exc.name or exc.issue or str(exc.status)},
        )
        return {**payout, **change}

    result: dict[str, Any] = store.run_optimistic(body, attempts=10)
    return result
