"""Figures the hand-written pages state (how many requests an instance serves, how long backups
are kept, when an alert fires, how often a notice or a call is retried, how long a blocked
erasure waits), each held to its one home in the code or Terraform: the test renders the
sentence from that value and the page must say it, so a changed value fails here until the page
is reworded (or the page points at the file instead of repeating the figure).

Terraform is read as tests/test_terraform.py reads it (python-hcl2, its helpers); settings as
tools/docs_reference.py reads their defaults (`settings.load()` of an empty environment).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.test_terraform import Config, _config, _defaults
from tools import docs_reference, schedules

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DEPLOY = DOCS / "guides" / "deploy.md"
NOTIFY = DOCS / "guides" / "notify.md"
FRONT_END = DOCS / "guides" / "front-end.md"
PERSONAL_DATA = DOCS / "guides" / "personal-data.md"
PAYMENTS = DOCS / "guides" / "payments.md"
ALERT_FIRED = DOCS / "runbooks" / "alert-fired.md"
ROLL_BACK = DOCS / "runbooks" / "roll-back.md"
WEB_CLIENT = ROOT / "clients" / "web" / "src" / "index.ts"

ALERT_PREFIX = "Alo Doktor: "

_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_SHORT = {"h": 3600, "min": 60, "s": 1}
_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 10: "ten"}


def _span(seconds: float, unit: str) -> str:
    """A duration as the pages write it in `unit`: "a day", "an hour", "14 weeks"."""
    count = seconds / _SECONDS[unit]
    assert count == int(count), (
        f"{seconds:g} s is not a whole number of {unit}s: reword the page that says it in {unit}s"
    )
    if count == 1:
        return ("an " if unit == "hour" else "a ") + unit
    return f"{int(count)} {unit}s"


def _short(seconds: float) -> str:
    """A duration in the short units of a parenthesis: "30 s", "6 h", "0.3 s"."""
    for unit, size in _SHORT.items():
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _prose(page: Path) -> str:
    """The page with its line breaks and indents as single spaces, so a sentence is found
    however it is wrapped."""
    return re.sub(r"\s+", " ", page.read_text())


def _says(page: Path, *phrases: str) -> None:
    text = _prose(page)
    missing = [phrase for phrase in phrases if phrase not in text]
    assert not missing, (
        f"{page.relative_to(ROOT)} does not say {missing}, what the code or Terraform makes of "
        "it now: reword the page (or name the file that holds the figure instead)"
    )


def _condition(body: dict[str, Any]) -> dict[str, Any]:
    condition: dict[str, Any] = body["conditions"][0]["condition_threshold"][0]
    return condition


def _documentation(body: dict[str, Any]) -> str:
    content: str = body["documentation"][0]["content"]
    return content


def _settings_defaults() -> Any:
    """What `settings.load()` makes of an empty environment, as the settings reference shows."""
    from shared.platform import settings

    with docs_reference._environment({"GOOGLE_CLOUD_PROJECT": "<project>"}):
        return settings.load()


# --- Cloud Run sizing and Firestore backups (terraform/functions.tf, firestore.tf) ------------


def test_the_deploy_guide_states_the_functions_concurrency_from_the_table() -> None:
    defaults = _defaults(_config())
    concurrency, cpu = defaults["concurrency"], defaults["cpu"]
    assert concurrency.trigger == cpu.trigger == "http"
    events = concurrency.otherwise
    _says(
        DEPLOY,
        f"HTTP functions serve {concurrency.then} requests at once on {cpu.then} vCPU; "
        f"event functions {'one event' if events == 1 else f'{events} events'} at a time",
    )


def _backups(tf: Config) -> dict[str, tuple[str, float]]:
    """Each backup schedule -> (how often, as the pages say it: "a day"), its retention in s."""
    found: dict[str, tuple[str, float]] = {}
    for name, body in tf.of_type("google_firestore_backup_schedule").items():
        (recurrence,) = [k for k in body if k.endswith("_recurrence")]
        every = {"daily_recurrence": "a day", "weekly_recurrence": "a week"}[recurrence]
        found[name] = (every, schedules.seconds(body["retention"]))
    return found


def test_the_pages_state_the_backup_retentions_terraform_sets() -> None:
    backups = _backups(_config())
    assert set(backups) == {"daily", "weekly"}
    (daily_every, daily), (weekly_every, weekly) = backups["daily"], backups["weekly"]
    _says(
        DEPLOY,
        f"one backup {daily_every} kept {_span(daily, 'day')}, "
        f"one {weekly_every} kept {_span(weekly, 'week')}",
    )
    _says(
        ROLL_BACK,
        "`terraform/firestore.tf`: "
        f"daily ones kept {_span(daily, 'day')}, weekly ones kept {_span(weekly, 'week')}",
    )


def test_the_deploy_guide_states_the_settings_defaults_of_variables_tf() -> None:
    variables = _config().variables
    days = variables["audit_retention_days"]
    retention = days["default"]
    # "less is refused": the validation's floor is the default.
    assert f"var.audit_retention_days >= {retention}" in days["validation"][0]["condition"]
    years = retention / 365.25
    assert abs(years - round(years)) < 0.01, f"{retention} days is no whole number of years"
    assert round(years) in _WORDS, retention
    _says(
        DEPLOY,
        f"`audit_retention_days` (default {retention}, {_WORDS[round(years)]} years; "
        "less is refused)",
        f"(`firestore_location`, default `{variables['firestore_location']['default']}`)",
    )


# --- alerts (terraform/monitoring.tf) -----------------------------------------------------------


def _alert_names(tf: Config) -> set[str]:
    """Every alert's name as its e-mail shows it (the display name without the prefix), with
    `<function>` for the function a per-function policy names."""
    names: set[str] = set()
    for resource, body in tf.of_type("google_monitoring_alert_policy").items():
        shown = body["display_name"]
        assert shown.startswith(ALERT_PREFIX), resource
        shown = shown.removeprefix(ALERT_PREFIX)
        each = body.get("for_each")
        if each == "${local.fn}":
            names.add(shown.replace("${each.key}", "<function>"))
        elif each is not None:
            table = re.fullmatch(r"\$\{local\.(\w+)\}", each)
            assert table, (resource, each)
            assert shown == '${replace(each.key, "_", " ")}', resource
            names |= {key.replace("_", " ") for key in tf.locals[table.group(1)]}
        else:
            names.add(shown)
    return names


def _runbook_sections() -> dict[str, str]:
    """The alert-fired runbook's sections: each alert its heading names -> the section."""
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", ALERT_FIRED.read_text(), flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        for name in re.findall(r"`([^`]+)`", heading):
            sections[name] = body
    return sections


def test_the_runbook_has_a_section_for_every_alert_and_none_other() -> None:
    names = _alert_names(_config())
    headed = set(_runbook_sections())
    assert not names - headed, f"alerts without a section in alert-fired.md: {names - headed}"
    assert not headed - names, f"alert-fired.md's sections for no alert: {headed - names}"
    _says(ALERT_FIRED, f"(`{ALERT_PREFIX}<name>`)")


def test_alert_figures_in_pages_and_alert_texts_are_the_conditions() -> None:
    """The 5xx share and its window, the failing deliveries and their window, the age of a stuck
    event: said in the runbook, the deploy guide's table, and the alert's own name and text."""
    tf = _config()
    errors = tf.resource("google_monitoring_alert_policy", "http_5xx")
    condition = _condition(errors)
    share = f"{condition['threshold_value'] * 100:g}"
    window = _span(schedules.seconds(condition["duration"]), "minute")
    assert errors["display_name"].endswith(f" 5xx above {share}%")
    assert condition["aggregations"][0]["alignment_period"] == condition["duration"]
    assert _documentation(errors).startswith(
        f"More than {share}% of ${{each.key}}'s answers were 5xx for {window}."
    )

    deliveries = tf.resource("google_monitoring_alert_policy", "delivery_alert")
    period = _span(
        schedules.seconds(_condition(deliveries)["aggregations"][0]["alignment_period"]), "minute"
    )
    failing = tf.locals["delivery_alerts"]["task_attempts_failing"]
    assert failing["doc"].startswith(
        f"More than {failing['threshold']} Cloud Tasks deliveries failed in {period} "
    )

    backlog = tf.resource("google_monitoring_alert_policy", "event_backlog")
    age = _span(_condition(backlog)["threshold_value"], "minute")
    assert (
        backlog["conditions"][0]["display_name"] == f"oldest unacknowledged event older than {age}"
    )
    assert f"holds an event older than {age}:" in _documentation(backlog)

    _says(
        ALERT_FIRED,
        f"more than {share} % of the function's answers were 5xx for {window}",
        f"more than {failing['threshold']} deliveries of a queue failed within {period}",
        f"holds a Firestore event older than {age}",
    )
    _says(
        DEPLOY,
        f"5xx above {share} % of a function's answers for {window}",
        f"a queue failing more than {failing['threshold']} deliveries in {period}",
        f"an Eventarc event unacknowledged for {age}",
    )


def test_a_stuck_refund_is_said_to_wait_as_long_as_the_code_waits() -> None:
    from shared.payments import refund_sending

    waited = f"waited {_span(refund_sending.STUCK_AFTER.total_seconds(), 'day')} or more for PayPal"
    doc = _config().locals["log_alerts"]["refund_stuck"]["doc"]
    assert waited in doc, f"terraform/monitoring.tf's refund_stuck doc should say {waited!r}"
    _says(ALERT_FIRED, waited)


_NOT_A_QUEUE = {"a", "the", "each", "every", "its", "one", "that", "this", "any", "tasks"}


def test_queues_named_in_alert_texts_and_the_runbook_are_terraforms_queues() -> None:
    tf = _config()
    queues = set(tf.locals["queues"])
    texts = {name: a["doc"] for name, a in tf.locals["log_alerts"].items()}
    texts |= {name: a["doc"] for name, a in tf.locals["delivery_alerts"].items()}
    for name, text in texts.items():
        named = {
            w for w in re.findall(r"\b([\w-]+) queue\b", text) if w.lower() not in _NOT_A_QUEUE
        }
        assert named <= queues, f"monitoring.tf's {name} doc names queues {named - queues}"
    # A dropped task: what it leaves undone, said for each queue.
    dropped = tf.locals["delivery_alerts"]["task_failed_for_good"]["doc"]
    for queue in queues:
        assert f"{queue} queue:" in dropped, f"task_failed_for_good's doc says nothing of {queue}"

    sections = _runbook_sections()
    task = sections["task failed for good"]
    assert set(re.findall(r"`([\w-]+)`", task.split("The worker's logs say why", 1)[1])) >= queues
    runbook = ALERT_FIRED.read_text()
    named = set(re.findall(r"`([\w-]+)` queue\b", runbook))
    named |= set(re.findall(r"gcloud tasks queues describe ([\w-]+)", runbook))
    assert named <= queues, f"alert-fired.md names queues {named - queues}"


# --- notices (shared/notify), erasure (shared/privacy), payments -------------------------------


def test_the_notify_guide_states_the_retry_and_sweep_figures_of_the_code() -> None:
    from shared.notify import rules, service
    from shared.platform import eventlog

    _says(
        NOTIFY,
        f"({_short(rules.BASE_RETRY_SECONDS)} doubling to {_short(rules.MAX_RETRY_SECONDS)}, "
        f"drawn from the upper half; {rules.MAX_ATTEMPTS} attempts)",
        f"(`analytics/<day>/shards/<n>`, {eventlog.SHARD_COUNT} shards:",
        f"one `in` query per {service.IN_QUERY_VALUES})",
        f"in BatchWrite requests ({service.FIRST_CLAIMS}, then {service.CLAIM_BATCH} a request)",
        f"Texts and pushes are sent from {service.SWEEP_WORKERS} threads.",
        f"up to {service.RECORD_BATCH} notices a BatchWrite and none waiting more than "
        f"{_short(service.RECORD_WAIT)} for",
    )


def test_a_blocked_erasure_is_said_to_wait_as_long_as_the_code_waits() -> None:
    from shared.privacy import erasure

    later = _span(erasure.RECHECK_BLOCKED.total_seconds(), "hour")
    _says(PERSONAL_DATA, f"its `eraseAfter` moves {later} on")


def test_the_payments_guide_states_the_code_figures() -> None:
    from shared.payouts import reconciling, scheduling

    attempts = _settings_defaults().paypal_attempts
    _says(
        PAYMENTS,
        f"(after {attempts} tries with one `PayPal-Request-Id`)",
        f"and paid ones for {reconciling.WATCH_DAYS} days",
        f"The run records {scheduling.CONCURRENCY} providers at once.",
    )


# --- the web client (clients/web) ---------------------------------------------------------------


def _web_client_defaults() -> dict[str, int]:
    """createBackend's defaults, `options.<name> ?? <value>`, read from the TypeScript."""
    found = {
        n: int(v) for n, v in re.findall(r"options\.(\w+) \?\? (\d+)\b", WEB_CLIENT.read_text())
    }
    assert {"retries", "retryDelayMs", "maxRetryWaitMs"} <= set(found), found
    return found


def test_the_web_clients_retry_defaults_are_what_its_comments_and_guide_say() -> None:
    defaults = _web_client_defaults()
    source = re.sub(r"\s*\n\s*\*?\s*", " ", WEB_CLIENT.read_text())
    for option in ("retries", "retryDelayMs", "maxRetryWaitMs"):
        # Each option's comment ends its first clause with the default: `... (2). */ retries?`
        comment = re.search(rf"/\*\*((?:(?!\*/).)*)\*/ {option}\?:", source)
        assert comment, option
        assert f"({defaults[option]})" in comment.group(1), (
            f"clients/web/src/index.ts: {option}'s comment should say ({defaults[option]})"
        )
    # retrying() has a default of its own for the longest wait: the same.
    own = re.search(r"export function retrying\([^{]*?maxWaitMs = (\d+)", source)
    assert own, "clients/web/src/index.ts: retrying() has no maxWaitMs default"
    assert int(own.group(1)) == defaults["maxRetryWaitMs"], (
        "clients/web/src/index.ts: retrying()'s maxWaitMs default is not createBackend's "
        "maxRetryWaitMs default"
    )
    _says(
        FRONT_END,
        f"is tried again, {_times(defaults['retries'])} by default: `retries`",
        f"longer than `maxRetryWaitMs`, {_short(defaults['maxRetryWaitMs'] / 1000)}, is",
    )
