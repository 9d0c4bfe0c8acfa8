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
import { ApiError, createBackend, type Schemas, type Session } from "../../clients/web/src/index";

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
  b.addEventListener("click", () => void run(onClick));
  return b;
}

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

/** Runs an action, showing a failure the way a user can read it. */
async function run(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      show("sign-in");
      fail("Your session has ended. Please sign in again.");
      return;
    }
    fail(error instanceof ApiError ? `${error.message} (${error.code})` : String(error));
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
  await loaders[session.role as View]?.();
}

// -- patient ------------------------------------------------------------------------------

let appointment: Appointment | null = null;
let order: Order | null = null;

async function loadDoctors(): Promise<void> {
  const page = await api.call(api.client.GET("/users/directory/doctors", {}));
  const select = $<HTMLSelectElement>("pick-doctor");
  select.replaceChildren(
    ...page.items.map((d) => {
      const label = `${d.displayName ?? d.uid}${d.specialty ? `, ${d.specialty}` : ""} (${money(d.consultationPrice)})`;
      return el("option", label, { value: d.uid });
    }),
  );
  const day = $<HTMLInputElement>("day");
  if (!day.value) day.value = today();
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
  say(found.slots.length ? `${found.slots.length} free times.` : "No free times that day.");
}

async function book(doctorUid: string, start: string): Promise<void> {
  appointment = await api.call(api.client.POST("/appointments", { body: { doctorUid, start } }));
  order = null;
  $("slots").replaceChildren();
  renderAppointment();
  say("Booked. Pay to confirm the appointment.");
}

function renderAppointment(): void {
  if (appointment === null) return;
  $("appointment").hidden = false;
  details($("appointment-details"), [
    ["When", when(appointment.start)],
    ["Status", appointment.status.replace("_", " ")],
    ["Price", money(appointment.price)],
  ]);
  $("pay").hidden = appointment.status !== "pending_payment";
  $("cancel-appointment").hidden = !["pending_payment", "confirmed"].includes(appointment.status);
}

async function pay(): Promise<void> {
  if (appointment === null) return;
  // PayPal's window opens on the click itself (a window opened after an await is blocked).
  const paypal = window.open("", "_blank");
  try {
    const made = await api.call(
      api.client.POST("/paypal-create", { body: { appointmentId: appointment.id } }),
    );
    order = made as Order;
    if (paypal && made.approveLink) paypal.location.href = made.approveLink;
  } catch (error) {
    paypal?.close();
    throw error;
  }
  $("complete-payment").hidden = false;
  say("Approve the payment in PayPal's window, then come back here.");
}

async function completePayment(): Promise<void> {
  if (appointment === null || order === null) return;
  await api.call(api.client.POST("/paypal-capture", { body: { orderId: order.id } }));
  $("complete-payment").hidden = true;
  await refreshAppointment();
  say("Payment received: your appointment is confirmed.");
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

async function cancelAppointment(): Promise<void> {
  if (appointment === null) return;
  appointment = await api.call(
    api.client.POST("/appointments/{id}/cancel", {
      params: { path: { id: appointment.id } },
      body: { reason: "Cancelled by the patient" },
    }),
  );
  await refreshAppointment();
  const refund = appointment.cancellation?.refund;
  say(`Appointment cancelled${refund ? `; refund: ${refund}` : ""}.`);
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
      const item = el("li", `${time(a.start)}: ${a.status.replace("_", " ")} (patient ${a.patientUid}) `);
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

function startPrescription(a: Appointment): void {
  prescribingFor = a;
  $("rx-for").textContent = time(a.start);
  $("prescription-form").hidden = false;
  $("rx-medication").focus();
}

async function writePrescription(): Promise<void> {
  if (prescribingFor === null) return;
  const value = (id: string) => $<HTMLInputElement>(id).value;
  const written = await api.call(
    api.client.POST("/prescriptions", {
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
  $("prescription-form").hidden = true;
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
  $("pick-clinic").replaceChildren(
    ...clinics.items.map((c) => el("option", placeName(c), { value: c.uid })),
  );
  const day = $<HTMLInputElement>("clinic-day");
  if (!day.value) day.value = today();
  await Promise.all([loadMyPrescriptions(), loadServices()]);
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
  const clinic = await api.call(
    api.client.GET("/bookings/clinics/{clinic_uid}", { params: { path: { clinic_uid: uid } } }),
  );
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
  say(open.windows.length ? `${open.windows.length} clinic times.` : "No clinic times that day.");
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

async function showAudit(): Promise<void> {
  const resource = $<HTMLInputElement>("audit-resource").value.trim();
  const page = await api.call(
    api.client.GET("/audit", { params: { query: resource ? { resource } : {} } }),
  );
  $("audit-entries").replaceChildren(
    ...page.items.map((e) =>
      el("li", `${when(e.at)}: ${e.action} ${e.resource} by ${e.actor}`),
    ),
  );
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
  $("audit-verdict").textContent = `Audit log verified: ${checkpoints} checkpoints sealing ${entries} entries${just}.`;
}

// -- wiring -------------------------------------------------------------------------------

function onSubmit(id: string, action: () => Promise<void>): void {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    void run(action);
  });
}

function onClick(id: string, action: () => Promise<void>): void {
  $(id).addEventListener("click", () => void run(action));
}

async function signOut(here = true): Promise<void> {
  if (here) await api.signOut();
  appointment = null;
  order = null;
  for (const id of ["appointment", "receipt", "prescription-form"]) $(id).hidden = true;
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
  onSubmit("slots-form", showSlots);
  onSubmit("my-prescriptions-form", loadMyPrescriptions);
  onSubmit("clinic-form", showClinicWindows);
  $("pick-clinic").addEventListener("change", () => void run(loadServices));
  onClick("pay", pay);
  onClick("complete-payment", completePayment);
  onClick("cancel-appointment", cancelAppointment);
  onSubmit("day-form", showDay);
  onSubmit("prescription-form", writePrescription);
  onClick("pharmacy-refresh", loadPrescriptions);
  onClick("clinic-refresh", () => loadRequests(clinicUid));
  onSubmit("pending-form", loadPendingDoctors);
  onSubmit("audit-form", showAudit);
  onClick("audit-verify", verifyAudit);
  $<HTMLInputElement>("doctor-day").value = today();
  const session = await api.resume();
  if (session === null) show("sign-in");
  else await enter(session);
  document.body.dataset.ready = "true";
}

void run(start);
