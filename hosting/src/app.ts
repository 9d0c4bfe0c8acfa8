/**
 * The reference web app: one page, one view per role, every call through the typed client.
 *
 * Sign-in: the Firebase JS SDK signs in (the Auth emulator locally, as /__/firebase/init.json
 * says) and its ID token is exchanged for the HttpOnly `__session` cookie at POST /api/session;
 * the SDK keeps nothing (in-memory persistence, signed out at once). After a reload the session
 * is found again with GET /api/session, which also gives back the CSRF token. Any 401 (the
 * session ended in another tab, was revoked or timed out) brings the sign-in form back.
 *
 * Whatever one person saw goes when their session does: signing out (whatever the API
 * answers), any 401, and every sign-in first clear every per-user view and state
 * (`forgetUser`), and an answer that arrives for a session that has ended is dropped.
 *
 * A choice made while the page loads is kept: each part of the page that a request fills (the
 * doctors, the free times, the appointments, ...) shows the answer to its latest request only
 * (`ask`), so an answer that comes late, or for a doctor, day or clinic no longer chosen, is
 * dropped instead of redrawing the part under the person; a new list keeps the doctor chosen.
 *
 * Days are the user's local days: a day picked on the page is sent as the UTC instants of its
 * local start and end, and times are shown in local time.
 */
import { FirebaseError, initializeApp } from "firebase/app";
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
const pad = (n: number): string => String(n).padStart(2, "0");
/** The user's local day (YYYY-MM-DD) of an instant: today by default. */
const localDay = (at: Date = new Date()): string =>
  `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}`;
const today = (): string => localDay();

/** The UTC instants at which the user's local day `day` (YYYY-MM-DD) starts and ends: what
 * the API is asked for (a local day may last 23 or 25 hours). */
function localDayBounds(day: string): { from: string; to: string } {
  const [y, m, d] = day.split("-").map(Number) as [number, number, number];
  return {
    from: new Date(y, m - 1, d).toISOString(),
    to: new Date(y, m - 1, d + 1).toISOString(),
  };
}

/** Statuses as people read them ("payment pending", not "capture_pending"). */
const STATUS_WORDS: Record<string, string> = { capture_pending: "payment pending" };
const statusWords = (status: string): string => STATUS_WORDS[status] ?? status.replaceAll("_", " ");

function say(message: string): void {
  $("status").textContent = message;
  $("error").textContent = "";
}

function fail(message: string): void {
  $("error").textContent = message;
}

/** A failure worded for the person using the page (shown as it is). */
class Plain extends Error {}

/** An answer that came for a session that has ended since it was asked: dropped. */
class Stale extends Error {}

/** Bumped whenever one person's session ends: answers asked for before are Stale. */
let epoch = 0;

/** Who is signed in on this page (null: no one). */
let current: Session | null = null;

// Any 401 (the session ended in another tab, was revoked, or timed out): everything of the
// person goes, and the sign-in form comes back.
const api = createBackend({
  onUnauthenticated: () => {
    if (current !== null) sessionEnded();
  },
});

type Result<T> = { data?: T; error?: unknown; response: Response };

/** `api.call` and the answer's status; Stale when the session ended while it was asked. */
async function answered<T>(pending: Promise<Result<T>>): Promise<{ data: T; status: number }> {
  const at = epoch;
  const result = await pending;
  if (at !== epoch) throw new Stale("the session ended");
  const data = await api.call(Promise.resolve(result));
  return { data, status: result.response.status };
}

async function call<T>(pending: Promise<Result<T>>): Promise<T> {
  return (await answered(pending)).data;
}

/** The number of the latest request of each part of the page ("doctors", "slots", ...). */
const latest = new Map<string, number>();

/** A new request for `part` of the page, superseding any earlier one still on its way: the
 * check it returns is true while this is the latest (and the same person is signed in), so an
 * answer that comes after a later request, or after the choice it was for changed, is not
 * shown. Each part is drawn only by the answer to its latest request, whatever the order in
 * which answers arrive. */
function ask(part: string): () => boolean {
  const n = (latest.get(part) ?? 0) + 1;
  latest.set(part, n);
  return still(part);
}

/** A request that carries on the latest one of `part` (its next page): superseded, as that
 * one is, by any later request. */
function still(part: string): () => boolean {
  const n = latest.get(part) ?? 0;
  const at = epoch;
  return () => latest.get(part) === n && epoch === at;
}

/** The choice `part` was asked for has changed: an answer still on its way is not shown, and
 * what `shown` holds (for the choice before) goes. */
function changed(part: string, shown?: string): void {
  ask(part);
  if (shown !== undefined) $(shown).replaceChildren();
}

/** A request that got no answer at all (fetch's "Failed to fetch": offline, the server down). */
const unreachable = (error: unknown): boolean =>
  error instanceof TypeError && /fetch|network|load failed/i.test(error.message);

/** The page's names of the API's fields, for a refusal that names them. */
const FIELD_LABELS: Record<string, string> = {
  medication: "Medication",
  strength: "Strength",
  form: "Form",
  dose: "Dose",
  frequency: "How often",
  durationDays: "For how many days",
  duration_days: "For how many days",
  quantity: "Quantity",
  start: "Time",
  day: "Day",
  maxPrice: "Highest price",
  specialty: "Specialty",
  language: "Language",
};

/** "For how many days: Input should be less than or equal to 365": what a 400/422
 * `validation_failed` found wrong, field by field, by the names the page gives them. */
function invalidFields(problem: ApiError["problem"]): string | null {
  const invalid = problem.errors ?? [];
  if (invalid.length === 0) return null;
  const said = invalid.map((e) => {
    const name = (e.field ?? "").split(".").filter((part) => !/^\d+$/.test(part)).pop() ?? "";
    const label = FIELD_LABELS[name] ?? (name && name !== "(body)" ? name : "the form");
    return `${label}${e.message ? `: ${e.message}` : ""}`;
  });
  return `Please check ${[...new Set(said)].join("; ")}.`;
}

/** What went wrong, in words a person can act on. */
function explain(error: unknown): string {
  if (error instanceof Plain) return error.message;
  if (error instanceof ApiError) {
    const fields = error.code === "validation_failed" ? invalidFields(error.problem) : null;
    if (fields) return fields;
    return `${error.message} (${error.code})`;
  }
  if (unreachable(error)) return "The server could not be reached. Check your connection and try again.";
  return error instanceof Error ? error.message : String(error);
}

/** Runs an action, showing a failure the way a user can read it. The controls that started it
 * are disabled until it ends: a double-click, or Enter pressed twice, sends one request. */
async function run(action: () => Promise<void>, controls: HTMLButtonElement[] = []): Promise<void> {
  if (controls.some((c) => c.disabled)) return;
  for (const c of controls) c.disabled = true;
  try {
    await action();
  } catch (error) {
    if (error instanceof Stale) return; // for someone who is not here any more
    if (error instanceof ApiError && error.status === 401) {
      // onUnauthenticated has let go of whoever was signed in, and said so; a 401 to a
      // sign-in attempt says why it failed.
      if (current !== null) sessionEnded();
      else if (!$("error").textContent) fail(explain(error));
      return;
    }
    fail(explain(error));
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

/** Firebase Auth's refusals, as people read them (its own words name its error codes). */
const WRONG_CREDENTIALS = "Wrong e-mail or password. Check them and try again.";
const AUTH_ERRORS: Record<string, string> = {
  "auth/wrong-password": WRONG_CREDENTIALS,
  "auth/user-not-found": WRONG_CREDENTIALS,
  "auth/invalid-credential": WRONG_CREDENTIALS,
  "auth/invalid-login-credentials": WRONG_CREDENTIALS,
  "auth/invalid-email": "That e-mail address does not look right. Check it and try again.",
  "auth/missing-password": "Enter your password.",
  "auth/user-disabled": "This account has been disabled. Contact support.",
  "auth/too-many-requests":
    "Too many attempts to sign in. Wait a few minutes, or reset your password, and try again.",
  "auth/network-request-failed":
    "The sign-in service could not be reached. Check your connection and try again.",
};

function authFailure(error: unknown): unknown {
  if (!(error instanceof FirebaseError)) return error;
  return new Plain(AUTH_ERRORS[error.code] ?? "Signing in did not work. Please try again.");
}

async function signIn(email: string, password: string): Promise<void> {
  const auth = await firebaseAuth();
  let idToken: string;
  try {
    const credential = await signInWithEmailAndPassword(auth, email, password);
    idToken = await credential.user.getIdToken();
  } catch (error) {
    throw authFailure(error);
  }
  const session = await api.signIn(idToken);
  await firebaseSignOut(auth); // the session cookie is the credential from here on
  ($("password") as HTMLInputElement).value = "";
  await enter(session);
}

async function enter(session: Session): Promise<void> {
  forgetUser(); // nothing of whoever used this page before
  current = session;
  show(session.role as View, session);
  say(`Signed in as ${session.email ?? session.uid}.`);
  document.getElementById(`${session.role}-title`)?.focus(); // where the person's view begins
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

/** One page of the directory: the first (replacing the list) or the next (appended). A new
 * search supersedes the one before (its late answer is dropped, and so is a next page of the
 * list before); the doctor chosen stays chosen while the new list has them. */
async function loadDoctors(next = false): Promise<void> {
  if (next && doctorsCursor === null) return;
  const current = next ? still("doctors") : ask("doctors");
  if (!next) {
    doctorQuery = doctorFilters();
    doctorsCursor = null; // no next page of the list before while this one is asked for
    $("more-doctors").hidden = true;
  }
  const query = { ...doctorQuery, ...(next && doctorsCursor ? { cursor: doctorsCursor } : {}) };
  const page = await call(api.client.GET("/users/directory/doctors", { params: { query } }));
  if (!current()) return;
  const options = page.items.map((d) => {
    const name = d.displayName ?? "Unnamed doctor";
    doctorNames.set(d.uid, name);
    const label = `${name}${d.specialty ? `, ${d.specialty}` : ""} (${money(d.consultationPrice)})`;
    return el("option", label, { value: d.uid });
  });
  const select = $<HTMLSelectElement>("pick-doctor");
  const chosen = select.value;
  if (next) select.append(...options);
  else select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  else if (chosen) changed("slots", "slots"); // the free times shown were another doctor's
  doctorsCursor = page.nextCursor ?? null;
  $("more-doctors").hidden = doctorsCursor === null;
  $("doctors-found").textContent = select.options.length
    ? `${count(select.options.length, "doctor")} shown${doctorsCursor ? "; more to see" : ""}.`
    : "No doctor matches.";
}

/** Names of doctors not seen yet: the directory, page by page (a few pages at most). */
async function learnDoctorNames(uids: string[]): Promise<void> {
  let cursor: string | null = null;
  for (let pages = 0; pages < 5 && uids.some((u) => !doctorNames.has(u)); pages++) {
    const query: DoctorQuery = { limit: 100, ...(cursor ? { cursor } : {}) };
    const page: Schemas["Users_Directory"] = await call(
      api.client.GET("/users/directory/doctors", { params: { query } }),
    );
    for (const d of page.items) doctorNames.set(d.uid, d.displayName ?? "Unnamed doctor");
    cursor = page.nextCursor ?? null;
    if (cursor === null) break;
  }
}

/** The chosen doctor's free times on the chosen day; dropped if the doctor or the day is
 * changed before they come (the free times shown are always those of the choice made). */
async function showSlots(): Promise<void> {
  const current = ask("slots");
  const doctorUid = $<HTMLSelectElement>("pick-doctor").value;
  const day = $<HTMLInputElement>("day").value;
  const { from, to } = localDayBounds(day);
  const found = await call(
    api.client.GET("/appointments/doctors/{uid}/slots", {
      params: { path: { uid: doctorUid }, query: { from, to } },
    }),
  );
  if (!current()) return;
  $("slots").replaceChildren(
    ...found.slots.map((slot) => li("", button(`Book ${time(slot)}`, () => book(doctorUid, slot)))),
  );
  say(found.slots.length ? `${count(found.slots.length, "free time")}.` : "No free times that day.");
}

async function book(doctorUid: string, start: string): Promise<void> {
  const current = ask("appointment");
  const booked = await call(api.client.POST("/appointments", { body: { doctorUid, start } }));
  changed("slots", "slots");
  if (current()) {
    // Unless another appointment has been chosen to show since.
    appointment = booked;
    order = null;
    $("receipt").hidden = true;
    renderAppointment();
  }
  say("Booked. Pay to confirm the appointment.");
  await loadMyAppointments();
}

// -- patient: their appointments ------------------------------------------------------------

const APPOINTMENTS_PER_PAGE = 10;
let appointmentsCursor: string | null = null;
const PAYABLE: Appointment["status"][] = ["pending_payment"];
const CANCELLABLE: Appointment["status"][] = ["pending_payment", "confirmed"];
/** Appointments whose payment PayPal still holds (an eCheck): neither Pay nor Cancel. */
const paymentPending = new Set<string>();

/** The patient's orders PayPal has not settled yet: what they pay for. */
async function pendingPayments(): Promise<Set<string>> {
  const page = await call(
    api.client.GET("/payments/orders", { params: { query: { status: "capture_pending", limit: 100 } } }),
  );
  return new Set(page.items.map((o) => o.subjectId));
}

/** The patient's appointments, latest first: each with what can be done with it now. The
 * list is drawn by its latest load only (one asked before a booking or a cancellation may
 * answer after the one asked after it), and a next page only onto the list it follows. */
async function loadMyAppointments(next = false): Promise<void> {
  if (next && appointmentsCursor === null) return;
  const current = next ? still("appointments") : ask("appointments");
  if (!next) {
    appointmentsCursor = null; // no next page of the list before while this one is asked for
    $("more-appointments").hidden = true;
  }
  const query = {
    limit: APPOINTMENTS_PER_PAGE,
    ...(next && appointmentsCursor ? { cursor: appointmentsCursor } : {}),
  };
  const page = await call(api.client.GET("/appointments", { params: { query } }));
  const [, pending] = await Promise.all([
    learnDoctorNames([...new Set(page.items.map((a) => a.doctorUid))]),
    next ? Promise.resolve(null) : pendingPayments(),
  ]);
  if (!current()) return;
  if (pending !== null) {
    paymentPending.clear();
    for (const id of pending) paymentPending.add(id);
  }
  const items = page.items.map((a) => {
    const what = `${when(a.start)} with ${doctorName(a.doctorUid)}`;
    const pending = a.status === "pending_payment" && paymentPending.has(a.id);
    const item = el("li", `${what}: ${pending ? "payment pending" : statusWords(a.status)} `);
    item.append(button("Show", () => showAppointment(a), { "aria-label": `Show ${what}` }));
    if (PAYABLE.includes(a.status) && !pending) {
      item.append(button("Pay", () => pay(a), { "aria-label": `Pay for ${what}` }));
    }
    if (CANCELLABLE.includes(a.status) && !pending) {
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

/** The order shown, if it pays for the appointment shown (a receipt never belongs to another). */
function orderOf(a: Appointment | null): Order | null {
  return a !== null && order !== null && order.kind === "appointment" && order.subjectId === a.id
    ? order
    : null;
}

function renderAppointment(): void {
  if (appointment === null) return;
  const pending =
    appointment.status === "pending_payment" &&
    (orderOf(appointment)?.status === "capture_pending" || paymentPending.has(appointment.id));
  $("appointment").hidden = false;
  details($("appointment-details"), [
    ["When", when(appointment.start)],
    ["Doctor", doctorName(appointment.doctorUid)],
    ["Status", pending ? "payment pending" : statusWords(appointment.status)],
    ["Price", money(appointment.price)],
  ]);
  $("pay").hidden = appointment.status !== "pending_payment" || pending;
  $("cancel-appointment").hidden = !CANCELLABLE.includes(appointment.status) || pending;
}

// -- patient: paying with PayPal -------------------------------------------------------------

const DECLINED = "Your payment method was declined; choose another in PayPal.";

/** To PayPal's window, as its checkout does: the buyer approves (or cancels) there and PayPal
 * sends them back to this page (`/?paypal=return|cancel&order=<id>`), which captures. */
function toPayPal(link: string | null | undefined): void {
  if (!link) throw new Plain("PayPal gave no page to approve the payment on. Please try again later.");
  say("Taking you to PayPal…");
  window.location.assign(link);
}

/** Pay for an appointment: a new order goes to PayPal for approval; an order made before may
 * have been approved already (the buyer came back and the capture failed), so it is captured
 * rather than sent to PayPal again (which would show the buyer nothing to do). */
async function pay(a: Appointment | null = appointment): Promise<void> {
  if (a === null) return;
  const current = ask("appointment");
  const made = await answered(
    api.client.POST("/paypal-create", { body: { appointmentId: a.id } }),
  );
  if (made.data.status === "capture_pending") {
    if (current()) {
      order = made.data;
      appointment = a;
      await refreshAppointment();
    }
    say("Payment pending: PayPal is still clearing your payment; we will confirm the appointment when it does.");
    return;
  }
  if (made.status === 201) {
    toPayPal(made.data.approveLink);
    return;
  }
  await capture(made.data.id, made.data.approveLink);
}

interface PayPalBack {
  approved: boolean;
  orderId: string;
}

/** Set when PayPal sent the buyer back here; handled once the patient is signed in. */
let paypalBack: PayPalBack | null = null;

/** What PayPal's return address says. The address stays until the capture has succeeded or
 * definitively failed: a reload (after a failure that may pass) tries again. */
function fromPayPal(): PayPalBack | null {
  const q = new URLSearchParams(window.location.search);
  const kind = q.get("paypal");
  const orderId = q.get("order");
  if ((kind !== "return" && kind !== "cancel") || !orderId) return null;
  return { approved: kind === "return", orderId };
}

/** The start page's address again: what PayPal's return address asked for is done. */
function leavePayPalAddress(): void {
  if (window.location.search) window.history.replaceState(null, "", "/");
}

/** Back from PayPal: capture what the buyer approved and show the receipt, or say that
 * nothing was charged when they cancelled. */
async function backFromPayPal(back: PayPalBack): Promise<void> {
  if (back.approved) {
    await capture(back.orderId);
    return;
  }
  leavePayPalAddress();
  await showOrder(
    await call(api.client.GET("/payments/orders/{order_id}", { params: { path: { order_id: back.orderId } } })),
  );
  say("Payment cancelled in PayPal: nothing was charged.");
  await loadMyAppointments();
}

/** The order, with what it pays for. */
async function showOrder(o: Order): Promise<void> {
  const current = ask("appointment");
  if (o.kind === "appointment") {
    const paidFor = await call(
      api.client.GET("/appointments/{id}", { params: { path: { id: o.subjectId } } }),
    );
    await learnDoctorNames([paidFor.doctorUid]);
    if (!current()) return; // another appointment was chosen to show meanwhile
    order = o;
    appointment = paidFor;
    renderAppointment();
  } else {
    order = o;
    appointment = null;
    $("appointment").hidden = true;
  }
  if (o.status === "created") $("receipt").hidden = true;
  else renderReceipt(o);
}

let retryTimer: number | undefined;
/** The order whose capture "Try the payment again" retries, and where "Choose another way
 * to pay" sends the buyer. */
let retryOrder: string | null = null;
let otherFundingLink: string | null = null;

function clearPaymentTrouble(): void {
  window.clearTimeout(retryTimer);
  retryOrder = null;
  otherFundingLink = null;
  $("retry-capture").hidden = true;
  $("other-funding").hidden = true;
}

/** PayPal (or the way to it) failed for now: nothing is lost; the button comes back once the
 * server's Retry-After has passed. */
function offerRetry(orderId: string, retryAfter: number | null): void {
  const wait = Math.max(1, Math.min(retryAfter ?? 5, 300));
  retryOrder = orderId;
  say("");
  fail(
    `PayPal is not answering right now, so your payment is not finished yet (nothing more is needed in PayPal). You can try again in ${count(wait, "second")}.`,
  );
  window.clearTimeout(retryTimer);
  retryTimer = window.setTimeout(() => {
    if (retryOrder !== orderId) return;
    $("retry-capture").hidden = false;
    $("retry-capture").focus();
  }, wait * 1000);
}

const TRANSIENT = new Set([502, 503, 504]);

/** Capture an approved order and show what became of it. A failure that may pass keeps the
 * order to capture (and the return address) and offers to try again; a declined payment
 * method sends the buyer back to PayPal to choose another; an order not yet approved goes to
 * PayPal for approval. */
async function capture(orderId: string, approveLink?: string | null): Promise<void> {
  clearPaymentTrouble();
  let captured: Order;
  try {
    captured = await call(api.client.POST("/paypal-capture", { body: { orderId } }));
  } catch (error) {
    if (error instanceof Stale || (error instanceof ApiError && error.status === 401)) throw error;
    if (unreachable(error) || (error instanceof ApiError && TRANSIENT.has(error.status))) {
      offerRetry(orderId, error instanceof ApiError ? error.retryAfter : null);
      return;
    }
    if (!(error instanceof ApiError)) throw error;
    leavePayPalAddress(); // settled, one way or the other: a reload does not capture again
    const link = (error.problem as { approveLink?: string | null }).approveLink ?? approveLink;
    if (error.code === "order_not_approved") {
      toPayPal(link);
      return;
    }
    try {
      // What the order pays for, as it stands now (the refusal's words say what happened).
      await showOrder(
        await call(api.client.GET("/payments/orders/{order_id}", { params: { path: { order_id: orderId } } })),
      );
    } catch (shown) {
      if (shown instanceof Stale || (shown instanceof ApiError && shown.status === 401)) throw shown;
    }
    if (error.code === "instrument_declined" && link) {
      otherFundingLink = link;
      say("");
      fail(DECLINED);
      $("other-funding").hidden = false;
      $("other-funding").focus();
      return;
    }
    throw error;
  }
  leavePayPalAddress();
  await showOrder(captured);
  say(
    captured.status === "captured"
      ? `Payment received: your ${captured.kind} is confirmed.`
      : captured.status === "capture_pending"
        ? `Payment pending: PayPal is still clearing your payment; we will confirm your ${captured.kind} when it does.`
        : `Payment ${statusWords(captured.status)}.`,
  );
  await loadMyAppointments();
}

/** The appointment shown, as it stands now, with its receipt; dropped if another appointment
 * is chosen to show before it comes. */
async function refreshAppointment(): Promise<void> {
  if (appointment === null) return;
  const current = ask("appointment");
  const fresh = await call(
    api.client.GET("/appointments/{id}", { params: { path: { id: appointment.id } } }),
  );
  if (!current()) return;
  appointment = fresh;
  const orderId = appointment.payment?.orderId ?? orderOf(appointment)?.id;
  if (!orderId) order = null;
  renderAppointment();
  if (orderId) {
    const paid = await call(
      api.client.GET("/payments/orders/{order_id}", { params: { path: { order_id: orderId } } }),
    );
    if (!current()) return;
    order = paid;
    renderAppointment();
    renderReceipt(order);
  } else $("receipt").hidden = true;
}

function renderReceipt(o: Order): void {
  $("receipt").hidden = false;
  const rows: [string, string][] = [
    ["Order", o.id],
    ["Status", statusWords(o.status)],
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
  const current = ask("appointment");
  const cancelled = await call(
    api.client.POST("/appointments/{id}/cancel", {
      params: { path: { id: a.id } },
      body: { reason: "Cancelled by the patient" },
    }),
  );
  if (current()) {
    // Shown, unless another appointment has been chosen to show since.
    if (appointment?.id !== a.id) order = null; // another appointment's receipt is not this one's
    appointment = cancelled;
    await refreshAppointment();
  }
  const refund = cancelled.cancellation?.refund;
  say(`Appointment cancelled${refund ? `; refund: ${refund}` : ""}.`);
  await loadMyAppointments();
}

// -- doctor -------------------------------------------------------------------------------

let prescribingFor: Appointment | null = null;

/** "Ayşe Yılmaz", or a plain word for a patient who gave no name (never their uid). */
const patientLabel = (a: Appointment): string => a.patientName?.trim() || "patient without a name";

/** The chosen local day's appointments, every page of them, in the order of the day. */
async function showDay(): Promise<void> {
  const current = ask("day-list");
  const input = $<HTMLInputElement>("doctor-day");
  if (!input.value) input.value = today();
  const day = input.value;
  const { from, to } = localDayBounds(day);
  const all: Appointment[] = [];
  let cursor: string | null = null;
  do {
    const query: { from: string; to: string; cursor?: string } = { from, to };
    if (cursor) query.cursor = cursor;
    const page: Schemas["Appointments_AppointmentList"] = await call(
      api.client.GET("/appointments", { params: { query } }),
    );
    all.push(...page.items);
    cursor = page.nextCursor ?? null;
    if (!current()) return; // another day was chosen meanwhile
  } while (cursor !== null);
  all.sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  $("day-list").replaceChildren(
    ...all.map((a) => {
      const item = el("li", `${time(a.start)}: ${statusWords(a.status)} (${patientLabel(a)}) `);
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
  say(`Appointments on ${day}: ${all.length}.`);
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
  const written = await call(
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
  // The days are today from the start: never set later, over a day chosen while loading.
  for (const id of ["day", "clinic-day"]) {
    const day = $<HTMLInputElement>(id);
    if (!day.value) day.value = today();
  }
  await loadDoctors();
  const [pharmacies, clinics] = await Promise.all([
    call(api.client.GET("/users/directory/pharmacies", {})),
    call(api.client.GET("/users/directory/clinics", {})),
  ]);
  $("pick-pharmacy").replaceChildren(
    ...pharmacies.items.map((p) => el("option", placeName(p), { value: p.uid })),
  );
  // No clinic chosen at first: the patient picks one, and only then are its services asked for.
  $("pick-clinic").replaceChildren(
    el("option", "Choose a clinic", { value: "" }),
    ...clinics.items.map((c) => el("option", placeName(c), { value: c.uid })),
  );
  await Promise.all([loadMyAppointments(), loadMyPrescriptions(), loadServices()]);
}

const SENDABLE: Prescription["status"][] = ["issued", "rejected"];

/** The caller's prescriptions as "<medicines>: <status>", each with what `action` adds. */
async function listPrescriptions(
  listId: string,
  action: (p: Prescription, what: string) => HTMLElement | null,
): Promise<void> {
  const current = ask(listId);
  const page = await call(api.client.GET("/prescriptions", {}));
  if (!current()) return;
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
  const sent = await call(
    api.client.POST("/prescriptions/{id}/send", {
      params: { path: { id } },
      body: { pharmacyUid: select.value },
    }),
  );
  say(`Prescription ${sent.status} to ${select.selectedOptions[0]?.textContent ?? "the pharmacy"}.`);
  await loadMyPrescriptions();
}

/** The chosen clinic's services; dropped if another clinic is chosen before they come. */
async function loadServices(): Promise<void> {
  const current = ask("services");
  const uid = $<HTMLSelectElement>("pick-clinic").value;
  changed("clinic-windows", "clinic-windows");
  $("pick-service").replaceChildren(); // the clinic before's services are not this one's
  if (!uid) return;
  let clinic: Schemas["Bookings_ClinicView"];
  try {
    clinic = await call(
      api.client.GET("/bookings/clinics/{clinic_uid}", { params: { path: { clinic_uid: uid } } }),
    );
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    if (current()) say("This clinic does not take bookings yet.");
    return;
  }
  if (!current()) return;
  $("pick-service").replaceChildren(
    ...clinic.services
      .filter((s) => s.active !== false)
      .map((s) => el("option", `${s.name} (${money(s.price)})`, { value: s.id })),
  );
}

async function showClinicWindows(): Promise<void> {
  const current = ask("clinic-windows");
  const uid = $<HTMLSelectElement>("pick-clinic").value;
  const day = $<HTMLInputElement>("clinic-day").value;
  const open = await call(
    api.client.GET("/bookings/clinics/{clinic_uid}/windows", {
      params: { path: { clinic_uid: uid }, query: { day } },
    }),
  );
  if (!current()) return; // another clinic or day was chosen meanwhile
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
  const asked = await call(
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
  const moved = await call(api.client.POST(path, { params: { path: { id } } }));
  say(`Prescription ${moved.status}.`);
  await loadPrescriptions();
}

// -- clinic -------------------------------------------------------------------------------

let clinicUid = "";

async function loadRequests(uid: string): Promise<void> {
  const current = ask("requests");
  const page = await call(
    api.client.GET("/bookings/clinics/{clinic_uid}/requests", {
      params: { path: { clinic_uid: uid } },
    }),
  );
  if (!current()) return;
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
    ? await call(api.client.POST("/bookings/{booking_id}/accept", { params }))
    : await call(
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
  const current = ask("pending-doctors");
  const page = await call(api.client.GET("/admin-users", { params: { query } }));
  if (!current()) return;
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
  await call(
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
  const current = ask("audit-entries");
  const resource = $<HTMLInputElement>("audit-resource").value.trim();
  const page = await call(
    api.client.GET("/audit", { params: { query: resource ? { resource } : {} } }),
  );
  const lines = await Promise.all(
    page.items.map(async (e) => {
      const [what, who] = await Promise.all([resourceLabel(e.resource), accountName(e.actor)]);
      return el("li", `${when(e.at)}: ${e.action} ${what} by ${who ?? e.actor}`);
    }),
  );
  if (!current()) return;
  $("audit-entries").replaceChildren(...lines);
  say(`Audit entries: ${page.items.length}.`);
}

/** Seal what was written since the last checkpoint (admins may, besides the scheduler), then
 * verify the whole chain of checkpoints, batch by batch. */
async function verifyAudit(): Promise<void> {
  const sealed = await call(api.client.POST("/audit/seal", {}));
  let from = 1;
  let checkpoints = 0;
  let entries = 0;
  for (;;) {
    const v = await call(api.client.GET("/audit/verify", { params: { query: { from } } }));
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

/** A form's action, its submit buttons disabled while it runs (the form's other buttons have
 * actions of their own: "More doctors" loading does not silently refuse "Show free times"). */
function onSubmit(id: string, action: () => Promise<void>): void {
  const form = $<HTMLFormElement>(id);
  const submits = [...form.querySelectorAll<HTMLButtonElement>('button:not([type]), button[type="submit"]')];
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void run(action, submits);
  });
}

/** When the person changes one of `controls`, what was asked for the choice before is dropped. */
function onChoice(controls: string[], part: string, shown: string): void {
  for (const id of controls) {
    for (const kind of ["input", "change"]) $(id).addEventListener(kind, () => changed(part, shown));
  }
}

function onClick(id: string, action: () => Promise<void>): void {
  const control = $<HTMLButtonElement>(id);
  control.addEventListener("click", () => void run(action, [control]));
}

/** Lists and panels that show one person's data, emptied when they go. */
const PER_USER_LISTS = [
  "my-appointments",
  "pick-doctor",
  "slots",
  "appointment-details",
  "receipt-details",
  "my-prescriptions",
  "pick-pharmacy",
  "pick-clinic",
  "pick-service",
  "clinic-windows",
  "day-list",
  "prescriptions",
  "requests",
  "pending-doctors",
  "audit-entries",
];
const PER_USER_FORMS = [
  "find-doctors-form",
  "slots-form",
  "my-prescriptions-form",
  "clinic-form",
  "day-form",
  "prescription-form",
  "pending-form",
  "audit-form",
];
const PER_USER_HIDDEN = ["appointment", "receipt", "more-appointments", "more-doctors"];

/** Everything one person saw or chose on this page goes: every per-user view and state.
 * Called on sign-out (whatever the API answered), on any 401, and before a sign-in shows the
 * next person's data; answers still on their way for the one who left are dropped (Stale). */
function forgetUser(): void {
  epoch++;
  current = null;
  appointment = null;
  order = null;
  appointmentsCursor = null;
  doctorsCursor = null;
  doctorQuery = {};
  doctorNames.clear();
  paymentPending.clear();
  accountNames.clear();
  clinicUid = "";
  endPrescription();
  clearPaymentTrouble();
  for (const id of PER_USER_LISTS) $(id).replaceChildren();
  for (const id of PER_USER_FORMS) $<HTMLFormElement>(id).reset();
  for (const id of PER_USER_HIDDEN) $(id).hidden = true;
  for (const id of ["doctors-found", "audit-verdict", "status", "error"]) $(id).textContent = "";
  $<HTMLInputElement>("doctor-day").value = today();
}

/** Back to the sign-in form, with nothing of the last person left; focus on the e-mail. */
function toSignIn(): void {
  forgetUser();
  show("sign-in");
  $("email").focus();
}

/** The session ended elsewhere (a 401): the page lets go of the person too. */
function sessionEnded(): void {
  toSignIn();
  fail("Your session has ended. Please sign in again.");
}

/** Sign out: the page forgets the person whatever the API answers (a session that had ended
 * already answers 401; that is signed out too). */
async function signOut(): Promise<void> {
  let trouble: unknown = null;
  try {
    await api.signOut();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) trouble = error;
  }
  paypalBack = null;
  leavePayPalAddress();
  toSignIn();
  say("Signed out.");
  if (trouble !== null) {
    fail("The server could not be reached to end your session: close the browser to be sure it ends.");
  }
}

async function signOutEverywhere(): Promise<void> {
  let ended: number | null = null;
  try {
    ended = await api.signOutEverywhere();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) throw error; // still signed in
  }
  paypalBack = null;
  leavePayPalAddress();
  toSignIn();
  say(ended === null ? "Signed out." : `Signed out of ${ended} sessions, on every device.`);
}

async function start(): Promise<void> {
  onSubmit("sign-in-form", () =>
    signIn($<HTMLInputElement>("email").value, $<HTMLInputElement>("password").value),
  );
  onClick("sign-out", signOut);
  onClick("sign-out-all", signOutEverywhere);
  onSubmit("find-doctors-form", () => loadDoctors());
  onClick("more-doctors", () => loadDoctors(true));
  onClick("more-appointments", () => loadMyAppointments(true));
  onSubmit("slots-form", showSlots);
  onChoice(["pick-doctor", "day"], "slots", "slots");
  onSubmit("my-prescriptions-form", loadMyPrescriptions);
  onSubmit("clinic-form", showClinicWindows);
  onChoice(["pick-service", "clinic-day"], "clinic-windows", "clinic-windows");
  $("pick-clinic").addEventListener("change", () => void run(loadServices));
  onClick("pay", () => pay());
  onClick("retry-capture", async () => {
    if (retryOrder !== null) await capture(retryOrder);
  });
  onClick("other-funding", async () => toPayPal(otherFundingLink));
  onClick("cancel-appointment", () => cancelAppointment());
  onSubmit("day-form", showDay);
  onChoice(["doctor-day"], "day-list", "day-list");
  onSubmit("prescription-form", writePrescription);
  onClick("pharmacy-refresh", loadPrescriptions);
  onClick("clinic-refresh", () => loadRequests(clinicUid));
  onSubmit("pending-form", loadPendingDoctors);
  onSubmit("audit-form", showAudit);
  onClick("audit-verify", verifyAudit);
  $<HTMLInputElement>("doctor-day").value = today();
  paypalBack = fromPayPal();
  try {
    const session = await api.resume();
    if (session === null) {
      show("sign-in");
      if (paypalBack) say("Sign in to finish your payment.");
    } else await enter(session);
  } finally {
    // Ready (for a person, and for the tests) whatever became of loading: a failure is shown.
    document.body.dataset.ready = "true";
  }
}

void run(start);
