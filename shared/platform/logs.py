"""JSON log lines in Cloud Logging's structured format.

Cloud Functions and Cloud Run ingest one JSON object per stdout line and lift `severity`,
`message`, `httpRequest` and the `logging.googleapis.com/*` keys into the log entry, so no
client library (and none of its import cost on a cold start) is needed to log well.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from shared.platform import context

ERROR_EVENT_TYPE = (
    "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"
)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        ctx = context.current()
        if ctx is not None:
            entry["requestId"] = ctx.request_id
            entry["function"] = ctx.function
            if ctx.trace:
                entry["logging.googleapis.com/trace"] = ctx.trace
            if ctx.span_id:
                entry["logging.googleapis.com/spanId"] = ctx.span_id
            if ctx.principal:
                entry["uid"] = ctx.principal.uid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            # Error Reporting groups entries that carry a stack trace in `message` and this type.
            stack = "".join(traceback.format_exception(*record.exc_info))
            entry["message"] = f"{entry['message']}\n{stack}"
            entry["@type"] = ERROR_EVENT_TYPE
            if ctx is not None:
                entry["serviceContext"] = {"service": ctx.function}
        return json.dumps(entry, default=str)


_configured = False


def setup() -> None:
    """Route the root logger to stdout as JSON lines (idempotent)."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    _configured = True


def get(name: str) -> logging.Logger:
    setup()
    return logging.getLogger(name)
