"""The one PayPal client: OAuth2 tokens, Orders v2, captures and refunds, webhook verification.

The same code talks to PayPal's sandbox (the production default), the live API, or the local
simulator (dev/paypal_sim.py); only PAYPAL_API_BASE and the credentials differ. Calls that move
money carry a `PayPal-Request-Id`, and every retry of a call reuses its id, so a retry after a
lost answer cannot pay or refund twice. 5xx answers and timeouts are retried a bounded number of
times, then raise `PayPalUnavailable` (a 503 through shared.web.http).

Every answer is classified here, once, for every caller (captures, refunds, payouts, webhooks):
PayPal saying "not now" (`transient`: 5xx, timeouts, 429 RATE_LIMIT_REACHED, 409
PREVIOUS_REQUEST_IN_PROGRESS, a 401 that a renewed token did not cure) raises
`PayPalUnavailable`, and the caller leaves its work to be tried again with the same
PayPal-Request-Id; only PayPal saying "no" (400, 403, 404, 422: a validation, permission or
business refusal) raises `PayPalError`, which callers take as final.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.platform import errors, logs, settings
from shared.platform.money import Money

if TYPE_CHECKING:
    import requests

TOKEN_MARGIN_SECONDS = 300  # renew this long before PayPal's expiry, so no call races it
# What a caller is told to wait (Retry-After) when PayPal said "not now" without saying how
# long; PayPal's own Retry-After is kept, within MAX_RETRY_AFTER_SECONDS.
RETRY_AFTER_SECONDS = {429: 30, 401: 60}
DEFAULT_RETRY_AFTER_SECONDS = 5
MAX_RETRY_AFTER_SECONDS = 300

log = logs.get("alodoktor.paypal")


class PayPalError(Exception):
    """PayPal refused the call (a definite 4xx: see `transient` for the ones that are not).
    `name` and `issue` are PayPal's own codes."""

    def __init__(self, status: int, body: dict[str, Any], operation: str) -> None:
        self.status = status
        self.body = body
        self.name = str(body.get("name") or body.get("error") or "")
        details = body.get("details") or []
        self.issue = str(details[0].get("issue", "")) if details else ""
        self.debug_id = str(body.get("debug_id", ""))
        super().__init__(f"PayPal {operation}: {status} {self.name} {self.issue}".strip())


class InstrumentDeclined(PayPalError):
    """The buyer's funding source was declined: they should choose another."""


class OrderAlreadyCaptured(PayPalError):
    """Captured before (perhaps by us, with an answer that never arrived): read the order."""


class OrderNotApproved(PayPalError):
    """The buyer has not approved the order yet."""


class RefundRefused(PayPalError):
    """PayPal will not refund this (more than remains, fully refunded, and so on)."""


class PayPalUnavailable(errors.DependencyUnavailable):
    """PayPal did not answer, or answered "not now": the same request may be made again later.
    A 503 with Retry-After to a caller; `paypal_status`, `name`, `issue` and `debug_id` are
    what PayPal said, if it said anything."""

    code = "paypal_unavailable"
    title = "PayPal is unavailable"

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int = DEFAULT_RETRY_AFTER_SECONDS,
        paypal_status: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after
        self.paypal_status = paypal_status
        body = body or {}
        self.name = str(body.get("name") or body.get("error") or "")
        details = body.get("details") or []
        first = details[0] if details and isinstance(details[0], dict) else {}
        self.issue = str(first.get("issue", ""))
        self.debug_id = str(body.get("debug_id", ""))


def transient(status: int) -> bool:
    """Whether PayPal's answer `status` means "not now" rather than "no": the one rule by which
    every caller tells a retry from a refusal.

    5xx and 408: PayPal failed (its idempotency guide: retry with the same PayPal-Request-Id).
    429 RATE_LIMIT_REACHED: too many requests (its rate-limiting guide: back off, try again).
    409 RESOURCE_CONFLICT: the only issue PayPal documents for it is
    PREVIOUS_REQUEST_IN_PROGRESS ("please wait for sometime and try again").
    401 AUTHENTICATION_FAILURE: reached only after the client renewed its token once, so it is
    our credentials or PayPal's token service, never a judgment of the payment; the work waits
    (with an ERROR line) rather than being given up.
    Everything else of 4xx (400 validation, 403 permission, 404, 422 business) is a refusal.
    """
    return status >= 500 or status in (401, 408, 409, 429)


_TYPED: dict[str, type[PayPalError]] = {
    "INSTRUMENT_DECLINED": InstrumentDeclined,
    "ORDER_ALREADY_CAPTURED": OrderAlreadyCaptured,
    "ORDER_NOT_APPROVED": OrderNotApproved,
    "REFUND_AMOUNT_EXCEEDED": RefundRefused,
    "CAPTURE_FULLY_REFUNDED": RefundRefused,
    "REFUND_NOT_ALLOWED": RefundRefused,
}


def amount(money: Money) -> dict[str, str]:
    """PayPal's money shape: never a float."""
    return {"currency_code": money.currency, "value": money.value}


def approve_link(order: dict[str, Any]) -> str | None:
    for link in order.get("links", []):
        if link.get("rel") in ("approve", "payer-action"):
            return str(link["href"])
    return None


@dataclass
class _Token:
    value: str
    expires_at: float


class PayPal:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        webhook_id: str = "",
        timeout: float = 15.0,
        attempts: int = 3,
        backoff: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.webhook_id = webhook_id
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.clock = clock
        self.sleep = sleep
        self._token: _Token | None = None
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    # -- transport ------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _send(self, operation: str, method: str, path: str, **kw: Any) -> requests.Response:
        """One call, retried on 5xx and timeouts with the very same headers and body."""
        import requests

        failure = ""
        last: requests.Response | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.session.request(
                    method, self.base_url + path, timeout=self.timeout, **kw
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                failure = type(exc).__name__
                last = None
            else:
                if response.status_code < 500:
                    return response
                failure = f"HTTP {response.status_code}"
                last = response
            log.warning(
                "PayPal %s attempt %d/%d failed: %s", operation, attempt, self.attempts, failure
            )
            if attempt < self.attempts:
                self.sleep(self.backoff * 2 ** (attempt - 1))
        raise PayPalUnavailable(
            f"PayPal {operation} failed {self.attempts} times ({failure})",
            retry_after=_retry_after(last),
            paypal_status=last.status_code if last is not None else None,
            body=_json(last) if last is not None else None,
        )

    def access_token(self) -> str:
        with self._lock:
            if self._token is not None and self.clock() < self._token.expires_at:
                return self._token.value
            response = self._send(
                "token",
                "POST",
                "/v1/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self.client_secret),
                headers={"Accept": "application/json"},
            )
            body = _json(response)
            if response.status_code != 200:
                raise PayPalError(response.status_code, body, "token")
            lifetime = int(body.get("expires_in", 0))
            self._token = _Token(
                str(body["access_token"]),
                self.clock() + max(lifetime - TOKEN_MARGIN_SECONDS, lifetime // 2),
            )
            return self._token.value

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        sent = {"Accept": "application/json", **(headers or {})}
        if request_id is not None:
            sent["PayPal-Request-Id"] = request_id
        kw: dict[str, Any] = {}
        if json is not None:
            kw["json"] = json
        elif method == "POST":
            sent["Content-Type"] = "application/json"
        for renewed in (False, True):
            token = self._token_for(operation)
            response = self._send(
                operation, method, path, headers={**sent, "Authorization": f"Bearer {token}"}, **kw
            )
            if response.status_code == 401 and not renewed:
                # PayPal may revoke a token before its stated expiry: fetch one more, once.
                with self._lock:
                    if self._token is not None and self._token.value == token:
                        self._token = None
                continue
            break
        body = _json(response)
        status = response.status_code
        if status >= 400 and transient(status):
            unavailable = PayPalUnavailable(
                f"PayPal {operation}: {status} {body.get('name') or ''}, try again later",
                retry_after=_retry_after(response),
                paypal_status=status,
                body=body,
            )
            if status == 401:
                log.error("PayPal refuses our access token for %s, even a new one", operation)
            else:
                log.warning(
                    "PayPal %s: %d %s %s (not now: left to be tried again)",
                    operation,
                    status,
                    unavailable.name,
                    unavailable.issue,
                )
            raise unavailable
        if status >= 400:
            error = PayPalError(status, body, operation)
            raise _TYPED.get(error.issue, PayPalError)(status, body, operation)
        return body

    def _token_for(self, operation: str) -> str:
        """A token for a call: failing to get one is PayPal unavailable to that call (our
        credentials or PayPal's token service), never a refusal of what the call asks."""
        try:
            return self.access_token()
        except PayPalError as exc:
            log.error("PayPal gave no access token for %s: %s", operation, exc)
            raise PayPalUnavailable(
                f"PayPal {operation}: no access token ({exc.status} {exc.name})",
                retry_after=RETRY_AFTER_SECONDS.get(401, DEFAULT_RETRY_AFTER_SECONDS),
                paypal_status=exc.status,
                body=exc.body,
            ) from None

    # -- Orders v2 ------------------------------------------------------------------------

    def create_order(
        self,
        money: Money,
        *,
        request_id: str,
        reference_id: str | None = None,
        custom_id: str | None = None,
        description: str | None = None,
        return_url: str | None = None,
        cancel_url: str | None = None,
        immediate_payment: bool = False,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """`immediate_payment` refuses funding that clears days later (an eCheck): for what
        is held only minutes, such as an appointment's slot."""
        unit: dict[str, Any] = {"amount": amount(money)}
        for key, value in (
            ("reference_id", reference_id),
            ("custom_id", custom_id),
            ("description", description),
        ):
            if value:
                unit[key] = value
        body: dict[str, Any] = {"intent": "CAPTURE", "purchase_units": [unit]}
        context = {
            "return_url": return_url,
            "cancel_url": cancel_url,
            "payment_method_preference": "IMMEDIATE_PAYMENT_REQUIRED"
            if immediate_payment
            else None,
        }
        if any(context.values()):
            body["payment_source"] = {
                "paypal": {"experience_context": {k: v for k, v in context.items() if v}}
            }
        return self._call(
            "create order",
            "POST",
            "/v2/checkout/orders",
            json=body,
            request_id=request_id,
            headers={"Prefer": "return=representation", **(headers or {})},
        )

    def get_order(self, order_id: str) -> dict[str, Any]:
        return self._call("get order", "GET", f"/v2/checkout/orders/{_segment(order_id)}")

    def capture_order(
        self, order_id: str, *, request_id: str, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return self._call(
            "capture order",
            "POST",
            f"/v2/checkout/orders/{_segment(order_id)}/capture",
            request_id=request_id,
            headers={"Prefer": "return=representation", **(headers or {})},
        )

    # -- Payments v2 ----------------------------------------------------------------------

    def get_capture(self, capture_id: str) -> dict[str, Any]:
        return self._call("get capture", "GET", f"/v2/payments/captures/{_segment(capture_id)}")

    def refund_capture(
        self,
        capture_id: str,
        *,
        request_id: str,
        money: Money | None = None,
        note_to_payer: str | None = None,
        custom_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Refund `money` of a capture, or all that remains of it when `money` is None.
        `custom_id` comes back in the refund's webhook, so the event finds our refund."""
        body: dict[str, Any] = {}
        if money is not None:
            body["amount"] = amount(money)
        if custom_id:
            body["custom_id"] = custom_id[:127]
        if note_to_payer:
            body["note_to_payer"] = note_to_payer[:255]
        return self._call(
            "refund capture",
            "POST",
            f"/v2/payments/captures/{_segment(capture_id)}/refund",
            json=body or None,
            request_id=request_id,
            headers={"Prefer": "return=representation", **(headers or {})},
        )

    def get_refund(self, refund_id: str) -> dict[str, Any]:
        """A refund as PayPal has it now (a PENDING one: COMPLETED, FAILED or still PENDING)."""
        return self._call("get refund", "GET", f"/v2/payments/refunds/{_segment(refund_id)}")

    # -- webhooks -------------------------------------------------------------------------

    def verify_webhook(
        self, headers: dict[str, str], event: dict[str, Any], *, webhook_id: str | None = None
    ) -> bool:
        """Ask PayPal whether this webhook delivery is genuine (and meant for our webhook:
        `webhook_id`, else the client's own)."""
        webhook_id = self.webhook_id if webhook_id is None else webhook_id
        lowered = {k.lower(): v for k, v in headers.items()}
        wanted = {
            "auth_algo": "paypal-auth-algo",
            "cert_url": "paypal-cert-url",
            "transmission_id": "paypal-transmission-id",
            "transmission_sig": "paypal-transmission-sig",
            "transmission_time": "paypal-transmission-time",
        }
        if not webhook_id or any(not lowered.get(h) for h in wanted.values()):
            return False
        body: dict[str, Any] = {key: lowered[h] for key, h in wanted.items()}
        body["webhook_id"] = webhook_id
        body["webhook_event"] = event
        answer = self._call(
            "verify webhook",
            "POST",
            "/v1/notifications/verify-webhook-signature",
            json=body,
        )
        return answer.get("verification_status") == "SUCCESS"

    # -- Payouts v1 (issue 15) ------------------------------------------------------------
    # Payouts' money is `{currency, value}` (`payout_amount`), not Orders' `currency_code`.

    def create_payout(
        self,
        *,
        sender_batch_id: str,
        items: list[dict[str, Any]],
        request_id: str,
        email_subject: str | None = None,
    ) -> dict[str, Any]:
        """Send a batch. PayPal pays a `sender_batch_id` once in 30 days: a second batch with
        it is refused (`DuplicateBatch`, naming the first), whatever its PayPal-Request-Id."""
        header: dict[str, Any] = {"sender_batch_id": sender_batch_id}
        if email_subject:
            header["email_subject"] = email_subject[:255]
        try:
            return self._call(
                "create payout",
                "POST",
                "/v1/payments/payouts",
                json={"sender_batch_header": header, "items": items},
                request_id=request_id,
            )
        except PayPalError as exc:
            if not _is_duplicate_batch(exc):
                raise
            batch_id = _linked_batch_id(exc)
            raise DuplicateBatch(exc.status, exc.body, "create payout", batch_id) from None

    def get_payout_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("get payout", "GET", f"/v1/payments/payouts/{_segment(batch_id)}")

    def get_payout_item(self, item_id: str) -> dict[str, Any]:
        return self._call(
            "get payout item", "GET", f"/v1/payments/payouts-item/{_segment(item_id)}"
        )

    def cancel_payout_item(self, item_id: str) -> dict[str, Any]:
        """Cancel an UNCLAIMED item: its money returns to our balance (status RETURNED)."""
        return self._call(
            "cancel payout item",
            "POST",
            f"/v1/payments/payouts-item/{_segment(item_id)}/cancel",
        )


class DuplicateBatch(PayPalError):
    """PayPal has a batch with this `sender_batch_id` already (an earlier attempt whose answer
    was lost made it): `batch_id` is that batch, from the error's HATEOAS link (None if the
    error carried none)."""

    def __init__(
        self, status: int, body: dict[str, Any], operation: str, batch_id: str | None
    ) -> None:
        super().__init__(status, body, operation)
        self.batch_id = batch_id


def payout_amount(money: Money) -> dict[str, str]:
    """Payouts' money shape (`currency`, not Orders' `currency_code`): never a float."""
    return {"currency": money.currency, "value": money.value}


def _is_duplicate_batch(exc: PayPalError) -> bool:
    """A refusal of a `sender_batch_id` used before (a detail names that field)."""
    details = exc.body.get("details") or []
    return exc.status < 500 and any(
        isinstance(d, dict) and str(d.get("field", "")).upper() == "SENDER_BATCH_ID"
        for d in details
    )


def _linked_batch_id(exc: PayPalError) -> str | None:
    """The batch a refusal links to (`.../v1/payments/payouts/{id}`), if it links one."""
    for link in exc.body.get("links") or []:
        href = str(link.get("href", "")) if isinstance(link, dict) else ""
        if "/v1/payments/payouts/" in href:
            found = href.rsplit("/v1/payments/payouts/", 1)[1].split("?")[0].split("/")[0]
            return found or None
    return None


def _retry_after(response: requests.Response | None) -> int:
    """How long a caller should wait: PayPal's Retry-After (seconds) when it sent one, else
    what its status suggests; within 1 and MAX_RETRY_AFTER_SECONDS."""
    if response is None:
        return DEFAULT_RETRY_AFTER_SECONDS
    raw = (response.headers.get("Retry-After") or "").strip()
    seconds = int(raw) if raw.isdigit() else None
    if seconds is None:
        seconds = RETRY_AFTER_SECONDS.get(response.status_code, DEFAULT_RETRY_AFTER_SECONDS)
    return max(1, min(seconds, MAX_RETRY_AFTER_SECONDS))


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"name": "UNPARSEABLE_RESPONSE", "message": response.text[:200]}
    return body if isinstance(body, dict) else {"value": body}


@functools.cache
def get() -> PayPal:
    """The process's client, from settings (one token cache per instance)."""
    s = settings.get()
    return PayPal(
        s.paypal_api_base,
        s.paypal_client_id,
        s.paypal_client_secret,
        webhook_id=s.paypal_webhook_id,
        timeout=s.paypal_timeout_seconds,
        attempts=s.paypal_attempts,
    )
