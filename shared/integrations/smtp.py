"""Sending e-mail through an SMTP relay (any provider's, or the local stack's sink).

The same code runs everywhere: SMTP_HOST/SMTP_PORT, STARTTLS and credentials (from Secret
Manager in production) are settings. A send answers what the server said, as an `Answer`; it
never retries (the notice's delivery state does that). Every message carries the Message-ID
its notice gives it, so a resend after a lost answer is recognisably the same message.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate


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
        if not self.host:
            return Answer(421, "no SMTP relay is configured (SMTP_HOST)")
        handed_over = False
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password)
                handed_over = True
                refused = smtp.send_message(mail.message())
                if refused:  # one recipient only: this is never reached with a refusal
                    code, text = next(iter(refused.values()))
                    return Answer(code, _text(text))
            return Answer(250, "accepted")
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return Answer(code, _text(text))
        except smtplib.SMTPResponseException as exc:
            # 421 at the greeting, 4xx/5xx to MAIL, DATA or the message itself.
            return Answer(exc.smtp_code, _text(exc.smtp_error))
        except (smtplib.SMTPServerDisconnected, TimeoutError, OSError) as exc:
            # Refused or dropped before the message went: nothing was sent. Dropped after it
            # was handed over: the server may have taken it.
            return Answer(0, f"{type(exc).__name__}: {exc}"[:300], lost=handed_over)


def _text(raw: bytes | str) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return text[:300]
