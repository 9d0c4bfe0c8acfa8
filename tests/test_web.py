"""The reference web app (hosting/public) in Debian's Chromium, on the front end's origin the
local stack serves as Firebase Hosting will (pages and /api/<function>/ on one origin), against
the real emulators, gateway and PayPal simulator.

Each test is what a person does on the page; what needs no page (a doctor's availability, a
paid appointment for the doctor's day) is set up through the API as the other tests do.
Screenshots of every step go to build/web-screenshots/ (a test artifact, not committed).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from shared.platform.context import Role
from tests.paypal_support import Sim
from tests.support import (
    EVENTUALLY_SECONDS,
    PRESCRIPTION_ITEM,
    Api,
    User,
    approved_doctor,
    bearer,
    clinic_setup,
    create_user,
    slot_in,
)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "web-screenshots"
TIMEOUT_MS = 45_000  # a busy 2-core machine: what a person would wait at most, then a failure

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Web:
    """One person's browser (a context of its own: its own cookies) on the front end."""

    def __init__(self, context: BrowserContext, base: str, name: str) -> None:
        self.context = context
        self.base = base
        self.name = name
        # What the browser's console reported as errors (a failed load, a script error), on
        # every page this person opened.
        self.console_errors: list[str] = []
        self.page = self.open()
        self.shots = 0

    def open(self) -> Page:
        page = self.context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on(
            "console",
            lambda m: (
                self.console_errors.append(f"{m.text} {m.location}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        page.goto(self.base + "/")
        expect(page.locator("body[data-ready=true]")).to_have_count(1)
        return page

    @property
    def unexpected_errors(self) -> list[str]:
        """Console errors but the one a page without a session meets: `GET /api/session`
        answering 401 (how the app learns it must show sign-in; Chromium logs every 4xx)."""
        probe = re.compile(r"status of 401 .*'url': '[^']*/api/session'")
        return [e for e in self.console_errors if not probe.search(e)]

    def shot(self, step: str, page: Page | None = None) -> None:
        self.shots += 1
        (page or self.page).screenshot(path=str(SHOTS / f"{self.name}-{self.shots:02d}-{step}.png"))

    def sign_in(self, user: User, *, keyboard: bool = False) -> None:
        page = self.page
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        form = page.locator("#sign-in")
        if keyboard:  # as someone without a mouse: type, Tab to the next field, Enter
            form.get_by_label("E-mail").focus()
            page.keyboard.type(user.email)
            page.keyboard.press("Tab")
            page.keyboard.type(user.password)
            page.keyboard.press("Enter")
        else:
            form.get_by_label("E-mail").fill(user.email)
            form.get_by_label("Password").fill(user.password)
            page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#who-text")).to_contain_text(user.email)
        self.shot(f"signed-in-{user.role.value if user.role else 'new'}")

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out", exact=True).click()
        expect(self.page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(self.page.locator("#status")).to_have_text("Signed out.")
        self.shot("signed-out")

    def session_cookie(self) -> dict[str, Any] | None:
        found = [c for c in self.context.cookies(self.base) if c["name"] == "__session"]
        return dict(found[0]) if found else None


@pytest.fixture
def web(stack: Any, browser: Browser, request: pytest.FixtureRequest) -> Iterator[Web]:
    context = browser.new_context(timezone_id="UTC", viewport={"width": 960, "height": 720})
    try:
        yield Web(context, stack.hosting_url, request.node.name.removeprefix("test_")[:40])
    finally:
        context.close()


def _listed(stack: Any, admin: Api, role: Role, name: str) -> User:
    """A pharmacy or clinic with a name and an address, approved by `admin`: in the directory
    the patient's page lists (newest first)."""
    user = create_user(stack, role, approved=False)
    profile = {
        "name": name,
        "address": {"line1": "Jl. Sudirman 1", "city": "Jakarta", "country": "ID"},
    }
    bearer(stack, user).request("PATCH", "/users/me", json=profile).raise_for_status()
    admin.post(f"/admin-users/{user.uid}/approval", json={"decision": "approve"}).raise_for_status()
    return user


def _listed_doctor(
    stack: Any, admin: Api, name: str, specialty: str, price: str, language: str = "en"
) -> User:
    """An approved doctor in the directory: a name, a specialty, a language and a price."""
    user = create_user(stack, Role.DOCTOR, approved=False)
    profile = {
        "displayName": name,
        "licenseNumber": "SIP-" + uuid.uuid4().hex[:6],
        "specialty": specialty,
        "languages": [language],
        "consultationPrice": {"currency": "USD", "value": price},
    }
    bearer(stack, user).request("PATCH", "/users/me", json=profile).raise_for_status()
    admin.post(f"/admin-users/{user.uid}/approval", json={"decision": "approve"}).raise_for_status()
    return user


def _paid_visit(stack: Any, admin: Api, sim: Sim) -> tuple[User, User, str]:
    """A doctor, and a patient's paid appointment with them about three hours from now."""
    doctor, _ = approved_doctor(stack, admin)
    patient = create_user(stack, Role.PATIENT)
    api = bearer(stack, patient)
    start = slot_in(3)
    booked = api.post("/appointments", json={"doctorUid": doctor.uid, "start": start})
    assert booked.status_code == 201, booked.text
    made = api.post("/paypal-create", json={"appointmentId": booked.json()["id"]})
    assert made.status_code == 201, made.text
    sim.approve({"links": [{"rel": "approve", "href": made.json()["approveLink"]}]})
    captured = api.post("/paypal-capture", json={"orderId": made.json()["id"]})
    assert captured.status_code == 200, captured.text
    return doctor, patient, start


def _prescriptions_for(stack: Any, patient: User) -> list[dict[str, Any]]:
    listed = bearer(stack, patient).get("/prescriptions")
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


def _named_doctor_and_patient(
    stack: Any, admin: Api, prefix: str, price: str
) -> tuple[str, User, User]:
    """A doctor with a name of their own (bookable all day), and a patient."""
    name = f"{prefix} {uuid.uuid4().hex[:6]}"
    doctor, _ = approved_doctor(stack, admin, price, displayName=name)
    return name, doctor, create_user(stack, Role.PATIENT)


def _book_on_the_page(web: Web, doctor: User, days_ahead: int, at: str) -> Locator:
    """The patient picks the doctor, a day and the free time `at`: the appointment's details."""
    page = web.page
    view = page.locator("#patient")
    view.get_by_label("Doctor").select_option(doctor.uid)
    view.get_by_label("Day", exact=True).fill(
        (datetime.now(UTC) + timedelta(days=days_ahead)).date().isoformat()
    )
    page.get_by_role("button", name="Show free times").click()
    expect(page.get_by_role("button", name=f"Book {at}")).to_be_visible()
    web.shot("free-times")
    page.get_by_role("button", name=f"Book {at}").click()
    details = page.locator("#appointment-details")
    expect(details).to_contain_text("pending payment")
    return details


# -- the flows ----------------------------------------------------------------------------


def test_a_patient_books_pays_sees_the_receipt_and_cancels(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    name = f"Dr Web {uuid.uuid4().hex[:6]}"
    doctor, _ = approved_doctor(stack, admin, "20.00", displayName=name)
    web.sign_in(create_user(stack, Role.PATIENT))
    page = web.page
    details = _book_on_the_page(web, doctor, 3, "10:00")  # 3 days: a full refund's notice
    expect(details).to_contain_text("20.00 USD")
    web.shot("booked")

    # As PayPal's checkout: to PayPal's page, which asks; Approve sends the buyer back here,
    # where the app captures the order and shows the receipt.
    page.get_by_role("button", name="Pay with PayPal").click()
    expect(page).to_have_url(re.compile(re.escape(sim.url) + r"/checkoutnow\?token="))
    expect(page.locator("body")).to_contain_text("Pay 20.00 USD to Alo Doktor")
    web.shot("paypal-asks")
    page.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(web.base + "/")  # back, and the address is the start page again
    expect(page.locator("#status")).to_have_text("Payment received: your appointment is confirmed.")
    expect(details).to_contain_text("confirmed")
    receipt = page.locator("#receipt-details")
    expect(receipt).to_contain_text("captured")
    expect(receipt).to_contain_text("20.00 USD")
    web.shot("confirmed-receipt")

    page.get_by_role("button", name="Cancel appointment").click()
    expect(details).to_contain_text("cancelled")
    expect(page.locator("#status")).to_have_text("Appointment cancelled; refund: full.")
    expect(receipt).to_contain_text("Refund (cancellation)")
    web.shot("cancelled-refund")
    web.sign_out()
    assert web.unexpected_errors == []


def _listed_clinic_without_bookings(stack: Any, admin: Api) -> None:
    """An approved clinic in the directory that has not set up bookings (yet)."""
    clinic = create_user(stack, Role.CLINIC, approved=False)
    approved = admin.post(f"/admin-users/{clinic.uid}/approval", json={"decision": "approve"})
    assert approved.status_code == 200, approved.text
    listed = bearer(stack, create_user(stack, Role.PATIENT)).get("/users/directory/clinics")
    assert clinic.uid in [c["uid"] for c in listed.json()["items"]]


def test_a_buyer_who_cancels_in_paypal_comes_back_with_nothing_charged(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    name, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Cancel", "15.00")
    _listed_clinic_without_bookings(stack, admin)  # the page must not trip over it
    web.sign_in(patient)
    page = web.page
    details = _book_on_the_page(web, doctor, 2, "11:00")

    page.get_by_role("button", name="Pay with PayPal").click()
    expect(page.locator("body")).to_contain_text("Pay 15.00 USD to Alo Doktor")
    page.get_by_role("button", name="Cancel").click()
    expect(page).to_have_url(web.base + "/")
    expect(page.locator("#status")).to_have_text(
        "Payment cancelled in PayPal: nothing was charged."
    )
    expect(details).to_contain_text("pending payment")
    expect(details).to_contain_text(name)
    expect(page.get_by_role("button", name="Pay with PayPal")).to_be_visible()  # may try again
    web.shot("paypal-cancelled")

    # Nothing captured: the appointment still waits for its payment, PayPal's order unapproved.
    mine = bearer(stack, patient).get("/appointments").json()["items"]
    assert [a["status"] for a in mine] == ["pending_payment"]
    assert not mine[0].get("payment") or not mine[0]["payment"].get("capturedAt"), mine[0]
    orders = bearer(stack, patient).get("/payments/orders").json()["items"]
    assert [o["status"] for o in orders] == ["created"], orders
    assert sim.client().get_order(orders[0]["paypalOrderId"])["status"] == "CREATED"
    web.sign_out()
    assert web.unexpected_errors == []


def test_a_returning_patient_sees_pays_for_and_cancels_earlier_appointments(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    name, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Again", "25.00")
    api = bearer(stack, patient)
    # Booked on an earlier visit (through the API here): one left unpaid, one paid.
    unpaid_start, paid_start = slot_in(50), slot_in(75)
    unpaid = api.post("/appointments", json={"doctorUid": doctor.uid, "start": unpaid_start})
    assert unpaid.status_code == 201, unpaid.text
    paid = api.post("/appointments", json={"doctorUid": doctor.uid, "start": paid_start})
    assert paid.status_code == 201, paid.text
    made = api.post("/paypal-create", json={"appointmentId": paid.json()["id"]})
    sim.approve({"links": [{"rel": "approve", "href": made.json()["approveLink"]}]})
    assert api.post("/paypal-capture", json={"orderId": made.json()["id"]}).status_code == 200

    web.sign_in(patient)
    page = web.page
    mine = page.locator("#my-appointments")
    paid_at = datetime.fromisoformat(paid_start).strftime("%d %b %Y")
    expect(mine.locator("li")).to_have_count(2)
    expect(mine.locator("li").nth(0)).to_contain_text(f"with {name}: confirmed")  # latest first
    expect(mine.locator("li").nth(1)).to_contain_text(f"with {name}: pending payment")
    web.shot("my-appointments")

    # The unpaid one can still be paid: to PayPal and back.
    page.get_by_role("button", name=re.compile(rf"^Pay for .* with {re.escape(name)}$")).click()
    expect(page.locator("body")).to_contain_text("Pay 25.00 USD to Alo Doktor")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#status")).to_have_text("Payment received: your appointment is confirmed.")
    expect(mine.locator("li").nth(1)).to_contain_text(f"with {name}: confirmed")
    expect(page.locator("#receipt-details")).to_contain_text("25.00 USD")

    # The paid one: shown, then cancelled, with its refund.
    first = mine.locator("li").nth(0)
    expect(first).to_contain_text(paid_at.lstrip("0"))
    first.get_by_role("button", name=re.compile("^Show ")).click()
    expect(page.locator("#appointment-details")).to_contain_text(name)
    first.get_by_role("button", name=re.compile("^Cancel ")).click()
    expect(page.locator("#status")).to_have_text("Appointment cancelled; refund: full.")
    expect(mine.locator("li").nth(0)).to_contain_text(f"with {name}: cancelled")
    expect(page.locator("#receipt-details")).to_contain_text("Refund (cancellation)")
    web.shot("cancelled-from-the-list")
    statuses = sorted(a["status"] for a in api.get("/appointments").json()["items"])
    assert statuses == ["cancelled", "confirmed"]
    web.sign_out()
    assert web.unexpected_errors == []


def test_a_patient_searches_doctors_and_pages_through_them(
    stack: Any, admin: Api, web: Web
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    specialty = f"sp-{uuid.uuid4().hex[:8]}"
    names = [f"Dr Page {i:02d} {specialty}" for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: _listed_doctor(stack, admin, n, specialty, "30.00"), names[:11]))
    _listed_doctor(stack, admin, names[11], specialty, "90.00", language="id")

    web.sign_in(create_user(stack, Role.PATIENT))
    page = web.page
    search = page.locator("#find-doctors-form")
    search.get_by_label("Specialty").fill(specialty)
    page.get_by_role("button", name="Search doctors").click()
    doctors = page.locator("#pick-doctor option")
    expect(doctors).to_have_count(10)  # a page
    expect(page.locator("#doctors-found")).to_have_text("10 doctors shown; more to see.")
    web.shot("doctors-first-page")
    page.get_by_role("button", name="More doctors").click()
    expect(doctors).to_have_count(12)
    expect(page.locator("#doctors-found")).to_have_text("12 doctors shown.")
    expect(page.get_by_role("button", name="More doctors")).to_be_hidden()
    shown = {t.split(",")[0] for t in doctors.all_text_contents()}
    assert shown == set(names)  # every one once, by name

    search.get_by_label("Language").fill("id")
    page.get_by_role("button", name="Search doctors").click()
    expect(doctors).to_have_count(1)
    expect(doctors).to_contain_text(names[11])
    expect(page.locator("#doctors-found")).to_have_text("1 doctor shown.")
    search.get_by_label("Language").fill("")
    search.get_by_label("Highest price").fill("50")
    page.get_by_role("button", name="Search doctors").click()
    expect(page.locator("#doctors-found")).to_have_text("10 doctors shown; more to see.")
    page.get_by_role("button", name="More doctors").click()
    expect(page.locator("#doctors-found")).to_have_text("11 doctors shown.")
    expect(doctors.filter(has_text=names[11])).to_have_count(0)  # 90.00 is over
    web.shot("doctors-searched")
    web.sign_out()
    assert web.unexpected_errors == []


def test_a_doctor_writes_a_prescription_for_the_day_and_a_pharmacy_fills_it(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    doctor, patient, start = _paid_visit(stack, admin, sim)
    patient_name = f"Ayşe {uuid.uuid4().hex[:6]}"
    named = bearer(stack, patient).request("PATCH", "/users/me", json={"displayName": patient_name})
    assert named.status_code == 200, named.text
    pharmacy_name = f"Apotek {uuid.uuid4().hex[:6]}"
    pharmacy = _listed(stack, admin, Role.PHARMACY, pharmacy_name)
    at = start[11:16]
    web.sign_in(doctor)
    page = web.page
    view = page.locator("#doctor")
    form = page.locator("#prescription-form")
    expect(form).to_be_hidden()  # no visit chosen: no form
    view.get_by_label("Day", exact=True).fill(start[:10])
    page.get_by_role("button", name="Show the day").click()
    expect(page.locator("#day-list")).to_contain_text(f"{at}: confirmed ({patient_name})")
    expect(page.locator("#day-list")).not_to_contain_text(patient.uid)  # people, not uids
    expect(form).to_be_hidden()
    web.shot("day")
    page.get_by_role("button", name=f"Write prescription for {at}").click()
    expect(form).to_be_visible()
    expect(form).to_contain_text(f"Prescription for the visit at {at}")
    for label, key in (
        ("Medication", "medication"),
        ("Strength", "strength"),
        ("Dose", "dose"),
        ("How often", "frequency"),
        ("For how many days", "durationDays"),
        ("Quantity", "quantity"),
    ):
        view.get_by_label(label, exact=True).fill(str(PRESCRIPTION_ITEM[key]))
    view.get_by_label("Form", exact=True).select_option(str(PRESCRIPTION_ITEM["form"]))
    web.shot("prescription-form")
    # A double-click (an impatient doctor): one prescription.
    page.get_by_role("button", name="Write prescription", exact=True).dblclick()
    expect(page.locator("#status")).to_have_text(re.compile(r"Prescription \S+ written \(issued\)"))
    expect(form).to_be_hidden()  # written: the form goes, emptied
    web.shot("prescribed")
    page.get_by_role("button", name=f"Write prescription for {at}").click()
    expect(view.get_by_label("Medication", exact=True)).to_have_value("")
    expect(view.get_by_label("Quantity", exact=True)).to_have_value("")
    web.sign_out()
    expect(form).to_be_hidden()
    written = _prescriptions_for(stack, patient)
    assert len(written) == 1, written
    assert web.unexpected_errors == []

    # The patient chooses the pharmacy and sends the prescription there.
    what = f"{PRESCRIPTION_ITEM['medication']} {PRESCRIPTION_ITEM['strength']}"
    web.sign_in(patient)
    mine = page.locator("#my-prescriptions")
    expect(mine).to_contain_text(f"{what}: issued")
    page.locator("#patient").get_by_label("Pharmacy", exact=True).select_option(pharmacy.uid)
    web.shot("choose-pharmacy")
    page.get_by_role("button", name=f"Send {what} to the pharmacy").click()
    expect(page.locator("#status")).to_have_text(f"Prescription sent to {pharmacy_name}, Jakarta.")
    expect(mine).to_contain_text(f"{what}: sent")
    web.sign_out()

    web.sign_in(pharmacy)
    listing = page.locator("#prescriptions")
    expect(listing).to_contain_text(f"{what}: sent")
    for step, after in (
        ("Receive", "received"),
        ("Mark ready", "ready"),
        ("Dispense", "dispensed"),
    ):
        page.get_by_role("button", name=f"{step} {what}").click()
        expect(listing).to_contain_text(f"{what}: {after}")
        web.shot(after)
    web.sign_out()


def test_a_patient_asks_a_clinic_for_a_booking_and_the_clinic_accepts(
    stack: Any, admin: Api, web: Web
) -> None:
    clinic_name = f"Klinik {uuid.uuid4().hex[:6]}"
    clinic = _listed(stack, admin, Role.CLINIC, clinic_name)
    setup = clinic_setup("UTC")
    made = bearer(stack, clinic).request("PUT", "/bookings/clinics/me", json=setup)
    assert made.status_code == 200, made.text
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()

    web.sign_in(create_user(stack, Role.PATIENT))
    page = web.page
    view = page.locator("#patient")
    view.get_by_label("Clinic", exact=True).select_option(clinic.uid)
    expect(view.get_by_label("Service")).to_contain_text("General check-up (12.50 USD)")
    view.get_by_label("Clinic day").fill(day)
    page.get_by_role("button", name="Show clinic times").click()
    expect(page.locator("#clinic-windows")).to_contain_text("08:00 (4 places left)")
    web.shot("clinic-times")
    page.get_by_role("button", name="Ask for 08:00").click()
    expect(page.locator("#status")).to_have_text(
        re.compile(r"Asked the clinic for .*: requested, number 1 in the queue\.")
    )
    web.shot("asked")
    web.sign_out()

    web.sign_in(clinic)
    expect(page.locator("#requests")).to_contain_text("General check-up")
    expect(page.locator("#requests")).to_contain_text("requested")
    web.shot("requests")
    page.get_by_role("button", name=re.compile(r"^Accept General check-up")).click()
    expect(page.locator("#status")).to_have_text("Booking accepted.")
    web.shot("accepted")
    web.sign_out()

    # The accepted request holds one of the window's four places.
    seen = bearer(stack, clinic).get(f"/bookings/clinics/{clinic.uid}/windows", params={"day": day})
    assert seen.json()["windows"][0]["free"] == 3


def test_an_admin_approves_a_doctor_and_verifies_the_audit_log(
    stack: Any, admin: Api, web: Web
) -> None:
    # A doctor who signed up and filled in their licence, awaiting approval.
    email = f"doctor-{uuid.uuid4().hex[:10]}@test.alodoktor.test"
    made = admin.post(
        "/admin-users",
        json={
            "email": email,
            "role": "doctor",
            "password": "pw-" + uuid.uuid4().hex,
            "approved": False,
            "profile": {"licenseNumber": "SIP-" + uuid.uuid4().hex[:6], "specialty": "general"},
        },
    )
    assert made.status_code == 201, made.text
    doctor = User(made.json()["profile"]["uid"], email, "", Role.DOCTOR)
    acting = create_user(stack, Role.ADMIN)
    web.sign_in(acting)
    page = web.page
    page.get_by_label("E-mail starts with").fill(doctor.email)
    page.get_by_role("button", name="Find doctors awaiting approval").click()
    expect(page.locator("#pending-doctors")).to_contain_text(doctor.email)
    web.shot("pending")
    page.get_by_role("button", name=f"Approve {doctor.email}").click()
    expect(page.locator("#status")).to_have_text(f"{doctor.email} approved.")
    expect(page.locator("#pending-doctors")).not_to_contain_text(doctor.email)

    # The audit entry is written by the event relay after the change: as long as the API tests
    # wait for asynchronous delivery on a busy machine, not a person's patience.
    entries = page.locator("#audit-entries")
    deadline = time.monotonic() + EVENTUALLY_SECONDS
    while True:
        page.get_by_role("button", name="Show entries").click()
        expect(page.locator("#status")).to_contain_text("Audit entries:")
        if f"update users/{doctor.uid}" in (entries.text_content() or ""):
            break
        assert time.monotonic() < deadline, entries.text_content()
        page.wait_for_timeout(500)
    # Who and whom by name, not only by uid.
    approval = entries.locator("li").filter(has_text=f"update users/{doctor.uid}").first
    expect(approval).to_contain_text(f"users/{doctor.uid} ({doctor.email} (doctor))")
    expect(approval).to_contain_text(f"by {acting.email} (admin)")
    web.shot("audit-entries")
    # Entries are sealed into checkpoints a few seconds after they are written (the sealing lag).
    verdict = page.locator("#audit-verdict")
    deadline = time.monotonic() + EVENTUALLY_SECONDS
    sealed = re.compile(
        r"Audit log verified: (1 checkpoint|[2-9] checkpoints|\d{2,} checkpoints) sealing "
        r"(1 entry|[2-9] entries|\d{2,} entries)"
    )
    while True:
        page.get_by_role("button", name="Seal and verify the audit log").click()
        expect(verdict).to_contain_text("Audit log verified")
        if sealed.search(verdict.text_content() or ""):
            break
        assert time.monotonic() < deadline, verdict.text_content()
        verdict.evaluate("node => { node.textContent = '' }")
        page.wait_for_timeout(1000)
    web.shot("audit-verified")
    assert not re.search(r"\b1 checkpoints\b|\b1 entries\b", verdict.text_content() or "")
    web.sign_out()


def test_the_first_load_has_an_icon_and_no_console_errors(stack: Any, web: Web) -> None:
    icon = web.page.locator('link[rel="icon"]')
    expect(icon).to_have_attribute("href", "/favicon.svg")
    answer = web.page.request.get(stack.hosting_url + "/favicon.svg")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    web.page.reload()
    expect(web.page.locator("body[data-ready=true]")).to_have_count(1)
    web.sign_in(create_user(stack, Role.PATIENT))
    assert web.unexpected_errors == []


# -- the session in the browser -------------------------------------------------------------


def test_the_session_cookie_is_httponly_survives_a_reload_and_sign_out_removes_it(
    stack: Any, web: Web
) -> None:
    patient = create_user(stack, Role.PATIENT)
    web.sign_in(patient, keyboard=True)
    page = web.page
    cookie = web.session_cookie()
    assert cookie is not None
    assert cookie["httpOnly"], cookie
    assert cookie["sameSite"] == "Strict", cookie
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    page.reload()
    expect(page.locator("#who-text")).to_contain_text(patient.email)
    expect(page.get_by_role("heading", name="Book a doctor")).to_be_visible()
    web.shot("after-reload")
    web.sign_out()
    assert web.session_cookie() is None
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


INJECT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.injected = true";
  document.body.appendChild(script);
  return window.injected === true ? "ran" : "blocked";
}"""


def test_the_pages_content_security_policy_stops_injected_script_and_framing(
    stack: Any, web: Web
) -> None:
    # The headers are firebase.json's (`hosting.headers`), which production Hosting serves too.
    answer = web.page.request.get(stack.hosting_url + "/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    # An inline script (what an injected <script> would be) does not run, while the app's own
    # module did: the page is ready and signs in (every other test here works under it too).
    assert web.page.evaluate(INJECT) == "blocked"
    web.sign_in(create_user(stack, Role.PATIENT))
    # Another site cannot frame the app (clickjacking).
    framed = web.context.new_page()
    framed.set_content(f'<iframe src="{stack.hosting_url}/"></iframe>')  # waits for its load
    (_, child) = framed.frames
    assert child.url.startswith("chrome-error://"), child.url  # refused, not the app
    framed.close()
    web.sign_out()


class _OtherSite(BaseHTTPRequestHandler):
    """A page of another origin: a plain form posting to the API."""

    target = ""

    def do_GET(self) -> None:
        page = (
            "<!doctype html><title>Other site</title>"
            f'<form method="post" action="{self.target}/api/session/revoke-all">'
            '<input type="hidden" name="x" value="1"><button>Win a prize</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_site(stack: Any) -> Iterator[str]:
    handler = type("Handler", (_OtherSite,), {"target": stack.hosting_url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


READ = """async (url) => {
  try { const r = await fetch(url, { credentials: "include" }); return "read " + (await r.text()); }
  catch (e) { return "blocked"; }
}"""
CHANGE = """async (url) => {
  try {
    const r = await fetch(url, { method: "POST", credentials: "include",
      headers: { "Content-Type": "application/json" }, body: "{}" });
    return "answered " + r.status;
  } catch (e) { return "blocked"; }
}"""
BLIND_CHANGE = """async (url) => {
  await fetch(url, { method: "POST", mode: "no-cors", credentials: "include", body: "{}" });
  return "sent";
}"""


def test_a_page_of_another_origin_can_neither_change_nor_read_anything(
    stack: Any, web: Web, other_site: str
) -> None:
    patient = create_user(stack, Role.PATIENT)
    web.sign_in(patient)
    other = web.context.new_page()
    other.goto(other_site + "/")
    api = stack.hosting_url + "/api"
    # Same site (another port of 127.0.0.1), so even SameSite=Strict sends the cookie: the
    # Origin check, the CSRF token and CORS are what stand in the way.
    assert other.evaluate(READ, api + "/session") == "blocked"
    assert other.evaluate(CHANGE, api + "/session/revoke-all") == "blocked"
    assert other.evaluate(BLIND_CHANGE, api + "/session/revoke-all") == "sent"
    other.get_by_role("button", name="Win a prize").click()
    expect(other.locator("body")).to_contain_text("origin_not_allowed")
    web.shot("other-origin-refused", other)
    other.close()

    page = web.page
    # Even on the front end's own origin, a change without the session's CSRF token is refused.
    assert page.evaluate(CHANGE, "/api/session/revoke-all") == "answered 403"
    page.reload()  # still signed in: nothing above ended the session
    expect(page.locator("#who-text")).to_contain_text(patient.email)
    web.sign_out()


def test_sessions_revoked_in_another_tab_send_this_tab_to_sign_in(
    stack: Any, admin: Api, web: Web
) -> None:
    approved_doctor(stack, admin)  # someone to look for
    patient = create_user(stack, Role.PATIENT)
    web.sign_in(patient)
    second = web.open()  # the same browser's other tab: already signed in
    expect(second.locator("#who-text")).to_contain_text(patient.email)
    second.get_by_role("button", name="Sign out everywhere").click()
    expect(second.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(second.locator("#status")).to_contain_text("on every device")
    web.shot("signed-out-everywhere", second)
    second.close()

    page = web.page
    page.get_by_role("button", name="Show free times").click()  # the session is gone: 401
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#error")).to_have_text("Your session has ended. Please sign in again.")
    web.shot("session-ended")


# -- one browser, several people; local days; payments that do not go straight through -------


def _end_the_session_elsewhere(web: Web) -> None:
    """The same browser's other tab signs out everywhere: this tab's session has ended, and it
    learns so at its next call."""
    second = web.open()
    second.get_by_role("button", name="Sign out everywhere").click()
    expect(second.get_by_role("heading", name="Sign in")).to_be_visible()
    second.close()


def _nothing_of_anyone_before(page: Page) -> None:
    """A patient just signed in sees only their own (empty) page."""
    expect(page.locator("#my-appointments")).to_have_text("No appointments yet.")
    expect(page.locator("#appointment")).to_be_hidden()
    expect(page.locator("#receipt")).to_be_hidden()
    expect(page.get_by_role("button", name="Pay with PayPal")).to_be_hidden()
    expect(page.get_by_role("button", name="Cancel appointment")).to_be_hidden()
    expect(page.locator("#slots li")).to_have_count(0)


def test_the_next_person_on_a_shared_browser_sees_nothing_of_the_last(
    stack: Any, admin: Api, web: Web
) -> None:
    page = web.page
    # A doctor's day, then Sign out: the next doctor on this browser sees none of it.
    _, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Shared", "20.00")
    patient_name = f"Siti {uuid.uuid4().hex[:6]}"
    api = bearer(stack, patient)
    api.request("PATCH", "/users/me", json={"displayName": patient_name}).raise_for_status()
    start = slot_in(30)
    booked = api.post("/appointments", json={"doctorUid": doctor.uid, "start": start})
    assert booked.status_code == 201, booked.text
    web.sign_in(doctor)
    page.locator("#doctor").get_by_label("Day", exact=True).fill(start[:10])
    page.get_by_role("button", name="Show the day").click()
    expect(page.locator("#day-list")).to_contain_text(patient_name)
    web.sign_out()
    expect(page.locator("#day-list li")).to_have_count(0)
    web.sign_in(approved_doctor(stack, admin)[0])
    expect(page.locator("#day-list li")).to_have_count(0)
    expect(page.locator("#doctor")).not_to_contain_text(patient_name)
    web.sign_out()

    # A patient's session ends (another tab) while their appointment is on the page: the 401
    # takes it away, and the next patient signing in sees none of it.
    first = create_user(stack, Role.PATIENT)
    web.sign_in(first)
    _book_on_the_page(web, doctor, 2, "09:00")
    expect(page.get_by_role("button", name="Pay with PayPal")).to_be_visible()
    _end_the_session_elsewhere(web)
    page.get_by_role("button", name="Search doctors").click()  # 401
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#error")).to_have_text("Your session has ended. Please sign in again.")
    expect(page.locator("#email")).to_be_focused()
    web.shot("session-ended-nothing-left")
    web.sign_in(create_user(stack, Role.PATIENT))
    _nothing_of_anyone_before(page)

    # Sign out after the session ended elsewhere: signed out all the same, nothing left.
    _book_on_the_page(web, doctor, 2, "09:30")
    _end_the_session_elsewhere(web)
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Signed out.")
    expect(page.locator("#error")).to_have_text("")
    web.sign_in(create_user(stack, Role.PATIENT))
    _nothing_of_anyone_before(page)
    web.sign_out()


def test_cancelling_an_unpaid_appointment_shows_no_other_appointments_receipt(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    _, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Receipt", "25.00")
    api = bearer(stack, patient)
    unpaid = api.post("/appointments", json={"doctorUid": doctor.uid, "start": slot_in(50)})
    assert unpaid.status_code == 201, unpaid.text
    paid = api.post("/appointments", json={"doctorUid": doctor.uid, "start": slot_in(75)})
    assert paid.status_code == 201, paid.text
    made = api.post("/paypal-create", json={"appointmentId": paid.json()["id"]})
    sim.approve({"links": [{"rel": "approve", "href": made.json()["approveLink"]}]})
    assert api.post("/paypal-capture", json={"orderId": made.json()["id"]}).status_code == 200

    web.sign_in(patient)
    page = web.page
    mine = page.locator("#my-appointments")
    expect(mine.locator("li")).to_have_count(2)
    mine.locator("li").nth(0).get_by_role("button", name=re.compile("^Show ")).click()
    expect(page.locator("#receipt-details")).to_contain_text("captured")
    expect(page.locator("#receipt-details")).to_contain_text(made.json()["id"])

    mine.locator("li").nth(1).get_by_role("button", name=re.compile("^Cancel ")).click()
    expect(page.locator("#status")).to_contain_text("Appointment cancelled")
    expect(page.locator("#appointment-details")).to_contain_text("cancelled")
    expect(page.locator("#receipt")).to_be_hidden()  # the unpaid one has none
    web.shot("cancelled-unpaid-no-receipt")
    web.sign_out()


@pytest.mark.parametrize(
    ("zone", "at"),
    [("Asia/Jakarta", "02:00"), ("America/Los_Angeles", "22:00")],
)
def test_days_and_times_are_the_users_local_ones(
    stack: Any, admin: Api, browser: Browser, zone: str, at: str
) -> None:
    """A day picked on the page is the person's local day (its free times from 00:00 to 23:30
    local, the doctor's day the same), shown in local time, and today is their today: at
    02:00 in Jakarta, or 22:00 in Los Angeles, the UTC date is another one."""
    from zoneinfo import ZoneInfo

    local = ZoneInfo(zone)
    _, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Local", "20.00")
    context = browser.new_context(timezone_id=zone, viewport={"width": 960, "height": 720})
    try:
        web = Web(context, stack.hosting_url, f"local-{zone.rsplit('/', 1)[1].lower()}")
        page = web.page
        today = datetime.now(local).date()
        day = today + timedelta(days=3)
        web.sign_in(patient)
        view = page.locator("#patient")
        # The view has loaded (its last list answered), as a person sees before choosing. A
        # choice made while it still loads is kept all the same: the tests of held answers
        # below (test_a_search_made_while_the_directory_loads_... and the next ones) prove it.
        expect(page.locator("#my-appointments li").first).to_be_visible()
        expect(view.get_by_label("Day", exact=True)).to_have_value(today.isoformat())
        view.get_by_label("Doctor").select_option(doctor.uid)
        view.get_by_label("Day", exact=True).fill(day.isoformat())
        page.get_by_role("button", name="Show free times").click()
        slots = page.locator("#slots li")
        expect(slots.first).to_have_text("Book 00:00")
        expect(slots.last).to_have_text("Book 23:30")
        web.shot("local-free-times")
        page.get_by_role("button", name=f"Book {at}").click()
        details = page.locator("#appointment-details")
        expect(details).to_contain_text("pending payment")
        expect(details).to_contain_text(f"{day.day} {day:%b %Y}, {at}")
        hour, minute = map(int, at.split(":"))
        expected = datetime(day.year, day.month, day.day, hour, minute, tzinfo=local)
        mine = bearer(stack, patient).get("/appointments").json()["items"]
        assert [datetime.fromisoformat(a["start"]) for a in mine] == [expected], mine
        web.sign_out()

        web.sign_in(doctor)
        view = page.locator("#doctor")
        expect(view.get_by_label("Day", exact=True)).to_have_value(today.isoformat())
        view.get_by_label("Day", exact=True).fill(day.isoformat())
        page.get_by_role("button", name="Show the day").click()
        expect(page.locator("#day-list")).to_contain_text(f"{at}: pending payment")
        expect(page.locator("#status")).to_have_text(f"Appointments on {day.isoformat()}: 1.")
        web.shot("local-day")
        web.sign_out()
        assert web.unexpected_errors == []
    finally:
        context.close()


class _Held:
    """The answers to the browser's requests that `wanted` picks, held until the test lets
    them go: each is asked of the server at once (it says how things stood then) and reaches
    the page only when released, so loading is slow, and answers come out of order, at will."""

    def __init__(self, page: Page, wanted: Any, count: int = 1) -> None:
        self.page = page
        self.wanted = wanted
        self.left = count  # how many more to hold; later ones go through
        self.routes: list[tuple[Any, Any]] = []
        page.route("**/api/**", self._route)

    def _route(self, route: Any) -> None:
        if self.left > 0 and self.wanted(route.request):
            self.left -= 1
            self.routes.append((route, route.fetch()))
        else:
            route.fallback()

    def wait(self, n: int = 1) -> None:
        """Until `n` requests are held (the page has asked)."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while len(self.routes) < n:
            assert time.monotonic() < deadline, f"{len(self.routes)} of {n} requests held"
            self.page.wait_for_timeout(20)

    def release(self) -> None:
        for route, answer in self.routes:
            route.fulfill(response=answer)
        self.routes.clear()


def _asks(path: str, **query: str) -> Any:
    """A GET of the API's `path` (as /api/<function>/... is rewritten) with these parameters."""
    from urllib.parse import parse_qs, urlsplit

    def wanted(request: Any) -> bool:
        url = urlsplit(request.url)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        return (
            request.method == "GET"
            and url.path == "/api" + path
            and all(params.get(k) == v for k, v in query.items())
        )

    return wanted


def _loaded(page: Page) -> None:
    """The view has finished loading: the sign-in's run (the view's loaders) has ended."""
    expect(page.locator("#sign-in-form button")).to_be_enabled()


def test_a_search_made_while_the_directory_loads_is_not_redrawn_by_its_first_page(
    stack: Any, admin: Api, web: Web
) -> None:
    specialty = f"sp-{uuid.uuid4().hex[:8]}"
    sought = _listed_doctor(stack, admin, f"Dr Sought {specialty}", specialty, "30.00")
    _listed_doctor(stack, admin, f"Dr Other {uuid.uuid4().hex[:6]}", "general", "30.00")
    page = web.page
    first_page = _Held(page, _asks("/users/directory/doctors", limit="10"))
    web.sign_in(create_user(stack, Role.PATIENT))
    first_page.wait()  # the view's first page of the directory has not answered yet
    page.locator("#find-doctors-form").get_by_label("Specialty").fill(specialty)
    page.get_by_role("button", name="Search doctors").click()
    doctors = page.locator("#pick-doctor option")
    expect(doctors).to_have_count(1)
    page.locator("#patient").get_by_label("Doctor").select_option(sought.uid)
    first_page.release()  # the first page answers last
    _loaded(page)
    expect(page.locator("#doctors-found")).to_have_text("1 doctor shown.")
    expect(doctors).to_have_count(1)
    expect(page.locator("#patient").get_by_label("Doctor")).to_have_value(sought.uid)
    web.shot("search-kept")
    web.sign_out()
    assert web.unexpected_errors == []


def test_a_booking_made_while_the_appointments_load_is_not_hidden_by_their_late_answer(
    stack: Any, admin: Api, web: Web
) -> None:
    _, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Late", "20.00")
    page = web.page
    first_list = _Held(page, _asks("/appointments", limit="10"))
    web.sign_in(patient)
    first_list.wait()  # the patient's appointments, asked before they booked, not answered
    _book_on_the_page(web, doctor, 3, "10:00")
    mine = page.locator("#my-appointments")
    expect(mine).to_contain_text("pending payment")
    first_list.release()  # the list as it was before the booking answers last
    _loaded(page)
    expect(mine.locator("li")).to_have_count(1)
    expect(mine).to_contain_text("pending payment")
    web.shot("booking-kept")
    web.sign_out()
    assert web.unexpected_errors == []


def test_free_times_asked_for_a_day_no_longer_chosen_are_not_shown(
    stack: Any, admin: Api, web: Web
) -> None:
    _, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Slow", "20.00")
    page = web.page
    web.sign_in(patient)
    _loaded(page)
    view = page.locator("#patient")
    first, second = ((datetime.now(UTC) + timedelta(days=n)).date() for n in (2, 3))
    view.get_by_label("Doctor").select_option(doctor.uid)
    view.get_by_label("Day", exact=True).fill(first.isoformat())
    held = _Held(page, lambda r: r.method == "GET" and "/slots" in r.url)
    show = page.get_by_role("button", name="Show free times")
    show.click()
    held.wait()
    view.get_by_label("Day", exact=True).fill(second.isoformat())  # chosen while it loads
    held.release()  # the free times of the day no longer chosen answer
    expect(show).to_be_enabled()  # that answer has been handled
    expect(page.locator("#slots li")).to_have_count(0)
    show.click()
    expect(page.locator("#slots li").first).to_have_text("Book 00:00")
    page.get_by_role("button", name="Book 10:00").click()
    details = page.locator("#appointment-details")
    expect(details).to_contain_text(f"{second.day} {second:%b %Y}, 10:00")
    web.shot("the-day-chosen")
    web.sign_out()
    assert web.unexpected_errors == []


# Each answer the page reads is noted (window.__read, by address) once everything its reading
# set going has run: the microtasks after it (the app's awaits, its drawing) all run before the
# timer's task does. A test knows so that an answer has been handled, even when it shows nothing.
_NOTE_READS = """() => {
  window.__read = [];
  for (const how of ["json", "text"]) {
    const read = Response.prototype[how];
    Response.prototype[how] = function () {
      const url = this.url;
      return read.call(this).then((body) => {
        setTimeout(() => window.__read.push(url));
        return body;
      });
    };
  }
}"""


def test_services_asked_for_a_clinic_no_longer_chosen_are_not_shown(
    stack: Any, admin: Api, web: Web
) -> None:
    first = _listed(stack, admin, Role.CLINIC, f"Klinik First {uuid.uuid4().hex[:6]}")
    made = bearer(stack, first).request("PUT", "/bookings/clinics/me", json=clinic_setup("UTC"))
    assert made.status_code == 200, made.text
    second = _listed(stack, admin, Role.CLINIC, f"Klinik Second {uuid.uuid4().hex[:6]}")
    page = web.page
    web.sign_in(create_user(stack, Role.PATIENT))
    _loaded(page)
    page.evaluate(_NOTE_READS)
    services = f"/bookings/clinics/{first.uid}"
    held = _Held(page, _asks(services))
    view = page.locator("#patient")
    view.get_by_label("Clinic", exact=True).select_option(first.uid)
    held.wait()
    view.get_by_label("Clinic", exact=True).select_option(second.uid)  # chosen while it loads
    expect(page.locator("#status")).to_have_text("This clinic does not take bookings yet.")
    held.release()  # the first clinic's services answer last
    page.wait_for_function("(path) => window.__read.some((u) => u.endsWith(path))", arg=services)
    expect(page.locator("#pick-service option")).to_have_count(0)
    expect(page.locator("#status")).to_have_text("This clinic does not take bookings yet.")
    view.get_by_label("Clinic", exact=True).select_option(first.uid)
    expect(view.get_by_label("Service")).to_contain_text("General check-up (12.50 USD)")
    web.shot("services-of-the-clinic-chosen")
    web.sign_out()
    # Chromium logs the 404 of the clinic that takes no bookings (how the page learns so).
    assert [e for e in web.unexpected_errors if f"/bookings/clinics/{second.uid}'" not in e] == []


def test_a_doctors_day_shows_every_appointment_and_people_without_names_humanely(
    stack: Any, admin: Api, web: Web
) -> None:
    doctor, _ = approved_doctor(stack, admin)
    patient = create_user(stack, Role.PATIENT)  # no name given
    api = bearer(stack, patient)
    day = (datetime.now(UTC) + timedelta(days=4)).date().isoformat()
    starts = [f"{day}T{h:02d}:{m:02d}:00Z" for h in range(12) for m in (0, 30)][:23]
    for start in starts:  # more than one page of the list (20)
        booked = api.post("/appointments", json={"doctorUid": doctor.uid, "start": start})
        assert booked.status_code == 201, booked.text
    web.sign_in(doctor)
    page = web.page
    page.locator("#doctor").get_by_label("Day", exact=True).fill(day)
    page.get_by_role("button", name="Show the day").click()
    listed = page.locator("#day-list li")
    expect(listed).to_have_count(len(starts))
    expect(page.locator("#status")).to_have_text(f"Appointments on {day}: {len(starts)}.")
    expect(listed.first).to_have_text("00:00: pending payment (patient without a name)")
    expect(listed.last).to_contain_text("11:00: pending payment")
    expect(page.locator("#day-list")).not_to_contain_text(patient.uid)
    web.shot("full-day")
    web.sign_out()


def _pay_and_approve(web: Web, amount: str) -> None:
    page = web.page
    page.get_by_role("button", name="Pay with PayPal").click()
    expect(page.locator("body")).to_contain_text(f"Pay {amount} to Alo Doktor")
    page.get_by_role("button", name="Approve").click()


def test_a_capture_paypal_fails_is_kept_tried_again_and_survives_a_reload(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    _, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Retry", "30.00")
    web.sign_in(patient)
    page = web.page
    _book_on_the_page(web, doctor, 2, "13:00")
    sim.fault(mock="INTERNAL_SERVER_ERROR", pathContains="/capture", count=1000)
    _pay_and_approve(web, "30.00 USD")
    error = page.locator("#error")
    expect(error).to_contain_text("PayPal is not answering right now")
    expect(error).not_to_contain_text("paypal_unavailable")
    expect(page).to_have_url(re.compile(r"/\?paypal=return&order="))  # kept to capture
    web.shot("capture-failed")
    page.reload()  # tries the capture again
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(error).to_contain_text("PayPal is not answering right now")
    sim.control("DELETE", "/faults")  # PayPal is back
    again = page.get_by_role("button", name="Try the payment again")
    expect(again).to_be_visible()  # once the Retry-After has passed
    again.click()
    expect(page.locator("#status")).to_have_text("Payment received: your appointment is confirmed.")
    expect(page.locator("#receipt-details")).to_contain_text("captured")
    expect(again).to_be_hidden()
    expect(page).to_have_url(web.base + "/")
    web.shot("captured-on-retry")
    web.sign_out()


def test_pay_on_an_order_approved_before_captures_it_instead_of_sending_to_paypal(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    name, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Approved", "35.00")
    web.sign_in(patient)
    page = web.page
    _book_on_the_page(web, doctor, 2, "14:00")
    sim.fault(mock="INTERNAL_SERVER_ERROR", pathContains="/capture", count=1000)
    _pay_and_approve(web, "35.00 USD")
    expect(page.locator("#error")).to_contain_text("PayPal is not answering right now")
    sim.control("DELETE", "/faults")
    page.goto(web.base + "/")  # the buyer leaves, and comes back later
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    page.get_by_role("button", name=re.compile(rf"^Pay for .* with {re.escape(name)}$")).click()
    expect(page.locator("#status")).to_have_text("Payment received: your appointment is confirmed.")
    expect(page).to_have_url(web.base + "/")  # never sent to PayPal's window again
    expect(page.locator("#receipt-details")).to_contain_text("35.00 USD")
    web.sign_out()


def test_a_declined_payment_method_sends_the_buyer_back_to_paypal_to_choose_another(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    _, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Declined", "40.00")
    web.sign_in(patient)
    page = web.page
    details = _book_on_the_page(web, doctor, 2, "15:00")
    sim.fault(mock="INSTRUMENT_DECLINED", pathContains="/capture")
    _pay_and_approve(web, "40.00 USD")
    expect(page.locator("#error")).to_have_text(
        "Your payment method was declined; choose another in PayPal."
    )
    expect(details).to_contain_text("pending payment")
    web.shot("declined")
    other = page.get_by_role("button", name="Choose another way to pay in PayPal")
    expect(other).to_be_focused()
    other.click()
    # PayPal's window asks again (the order is approved, its funding source declined).
    expect(page.locator("body")).to_contain_text("Pay 40.00 USD to Alo Doktor")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#status")).to_have_text("Payment received: your appointment is confirmed.")
    expect(details).to_contain_text("confirmed")
    web.sign_out()


def test_a_capture_paypal_holds_shows_payment_pending_and_no_second_payment(
    stack: Any, admin: Api, sim: Sim, web: Web
) -> None:
    name, doctor, patient = _named_doctor_and_patient(stack, admin, "Dr Pending", "45.00")
    web.sign_in(patient)
    page = web.page
    details = _book_on_the_page(web, doctor, 2, "16:00")
    sim.control("POST", "/captures/pending", json={"count": 1})  # an eCheck
    _pay_and_approve(web, "45.00 USD")
    expect(page.locator("#status")).to_contain_text("Payment pending")
    expect(details).to_contain_text("payment pending")
    expect(page.locator("#receipt-details")).to_contain_text("payment pending")
    expect(page.locator("#receipt-details")).not_to_contain_text("capture_pending")
    expect(page.get_by_role("button", name="Pay with PayPal")).to_be_hidden()
    mine = page.locator("#my-appointments li").first
    expect(mine).to_contain_text(f"with {name}: payment pending")
    expect(mine.get_by_role("button", name=re.compile("^Pay for "))).to_have_count(0)
    web.sign_out()


def test_a_wrong_password_is_said_plainly(stack: Any, web: Web) -> None:
    patient = create_user(stack, Role.PATIENT)
    page = web.page
    form = page.locator("#sign-in")
    form.get_by_label("E-mail").fill(patient.email)
    form.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("#error")
    expect(error).to_have_text("Wrong e-mail or password. Check them and try again.")
    expect(error).not_to_contain_text("Firebase")
    web.shot("wrong-password")
    web.sign_in(patient)  # the right one works
    expect(error).to_have_text("")
    expect(page.get_by_role("heading", name="Book a doctor")).to_be_focused()
    web.sign_out()


def test_a_return_address_that_fails_still_leaves_a_ready_page(stack: Any, web: Web) -> None:
    """Back from PayPal with an order that cannot be shown (not this patient's, or gone): the
    failure is said and the page is ready all the same."""
    web.sign_in(create_user(stack, Role.PATIENT))
    page = web.page
    page.goto(web.base + "/?paypal=cancel&order=appointment_nosuchthing")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator("#error")).not_to_have_text("")
    expect(page.get_by_role("heading", name="Book a doctor")).to_be_visible()
    web.sign_out()


def test_an_invalid_field_is_named_by_its_label(stack: Any, admin: Api, sim: Sim, web: Web) -> None:
    doctor, _patient, start = _paid_visit(stack, admin, sim)
    at = start[11:16]
    web.sign_in(doctor)
    page = web.page
    view = page.locator("#doctor")
    view.get_by_label("Day", exact=True).fill(start[:10])
    page.get_by_role("button", name="Show the day").click()
    page.get_by_role("button", name=f"Write prescription for {at}").click()
    for label, key in (
        ("Medication", "medication"),
        ("Strength", "strength"),
        ("Dose", "dose"),
        ("How often", "frequency"),
        ("Quantity", "quantity"),
    ):
        view.get_by_label(label, exact=True).fill(str(PRESCRIPTION_ITEM[key]))
    view.get_by_label("For how many days", exact=True).fill("400")  # more than a year
    page.get_by_role("button", name="Write prescription", exact=True).click()
    error = page.locator("#error")
    expect(error).to_contain_text("Please check For how many days")
    expect(error).not_to_contain_text("validation_failed")
    web.shot("invalid-field")
    web.sign_out()
