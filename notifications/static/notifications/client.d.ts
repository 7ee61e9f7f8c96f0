// Type declarations for client.js: the drf-live browser client. User guide: docs/client.md.

/** "connecting" until the first open; "reconnecting" between a lost connection and the next open. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Fields of a collection filter (declared by the model's registration) to hashids: `{project: "a8Bn2Qz"}`. */
export type Filter = Record<string, string>;

/** Lifecycle action dispatched on every change of `client.state`. */
export declare const CONNECTION: "DRF_LIVE/CONNECTION";
/** Lifecycle action dispatched before a fresh snapshot replaces history the client could not recover. */
export declare const RESYNC: "DRF_LIVE/RESYNC";

/** `meta` of a server frame (docs/protocol.md). */
export interface LiveMeta {
  request_id?: number | string;
  /** Lower-case model label, e.g. "api.task". */
  model?: string;
  id?: string;
  filter?: Filter;
  seq?: number;
  /** On an event: the seq of the last event this subscriber was sent, when the server skipped some in
   * between that it may not see (members of a collection hidden from it). Absent means `seq - 1`. */
  prev?: number;
  epoch?: string;
  recovered?: boolean;
  /** Serializer fields that changed (UPDATE_* events). */
  changed?: string[];
  /** "revoked" on an UNSUBSCRIBED the server sends by itself. */
  reason?: string;
  [key: string]: unknown;
}

/** A server frame: a Flux Standard Action (SUBSCRIBED, UNSUBSCRIBED, ERROR, UPDATE_*, CREATE_*, DELETE_*). */
export interface ServerAction<P = unknown> {
  type: string;
  payload: P;
  meta: LiveMeta;
  error?: true;
}

export interface ConnectionAction {
  type: typeof CONNECTION;
  payload: { state: ConnectionState };
}

/** Dispatched right before the SUBSCRIBED frame that carries the fresh snapshot. */
export interface ResyncAction {
  type: typeof RESYNC;
  payload: { model: string; id?: string; filter?: Filter };
  /** Why the client asked again: after a reconnect, or after it saw a gap in the event `seq`s. */
  meta: { reason: "reconnect" | "gap" };
}

/** Everything `onAction` listeners receive. */
export type LiveAction = ServerAction | ConnectionAction | ResyncAction;

/** How a request failed: `code` is a protocol error code, or "timeout", "closed", "unsubscribed". */
export interface LiveError extends Error {
  code: string;
  detail: string;
  /** Extra fields of the server's ERROR payload, e.g. `fields` with code "invalid". */
  [key: string]: unknown;
}

/** The part of the WebSocket API the client uses. */
export interface WebSocketLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number): void;
}

export interface BackoffOptions {
  /** Delay before the first reconnect, in ms (default 500). */
  initial?: number;
  /** Longest delay, in ms (default 30000). */
  max?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Up to this share of the delay is taken off at random (default 0.5). */
  jitter?: number;
}

export interface ConnectOptions {
  /** A DRF token key, sent in an `authenticate` frame before anything else. Omit it to use the session cookie. */
  token?: string;
  /** The WebSocket constructor (default `globalThis.WebSocket`). */
  WebSocket?: new (url: string) => WebSocketLike;
  /** Ms to wait for a reply before the request rejects with code "timeout" (default 10000). */
  requestTimeout?: number;
  backoff?: BackoffOptions;
  /** A source of numbers in [0, 1) for the jitter (default `Math.random`). */
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: any) => void;
}

/** How a subscription ended without `unsubscribe()`: revoked by the server, or a (re)subscribe failed. */
export interface SubscriptionEnd {
  reason: string;
  error?: LiveError;
}

export interface Subscription<T = unknown> {
  /**
   * The first snapshot (SUBSCRIBED payload). Rejects with a LiveError on an ERROR reply or a timeout.
   * Shared by every subscription to the same target.
   */
  readonly ready: Promise<T>;
  /** Resolves on UNSUBSCRIBED (at once when other subscriptions share the target or nothing was sent). */
  unsubscribe(): Promise<void>;
  /** Calls `fn` once if the server ends the subscription; returns a function that removes `fn`. */
  onEnd(fn: (end: SubscriptionEnd) => void): () => void;
}

export interface LiveClient {
  readonly state: ConnectionState;
  /** Calls `fn` on every state change (not with the current state); returns an unsubscribe function. */
  onState(fn: (state: ConnectionState) => void): () => void;
  /** Calls `fn` with every action to dispatch: pass `store.dispatch`. Returns an unsubscribe function. */
  onAction(fn: (action: LiveAction) => unknown): () => void;
  /** Subscribe to one object (a hashid) or to a filtered collection; kept across reconnects. */
  subscribe<T = unknown>(model: string, idOrFilter: string | Filter): Subscription<T>;
  /** Resolves on PONG. */
  ping(): Promise<void>;
  /** Closes the socket (code 1000) for good: state "closed", no reconnect. */
  close(): void;
}

/** Open a client on `url` (e.g. "wss://example.com/ws/notifications/"); it connects at once. */
export declare function connect(url: string | URL, options?: ConnectOptions): LiveClient;
