"""One-click unsubscribe as mail providers and people use it, on the local stack.

Providers post RFC 8058's body as `multipart/form-data` (the RFC's SHOULD) or urlencoded; a
person clicks the mail's link and gets a page in their locale with one button (a form POST, no
script), then a confirmation; a GET only shows. API clients that ask for JSON keep getting
JSON and problem+json. Twilio's callbacks are public form routes too: a signed report sent as
multipart is still verified over exactly the fields it carries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from dev.stack import LOCAL_NOTIFY_SIGNING_KEY, TWILIO_SIM_ACCOUNT_SID, TWILIO_SIM_AUTH_TOKEN
from shared.notify import rules, service
from tests import openapi_support
from tests.notify_support import PAYMENT, channel_state, queue, recipient
from tests.support import User, eventually, problem

pytest_plugins = ("tests.notify_fixtures",)  # mail, sms

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
ONE_CLICK = {"List-Unsubscribe": (None, "One-Click")}  # a multipart field, no file name


def _mailed(stack: Any, mail: Any, **prefs: Any) -> tuple[User, str, dict[str, Any]]:
    """A user who got a payment mail: them, its List-Unsubscribe URL, and the mail."""
    user = recipient(stack, prefs=prefs or None)
    queue(user, "payment_received", PAYMENT)
    (message,) = mail.wait(user.email)
    return user, message["headers"]["List-Unsubscribe"].strip("<>"), message


def _payments_mail_on(user: User) -> bool:
    on: bool = service.preferences(user.uid)["channels"]["payments"]["email"]
    return on


class _Page(HTMLParser):
    """What a browser would find in a page: its forms (action, method, fields), scripts,
    and the html element's language."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.scripts = 0
        self.lang: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "script":
            self.scripts += 1
        elif tag == "form":
            self.forms.append({"action": a.get("action") or "", "method": a.get("method"), "f": {}})
        elif tag in ("input", "button") and self.forms and a.get("name"):
            self.forms[-1]["f"][a["name"]] = a.get("value") or ""


def _page(response: requests.Response) -> _Page:
    assert response.headers["Content-Type"] == "text/html; charset=utf-8", response.headers
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    # The URL carries the token: nothing on the page may pass it on.
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = _Page()
    page.feed(response.text)
    assert page.scripts == 0
    return page


def _through_the_front_end(stack: Any, url: str) -> str:
    """The link as production mails it: on the front end's origin, under /api (terraform's
    NOTIFICATIONS_URL); locally the mail names the gateway itself."""
    parts = urlsplit(url)
    return f"{stack.hosting_url}/api{parts.path}?{parts.query}"


# -- providers: RFC 8058's POST ------------------------------------------------------------


def test_a_providers_one_click_post_as_multipart_form_data_unsubscribes(stack, mail):
    user, url, _ = _mailed(stack, mail)

    done = requests.post(url, files=ONE_CLICK, timeout=30)
    assert done.status_code == 200, done.text
    assert done.json() == {"category": "payments", "channel": "email", "unsubscribed": True}
    openapi_support.check(stack.gateway_url, done)
    assert not _payments_mail_on(user)
    # Urlencoded, as other providers send it, still does (and again is harmless).
    again = requests.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=30)
    assert again.status_code == 200, again.text


def test_multipart_bodies_are_held_to_the_same_rules_as_urlencoded_ones(stack, mail):
    user, url, _ = _mailed(stack, mail)
    boundary = "b0undary"
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def body(*parts: tuple[str, bytes]) -> bytes:
        chunks = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
            for name, value in parts
        ]
        return b"".join(chunks) + f"--{boundary}--\r\n".encode()

    one_click = ("List-Unsubscribe", b"One-Click")
    refused = [
        # Each field once: which of two values counts would be a guess.
        (body(one_click, one_click), multipart),
        # No files.
        (None, {"files": {"List-Unsubscribe": ("a.txt", b"One-Click", "text/plain")}}),
        # Not text.
        (body(("List-Unsubscribe", b"\xff\xfeOne")), multipart),
        # Not multipart at all, or no boundary to split it by.
        (b"List-Unsubscribe=One-Click", multipart),
        (body(one_click), {"Content-Type": "multipart/form-data"}),
        (f"--{boundary}\r\nno headers here".encode(), multipart),
        # Bounded in parts, whatever their size.
        (body(*[(f"f{i}", b"x") for i in range(300)]), multipart),
    ]
    for raw, how in refused:
        if raw is None:
            response = requests.post(url, timeout=30, **how)
        else:
            response = requests.post(url, data=raw, headers=how, timeout=30)
        problem(response, 400, "malformed_form")
    # Well-formed but not RFC 8058's field: validated as the JSON body would be.
    wrong = requests.post(url, data=body(("List-Unsubscribe", b"Two-Clicks")), headers=multipart)
    problem(wrong, 400, "validation_failed")
    assert _payments_mail_on(user)


def test_a_signed_twilio_report_sent_as_multipart_is_verified_over_its_fields(stack, sms, admin):
    from dev.twilio_sim import twilio_signature
    from tests.notify_support import phone_number

    phone = phone_number()
    window = {"bookingId": "b-1", "windowStart": datetime(2031, 5, 6, 8, 0, tzinfo=UTC)}
    notice_id = queue(recipient(stack, phone=phone), "booking_accepted", window)
    sid = channel_state(notice_id, "sms", "sent")["providerId"]
    url = f"{stack.gateway_url}/notifications/twilio/status?n={notice_id}"
    params = {
        "AccountSid": TWILIO_SIM_ACCOUNT_SID,
        "MessageSid": sid,
        "MessageStatus": "read",
        "To": phone,
    }
    signature = {"X-Twilio-Signature": twilio_signature(TWILIO_SIM_AUTH_TOKEN, url, params)}
    as_multipart = {k: (None, v) for k, v in params.items()}

    altered = {**as_multipart, "MessageStatus": (None, "failed")}
    problem(requests.post(url, files=altered, headers=signature, timeout=30), 403)
    taken = requests.post(url, files=as_multipart, headers=signature, timeout=30)
    assert taken.status_code == 204, taken.text

    def receipts() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = admin.get(f"/notifications/notices/{notice_id}").json()[
            "receipts"
        ]
        return found

    statuses = {r["status"] for r in eventually(receipts, bool, "receipts")}
    assert "read" in statuses
    assert "failed" not in statuses


# -- people: the page behind the link ------------------------------------------------------


def test_the_text_part_carries_the_unsubscribe_link_too(stack, mail):
    _, url, message = _mailed(stack, mail)
    assert url in message["text"]
    assert f'href="{url.replace("&", "&amp;")}"' in message["html"]


def test_the_link_opens_a_page_whose_one_button_unsubscribes_and_confirms(stack, mail):
    user, url, _ = _mailed(stack, mail)
    link = _through_the_front_end(stack, url)

    # Mail scanners and people alike open the link: that alone changes nothing.
    for _ in range(2):
        shown = requests.get(link, headers=BROWSER, timeout=30)
        assert shown.status_code == 200, shown.text
    page = _page(shown)
    assert page.lang == "en"
    assert "payments" in shown.text
    (form,) = page.forms
    assert form["method"] == "post"
    assert form["f"]["List-Unsubscribe"] == "One-Click"
    assert _payments_mail_on(user)

    # The browser submits the form: urlencoded, from the page's own origin.
    target = urljoin(link, form["action"])
    assert urlsplit(target).query == urlsplit(link).query
    origin = {"Origin": stack.hosting_url, **BROWSER}
    done = requests.post(target, data=form["f"], headers=origin, timeout=30)
    assert done.status_code == 200, done.text
    confirmed = _page(done)
    assert confirmed.forms == []
    assert "unsubscribed" in done.text.lower()
    assert not _payments_mail_on(user)


def test_locally_the_pages_button_works_on_the_link_as_mailed(stack, mail):
    """`make dev`'s mails name the gateway itself: its page's form posts from that origin."""
    user, url, _ = _mailed(stack, mail)
    page = _page(requests.get(url, headers=BROWSER, timeout=30))
    (form,) = page.forms
    origin = {"Origin": stack.gateway_url, **BROWSER}
    done = requests.post(urljoin(url, form["action"]), data=form["f"], headers=origin, timeout=30)
    assert done.status_code == 200, done.text
    assert not _payments_mail_on(user)


def test_the_page_is_in_the_users_locale(stack, mail):
    user, url, _ = _mailed(stack, mail, locale="tr")

    shown = requests.get(url, headers={**BROWSER, "Accept-Language": "en"}, timeout=30)
    assert shown.status_code == 200, shown.text
    page = _page(shown)
    assert page.lang == "tr"
    assert "Ödemeler" in shown.text or "ödemeler" in shown.text
    (form,) = page.forms
    done = requests.post(urljoin(url, form["action"]), data=form["f"], headers=BROWSER)
    assert done.status_code == 200, done.text
    assert _page(done).lang == "tr"
    assert "Abonelikten çıktınız" in done.text  # noqa: RUF001 (Turkish's dotless i)
    assert not _payments_mail_on(user)


def test_a_bad_or_expired_link_shows_a_page_saying_so_and_api_clients_get_problems(stack, mail):
    user, url, _ = _mailed(stack, mail)
    base = url.split("?")[0]
    expired = rules.unsubscribe_token(
        LOCAL_NOTIFY_SIGNING_KEY.encode(),
        user.uid,
        rules.Category.PAYMENTS,
        datetime.now(UTC) - timedelta(minutes=1),
    )
    forged = url.split("token=")[1][:-3] + "AAA"

    for token, code, en, tr in (
        (forged, "unsubscribe_token_invalid", "not valid", "geçerli değil"),
        (expired, "unsubscribe_token_expired", "expired", "süresi dolmuş"),
    ):
        for method in ("GET", "POST"):
            form = {"data": {"List-Unsubscribe": "One-Click"}} if method == "POST" else {}
            for language, says in (("en-GB,en;q=0.8", en), ("tr-TR,tr;q=0.9,en;q=0.5", tr)):
                headers = {**BROWSER, "Accept-Language": language}
                shown = requests.request(
                    method, base, params={"token": token}, headers=headers, timeout=30, **form
                )
                assert shown.status_code == 400, (method, shown.text)
                page = _page(shown)
                assert page.forms == []
                assert says in shown.text, (method, language, shown.text)
                openapi_support.check(stack.gateway_url, shown)
            api = requests.request(
                method,
                base,
                params={"token": token},
                headers={"Accept": "application/json"},
                timeout=30,
                **form,
            )
            problem(api, 400, code)
    assert _payments_mail_on(user)


def test_api_clients_still_get_json_and_the_document_says_html_too(stack, mail):
    _, url, _ = _mailed(stack, mail)

    preview = requests.get(url, headers={"Accept": "application/json"}, timeout=30)
    assert preview.status_code == 200
    assert preview.json() == {"category": "payments", "channel": "email", "unsubscribed": False}
    openapi_support.check(stack.gateway_url, preview)
    shown = requests.get(url, headers=BROWSER, timeout=30)
    openapi_support.check(stack.gateway_url, shown)

    doc = requests.get(f"{stack.gateway_url}/notifications/openapi.json", timeout=30).json()
    ops = doc["paths"]["/notifications/unsubscribe"]
    for method in ("get", "post"):
        responses = ops[method]["responses"]
        assert set(responses["200"]["content"]) == {"application/json", "text/html"}
        assert set(responses["400"]["content"]) == {"application/problem+json", "text/html"}
    takes = ops["post"]["requestBody"]["content"]
    assert set(takes) == {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    devices = doc["paths"]["/notifications/devices"]["get"]["responses"]["200"]["content"]
    assert set(devices) == {"application/json"}
