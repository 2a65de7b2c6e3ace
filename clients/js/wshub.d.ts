// Type declarations for @wshub/client (wshub.js).

/** Any JSON value. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** A WebSocket constructor: the browser's, Node 22's global one, or the `ws` package's. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

/** What the client uses of a WebSocket. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
}

export interface ConnectOptions {
  /** The hub: `wss://hub.example.com` (`https://` works too). Defaults to the page's origin. */
  url?: string;
  /** The project id: 1–128 characters of `[A-Za-z0-9._:-]`. */
  project: string;
  /** The user's JWT, minted by your backend. Give this, `getToken`, or both. */
  token?: string;
  /**
   * Returns a fresh token (or a promise of one). Called when there is no `token`, after a
   * 4001 close (token expired), and after 3 handshakes in a row failed before opening.
   */
  getToken?: () => string | Promise<string>;
  /** The WebSocket class; defaults to `globalThis.WebSocket`. On Node 20/21 pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** In [0, 1); defaults to `Math.random`. For tests. */
  random?: () => number;
  /** Defaults to the global one. For tests (a fake clock). */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  /** Defaults to the global one. For tests. */
  clearTimeout?: (id: any) => void;
  /** Milliseconds; defaults to `Date.now`. For tests. */
  now?: () => number;
  /** How long `publish()` and `presence()` wait for their answer; 10 000 ms by default. */
  requestTimeoutMs?: number;
}

export interface WelcomeFrame {
  type: 'welcome';
  conn: number;
  user: string;
  project: string;
  epoch: string;
  offset: number;
  recovered: boolean;
  missed: number;
  ping_interval_ms: number;
}

export interface Message {
  /** Grows by one per message in the project (within an epoch). */
  offset: number;
  /** The publisher's user id, or the `from` of an HTTP publish. */
  from: string;
  data: Json;
  /** When the server accepted it, in milliseconds since the Unix epoch. */
  ts: number;
}

export type PresenceEvent =
  | { event: 'join'; user: string }
  | { event: 'leave'; user: string }
  | { event: 'sync'; users: string[] };

export type StateEvent =
  | { state: 'connecting' }
  | { state: 'open' }
  | {
      state: 'reconnecting';
      /** Milliseconds until the next attempt. */
      delay: number;
      /** Reconnect attempts since the last stable connection, from 1. */
      attempt: number;
      /** The close code, or null when the token could not be fetched. */
      code: number | null;
      reason: string;
    }
  | {
      state: 'closed';
      /** 1000 after `close()`; the server's code when it ended the connection for good; null when no socket could be made. */
      code: number | null;
      reason: string;
    };

export interface RecoveredEvent {
  /** false: messages were lost (history gone or epoch changed); reload your state from your backend. */
  recovered: boolean;
  /** How many missed messages follow (they arrive as `message` events); 0 when not recovered. */
  missed: number;
  epoch: string | null;
  /** The offset delivery continues after. */
  offset: number | null;
}

export interface EventMap {
  message: Message;
  presence: PresenceEvent;
  state: StateEvent;
  error: WshubError;
  recovered: RecoveredEvent;
  welcome: WelcomeFrame;
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Connection {
  readonly state: ConnectionState;
  readonly project: string;
  /** The hub's base URL, normalised (`ws(s)://`, no trailing slash). */
  readonly url: string;
  /** The offset of the last message seen (or of the welcome), null before any. */
  readonly lastOffset: number | null;
  readonly epoch: string | null;
  readonly welcome: WelcomeFrame | null;

  /** Subscribes; returns the function that unsubscribes. */
  on<K extends keyof EventMap>(event: K, listener: (payload: EventMap[K]) => void): () => void;

  /**
   * Publishes `data` to the project; resolves with its offset once the server acks it.
   * Rejects on close before the ack, on a `rate_limited`/`broker_unavailable`/`publish_not_allowed`
   * error frame (attributed to the oldest publish waiting), or after the request timeout.
   * Made while not connected, it waits for the connection.
   */
  publish(data: Json): Promise<number>;

  /** The users connected to the project, sorted (you included). */
  presence(): Promise<string[]>;

  /** Closes with 1000, never reconnects; the next `connect()` for the project makes a new connection. */
  close(reason?: string): void;
}

/** The connection to `project` on `url`: the same object for every call in this page/realm. */
export function connect(options: ConnectOptions): Connection;

/** What the client does after a close with `code`. */
export function closeAction(code: number): 'stop' | 'refresh' | 'reconnect';

/** The full-jitter delay before reconnect attempt `attempt` (0-based), in ms. */
export function backoffDelay(attempt: number, random?: () => number): number;

export class WshubError extends Error {
  /**
   * `closed`, `connection_closed`, `timeout`, `token_refresh_failed`, `bad_frame`, `invalid_socket`,
   * or the `code` of a server `error` frame (`rate_limited`, `broker_unavailable`, `invalid_json`, ...).
   */
  readonly code: string;
  /** The close code, for `closed` and `connection_closed`. */
  readonly closeCode?: number;
  readonly reason?: string;
  constructor(code: string, message: string, details?: { closeCode?: number; reason?: string; cause?: unknown });
}

export const PROTOCOL: 'wshub.v1';
export const BEARER_PREFIX: 'wshub.bearer.';
export const BACKOFF_BASE_MS: number;
export const BACKOFF_CAP_MS: number;
export const STABLE_MS: number;
export const REQUEST_TIMEOUT_MS: number;
export const CONNECT_TIMEOUT_MS: number;
export const HANDSHAKE_FAILURES_BEFORE_REFRESH: number;
