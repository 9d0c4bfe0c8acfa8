"""Settings read once from the environment, with production-safe defaults."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

GOOGLE_ID_TOKEN_CERTS = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
GOOGLE_OIDC_CERTS = "https://www.googleapis.com/oauth2/v1/certs"

PAYPAL_SANDBOX = "https://api-m.sandbox.paypal.com"

MIN_SESSION_SECONDS = 5 * 60  # a session's lifetime bounds (Firebase's, for its session cookies)
MAX_SESSION_SECONDS = 14 * 24 * 3600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    project_id: str
    firestore_emulator_host: str | None
    auth_emulator_host: str | None
    allowed_origins: frozenset[str]
    session_seconds: int
    recent_sign_in_seconds: int
    max_body_bytes: int
    id_token_certs_url: str
    appointment_hold_minutes: int
    patient_cutoff_minutes: int
    # How long a clinic has to answer a booking request before the sweep declines it.
    booking_answer_seconds: int
    paypal_api_base: str = PAYPAL_SANDBOX
    paypal_client_id: str = ""
    paypal_client_secret: str = ""
    paypal_webhook_id: str = ""
    paypal_timeout_seconds: float = 15.0
    paypal_attempts: int = 3
    # The front end's origin, where PayPal sends the buyer back after approving or cancelling
    # (`/?paypal=return|cancel&order=<id>`); empty: orders carry no return URL.
    frontend_url: str = ""
    # The platform's commission on every payment, in basis points (1000 = 10 %).
    platform_fee_bps: int = 1000
    # A patient cancelling at least this long before the start gets a full refund.
    full_refund_notice_hours: int = 24
    # How many clinic bookings a patient may have open (waiting for the clinic, or accepted
    # and still to come) at once; a request beyond it is refused (409 too_many_open_requests).
    max_open_booking_requests_per_patient: int = 5
    # A session nobody used for this long has ended, whatever its absolute lifetime left.
    session_idle_seconds: int = 30 * 60
    # A session's last use is written at most once per this interval, not on every request.
    session_touch_seconds: int = 60
    # Service identities: an OIDC token for `{functions_base_url}/{function}` from one of these
    # service accounts is that service calling (empty: no service is let in).
    functions_base_url: str = ""
    scheduler_service_account: str = ""
    tasks_service_account: str = ""
    service_token_certs_url: str = GOOGLE_OIDC_CERTS
    # -- notify (issue 16): e-mail, SMS and push delivery of the outbox --------------------
    # The SMTP relay (empty host: e-mail waits, retried, until one is configured).
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password: str = ""
    mail_from: str = "Alo Doktor <no-reply@alodoktor.com>"
    # Twilio's Messages API (the local stack points it at its simulator).
    twilio_api_base: str = "https://api.twilio.com"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from: str = ""
    # FCM HTTP v1 (empty: Google's; the local stack points it at its simulator).
    fcm_api_base: str = ""
    # The notifications function as the outside world reaches it: Twilio's status callbacks
    # and the unsubscribe links in e-mails point here.
    notifications_url: str = ""
    # Signs unsubscribe links (empty: e-mails carry none and every link is refused).
    notify_signing_key: str = ""
    # How long a claimed notice is held before another worker may take it over.
    notify_lease_seconds: int = 120
    # Per-call timeout of SMTP, Twilio and FCM.
    notify_timeout_seconds: float = 10.0
    # How long before an appointment its reminder goes out.
    reminder_lead_minutes: int = 24 * 60
    # -- payouts (issue 15): providers paid through PayPal Payouts by Cloud Tasks jobs ------
    # Earnings are paid out once what they paid for was delivered at least this long ago (and
    # never sooner than a day after the full-refund notice: see shared/payouts/rules.py).
    payout_hold_days: int = 14
    # The least paid out at once, per currency, in minor units; a currency not listed: one
    # major unit. Less than that waits for the next run.
    payout_minimums: tuple[tuple[str, int], ...] = (("EUR", 1000), ("JPY", 1000), ("USD", 1000))
    # A new or changed payout address holds payouts this long (account takeover defence).
    payout_address_cooling_off_hours: int = 72
    # An item nobody claimed is cancelled (the money returns to the provider) after this long.
    payout_unclaimed_cancel_days: int = 20
    # The PayPal webhook (its own registration) that PAYMENT.PAYOUTS* events come through.
    paypal_payouts_webhook_id: str = ""
    # The Cloud Tasks queue the payout worker's tasks go on, and where it is.
    payouts_queue: str = "payouts"
    cloud_tasks_location: str = "us-central1"
    # Locally: the Cloud Tasks emulator's REST address (never set in production).
    cloud_tasks_emulator_host: str | None = None
    # -- audit (issue 17): keys, sealing and export of the audit log ---------------------
    # HMAC keys of health values and entries, and the checkpoints' Ed25519 signing keys:
    # comma-separated secrets, the current one first (Secret Manager in production).
    audit_hash_key: str = ""
    audit_signing_key: str = ""
    # A seal takes entries written at least this long before its read (a write still in
    # flight then cannot land inside a sealed range).
    audit_seal_lag_seconds: int = 60
    # Where sealed ranges are exported: gs://bucket/prefix, or a local directory (empty: none).
    audit_export_url: str = ""
    # -- personal data (issue 27): consent, export, erasure and what is kept ------------------
    # Requests need the current privacy notice (and a patient's health-data consent) accepted.
    # CONSENT_REQUIRED=true/false; unset: on, except against the emulators (the local stack,
    # whose tests and reference app predate consent: tests/test_privacy.py runs a gateway with
    # it on). A deployed function never runs against the emulators.
    consent_required: bool = True
    # A closed account is erased this long after the request (it may be taken back until then).
    erasure_cooling_off_days: int = 14
    # What the law keeps after an erasure, counted from the record's last date
    # (docs/guides/personal-data.md gives the sources): medical records (visits,
    # prescriptions), the books (orders, refunds, ledger, payouts, PayPal's events), and the
    # audit log.
    medical_retention_days: int = 20 * 365
    financial_retention_days: int = 10 * 365
    audit_retention_days: int = 6 * 365
    # A request to export or erase is answered within this many days (GDPR Art. 12(3): one
    # month; KVKK Art. 13(2): thirty days).
    privacy_request_deadline_days: int = 30
    # The Cloud Tasks queue an export's build goes on (one task a part).
    privacy_queue: str = "privacy"
    # A built export can be downloaded this many days; then its parts are deleted (TTL).
    export_download_days: int = 7

    @property
    def auth_emulated(self) -> bool:
        return bool(self.auth_emulator_host)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _session_seconds() -> int:
    seconds = _int("SESSION_COOKIE_SECONDS", 5 * 24 * 3600)
    clamped = min(max(seconds, MIN_SESSION_SECONDS), MAX_SESSION_SECONDS)
    if clamped != seconds:
        # A misconfigured lifetime must not take sign-in down; Firebase refuses out-of-range
        # values, so hold it to the nearest bound and say so.
        log.warning("SESSION_COOKIE_SECONDS=%s is out of range; using %s", seconds, clamped)
    return clamped


def _session_activity() -> tuple[int, int]:
    """(idle timeout, touch interval) in seconds."""
    idle = max(_int("SESSION_IDLE_SECONDS", 30 * 60), 60)
    # A touch interval near the idle timeout would end sessions in active use.
    touch = min(max(_int("SESSION_TOUCH_SECONDS", 60), 1), idle // 2)
    return idle, touch


def _frontend_url(origins: frozenset[str]) -> str:
    """FRONTEND_URL, or the one allowed origin when there is exactly one (else none)."""
    given = os.environ.get("FRONTEND_URL", "").strip().rstrip("/")
    if given:
        return given
    return next(iter(origins)) if len(origins) == 1 else ""


def load() -> Settings:
    project_id = (
        os.environ.get("GOOGLE_CLOUD_PROJECT")
        or os.environ.get("GCLOUD_PROJECT")
        or os.environ.get("GCP_PROJECT")
        or ""
    )
    if not project_id:
        raise RuntimeError("GOOGLE_CLOUD_PROJECT is not set")
    origins = frozenset(
        o.strip().rstrip("/") for o in os.environ.get("ALLOWED_ORIGINS", "").split(",") if o.strip()
    )
    return Settings(
        project_id=project_id,
        firestore_emulator_host=os.environ.get("FIRESTORE_EMULATOR_HOST") or None,
        auth_emulator_host=os.environ.get("FIREBASE_AUTH_EMULATOR_HOST") or None,
        allowed_origins=origins,
        session_seconds=_session_seconds(),
        recent_sign_in_seconds=_int("RECENT_SIGN_IN_SECONDS", 300),
        max_body_bytes=_int("MAX_BODY_BYTES", 64 * 1024),
        id_token_certs_url=os.environ.get("ID_TOKEN_CERTS_URL") or GOOGLE_ID_TOKEN_CERTS,
        appointment_hold_minutes=_int("APPOINTMENT_HOLD_MINUTES", 15),
        patient_cutoff_minutes=_int("PATIENT_CUTOFF_MINUTES", 120),
        booking_answer_seconds=max(_int("BOOKING_ANSWER_SECONDS", 24 * 3600), 60),
        # PayPal's sandbox unless told otherwise: a live base must be chosen on purpose.
        paypal_api_base=(os.environ.get("PAYPAL_API_BASE") or PAYPAL_SANDBOX).rstrip("/"),
        paypal_client_id=os.environ.get("PAYPAL_CLIENT_ID", ""),
        paypal_client_secret=os.environ.get("PAYPAL_CLIENT_SECRET", ""),
        paypal_webhook_id=os.environ.get("PAYPAL_WEBHOOK_ID", ""),
        paypal_timeout_seconds=float(_int("PAYPAL_TIMEOUT_SECONDS", 15)),
        paypal_attempts=max(1, _int("PAYPAL_ATTEMPTS", 3)),
        frontend_url=_frontend_url(origins),
        platform_fee_bps=min(max(_int("PLATFORM_FEE_BPS", 1000), 0), 10_000),
        full_refund_notice_hours=max(_int("FULL_REFUND_NOTICE_HOURS", 24), 0),
        # At least 1: a cap of 0 would shut clinic bookings for every patient.
        max_open_booking_requests_per_patient=max(
            _int("MAX_OPEN_BOOKING_REQUESTS_PER_PATIENT", 5), 1
        ),
        session_idle_seconds=_session_activity()[0],
        session_touch_seconds=_session_activity()[1],
        functions_base_url=os.environ.get("FUNCTIONS_BASE_URL", "").strip().rstrip("/"),
        scheduler_service_account=os.environ.get("SCHEDULER_SERVICE_ACCOUNT", "").strip(),
        tasks_service_account=os.environ.get("TASKS_SERVICE_ACCOUNT", "").strip(),
        service_token_certs_url=os.environ.get("SERVICE_TOKEN_CERTS_URL") or GOOGLE_OIDC_CERTS,
        # -- notify (issue 16) --
        smtp_host=os.environ.get("SMTP_HOST", "").strip(),
        smtp_port=_int("SMTP_PORT", 587),
        smtp_starttls=os.environ.get("SMTP_STARTTLS", "true").strip().lower()
        not in ("0", "false", "no"),
        smtp_username=os.environ.get("SMTP_USERNAME", ""),
        smtp_password=os.environ.get("SMTP_PASSWORD", ""),
        mail_from=os.environ.get("MAIL_FROM") or "Alo Doktor <no-reply@alodoktor.com>",
        twilio_api_base=(os.environ.get("TWILIO_API_BASE") or "https://api.twilio.com").rstrip("/"),
        twilio_account_sid=os.environ.get("TWILIO_ACCOUNT_SID", "").strip(),
        twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN", "").strip(),
        twilio_from=os.environ.get("TWILIO_FROM", "").strip(),
        fcm_api_base=os.environ.get("FCM_API_BASE", "").strip().rstrip("/"),
        notifications_url=os.environ.get("NOTIFICATIONS_URL", "").strip().rstrip("/"),
        notify_signing_key=os.environ.get("NOTIFY_SIGNING_KEY", ""),
        notify_lease_seconds=max(_int("NOTIFY_LEASE_SECONDS", 120), 10),
        notify_timeout_seconds=float(max(_int("NOTIFY_TIMEOUT_SECONDS", 10), 1)),
        reminder_lead_minutes=max(_int("REMINDER_LEAD_MINUTES", 24 * 60), 0),
        # -- payouts (issue 15) --
        payout_hold_days=max(_int("PAYOUT_HOLD_DAYS", 14), 0),
        payout_minimums=_payout_minimums(),
        payout_address_cooling_off_hours=max(_int("PAYOUT_ADDRESS_COOLING_OFF_HOURS", 72), 0),
        payout_unclaimed_cancel_days=min(max(_int("PAYOUT_UNCLAIMED_CANCEL_DAYS", 20), 1), 29),
        paypal_payouts_webhook_id=os.environ.get("PAYPAL_PAYOUTS_WEBHOOK_ID", "").strip(),
        payouts_queue=os.environ.get("PAYOUTS_QUEUE", "").strip() or "payouts",
        cloud_tasks_location=os.environ.get("CLOUD_TASKS_LOCATION", "").strip() or "us-central1",
        cloud_tasks_emulator_host=os.environ.get("CLOUD_TASKS_EMULATOR_HOST", "").strip() or None,
        # -- audit (issue 17) --
        audit_hash_key=os.environ.get("AUDIT_HASH_KEY", ""),
        audit_signing_key=os.environ.get("AUDIT_SIGNING_KEY", ""),
        audit_seal_lag_seconds=max(_int("AUDIT_SEAL_LAG_SECONDS", 60), 1),
        audit_export_url=os.environ.get("AUDIT_EXPORT_URL", "").strip(),
        # -- personal data (issue 27) --
        consent_required=_consent_required(),
        erasure_cooling_off_days=max(_int("ERASURE_COOLING_OFF_DAYS", 14), 0),
        medical_retention_days=max(_int("MEDICAL_RETENTION_DAYS", 20 * 365), 0),
        financial_retention_days=max(_int("FINANCIAL_RETENTION_DAYS", 10 * 365), 0),
        audit_retention_days=max(_int("AUDIT_RETENTION_DAYS", 6 * 365), 0),
        privacy_request_deadline_days=min(max(_int("PRIVACY_REQUEST_DEADLINE_DAYS", 30), 1), 30),
        privacy_queue=os.environ.get("PRIVACY_QUEUE", "").strip() or "privacy",
        export_download_days=min(max(_int("EXPORT_DOWNLOAD_DAYS", 7), 1), 30),
    )


def _consent_required() -> bool:
    raw = os.environ.get("CONSENT_REQUIRED", "").strip().lower()
    if raw:
        return raw not in ("0", "false", "no", "off")
    return not os.environ.get("FIRESTORE_EMULATOR_HOST")


DEFAULT_PAYOUT_MINIMUMS = "USD:10.00,EUR:10.00,JPY:1000"


def _payout_minimums() -> tuple[tuple[str, int], ...]:
    """PAYOUT_MINIMUMS, e.g. `USD:10.00,JPY:1000`: each currency's least payout, in PayPal's
    decimal form (so a zero-decimal currency is written without decimals)."""
    from shared.platform.money import Money, MoneyError

    raw = os.environ.get("PAYOUT_MINIMUMS", "").strip() or DEFAULT_PAYOUT_MINIMUMS
    found: dict[str, int] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        currency, _, value = part.partition(":")
        try:
            found[currency.strip()] = Money.parse(currency.strip(), value.strip()).amount_minor
        except MoneyError as exc:
            raise ValueError(f"PAYOUT_MINIMUMS: {part!r}: {exc}") from None
    return tuple(sorted(found.items()))


@functools.cache
def get() -> Settings:
    return load()
