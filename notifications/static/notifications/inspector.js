/**
 * The drf-live inspector (notifications/templates/notifications/inspector.html; docs/operations.md).
 *
 * One drf-live client, authenticated by the staff user's session cookie. A WebSocket subclass shows
 * every frame as it goes out or comes in, before the client sees it: the client keeps to itself what
 * it handles (a PONG, say) and drops what it did not ask for (the replies to raw frames). Subscriptions
 * made with the form go through the client, so they are renewed, with `since`, after a reconnect; a
 * raw frame goes out exactly as typed on the client's current socket, and is not renewed.
 */
import { connect } from "./client.js";

const config = JSON.parse(document.getElementById("drf-live-inspector").textContent);
const models = new Map(config.models.map((model) => [model.label, model]));
const $ = (id) => document.getElementById(id);

// --- every frame, as it goes --------------------------------------------------------------------

const frames = $("frames");

/** Add one entry to the frame log: `kind` is "in", "out" or "state". */
function record(kind, text) {
  const { summary, body } = readEntry(kind, text);
  // Follow the newest frame only when the reader is already at the bottom of the log.
  const following = frames.scrollHeight - frames.scrollTop - frames.clientHeight < 40;
  const entry = element("li", { className: `frame ${kind}` });
  const head = element("p", { className: "frame-head" });
  const arrow = element("span", { className: "arrow", textContent: { in: "←", out: "→", state: "•" }[kind] });
  arrow.setAttribute("aria-hidden", "true");
  head.append(arrow, ` ${{ in: "received", out: "sent", state: "connection" }[kind]} `);
  head.append(element("strong", { textContent: summary }), " ", element("time", { textContent: clock() }));
  entry.append(head);
  if (body !== null) entry.append(element("pre", { textContent: body }));
  frames.append(entry);
  while (frames.children.length > config.maxFrames) frames.firstElementChild.remove();
  if (following) frames.scrollTop = frames.scrollHeight;
}

/** A short summary of a frame (its type, or its action) and its pretty-printed text. */
function readEntry(kind, text) {
  if (kind === "state") return { summary: text, body: null };
  if (typeof text !== "string") return { summary: "binary frame", body: null };
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return { summary: "not JSON", body: text };
  }
  const body = JSON.stringify(frame, null, 2);
  if (!isObject(frame)) return { summary: "not an object", body };
  if (kind === "in") {
    const code = frame.error && isObject(frame.payload) ? ` ${frame.payload.code}` : "";
    return { summary: `${frame.type}${code}`, body };
  }
  // A frame with a model and no action is a subscribe (the original OddBird form).
  return { summary: frame.action ?? (frame.model !== undefined ? "subscribe (no action)" : "no action"), body };
}

let socket = null; // the client's current socket, on which raw frames go out

class InspectedWebSocket extends WebSocket {
  constructor(url) {
    super(url);
    socket = this;
    this.addEventListener("message", (event) => record("in", event.data));
    this.addEventListener("close", (event) => {
      const reason = event.reason ? `, ${event.reason}` : "";
      record("state", `socket closed with code ${event.code}${reason}`);
    });
  }

  send(data) {
    record("out", data);
    super.send(data);
  }
}

const url = new URL(config.socketPath, location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
// The session cookie authenticates the socket. A short backoff cap: a restarted dev server is back soon.
const client = connect(url.href, { WebSocket: InspectedWebSocket, backoff: { max: 5000 } });

const badge = $("connection");
client.onState((state) => {
  badge.textContent = state;
  badge.dataset.state = state;
  // The client closes for good on 4001 only: the session ended (signed out, say).
  record("state", state === "closed" ? "closed: your session ended; sign in again and reload the page" : state);
});

$("clear-frames").addEventListener("click", () => frames.replaceChildren());

// --- the target: a model, and an id or a filter ----------------------------------------------------

const modelSelect = $("model");
const idInput = $("object-id");
const filterFields = $("filter-fields");
const ids = $("object-ids");
const subscribeMessage = $("subscribe-message");

function showFilterFields() {
  const model = models.get(modelSelect.value);
  filterFields.replaceChildren(
    ...(model?.filter_fields ?? []).map((name) => {
      const label = element("label", { textContent: `Filter: ${name} ` });
      label.append(element("input", { type: "text", name, autocomplete: "off", spellcheck: false }));
      return label;
    }),
  );
  ids.replaceChildren(); // the ids offered were another model's
}

modelSelect.addEventListener("change", showFilterFields);
showFilterFields();

/** The target the form names: {model, id} or {model, filter}, or {error}. */
function readTarget() {
  const model = modelSelect.value;
  if (!model) return { error: "No model is registered for notifications." };
  const id = idInput.value.trim();
  const filter = {};
  for (const input of filterFields.querySelectorAll("input")) {
    if (input.value.trim()) filter[input.name] = input.value.trim();
  }
  if (id && Object.keys(filter).length > 0) return { error: "Give an id or a filter, not both." };
  return id ? { model, id } : { model, filter };
}

function targetName({ model, id, filter }) {
  if (id !== undefined) return `${model} ${id}`;
  const pairs = Object.entries(filter).map(([name, value]) => `${name}=${value}`);
  return pairs.length > 0 ? `${model} where ${pairs.join(", ")}` : `${model}, every object`;
}

const reasonOf = (error) => (error.detail ? `${error.code}: ${error.detail}` : error.code);

// --- subscriptions through the client -------------------------------------------------------------

const held = new Map(); // target name -> {subscription, item}
const list = $("subscriptions");

$("subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const target = readTarget();
  if (target.error) return say(subscribeMessage, target.error);
  const name = targetName(target);
  if (held.has(name)) return say(subscribeMessage, `Already subscribed to ${name}.`);
  const subscription = client.subscribe(target.model, target.id ?? target.filter);
  const state = element("span", { className: "sub-state", textContent: "subscribing…" });
  const button = element("button", { type: "button", textContent: "Unsubscribe" });
  button.setAttribute("aria-label", `Unsubscribe from ${name}`);
  const item = element("li");
  item.append(element("code", { textContent: name }), " ", state, " ", button);
  list.append(item);
  held.set(name, { subscription, item });
  showEmpty();
  say(subscribeMessage, `Subscribing to ${name}…`);

  subscription.ready.then(
    () => {
      state.textContent = "subscribed";
      say(subscribeMessage, `Subscribed to ${name}.`);
    },
    () => {}, // onEnd says why
  );
  subscription.onEnd((end) => {
    drop(name);
    const why = end.reason === "revoked" ? "revoked by the server" : `refused, ${reasonOf(end.error)}`;
    say(subscribeMessage, `${name}: ${why}.`);
  });
  button.addEventListener("click", async () => {
    // aria-disabled, not disabled: a disabled button loses the focus, which drop() hands on.
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    state.textContent = "unsubscribing…";
    try {
      await subscription.unsubscribe();
      drop(name);
      say(subscribeMessage, `Unsubscribed from ${name}.`);
    } catch (error) {
      button.removeAttribute("aria-disabled");
      state.textContent = "subscribed";
      say(subscribeMessage, `Not unsubscribed from ${name}: ${reasonOf(error)}.`);
    }
  });
});

/** Take a subscription off the list; the focus, if it was on its button, goes to a neighbour's. */
function drop(name) {
  const entry = held.get(name);
  if (!entry) return;
  held.delete(name);
  const hadFocus = entry.item.contains(document.activeElement);
  const next = entry.item.nextElementSibling ?? entry.item.previousElementSibling;
  entry.item.remove();
  showEmpty();
  if (hadFocus) (next?.querySelector("button") ?? $("subscribe-form").querySelector("button[type=submit]")).focus();
}

function showEmpty() {
  $("no-subscriptions").hidden = held.size > 0;
}

// "List objects": the first page the viewset lists, its ids offered in the Id field.
$("list-objects").addEventListener("click", async () => {
  const target = readTarget();
  if (target.error) return say(subscribeMessage, target.error);
  const filter = target.filter ?? {};
  try {
    const { payload } = await client.list(target.model, { filter });
    const objects = Array.isArray(payload) ? payload : (payload?.results ?? []);
    ids.replaceChildren(
      ...objects
        .filter((object) => isObject(object) && object.id !== undefined)
        .map((object) => element("option", { value: String(object.id), label: labelOf(object) })),
    );
    const count = Array.isArray(payload) ? objects.length : (payload?.count ?? objects.length);
    say(subscribeMessage, `Listed ${objects.length} of ${count}; their ids are offered in the Id field.`);
  } catch (error) {
    say(subscribeMessage, `Not listed: ${reasonOf(error)}.`);
  }
});

/** What a person would call an object: its first text field other than its id. */
function labelOf(object) {
  const text = Object.entries(object).find(([name, value]) => name !== "id" && typeof value === "string");
  return text ? `${object.id}: ${text[1]}` : String(object.id);
}

// --- raw frames -----------------------------------------------------------------------------------

const frameInput = $("frame");
const sendForm = $("send-form");
const sendMessage = $("send-message");
let nextRequestId = 2; // the textarea starts with "inspector-1"

sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = frameInput.value;
  if (text.trim() === "") return say(sendMessage, "Nothing to send: type a frame.");
  if (socket === null || socket.readyState !== WebSocket.OPEN) {
    return say(sendMessage, `Not sent: the socket is not open (${client.state}).`);
  }
  socket.send(text); // as typed: a malformed frame is worth seeing answered too
  say(sendMessage, "Sent; its reply, if any, is in Frames.");
});

frameInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    sendForm.requestSubmit();
  }
});

for (const button of sendForm.querySelectorAll("button[data-example]")) {
  button.addEventListener("click", () => {
    frameInput.value = JSON.stringify(example(button.dataset.example), null, 2);
    frameInput.focus();
  });
}

/** A frame of `action` for the target the Subscribe form names (as far as it names one). */
function example(action) {
  const request_id = `inspector-${nextRequestId++}`;
  if (action === "ping") return { action, request_id };
  const target = readTarget();
  const model = target.model ?? modelSelect.value;
  const where = target.id !== undefined ? { id: target.id } : {};
  if (target.filter && Object.keys(target.filter).length > 0) where.filter = target.filter;
  if (action === "retrieve") return { action, model, id: target.id ?? "<id>", request_id };
  if (action === "list") return { action, model, ...(where.filter ? { filter: where.filter } : {}), page: 1, request_id };
  return { action, model, ...where, request_id };
}

// --- helpers --------------------------------------------------------------------------------------

function say(node, text) {
  node.textContent = text;
}

function element(tag, properties = {}) {
  return Object.assign(document.createElement(tag), properties);
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function clock() {
  const now = new Date();
  return `${now.toTimeString().slice(0, 8)}.${String(now.getMilliseconds()).padStart(3, "0")}`;
}
