/**
 * The reference web app: one page, one view per role, every call through the typed client.
 *
 * Sign-in: the Firebase JS SDK signs in (the Auth emulator locally, as /__/firebase/init.json
 * says) and its ID token is exchanged for the HttpOnly `__session` cookie at POST /api/session;
 * the SDK keeps nothing (in-memory persistence, signed out at once). After a reload the session
 * is found again with GET /api/session, which also gives back the CSRF token. Any 401 (the
 * session ended in another tab, was revoked or timed out) brings the sign-in form back.
 */
import { initializeApp } from "firebase/app";
import {
  connectAuthEmulator,
  getAuth,
  inMemoryPersistence,
  setPersistence,
  signInWithEmailAndPassword,
  signOut as firebaseSignOut,
} from "firebase/auth";
import {
  ApiError,
  createBackend,
  IDEMPOTENCY_HEADER,
  newIdempotencyKey,
  type paths,
  type Schemas,
  type Session,
} from "../../clients/web/src/index";

type Appointment = Schemas["Appointments_AppointmentOut"];
type Order = Schemas["Payments_OrderView"];
type Prescription = Schemas["Prescriptions_PrescriptionOut"];
type Booking = Schemas["Bookings_BookingView"];
type Account = Schemas["AdminUsers_ProfileView"];
type Listing = Schemas["Users_PublicListing"];
type DoseForm = Schemas["Prescriptions_Item"]["form"];

const VIEWS = ["sign-in", "patient", "doctor", "pharmacy", "clinic", "admin"] as const;
type View = (typeof VIEWS)[number];

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`#${id} is missing`);
  return found as T;
}

function el(tag: string, text?: string, attrs: Record<string, string> = {}): HTMLElement {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function button(label: string, onClick: () => Promise<void>, attrs: Record<string, string> = {}) {
  const b = el("button", label, { type: "button", ...attrs }) as HTMLButtonElement;
  b.addEventListener("click", () => void run(onClick, [b]));
  return b;
}

/** "1 free time", "2 free times". */
const count = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

function li(text: string, ...children: HTMLElement[]): HTMLElement {
  const item = el("li", text);
  item.append(...children);
  return item;
}

function details(target: HTMLElement, rows: [string, string][]): void {
  target.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
}

const money = (m: Record<string, string> | null | undefined): string =>
  m ? `${m.value ?? ""} ${m.currency ?? ""}`.trim() : "-";
const when = (iso: string): string =>
  new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
const time = (iso: string): string =>
  new Date(iso).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
const today = (): string => new Date().toISOString().slice(0, 10);

function say(message: string): void {
  $("status").textContent = message;
  $("error").textContent = "";
}

function fail(message: string): void {
  $("error").textContent = message;
}

// Any 401 (the session ended in another tab, was revoked, or timed out): back to sign-in.
const api = createBackend({ onUnauthenticated: () => show("sign-in") });

/** Runs an action, showing a failure the way a user can read it. The controls that started it
 * are disabled until it ends: a double-click, or Enter pressed twice, sends one request. */
async function run(action: () => Promise<void>, controls: HTMLButtonElement[] = []): Promise<void> {
  if (controls.some((c) => c.disabled)) return;
  for (const c of controls) c.disabled = true;
  try {
    await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      show("sign-in");
      fail("Your session has ended. Please sign in again.");
      return;
    }
    fail(error instanceof ApiError ? `${error.message} (${error.code})` : String(error));
  } finally {
    for (const c of controls) c.disabled = false;
  }
}

function show(view: View, session?: Session): void {
  for (const v of VIEWS) $(v).hidden = v !== view;
  $("who").hidden = session === undefined;
  $("who-text").textContent = session ? `${session.email ?? session.uid} (${session.role})` : "";
}

// -- sign-in ------------------------------------------------------------------------------

interface FirebaseInit {
  apiKey: string;
  authDomain: string;
  projectId: string;
  authEmulatorUrl?: string;
}

async function firebaseAuth() {
  const init = (await (await fetch("/__/firebase/init.json")).json()) as FirebaseInit;
  const auth = getAuth(initializeApp(init));
  if (init.authEmulatorUrl) connectAuthEmulator(auth, init.authEmulatorUrl, { disableWarnings: true });
  await setPersistence(auth, inMemoryPersistence);
  return auth;
}

async function signIn(email: string, password: string): Promise<void> {
  const auth = await firebaseAuth();
  const credential = await signInWithEmailAndPassword(auth, email, password);
  const session = await api.signIn(await credential.user.getIdToken());
  await firebaseSignOut(auth); // the session cookie is the credential from here on
  ($("password") as HTMLInputElement).value = "";
  await enter(session);
}

async function enter(session: Session): Promise<void> {
  show(session.role as View, session);
  say(`Signed in as ${session.email ?? session.uid}.`);
  const loaders: Partial<Record<View, () => Promise<void>>> = {
    patient: loadPatientView,
    pharmacy: loadPrescriptions,
    clinic: () => loadRequests(session.uid),
    admin: loadPendingDoctors,
  };
  clinicUid = session.uid;
  try {
    await loaders[session.role as View]?.();
  } finally {
    // A buyer back from PayPal learns what became of the payment even when a part of the
    // page could not be loaded.
    if (session.role === "patient" && paypalBack !== null) {
      const back = paypalBack;
      paypalBack = null;
      await backFromPayPal(back);
    }
  }
}

// -- patient ------------------------------------------------------------------------------

let appointment: Appointment | null = null;
let order: Order | null = null;

const DOCTORS_PER_PAGE = 10;
type DoctorQuery = NonNullable<paths["/users/directory/doctors"]["get"]["parameters"]["query"]>;
let doctorQuery: DoctorQuery = {};
let doctorsCursor: string | null = null;
/** Doctors' names by uid, from every directory page seen. */
const doctorNames = new Map<string, string>();

const doctorName = (uid: string): string => doctorNames.get(uid) ?? "a doctor";

/** The search form's filters (empty fields filter nothing). */
function doctorFilters(): DoctorQuery {
  const field = (id: string) => $<HTMLInputElement>(id).value.trim();
  const query: DoctorQuery = { limit: DOCTORS_PER_PAGE };
  const specialty = field("find-specialty").toLowerCase();
  const language = field("find-language").toLowerCase();
  const maxPrice = field("find-max-price");
  if (specialty) query.specialty = specialty;
  if (language) query.language = language;
  if (maxPrice) {
    query.maxPrice = maxPrice;
    query.currency = $<HTMLSelectElement>("find-currency").value as DoctorQuery["currency"];
  }
  return query;
}

/** One page of the directory: the first (replacing the list) or the next (appended). */
async function loadDoctors(next = false): Promise<void> {
  if (!next) {
    doctorQuery = doctorFilters();
    doctorsCursor = null;
  }
  const query = { ...doctorQuery, ...(next && doctorsCursor ? { cursor: doctorsCursor } : {}) };
  const page = await api.call(api.client.GET("/users/directory/doctors", { params: { query } }));
  const options = page.items.map((d) => {
    const name = d.displayName ?? "Unnamed doctor";
    doctorNames.set(d.uid, name);
    const label = `${name}${d.specialty ? `, ${d.specialty}` : ""} (${money(d.consultationPrice)})`;
    return el("option", label, { value: d.uid });
  });
  const select = $<HTMLSelectElement>("pick-doctor");
  if (next) select.append(...options);
  else select.replaceChildren(...options);
  doctorsCursor = page.nextCursor ?? null;
  $("more-doctors").hidden = doctorsCursor === null;
  $("doctors-found").textContent = select.options.length
    ? `${count(select.options.length, "doctor")} shown${doctorsCursor ? "; more to see" : ""}.`
    : "No doctor matches.";
  const day = $<HTMLInputElement>("day");
  if (!day.value) day.value = today();
}

/** Names of doctors not seen yet: the directory, page by page (a few pages at most). */
async function learnDoctorNames(uids: string[]): Promise<void> {
  let cursor: string | null = null;
  for (let pages = 0; pages < 5 && uids.some((u) => !doctorNames.has(u)); pages++) {
    const query: DoctorQuery = { limit: 100, ...(cursor ? { cursor } : {}) };
    const page: Schemas["Users_Directory"] = await api.call(
      api.client.GET("/users/directory/doctors", { params: { query } }),
    );
    for (const d of page.items) doctorNames.set(d.uid, d.displayName ?? "Unnamed doctor");
    cursor = page.nextCursor ?? null;
    if (cursor === null) break;
  }
}

async function showSlots(): Promise<void> {
  const doctorUid = $<HTMLSelectElement>("pick-doctor").value;
  const day = $<HTMLInputElement>("day").value;
  const from = `${day}T00:00:00Z`;
  const to = new Date(Date.parse(from) + 86_400_000).toISOString();
  const found = await api.call(
    api.client.GET("/appointments/doctors/{uid}/slots", {
      params: { path: { uid: doctorUid }, query: { from, to } },
    }),
  );
  $("slots").replaceChildren(
    ...found.slots.map((slot) => li("", button(`Book ${time(slot)}`, () => book(doctorUid, slot)))),
  );
  say(found.slots.length ? `${count(found.slots.length, "free time")}.` : "No free times that day.");
}

async function book(doctorUid: string, start: string): Promise<void> {
  appointment = await api.call(api.client.POST("/appointments", { body: { doctorUid, start } }));
  order = null;
  $("slots").replaceChildren();
  $("receipt").hidden = true;
  renderAppointment();
  say("Booked. Pay to confirm the appointment.");
  await loadMyAppointments();
}

// -- patient: their appointments ------------------------------------------------------------

const APPOINTMENTS_PER_PAGE = 10;
let appointmentsCursor: string | null = null;
const PAYABLE: Appointment["status"][] = ["pending_payment"];
const CANCELLABLE: Appointment["status"][] = ["pending_payment", "confirmed"];

/** The patient's appointments, latest first: each with what can be done with it now. */
async function loadMyAppointments(next = false): Promise<void> {
  const query = {
    limit: APPOINTMENTS_PER_PAGE,
    ...(next && appointmentsCursor ? { cursor: appointmentsCursor } : {}),
  };
  const page = await api.call(api.client.GET("/appointments", { params: { query } }));
  await learnDoctorNames([...new Set(page.items.map((a) => a.doctorUid))]);
  const items = page.items.map((a) => {
    const what = `${when(a.start)} with ${doctorName(a.doctorUid)}`;
    const item = el("li", `${what}: ${a.status.replace("_", " ")} `);
    item.append(button("Show", () => showAppointment(a), { "aria-label": `Show ${what}` }));
    if (PAYABLE.includes(a.status)) {
      item.append(button("Pay", () => pay(a), { "aria-label": `Pay for ${what}` }));
    }
    if (CANCELLABLE.includes(a.status)) {
      item.append(
        button("Cancel", () => cancelAppointment(a), { "aria-label": `Cancel ${what}` }),
      );
    }
    return item;
  });
  const list = $("my-appointments");
  if (next) list.append(...items);
  else list.replaceChildren(...items);
  if (!next && items.length === 0) list.replaceChildren(el("li", "No appointments yet."));
  appointmentsCursor = page.nextCursor ?? null;
  $("more-appointments").hidden = appointmentsCursor === null;
}

async function showAppointment(a: Appointment): Promise<void> {
  appointment = a;
  order = null;
  $("receipt").hidden = true;
  await refreshAppointment();
  $("appointment").scrollIntoView({ block: "nearest" });
}

function renderAppointment(): void {
  if (appointment === null) return;
  $("appointment").hidden = false;
  details($("appointment-details"), [
    ["When", when(appointment.start)],
    ["Doctor", doctorName(appointment.doctorUid)],
    ["Status", appointment.status.replace("_", " ")],
    ["Price", money(appointment.price)],
  ]);
  $("pay").hidden = appointment.status !== "pending_payment";
  $("cancel-appointment").hidden = !["pending_payment", "confirmed"].includes(appointment.status);
}

/** To PayPal, as its checkout does: the buyer approves (or cancels) there and PayPal sends
 * them back to this page (`/?paypal=return|cancel&order=<id>`), which captures the order. */
async function pay(a: Appointment | null = appointment): Promise<void> {
  if (a === null) return;
  const made = await api.call(api.client.POST("/paypal-create", { body: { appointmentId: a.id } }));
  if (!made.approveLink) throw new Error("PayPal gave no page to approve the payment on.");
  say("Taking you to PayPal…");
  window.location.assign(made.approveLink);
}

interface PayPalBack {
  approved: boolean;
  orderId: string;
}

/** Set when PayPal sent the buyer back here; handled once the patient is signed in. */
let paypalBack: PayPalBack | null = null;

function fromPayPal(): PayPalBack | null {
  const q = new URLSearchParams(window.location.search);
  const kind = q.get("paypal");
  const orderId = q.get("order");
  if ((kind !== "return" && kind !== "cancel") || !orderId) return null;
  // Once read, the address is the start page again: a reload does not come back here.
  window.history.replaceState(null, "", "/");
  return { approved: kind === "return", orderId };
}

/** Back from PayPal: capture what the buyer approved and show the receipt, or say that
 * nothing was charged when they cancelled. */
async function backFromPayPal(back: PayPalBack): Promise<void> {
  const params = { path: { order_id: back.orderId } };
  order = back.approved
    ? await api.call(api.client.POST("/paypal-capture", { body: { orderId: back.orderId } }))
    : await api.call(api.client.GET("/payments/orders/{order_id}", { params }));
  if (order.kind === "appointment") {
    appointment = await api.call(
      api.client.GET("/appointments/{id}", { params: { path: { id: order.subjectId } } }),
    );
    await learnDoctorNames([appointment.doctorUid]);
  }
  if (back.approved) {
    await refreshAppointment();
    if (appointment === null) renderReceipt(order);
    say(
      order.status === "captured"
        ? `Payment received: your ${order.kind} is confirmed.`
        : `Payment ${order.status.replace("_", " ")}: we will confirm it when PayPal does.`,
    );
  } else {
    renderAppointment();
    say("Payment cancelled in PayPal: nothing was charged.");
  }
  await loadMyAppointments();
}

async function refreshAppointment(): Promise<void> {
  if (appointment === null) return;
  appointment = await api.call(
    api.client.GET("/appointments/{id}", { params: { path: { id: appointment.id } } }),
  );
  renderAppointment();
  const orderId = appointment.payment?.orderId ?? order?.id;
  if (orderId) {
    order = await api.call(
      api.client.GET("/payments/orders/{order_id}", { params: { path: { order_id: orderId } } }),
    );
    renderReceipt(order);
  }
}

function renderReceipt(o: Order): void {
  $("receipt").hidden = false;
  const rows: [string, string][] = [
    ["Order", o.id],
    ["Status", o.status],
    ["Amount", money(o.amount)],
    ["Paid", o.capturedAt ? when(o.capturedAt) : "-"],
    ["PayPal capture", o.captureId ?? "-"],
    ["Refunded", money(o.refunded)],
  ];
  for (const r of o.refunds ?? []) rows.push([`Refund (${r.cause})`, `${money(r.amount)} ${r.status}`]);
  details($("receipt-details"), rows);
}

async function cancelAppointment(a: Appointment | null = appointment): Promise<void> {
  if (a === null) return;
  appointment = await api.call(
    api.client.POST("/appointments/{id}/cancel", {
      params: { path: { id: a.id } },
      body: { reason: "Cancelled by the patient" },
    }),
  );
  await refreshAppointment();
  const refund = appointment.cancellation?.refund;
  say(`Appointment cancelled${refund ? `; refund: ${refund}` : ""}.`);
  await loadMyAppointments();
}

// -- doctor -------------------------------------------------------------------------------

let prescribingFor: Appointment | null = null;

async function showDay(): Promise<void> {
  const day = $<HTMLInputElement>("doctor-day").value || today();
  const from = `${day}T00:00:00Z`;
  const to = new Date(Date.parse(from) + 86_400_000).toISOString();
  const page = await api.call(api.client.GET("/appointments", { params: { query: { from, to } } }));
  $("day-list").replaceChildren(
    ...page.items.map((a) => {
      const item = el("li", `${time(a.start)}: ${a.status.replace("_", " ")} (${a.patientName ?? `patient ${a.patientUid}`}) `);
      if (a.status === "confirmed" || a.status === "completed") {
        item.appendChild(
          button("Write prescription", async () => startPrescription(a), {
            "aria-label": `Write prescription for ${time(a.start)}`,
          }),
        );
      }
      return item;
    }),
  );
  say(`Appointments on ${day}: ${page.items.length}.`);
}

/** One key per prescription being written: sending the form again (a double-click, a retry
 * after a lost answer) replays the first answer instead of writing a second prescription. */
let prescriptionKey: string | null = null;

function startPrescription(a: Appointment): void {
  if (prescribingFor?.id !== a.id) {
    $<HTMLFormElement>("prescription-form").reset();
    prescriptionKey = newIdempotencyKey();
  }
  prescribingFor = a;
  $("rx-for").textContent = time(a.start);
  $("prescription-form").hidden = false;
  $("rx-medication").focus();
}

function endPrescription(): void {
  prescribingFor = null;
  prescriptionKey = null;
  $<HTMLFormElement>("prescription-form").reset();
  $("prescription-form").hidden = true;
}

async function writePrescription(): Promise<void> {
  if (prescribingFor === null || prescriptionKey === null) return;
  const value = (id: string) => $<HTMLInputElement>(id).value;
  const written = await api.call(
    api.client.POST("/prescriptions", {
      headers: { [IDEMPOTENCY_HEADER]: prescriptionKey },
      body: {
        appointmentId: prescribingFor.id,
        items: [
          {
            medication: value("rx-medication"),
            strength: value("rx-strength"),
            form: $<HTMLSelectElement>("rx-form").value as DoseForm,
            dose: value("rx-dose"),
            frequency: value("rx-frequency"),
            durationDays: Number(value("rx-days")),
            quantity: Number(value("rx-quantity")),
          },
        ],
      },
    }),
  );
  endPrescription();
  say(`Prescription ${written.id} written (${written.status}).`);
}

// -- patient: prescriptions to a pharmacy, requests to a clinic ----------------------------

const placeName = (p: Listing): string => {
  const city = (p.address as { city?: string } | null | undefined)?.city;
  return `${p.name ?? p.displayName ?? p.uid}${city ? `, ${city}` : ""}`;
};

async function loadPatientView(): Promise<void> {
  await loadDoctors();
  const [pharmacies, clinics] = await Promise.all([
    api.call(api.client.GET("/users/directory/pharmacies", {})),
    api.call(api.client.GET("/users/directory/clinics", {})),
  ]);
  $("pick-pharmacy").replaceChildren(
    ...pharmacies.items.map((p) => el("option", placeName(p), { value: p.uid })),
  );
  // No clinic chosen at first: the patient picks one, and only then are its services asked for.
  $("pick-clinic").replaceChildren(
    el("option", "Choose a clinic", { value: "" }),
    ...clinics.items.map((c) => el("option", placeName(c), { value: c.uid })),
  );
  const day = $<HTMLInputElement>("clinic-day");
  if (!day.value) day.value = today();
  await Promise.all([loadMyAppointments(), loadMyPrescriptions(), loadServices()]);
}

const SENDABLE: Prescription["status"][] = ["issued", "rejected"];

/** The caller's prescriptions as "<medicines>: <status>", each with what `action` adds. */
async function listPrescriptions(
  listId: string,
  action: (p: Prescription, what: string) => HTMLElement | null,
): Promise<void> {
  const page = await api.call(api.client.GET("/prescriptions", {}));
  $(listId).replaceChildren(
    ...page.items.map((p) => {
      const what = p.items.map((i) => `${i.medication} ${i.strength}`).join(", ");
      const item = el("li", `${what}: ${p.status} `);
      const extra = action(p, what);
      if (extra) item.appendChild(extra);
      return item;
    }),
  );
}

async function loadMyPrescriptions(): Promise<void> {
  await listPrescriptions("my-prescriptions", (p, what) =>
    SENDABLE.includes(p.status)
      ? button("Send to the pharmacy", () => sendPrescription(p.id), {
          "aria-label": `Send ${what} to the pharmacy`,
        })
      : null,
  );
}

async function sendPrescription(id: string): Promise<void> {
  const select = $<HTMLSelectElement>("pick-pharmacy");
  const sent = await api.call(
    api.client.POST("/prescriptions/{id}/send", {
      params: { path: { id } },
      body: { pharmacyUid: select.value },
    }),
  );
  say(`Prescription ${sent.status} to ${select.selectedOptions[0]?.textContent ?? "the pharmacy"}.`);
  await loadMyPrescriptions();
}

async function loadServices(): Promise<void> {
  const uid = $<HTMLSelectElement>("pick-clinic").value;
  $("clinic-windows").replaceChildren();
  if (!uid) {
    $("pick-service").replaceChildren();
    return;
  }
  let clinic: Schemas["Bookings_ClinicView"];
  try {
    clinic = await api.call(
      api.client.GET("/bookings/clinics/{clinic_uid}", { params: { path: { clinic_uid: uid } } }),
    );
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    $("pick-service").replaceChildren();
    say("This clinic does not take bookings yet.");
    return;
  }
  $("pick-service").replaceChildren(
    ...clinic.services
      .filter((s) => s.active !== false)
      .map((s) => el("option", `${s.name} (${money(s.price)})`, { value: s.id })),
  );
}

async function showClinicWindows(): Promise<void> {
  const uid = $<HTMLSelectElement>("pick-clinic").value;
  const day = $<HTMLInputElement>("clinic-day").value;
  const open = await api.call(
    api.client.GET("/bookings/clinics/{clinic_uid}/windows", {
      params: { path: { clinic_uid: uid }, query: { day } },
    }),
  );
  $("clinic-windows").replaceChildren(
    ...open.windows.map((w) => {
      const places = w.free > 0 ? `${w.free} places left` : "full: you would wait for a place";
      return li(
        "",
        button(`Ask for ${time(w.start)} (${places})`, () => askClinic(uid, w.start), {
          "aria-label": `Ask for ${time(w.start)}`,
        }),
      );
    }),
  );
  say(open.windows.length ? `${count(open.windows.length, "clinic time")}.` : "No clinic times that day.");
}

async function askClinic(uid: string, windowStart: string): Promise<void> {
  const serviceId = $<HTMLSelectElement>("pick-service").value;
  const asked = await api.call(
    api.client.POST("/bookings", { body: { clinicUid: uid, serviceId, windowStart } }),
  );
  $("clinic-windows").replaceChildren();
  const place = asked.queuePosition ? `, number ${asked.queuePosition} in the queue` : "";
  say(`Asked the clinic for ${when(asked.windowStart)}: ${asked.status}${place}.`);
}

// -- pharmacy -----------------------------------------------------------------------------

const NEXT_STEP: Partial<Record<Prescription["status"], ["receive" | "ready" | "dispense", string]>> = {
  sent: ["receive", "Receive"],
  received: ["ready", "Mark ready"],
  ready: ["dispense", "Dispense"],
};

async function loadPrescriptions(): Promise<void> {
  await listPrescriptions("prescriptions", (p, what) => {
    const next = NEXT_STEP[p.status];
    return next
      ? button(next[1], () => step(p.id, next[0]), { "aria-label": `${next[1]} ${what}` })
      : null;
  });
}

async function step(id: string, move: "receive" | "ready" | "dispense"): Promise<void> {
  const path = `/prescriptions/{id}/${move}` as const;
  const moved = await api.call(api.client.POST(path, { params: { path: { id } } }));
  say(`Prescription ${moved.status}.`);
  await loadPrescriptions();
}

// -- clinic -------------------------------------------------------------------------------

let clinicUid = "";

async function loadRequests(uid: string): Promise<void> {
  const page = await api.call(
    api.client.GET("/bookings/clinics/{clinic_uid}/requests", {
      params: { path: { clinic_uid: uid } },
    }),
  );
  $("requests").replaceChildren(
    ...page.items.map((b: Booking) => {
      const what = `${b.serviceName} on ${when(b.windowStart)}`;
      const item = el("li", `${what}: ${b.status} `);
      if (b.status === "requested") {
        item.append(
          button("Accept", () => answer(b.id, true), { "aria-label": `Accept ${what}` }),
          button("Decline", () => answer(b.id, false), { "aria-label": `Decline ${what}` }),
        );
      }
      return item;
    }),
  );
  if (page.items.length === 0) say("No booking requests waiting.");
}

async function answer(id: string, accept: boolean): Promise<void> {
  const params = { path: { booking_id: id } };
  const answered = accept
    ? await api.call(api.client.POST("/bookings/{booking_id}/accept", { params }))
    : await api.call(
        api.client.POST("/bookings/{booking_id}/decline", {
          params,
          body: { reason: "No capacity that day" },
        }),
      );
  await loadRequests(clinicUid);
  say(`Booking ${answered.status}.`);
}

// -- admin --------------------------------------------------------------------------------

async function loadPendingDoctors(): Promise<void> {
  const emailPrefix = $<HTMLInputElement>("pending-email").value.trim();
  const query = { role: "doctor" as const, approved: false, ...(emailPrefix ? { emailPrefix } : {}) };
  const page = await api.call(api.client.GET("/admin-users", { params: { query } }));
  $("pending-doctors").replaceChildren(
    ...page.items.map((d: Account) => {
      const who = d.email ?? d.uid;
      const item = el("li", `${who} (licence ${d.licenseNumber ?? "-"}) `);
      item.appendChild(button("Approve", () => approve(d), { "aria-label": `Approve ${who}` }));
      return item;
    }),
  );
}

async function approve(d: Account): Promise<void> {
  await api.call(
    api.client.POST("/admin-users/{uid}/approval", {
      params: { path: { uid: d.uid } },
      body: { decision: "approve" },
    }),
  );
  $<HTMLInputElement>("audit-resource").value = `users/${d.uid}`;
  await loadPendingDoctors();
  say(`${d.email ?? d.uid} approved.`);
}

/** Account names by uid (an admin reads any profile); null for one that is not there. */
const accountNames = new Map<string, Promise<string | null>>();
const UID = /^[A-Za-z0-9]{20,128}$/; // Firebase uids; not "system", "test", "service:…"

function accountName(uid: string): Promise<string | null> {
  if (!UID.test(uid)) return Promise.resolve(null);
  let found = accountNames.get(uid);
  if (found === undefined) {
    found = api.client
      .GET("/users/{uid}", { params: { path: { uid } } })
      .then(({ data }) => (data ? `${data.displayName ?? data.email ?? uid} (${data.role})` : null))
      .catch(() => null);
    accountNames.set(uid, found);
  }
  return found;
}

/** "users/<uid> (Dr Name (doctor))": a resource that is an account, with its name. */
async function resourceLabel(resource: string): Promise<string> {
  const [collection, id] = resource.split("/");
  const name = collection === "users" && id ? await accountName(id) : null;
  return name ? `${resource} (${name})` : resource;
}

async function showAudit(): Promise<void> {
  const resource = $<HTMLInputElement>("audit-resource").value.trim();
  const page = await api.call(
    api.client.GET("/audit", { params: { query: resource ? { resource } : {} } }),
  );
  const lines = await Promise.all(
    page.items.map(async (e) => {
      const [what, who] = await Promise.all([resourceLabel(e.resource), accountName(e.actor)]);
      return el("li", `${when(e.at)}: ${e.action} ${what} by ${who ?? e.actor}`);
    }),
  );
  $("audit-entries").replaceChildren(...lines);
  say(`Audit entries: ${page.items.length}.`);
}

/** Seal what was written since the last checkpoint (admins may, besides the scheduler), then
 * verify the whole chain of checkpoints, batch by batch. */
async function verifyAudit(): Promise<void> {
  const sealed = await api.call(api.client.POST("/audit/seal", {}));
  let from = 1;
  let checkpoints = 0;
  let entries = 0;
  for (;;) {
    const v = await api.call(api.client.GET("/audit/verify", { params: { query: { from } } }));
    if (!v.ok) {
      $("audit-verdict").textContent = `Audit log broken at checkpoint ${v.brokenAt ?? "?"}: ${v.reason ?? ""}`;
      return;
    }
    checkpoints += v.count;
    entries += v.entries;
    if (v.next === null || v.next === undefined) break;
    from = v.next;
  }
  const just = sealed.created && sealed.checkpoint ? ` (checkpoint ${sealed.checkpoint.n} sealed now)` : "";
  $("audit-verdict").textContent = `Audit log verified: ${count(checkpoints, "checkpoint")} sealing ${count(entries, "entry", "entries")}${just}.`;
}

// -- wiring -------------------------------------------------------------------------------

function onSubmit(id: string, action: () => Promise<void>): void {
  const form = $<HTMLFormElement>(id);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void run(action, [...form.querySelectorAll("button")]);
  });
}

function onClick(id: string, action: () => Promise<void>): void {
  const control = $<HTMLButtonElement>(id);
  control.addEventListener("click", () => void run(action, [control]));
}

async function signOut(here = true): Promise<void> {
  if (here) await api.signOut();
  appointment = null;
  order = null;
  endPrescription();
  for (const id of ["appointment", "receipt"]) $(id).hidden = true;
  show("sign-in");
  say("Signed out.");
}

async function signOutEverywhere(): Promise<void> {
  const ended = await api.signOutEverywhere();
  await signOut(false);
  say(`Signed out of ${ended} sessions, on every device.`);
}

async function start(): Promise<void> {
  onSubmit("sign-in-form", () =>
    signIn($<HTMLInputElement>("email").value, $<HTMLInputElement>("password").value),
  );
  onClick("sign-out", () => signOut());
  onClick("sign-out-all", signOutEverywhere);
  onSubmit("find-doctors-form", () => loadDoctors());
  onClick("more-doctors", () => loadDoctors(true));
  onClick("more-appointments", () => loadMyAppointments(true));
  onSubmit("slots-form", showSlots);
  onSubmit("my-prescriptions-form", loadMyPrescriptions);
  onSubmit("clinic-form", showClinicWindows);
  $("pick-clinic").addEventListener("change", () => void run(loadServices));
  onClick("pay", () => pay());
  onClick("cancel-appointment", () => cancelAppointment());
  onSubmit("day-form", showDay);
  onSubmit("prescription-form", writePrescription);
  onClick("pharmacy-refresh", loadPrescriptions);
  onClick("clinic-refresh", () => loadRequests(clinicUid));
  onSubmit("pending-form", loadPendingDoctors);
  onSubmit("audit-form", showAudit);
  onClick("audit-verify", verifyAudit);
  $<HTMLInputElement>("doctor-day").value = today();
  paypalBack = fromPayPal();
  const session = await api.resume();
  if (session === null) {
    show("sign-in");
    if (paypalBack) say("Sign in to finish your payment.");
  } else await enter(session);
  document.body.dataset.ready = "true";
}

void run(start);
