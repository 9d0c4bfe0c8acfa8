"""The local stack's mail server: a real SMTP server (aiosmtpd) that keeps what it receives.

    python -m dev.smtp_sink --smtp-port 1025 --port 8025

Notify sends to it exactly as it sends to a production relay (SMTP, one message per notice);
tests and people read the messages back, raw and parsed, over HTTP. Test-only controls (HTTP,
under /_sim/) inject what real relays do: a reply code for one recipient at RCPT or after DATA
(421 and 450 are transient, 550 a hard bounce), and refusing connections altogether.

  GET    /_sim/health
  GET    /_sim/messages[?to=addr]    what was received: envelope, headers, text and HTML parts
  DELETE /_sim/messages
  POST   /_sim/faults   {"to": addr, "code": 550, "stage": "rcpt"|"data", "count": n|null,
                         "message": "..."}    (count null: until the faults are cleared)
  DELETE /_sim/faults
  POST   /_sim/down   /   POST /_sim/up      stop / start listening for SMTP (connections refused)
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import flask

from shared.platform import clock

log = logging.getLogger("alodoktor.smtp_sink")


@dataclass
class Fault:
    to: str
    code: int
    stage: str = "rcpt"
    count: int | None = 1
    message: str = ""


class Sink:
    """What the SMTP server received, and the faults it is to answer with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        self.faults: list[Fault] = []

    def fault_for(self, address: str, stage: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.stage == stage and fault.to.lower() == address.lower():
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    # aiosmtpd handler hooks ------------------------------------------------------------

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self.fault_for(address, "rcpt")
        if fault is not None:
            return f"{fault.code} {fault.message or _TEXT.get(fault.code, 'refused')}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        for address in envelope.rcpt_tos:
            fault = self.fault_for(address, "data")
            if fault is not None:
                return f"{fault.code} {fault.message or _TEXT.get(fault.code, 'refused')}"
        raw: bytes = envelope.original_content or envelope.content
        self.keep(envelope.mail_from, list(envelope.rcpt_tos), raw)
        return "250 Message accepted for delivery"

    def keep(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        text = html = None
        for part in parsed.walk():
            ctype = part.get_content_type()
            if ctype == "text/plain" and text is None:
                text = part.get_content()
            elif ctype == "text/html" and html is None:
                html = part.get_content()
        record = {
            "mailFrom": mail_from,
            "rcptTos": rcpt_tos,
            "headers": {k: str(v) for k, v in parsed.items()},
            "messageId": str(parsed.get("Message-ID", "")),
            "subject": str(parsed.get("Subject", "")),
            "text": text,
            "html": html,
            "raw": raw.decode(errors="replace"),
            "receivedAt": clock.now().isoformat(),
        }
        with self.lock:
            self.messages.append(record)
        log.info("mail to %s: %s", ", ".join(rcpt_tos), record["subject"])


_TEXT = {
    421: "Service not available, closing transmission channel",
    450: "Requested mail action not taken: mailbox unavailable",
    451: "Requested action aborted: local error in processing",
    452: "Requested action not taken: insufficient system storage",
    550: "Requested action not taken: mailbox unavailable",
    552: "Requested mail action aborted: exceeded storage allocation",
    553: "Requested action not taken: mailbox name not allowed",
}


class Server:
    """The SMTP listener, which the controls can stop and start again on the same port."""

    def __init__(self, sink: Sink, host: str, port: int) -> None:
        self.sink, self.host, self.port = sink, host, port
        self.controller: Any = None
        self.lock = threading.Lock()

    def up(self) -> None:
        from aiosmtpd.controller import Controller

        with self.lock:
            if self.controller is None:
                self.controller = Controller(
                    self.sink, hostname=self.host, port=self.port, ready_timeout=30
                )
                self.controller.start()

    def down(self) -> None:
        with self.lock:
            if self.controller is not None:
                self.controller.stop()
                self.controller = None


def create_app(sink: Sink, server: Server) -> flask.Flask:
    app = flask.Flask("smtp_sink")

    def reply(status: int, body: Any) -> flask.Response:
        return flask.Response(json.dumps(body), status=status, mimetype="application/json")

    @app.get("/_sim/health")
    def health() -> flask.Response:
        return reply(200, {"ok": True, "smtp": server.controller is not None, "port": server.port})

    @app.get("/_sim/messages")
    def messages() -> flask.Response:
        to = flask.request.args.get("to", "").lower()
        with sink.lock:
            found = [m for m in sink.messages if not to or to in (a.lower() for a in m["rcptTos"])]
        return reply(200, {"messages": found})

    @app.delete("/_sim/messages")
    def clear_messages() -> flask.Response:
        with sink.lock:
            sink.messages.clear()
        return reply(200, {"ok": True})

    @app.post("/_sim/faults")
    def add_fault() -> flask.Response:
        spec = flask.request.get_json(force=True)
        fault = Fault(
            to=str(spec["to"]),
            code=int(spec["code"]),
            stage=str(spec.get("stage", "rcpt")),
            count=spec.get("count", 1),
            message=str(spec.get("message", "")),
        )
        with sink.lock:
            sink.faults.append(fault)
        return reply(200, {"ok": True})

    @app.delete("/_sim/faults")
    def clear_faults() -> flask.Response:
        with sink.lock:
            sink.faults.clear()
        return reply(200, {"ok": True})

    @app.post("/_sim/down")
    def down() -> flask.Response:
        server.down()
        return reply(200, {"smtp": False})

    @app.post("/_sim/up")
    def up() -> flask.Response:
        server.up()
        return reply(200, {"smtp": True})

    return app


def main() -> None:
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description="The local SMTP sink.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--port", type=int, default=8025, help="the HTTP controls")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="smtp-sink %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = Sink()
    server = Server(sink, args.host, args.smtp_port)
    server.up()
    try:
        run_simple(args.host, args.port, create_app(sink, server), threaded=True)
    finally:
        server.down()


if __name__ == "__main__":
    main()
