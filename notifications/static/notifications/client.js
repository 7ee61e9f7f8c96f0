/**
 * drf-live client: one WebSocket, many subscriptions, every server frame handed on as a Redux action.
 *
 * The wire contract is docs/protocol.md; the user guide is docs/client.md. No dependencies: it runs in
 * browsers as an ES module and in Node (pass `options.WebSocket` where there is no global one).
 */

/** Lifecycle action dispatched on every change of `client.state`. */
export const CONNECTION = "DRF_LIVE/CONNECTION";
/** Lifecycle action dispatched before a fresh snapshot replaces history the client could not recover. */
export const RESYNC = "DRF_LIVE/RESYNC";

const NORMAL_CLOSURE = 1000;
// The server closes with 4001 when credentials are missing or revoked: retrying with them is pointless.
const NOT_AUTHENTICATED_CLOSURE = 4001;
const DEFAULT_BACKOFF = { initial: 500, max: 30000, factor: 2, jitter: 0.5 };
// Reads are asked again on the next connection when a disconnect cuts them off; writes and custom
// actions are not, because the server may have run them before the connection went.
const READS = new Set(["retrieve", "list"]);
// Actions whose bookkeeping the client owns: request() would bypass it.
const OWN_ACTIONS = {
  subscribe: "subscribe()",
  unsubscribe: "Subscription.unsubscribe()",
  authenticate: "the token option",
};

/** Open a client on `url` (e.g. "wss://example.com/ws/notifications/"); it connects at once. */
export function connect(url, options = {}) {
  return new LiveClient(url, options);
}

class LiveClient {
  #url;
  #token;
  #WebSocket;
  #requestTimeout;
  #backoff;
  #random;
  #setTimeout;
  #clearTimeout;

  #state = "connecting";
  #socket = null;
  #attempt = 0; // reconnect attempts since the last successful open: the backoff exponent
  #reconnectTimer = null;
  #nextRequestId = 1;
  #pending = new Map(); // request_id -> {onReply, onError, onLost?, onClose?, timer}
  #outbox = []; // requests ({frame, handlers}) waiting for the connection to open
  #targets = new Map(); // targetKey -> target (one per subscribed object or collection)
  #stateListeners = new Set();
  #actionListeners = new Set();

  constructor(url, options) {
    this.#url = url;
    this.#token = options.token ?? null;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError(
        "drf-live: there is no global WebSocket here; pass connect(url, {WebSocket}) (e.g. from the 'ws' package).",
      );
    }
    this.#requestTimeout = options.requestTimeout ?? 10000;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#random = options.random ?? Math.random;
    // Bound, because browsers throw "Illegal invocation" when a timer function is called on another object.
    this.#setTimeout = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.#clearTimeout = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.#open();
  }

  get state() {
    return this.#state;
  }

  onState(fn) {
    this.#stateListeners.add(fn);
    return () => this.#stateListeners.delete(fn);
  }

  onAction(fn) {
    this.#actionListeners.add(fn);
    return () => this.#actionListeners.delete(fn);
  }

  subscribe(model, idOrFilter = {}) {
    if (this.#state === "closed") {
      throw new Error("drf-live: subscribe() on a closed client; call connect() for a new one.");
    }
    let where;
    if (typeof idOrFilter === "string") where = { id: idOrFilter };
    // {} (or nothing) is the unfiltered collection: its replies and events carry `meta.filter: {}`.
    else if (isObject(idOrFilter)) where = { filter: { ...idOrFilter } };
    else {
      throw new TypeError(
        "drf-live: subscribe(model, idOrFilter) takes a hashid string, a filter object such as " +
          '{project: "a8Bn2Qz"}, or nothing for every object of the model the user may see.',
      );
    }
    const label = modelLabel(model);
    const key = targetKey(label, where);
    let target = this.#targets.get(key);
    if (!target) {
      target = {
        key,
        model: label,
        where, // {id} or {filter}, as sent
        seq: null, // of the snapshot or of the last applied event
        epoch: null,
        inflight: null, // request_id of the (re)subscribe awaiting its reply
        buffer: [], // events held back until they follow on from seq
        ready: deferred(),
        held: [], // replies placed in this stream ({reply, settle}), waiting for seq to reach theirs
        handles: new Map(), // Subscription -> its onEnd listeners
        end: null, // {reason, error?} once the server ended it
      };
      this.#targets.set(key, target);
      if (this.#state === "open") this.#sendSubscribe(target, null);
    }
    // Handles share one target: two components watching one object need one server subscription.
    return new Subscription(target, (handle) => this.#release(target, handle));
  }

  ping() {
    const pong = deferred();
    if (this.#state === "closed") {
      pong.reject(liveError("closed", "The client is closed."));
      return pong.promise;
    }
    const frame = { action: "ping" };
    const handlers = {
      onReply: () => pong.resolve(),
      onError: (error) => pong.reject(error),
      onLost: () => this.#outbox.push({ frame, handlers }), // asked again on the next connection
      onClose: (error) => rejectQuietly(pong, error),
    };
    if (this.#state === "open") this.#request(frame, handlers);
    else this.#outbox.push({ frame, handlers });
    return pong.promise;
  }

  /** One object, as GET on its REST detail URL returns it: resolves with the RETRIEVED frame. */
  retrieve(model, id, { timeout } = {}) {
    if (typeof id !== "string") {
      throw new TypeError('drf-live: retrieve(model, id) takes the object\'s id as a string, e.g. "Xk3Lp9q".');
    }
    return this.#ask({ action: "retrieve", model: modelLabel(model), id }, timeout);
  }

  /** A page of a collection, as GET on the REST list URL returns it: resolves with the LISTED frame. */
  list(model, { filter, page, query, timeout } = {}) {
    const frame = { action: "list", model: modelLabel(model) };
    for (const [name, value] of [
      ["filter", filter],
      ["query", query],
    ]) {
      if (value === undefined) continue;
      if (!isObject(value)) {
        throw new TypeError(
          `drf-live: list(model, {${name}}) takes an object of names to strings, e.g. {project: "a8Bn2Qz"}.`,
        );
      }
      if (Object.keys(value).length > 0) frame[name] = { ...value };
    }
    if (page !== undefined) frame.page = page;
    return this.#ask(frame, timeout);
  }

  /** Any other request (writes, custom actions): `body` is the rest of the frame, e.g. {model, id, data}. */
  request(action, body = {}, { timeout } = {}) {
    if (typeof action !== "string" || action === "") {
      throw new TypeError('drf-live: request(action, body) takes the action\'s name, e.g. "partial_update".');
    }
    if (Object.hasOwn(OWN_ACTIONS, action)) {
      throw new TypeError(`drf-live: the client sends "${action}" itself; use ${OWN_ACTIONS[action]} instead.`);
    }
    if (!isObject(body)) {
      throw new TypeError("drf-live: request(action, body) takes the rest of the frame as an object.");
    }
    return this.#ask({ ...body, action }, timeout);
  }

  close() {
    if (this.#state !== "closed") this.#shutdown(liveError("closed", "The client was closed."));
  }

  // --- connection -------------------------------------------------------------------------------

  #open() {
    const socket = new this.#WebSocket(this.#url);
    this.#socket = socket;
    socket.onopen = () => this.#onOpen();
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = (event) => this.#onSocketGone(event.code);
    socket.onerror = () => this.#onSocketGone(null);
  }

  #onOpen() {
    if (this.#token === null) return this.#becomeOpen();
    // Nothing else is accepted before authentication, so subscriptions wait for AUTHENTICATED.
    this.#request(
      { action: "authenticate", token: this.#token },
      {
        onReply: () => this.#becomeOpen(),
        // A refused token stays refused; a silent or busy server may do better on another socket.
        onError: (error) => (error.code === "not_authenticated" ? this.#shutdown(error) : this.#abandonSocket()),
      },
    );
  }

  #becomeOpen() {
    this.#attempt = 0;
    for (const target of this.#targets.values()) this.#sendSubscribe(target, "reconnect");
    for (const { frame, handlers } of this.#outbox.splice(0)) this.#request(frame, handlers);
    this.#setState("open");
  }

  #abandonSocket() {
    const socket = this.#socket;
    this.#onSocketGone(null);
    socket.close(NORMAL_CLOSURE);
  }

  #onSocketGone(code) {
    detach(this.#socket);
    this.#socket = null;
    // The server forgets a socket's subscriptions with it: every target is asked again on reconnect,
    // with `since`, which also covers whatever was buffered or in flight.
    for (const target of this.#targets.values()) {
      target.inflight = null;
      target.buffer = [];
    }
    for (const entry of this.#takePending()) entry.onLost?.();
    if (code === NOT_AUTHENTICATED_CLOSURE) {
      this.#shutdown(
        liveError("not_authenticated", "The server closed the connection: credentials missing or revoked."),
      );
      return;
    }
    this.#scheduleReconnect();
    this.#setState("reconnecting");
  }

  #scheduleReconnect() {
    const { initial, max, factor, jitter } = this.#backoff;
    // Jitter spreads the reconnects of many browsers after a server restart.
    const delay = Math.min(max, initial * factor ** this.#attempt) * (1 - jitter * this.#random());
    this.#attempt += 1;
    this.#reconnectTimer = this.#setTimeout(() => {
      this.#reconnectTimer = null;
      try {
        this.#open();
      } catch {
        this.#scheduleReconnect();
      }
    }, delay);
  }

  #shutdown(error) {
    if (this.#reconnectTimer !== null) this.#clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    if (this.#socket) {
      const socket = this.#socket;
      detach(socket);
      this.#socket = null;
      socket.close(NORMAL_CLOSURE);
    }
    // Quiet rejections: the state change already says why, so nobody must catch each promise.
    for (const entry of this.#takePending()) entry.onClose?.(error);
    for (const { handlers } of this.#outbox.splice(0)) handlers.onClose?.(error);
    for (const target of this.#targets.values()) {
      this.#releaseHeld(target, Infinity); // their replies came: no stream will place them now
      rejectQuietly(target.ready, error);
    }
    this.#targets.clear();
    this.#setState("closed");
  }

  // --- requests and replies ---------------------------------------------------------------------

  #request(frame, handlers) {
    const requestId = this.#nextRequestId++;
    // A request with a deadline of its own (#ask) is timed from the call, not from each send.
    const timer = handlers.deadline
      ? null
      : this.#setTimeout(() => {
          this.#pending.delete(requestId);
          handlers.onError(liveError("timeout", `No reply to "${frame.action}" within ${this.#requestTimeout} ms.`));
        }, this.#requestTimeout);
    this.#pending.set(requestId, { ...handlers, timer });
    handlers.onSent?.(requestId);
    this.#socket.send(JSON.stringify({ ...frame, request_id: requestId }));
    return requestId;
  }

  /**
   * Send a request for the caller (retrieve, list, request): a promise of its reply frame, dispatched
   * first. It times out `timeout` ms after the call, however many connections that spans.
   */
  #ask(frame, timeout = this.#requestTimeout) {
    const reply = deferred();
    if (this.#state === "closed") {
      reply.reject(liveError("closed", "The client is closed."));
      return reply.promise;
    }
    let requestId = null;
    const queued = { frame, handlers: null };
    const deadline = this.#setTimeout(() => {
      this.#pending.delete(requestId);
      const at = this.#outbox.indexOf(queued);
      if (at !== -1) this.#outbox.splice(at, 1);
      reply.reject(liveError("timeout", `No reply to "${frame.action}" within ${timeout} ms.`));
    }, timeout);
    const stop = () => this.#clearTimeout(deadline);
    queued.handlers = {
      deadline: true,
      onSent: (id) => {
        requestId = id;
      },
      onReply: (answer) => {
        stop();
        // The server echoes a list's filter and page but not its query, which names another list.
        if (frame.action === "list" && frame.query && !("query" in answer.meta)) answer.meta.query = { ...frame.query };
        this.#deliver(answer, () => reply.resolve(answer));
      },
      onError: (error) => {
        stop();
        reply.reject(error);
      },
      onLost: () => {
        if (READS.has(frame.action)) return this.#outbox.push(queued); // asked again on the next connection
        stop();
        reply.reject(
          liveError("disconnected", `The connection closed before the reply to "${frame.action}"; it may have run.`),
        );
      },
      onClose: (error) => {
        stop();
        rejectQuietly(reply, error);
      },
    };
    if (this.#state === "open") this.#request(frame, queued.handlers);
    else this.#outbox.push(queued);
    return reply.promise;
  }

  #takePending() {
    const entries = [...this.#pending.values()];
    this.#pending.clear();
    for (const entry of entries) this.#clearTimer(entry.timer);
    return entries;
  }

  #clearTimer(timer) {
    if (timer !== null) this.#clearTimeout(timer);
  }

  #onMessage(data) {
    const frame = parseFrame(data);
    if (frame === null) return;
    const { meta } = frame;
    if (meta.request_id !== undefined && meta.request_id !== null) return this.#onReply(meta.request_id, frame);
    if (frame.error) return this.#emitAction(frame); // an error tied to no request, e.g. throttled
    const target = this.#targets.get(eventKey(meta));
    if (!target) return; // unsubscribed, or a late frame of an abandoned target
    if (frame.type === "UNSUBSCRIBED") return this.#endTarget(target, { reason: meta.reason ?? "revoked" }, frame);
    if (typeof meta.seq === "number") this.#onEvent(target, frame);
  }

  #onReply(requestId, frame) {
    const entry = this.#pending.get(requestId);
    if (!entry) return; // a late reply to a request that timed out or was abandoned
    this.#pending.delete(requestId);
    this.#clearTimer(entry.timer);
    if (!frame.error) return entry.onReply(frame);
    const { code = "error", detail = "", ...rest } = isObject(frame.payload) ? frame.payload : {};
    this.#emitAction(frame);
    entry.onError(Object.assign(liveError(code, detail), rest));
  }

  // --- subscriptions ----------------------------------------------------------------------------

  /** Callers make sure no other subscribe of `target` is in flight: #onEvent buffers while one is. */
  #sendSubscribe(target, reason) {
    const frame = { action: "subscribe", model: target.model, ...wireWhere(target.where) };
    const resuming = target.seq !== null && target.epoch !== null;
    if (resuming) Object.assign(frame, { since: target.seq, epoch: target.epoch });
    target.inflight = this.#request(frame, {
      onReply: (reply) => this.#onSubscribed(target, reply, resuming ? reason : null),
      onError: (error) => {
        target.inflight = null;
        // A snapshot we already have stays good: retry a silent resubscribe rather than end it.
        if (error.code === "timeout" && target.ready.settled) this.#sendSubscribe(target, reason);
        // A target we held that is now not_found was deleted or taken away while we were not
        // listening: end it as the server would have, so that reducers drop what they keep of it.
        else if (error.code === "not_found" && target.ready.settled) {
          const meta = { model: target.model, ...target.where, reason: "revoked" };
          this.#endTarget(target, { reason: "revoked" }, { type: "UNSUBSCRIBED", payload: null, meta });
        } else this.#endTarget(target, { reason: "error", error });
      },
    });
  }

  #onSubscribed(target, reply, resyncReason) {
    target.inflight = null;
    const { meta } = reply;
    if (resyncReason !== null && meta.recovered === true) {
      // Local state stands; the server now replays every event after `since`, which fills any hole
      // left among the buffered ones, so a leftover is no gap yet.
      this.#releaseHeld(target, target.seq);
      this.#drain(target);
      return;
    }
    // Held replies belong to the history this snapshot replaces: dispatched before it (and before
    // RESYNC, which tells reducers to drop what they hold of the collection).
    this.#releaseHeld(target, Infinity);
    // Buffered seqs from another epoch mean nothing against this snapshot.
    if (target.epoch !== null && meta.epoch !== target.epoch) target.buffer = [];
    target.seq = meta.seq ?? null;
    target.epoch = meta.epoch ?? null;
    target.ready.resolve(reply.payload);
    if (resyncReason !== null) {
      this.#emitAction({
        type: RESYNC,
        payload: { model: target.model, ...target.where },
        meta: { reason: resyncReason },
      });
    }
    this.#emitAction(reply);
    this.#drain(target);
    if (target.buffer.length > 0) this.#sendSubscribe(target, "gap");
  }

  #onEvent(target, event) {
    if (target.inflight !== null) {
      target.buffer.push(event); // applied after the reply, if it follows on
      return;
    }
    const { seq } = event.meta;
    if (seq <= target.seq) return; // already applied
    if (previousSeq(event) > target.seq) {
      target.buffer.push(event);
      this.#sendSubscribe(target, "gap");
      return;
    }
    this.#apply(target, event);
    this.#drain(target);
  }

  /** Apply the buffered events that follow on from `target.seq`; forget those already covered. */
  #drain(target) {
    const later = [];
    for (const event of target.buffer.sort((a, b) => a.meta.seq - b.meta.seq)) {
      if (event.meta.seq <= target.seq) continue;
      if (previousSeq(event) <= target.seq) this.#apply(target, event);
      else later.push(event);
    }
    target.buffer = later;
  }

  #apply(target, event) {
    this.#releaseHeld(target, event.meta.seq - 1);
    target.seq = event.meta.seq;
    this.#emitAction(event);
    this.#releaseHeld(target, target.seq);
  }

  /**
   * Dispatch a reply, then settle its promise. A reply that carries a `seq` of a target this client
   * holds (a LISTED page of a subscribed collection) is the collection as of that seq: it is
   * dispatched at that point of the target's stream, after the events up to it and before the later
   * ones, so a reducer applies every event to the page exactly once. The server sends it in that
   * order; the client holds it back only while it is itself behind (a gap, a resubscribe in flight).
   */
  #deliver(reply, settle) {
    const { meta } = reply;
    const target = typeof meta.seq === "number" ? this.#targets.get(eventKey(meta)) : undefined;
    if (target && (target.inflight !== null || (meta.epoch === target.epoch && meta.seq > target.seq))) {
      target.held.push({ reply, settle });
      return;
    }
    this.#emitAction(reply);
    settle();
  }

  /** Dispatch the held replies placed at or before `seq`, and those of another history (unplaceable). */
  #releaseHeld(target, seq) {
    if (target.held.length === 0) return;
    const due = [];
    const later = [];
    for (const held of target.held) {
      const { meta } = held.reply;
      (meta.epoch !== target.epoch || meta.seq <= seq ? due : later).push(held);
    }
    target.held = later;
    for (const { reply, settle } of due) {
      this.#emitAction(reply);
      settle();
    }
  }

  /** The server ended the subscription (revoked, or a subscribe failed): no resubscribing. */
  #endTarget(target, end, frame = null) {
    this.#forget(target);
    target.end = end;
    target.ready.reject(end.error ?? liveError(end.reason, "The server ended the subscription."));
    if (frame) this.#emitAction(frame);
    for (const listeners of target.handles.values()) for (const fn of [...listeners]) callSafely(fn, end);
  }

  /** The last handle of a target was unsubscribed. */
  #release(target, handle) {
    if (!target.handles.delete(handle) || target.end || target.handles.size > 0) return Promise.resolve();
    this.#forget(target);
    rejectQuietly(target.ready, liveError("unsubscribed", "unsubscribe() was called before the snapshot arrived."));
    // A subscribe not sent yet needs no unsubscribe: a new socket starts with no subscriptions.
    if (this.#state !== "open") return Promise.resolve();
    const done = deferred();
    this.#request(
      { action: "unsubscribe", model: target.model, ...wireWhere(target.where) },
      {
        onReply: (reply) => {
          done.resolve();
          this.#emitAction(reply);
        },
        onError: (error) => done.reject(error),
        // A closed socket has no subscriptions left, which is what was asked for.
        onLost: () => done.resolve(),
        onClose: () => done.resolve(),
      },
    );
    return done.promise;
  }

  #forget(target) {
    this.#targets.delete(target.key);
    this.#releaseHeld(target, Infinity); // no more events to place them among
    if (target.inflight === null) return;
    const entry = this.#pending.get(target.inflight);
    this.#pending.delete(target.inflight);
    if (entry) this.#clearTimer(entry.timer);
    target.inflight = null;
  }

  // --- listeners --------------------------------------------------------------------------------

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    for (const fn of [...this.#stateListeners]) callSafely(fn, state);
    this.#emitAction({ type: CONNECTION, payload: { state } });
  }

  #emitAction(action) {
    for (const fn of [...this.#actionListeners]) callSafely(fn, action);
  }
}

/** What `client.subscribe()` returns; handles of one target share its server subscription. */
class Subscription {
  #target;
  #release;

  constructor(target, release) {
    this.#target = target;
    this.#release = release;
    target.handles.set(this, new Set());
  }

  get ready() {
    return this.#target.ready.promise;
  }

  unsubscribe() {
    return this.#release(this);
  }

  /** `fn({reason, error?})` when the server ends the subscription: "revoked", or "error" when a subscribe failed. */
  onEnd(fn) {
    const target = this.#target;
    const listeners = target.handles.get(this);
    if (!listeners) return () => {}; // unsubscribed by its owner: it will not end otherwise
    if (target.end) {
      fn(target.end);
      return () => {};
    }
    listeners.add(fn);
    return () => listeners.delete(fn);
  }
}

// --- helpers --------------------------------------------------------------------------------------

/**
 * The seq of the event this one follows on from: `meta.prev` when the server skipped events this
 * subscriber may not see (members of a collection hidden from it), else the seq just before.
 */
function previousSeq(event) {
  const { seq, prev } = event.meta;
  return typeof prev === "number" ? prev : seq - 1;
}

/** The server labels models in lower case ("api.task"); events are routed by that label. */
function modelLabel(model) {
  return String(model).toLowerCase();
}

/** A target as a request names it: the unfiltered collection ({filter: {}}) sends neither id nor filter. */
function wireWhere(where) {
  return where.filter && Object.keys(where.filter).length === 0 ? {} : where;
}

/** The routing key of a target: object targets by id, collections by their filter as canonical JSON. */
function targetKey(model, where) {
  return where.filter ? `${model} filter ${canonicalJson(where.filter)}` : `${model} id ${where.id}`;
}

/** The target an event belongs to: a collection event carries `meta.filter` as well as `meta.id`. */
function eventKey(meta) {
  if (typeof meta.model !== "string") return null;
  const where = isObject(meta.filter) ? { filter: meta.filter } : { id: meta.id };
  return targetKey(meta.model.toLowerCase(), where);
}

function canonicalJson(value) {
  return JSON.stringify(value, (_key, v) =>
    isObject(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** A frame as the server sends it (an FSA object), or null for anything else: never throws. */
function parseFrame(data) {
  if (typeof data !== "string") return null;
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return null;
  }
  if (!isObject(frame) || typeof frame.type !== "string") return null;
  if (!isObject(frame.meta)) frame.meta = {};
  return frame;
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function detach(socket) {
  if (socket) socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
}

function liveError(code, detail) {
  return Object.assign(new Error(`${code}: ${detail}`), { code, detail });
}

/** A promise with its settle functions; settling twice is a no-op, and `settled` tells. */
function deferred() {
  const d = { settled: false };
  d.promise = new Promise((resolve, reject) => {
    d.resolve = (value) => {
      if (d.settled) return;
      d.settled = true;
      resolve(value);
    };
    d.reject = (error) => {
      if (d.settled) return;
      d.settled = true;
      reject(error);
    };
  });
  return d;
}

/** Reject without an "unhandled rejection" report: for promises abandoned by the caller's own act. */
function rejectQuietly(d, error) {
  if (d.settled) return;
  d.promise.catch(() => {});
  d.reject(error);
}

/** A throwing listener must not stop the others nor the client's bookkeeping; report it separately. */
function callSafely(fn, value) {
  try {
    fn(value);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}
