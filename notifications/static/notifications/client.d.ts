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
  /** A collection's filter; `{}` for the unfiltered collection (every object the user may see). */
  filter?: Filter;
  /**
   * On an event: its position in the target's stream. On a LISTED reply of a collection this socket
   * subscribes to: the stream position the page reflects (the client dispatches it at that point).
   */
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
  /** On LISTED: the page asked for (absent when the request named none: the first page). */
  page?: number;
  /** On LISTED: the query parameters of the request, added by the client (the server does not echo them). */
  query?: Record<string, string>;
  [key: string]: unknown;
}

/**
 * A server frame: a Flux Standard Action. Replies: SUBSCRIBED, UNSUBSCRIBED, RETRIEVED, LISTED, CREATED,
 * UPDATED, DESTROYED, a custom action's own type, ERROR. Events: UPDATE_*, CREATE_*, DELETE_*, and
 * application events.
 */
export interface ServerAction<P = unknown> {
  type: string;
  payload: P;
  meta: LiveMeta;
  error?: true;
}

/** A paginated REST list, as DRF's PageNumberPagination (or LimitOffsetPagination) returns it. */
export interface Page<T> {
  count: number;
  next: string | null;
  previous: string | null;
  results: T[];
}

/** A collection in the REST API's list shape: a plain array, or a page when the viewset paginates. */
export type ListPayload<T> = T[] | Page<T>;

/** The reply to `retrieve()`: the object as `GET` on its detail URL returns it, keyed by `meta.id`. */
export interface RetrievedAction<T = unknown> extends ServerAction<T> {
  type: "RETRIEVED";
  meta: LiveMeta & { request_id: number; model: string; id: string };
}

/** The reply to `list()`. `meta.seq` and `meta.epoch` when this socket subscribes to the collection. */
export interface ListedAction<T = unknown> extends ServerAction<ListPayload<T>> {
  type: "LISTED";
  meta: LiveMeta & { request_id: number; model: string; filter: Filter };
}

/** The reply to a write: the REST response body (`null` for DESTROYED). */
export interface WrittenAction<T = unknown> extends ServerAction<T | null> {
  type: "CREATED" | "UPDATED" | "DESTROYED";
  meta: LiveMeta & { request_id: number; model: string };
}

/** An ERROR frame: `payload.code` is one of the protocol's error codes. */
export interface ErrorAction extends ServerAction<ErrorPayload> {
  type: "ERROR";
  error: true;
}

export interface ErrorPayload {
  code: ErrorCode;
  detail: string;
  /** With code "invalid": the names of the fields at fault. */
  fields?: string[];
  /** With code "invalid": DRF's validation messages, `{field: ["message", ...]}` (nested for nested fields). */
  errors?: Record<string, unknown>;
  [key: string]: unknown;
}

/** The codes of the server's ERROR frames (docs/protocol.md). */
export type ErrorCode =
  | "parse_error"
  | "invalid"
  | "unknown_action"
  | "not_found"
  | "not_authenticated"
  | "throttled"
  | "limit_exceeded"
  | "not_allowed"
  | "unavailable";

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

/**
 * How a request failed: `code` is a protocol error code (ErrorCode), or one of the client's own:
 * "timeout" (no reply in time), "closed" (the client was closed), "disconnected" (a write or custom
 * action cut off by a lost connection: it may have run), "unsubscribed" (`ready` of a subscription
 * given up before its snapshot).
 */
export interface LiveError extends Error {
  code: ErrorCode | "timeout" | "closed" | "disconnected" | "unsubscribed" | (string & {});
  detail: string;
  /** With code "invalid": the names of the fields at fault. */
  fields?: string[];
  /** With code "invalid": DRF's validation messages, `{field: ["message", ...]}`. */
  errors?: Record<string, unknown>;
  /** Any other field of the server's ERROR payload. */
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
  /** Ms to wait for a reply before the request rejects with code "timeout" (default 10000); the default
   * `timeout` of retrieve(), list() and request(). */
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

export interface RequestOptions {
  /** Ms from the call until the promise rejects with code "timeout" (default: the client's requestTimeout). */
  timeout?: number;
}

export interface ListOptions extends RequestOptions {
  /** The collection: declared filter fields to ids. Omitted or `{}`: every object the user may see. */
  filter?: Filter;
  /** The page number, as `?page=N` on the REST list (default: the first page). */
  page?: number;
  /** Other query parameters of the REST list, e.g. `{search: "docs", ordering: "-id"}`. */
  query?: Record<string, string>;
}

export interface LiveClient {
  readonly state: ConnectionState;
  /** Calls `fn` on every state change (not with the current state); returns an unsubscribe function. */
  onState(fn: (state: ConnectionState) => void): () => void;
  /** Calls `fn` with every action to dispatch: pass `store.dispatch`. Returns an unsubscribe function. */
  onAction(fn: (action: LiveAction) => unknown): () => void;
  /**
   * Subscribe to one object (a hashid), to a filtered collection, or (`{}` or nothing) to every object
   * of the model the user may see; kept across reconnects.
   */
  subscribe<T = unknown>(model: string, idOrFilter?: string | Filter): Subscription<T>;
  /**
   * One object, as `GET` on its REST detail URL returns it. Resolves with the RETRIEVED frame, once it
   * was dispatched. Asked again on the next connection if a disconnect cuts it off.
   */
  retrieve<T = unknown>(model: string, id: string, options?: RequestOptions): Promise<RetrievedAction<T>>;
  /**
   * A page of a collection, as `GET` on the REST list URL returns it. Resolves with the LISTED frame,
   * once it was dispatched (at its `meta.seq` in the collection's stream when this client subscribes
   * to the collection). Asked again on the next connection if a disconnect cuts it off.
   */
  list<T = unknown>(model: string, options?: ListOptions): Promise<ListedAction<T>>;
  /**
   * Any other request: a write ("create", "update", "partial_update", "destroy") or a custom action;
   * `body` is the rest of the frame, e.g. `{model, id, data}`. Resolves with the reply frame, once it
   * was dispatched. Never sent twice: a lost connection rejects it with code "disconnected".
   */
  request<T = unknown>(
    action: string,
    body?: { model?: string; id?: string; data?: unknown; [key: string]: unknown },
    options?: RequestOptions,
  ): Promise<ServerAction<T>>;
  /** Resolves on PONG. */
  ping(): Promise<void>;
  /** Closes the socket (code 1000) for good: state "closed", no reconnect. */
  close(): void;
}

/** Open a client on `url` (e.g. "wss://example.com/ws/notifications/"); it connects at once. */
export declare function connect(url: string | URL, options?: ConnectOptions): LiveClient;
