"""Sending e-mail through an SMTP relay (any provider's, or the local stack's sink).

The same code runs everywhere: SMTP_HOST/SMTP_PORT, STARTTLS and credentials (from Secret
Manager in production) are settings. A send answers what the server said, as an `Answer`; it
never sends a message again (the notice's delivery state decides that). Every message carries
the Message-ID its notice gives it, so a resend after a lost answer is recognisably the same
message. A `Session` carries many messages on one connection (the sweep's).
"""

from __future__ import annotations

import functools
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, getaddresses


@dataclass(frozen=True)
class Mail:
    sender: str
    to: str
    subject: str
    text: str
    html: str
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)

    def message(self) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = self.to
        msg["Subject"] = self.subject
        msg["Message-ID"] = self.message_id
        msg["Date"] = formatdate(usegmt=True)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
        for name, value in self.headers.items():
            msg[name] = value
        msg.set_content(self.text)
        msg.add_alternative(self.html, subtype="html")
        return msg

    @functools.cached_property
    def data(self) -> bytes:
        """The message as sent to a relay (ASCII addresses), built once: a sweep builds it
        off the thread that holds the connection, ahead of its turn."""
        return self.message().as_bytes(policy=SMTP_POLICY)

    @property
    def envelope(self) -> tuple[str, str]:
        """The addresses of the SMTP envelope: (from, to)."""
        return getaddresses([self.sender])[0][1], getaddresses([self.to])[0][1]


@dataclass(frozen=True)
class Answer:
    """The server's reply: `code` 250 when it took the message. `lost`: the connection broke
    after the message was handed over, so it may have been accepted (0 when no reply came)."""

    code: int
    detail: str
    lost: bool = False

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 400 and not self.lost


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    starttls: bool = True
    username: str = ""
    password: str = ""
    timeout: float = 10.0

    def send(self, mail: Mail) -> Answer:
        """One message on a connection of its own."""
        with self.session() as session:
            return session.send(mail)

    def session(self) -> Session:
        """A connection for many messages, opened at the first and closed at the end."""
        return Session(self)


class Session:
    """Many messages on one connection, one at a time (not shared between threads): a sweep
    pays the connection, its TLS handshake and its login once, not once a message.

    A connection the server dropped between two messages is opened again for the next one;
    only a message whose DATA had begun may have been taken (`Answer.lost`), so a message
    refused or dropped before it is never reported as possibly sent."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def send(self, mail: Mail) -> Answer:
        if not self.relay.host:
            return Answer(421, "no SMTP relay is configured (SMTP_HOST)")
        reused = self._smtp is not None
        handed_over = [False]
        try:
            try:
                return self._transfer(mail, handed_over)
            except (smtplib.SMTPServerDisconnected, OSError):
                if not reused or handed_over[0]:
                    raise
                # The server closed a connection an earlier message left open (an idle
                # timeout, a limit of messages per connection): nothing of this one went.
                self._drop()
                return self._transfer(mail, handed_over)
        except smtplib.SMTPResponseException as exc:
            # 421 at the greeting, 4xx/5xx to EHLO, STARTTLS or the login.
            self._drop()
            return Answer(exc.smtp_code, _text(exc.smtp_error))
        except (smtplib.SMTPServerDisconnected, TimeoutError, OSError) as exc:
            # Refused or dropped before DATA: nothing was sent. Dropped after it began: the
            # server may have taken it.
            self._drop()
            return Answer(0, f"{type(exc).__name__}: {exc}"[:300], lost=handed_over[0])
        except BaseException:
            # Anything else (a bug, a cancellation) may have left a transaction open on the
            # connection: the next message must not begin inside it.
            self._drop()
            raise

    def _transfer(self, mail: Mail, handed_over: list[bool]) -> Answer:
        smtp = self._connection()
        sender, to = mail.envelope
        options: list[str] = []
        if (sender + to).isascii():
            data = mail.data
        else:
            if not smtp.has_extn("smtputf8"):
                return Answer(554, "the relay does not take internationalised addresses")
            data = mail.message().as_bytes(policy=SMTP_POLICY.clone(utf8=True))
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        if smtp.has_extn("size"):
            options.append(f"size={len(data)}")
        code, reply = smtp.mail(sender, options)
        if code != 250:
            return self._refused(code, reply)
        code, reply = smtp.rcpt(to)
        if code not in (250, 251):
            return self._refused(code, reply)
        handed_over[0] = True
        code, reply = smtp.data(data)
        if code != 250:
            return self._refused(code, reply)
        return Answer(250, "accepted")

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            relay = self.relay
            smtp = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
            try:
                smtp.ehlo()
                if relay.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if relay.username:
                    smtp.login(relay.username, relay.password)
            except BaseException:
                smtp.close()
                raise
            self._smtp = smtp
        return self._smtp

    def _refused(self, code: int, reply: bytes) -> Answer:
        """The server refused this message: the connection stays for the next one, reset,
        unless the server said it is closing it (421)."""
        if code == 421:
            self._drop()
        else:
            try:
                assert self._smtp is not None
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        return Answer(code, _text(reply))

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def _text(raw: bytes | str) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return text[:300]
