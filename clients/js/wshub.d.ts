// Type declarations for @wshub/client (wshub.js). Checked under `strict` against the DOM's
// WebSocket and the `ws` package's by test/types (nodenext and bundler resolution).

/** Any JSON value. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/**
 * What the client uses of a WebSocket. Handler parameters are `any` on purpose: the DOM's
 * handlers take `Event`/`MessageEvent`/`CloseEvent` (with `this: WebSocket`), `ws`'s take its
 * own event classes, and both must be assignable here under `strictFunctionTypes`.
 */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => any) | null;
  onmessage: ((event: any) => any) | null;
  onerror: ((event: any) => any) | null;
  onclose: ((event: any) => any) | null;
}

/** A WebSocket class: the browser's, Node 22's global one, or the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Where a subscription stands: keep it (sessionStorage) to resume after a page reload. */
export interface Position {
  offset: number | null;
  epoch: string | null;
}

export interface Logger {
  debug?(...args: unknown[]): void;
  warn?(...args: unknown[]): void;
}

export interface ConnectOptions {
  /** The hub: `wss://hub.example.com` (`https://` works too). Defaults to the page's origin. */
  url?: string;
  /** v1: the project (one socket per project). Leave it out for v2 (one socket, `hub.subscribe`). */
  project?: string;
  /** The user's JWT, minted by your backend. Give this, `getToken`, or both. */
  token?: string;
  /**
   * A fresh token (or a promise of one); `null` means "signed out": the client stops. Called
   * when there is no `token`, before `exp` (v2 refreshes in band), after a 4001 close, and when
   * `/ws/check` says a handshake is refused (401/403): a different token is tried, the same
   * one stops the client.
   */
  getToken?: () => string | null | Promise<string | null>;
  /** The WebSocket class; defaults to `globalThis.WebSocket` (none during SSR: the client stays idle). */
  WebSocket?: WebSocketConstructor;
  /** `fetch` for `/ws/check` after a refused handshake (and the SSE fallback's stream); `null` turns the check off. */
  fetch?: ((url: string, init?: any) => Promise<{ status: number; headers?: { get(name: string): string | null }; json(): Promise<any>; body?: any }>) | null;
  /**
   * v1: after this many failed handshakes that `/ws/check` says the hub would have taken (`204`:
   * something between blocks WebSockets), receive over server-sent events (`GET /sse/projects/{p}`)
   * instead; `true` is 3. Receive only: `publish()` and `presence()` then reject with `receive_only`.
   * Off by default.
   */
  sseFallback?: boolean | number;
  /** Reconnect backoff: attempt n waits random() × min(capMs, baseMs × 2ⁿ); gives up after `attempts` failures in a row. */
  backoff?: { baseMs?: number; capMs?: number; attempts?: number };
  /** How long `publish()`, `presence()` and `history()` wait for their answer (and in the queue); 10 000 ms. */
  requestTimeoutMs?: number;
  /** Publishes at most this many per second (the server allows 50, bursts 100); 40. */
  publishRate?: number;
  /** Presence and history requests per second (the server allows 20); 15. */
  requestRate?: number;
  /** Publishes waiting for the connection beyond this many are refused (`queue_full`); 100. */
  maxQueue?: number;
  /** No frame this long after a ping declares the link dead; 5000 ms. */
  pongTimeoutMs?: number;
  /** How long the socket outlives its last `release()`; 1000 ms. */
  releaseGraceMs?: number;
  /** v2: refresh the token this long before its `exp`; 30 000 ms (at most half its lifetime). */
  refreshAheadMs?: number;
  /** v1: resume from here (v2: `hub.subscribe(project, {position})`). */
  position?: Position;
  logger?: Logger;
  /** In [0, 1); defaults to `Math.random`. For tests. */
  random?: () => number;
  /** For tests (a fake clock). */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
  now?: () => number;
}

export interface WelcomeFrame {
  type: 'welcome';
  conn: number;
  user: string;
  ping_interval_ms: number;
  /** v1 only. */
  project?: string;
  epoch?: string;
  offset?: number;
  recovered?: boolean;
  missed?: number;
  /** v2: 2. */
  protocol?: number;
}

export interface Message {
  /** Grows by one per message in the project (within an epoch); absent for ephemeral messages. */
  offset: number;
  /** The publisher's user id, or the `from` of an HTTP publish. */
  from: string;
  data: Json;
  /** When the server accepted it, in ms since the Unix epoch. */
  ts: number;
  /** v2: the project (`~user` for the personal stream). */
  project?: string;
  ephemeral?: true;
}

export type PresenceEvent =
  | { event: 'join'; user: string }
  | { event: 'leave'; user: string }
  | { event: 'sync'; users: string[] };

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export type StateEvent =
  | { state: 'connecting' }
  | { state: 'open' }
  | {
      state: 'reconnecting';
      /** ms until the next attempt; null while waiting for `pageshow`. */
      delay: number | null;
      attempt: number;
      code: number | null;
      reason: string;
    }
  | { state: 'closed'; code: number | null; reason: string };

export interface RecoveredEvent {
  /** false: messages were lost; reload your state from your backend. */
  recovered: boolean;
  missed: number;
  epoch: string | null;
  offset: number | null;
  /** v2: `epoch_changed`, `out_of_range` or `from_the_future`. */
  lost_reason?: string;
}

/** How a connection receives. */
export type Transport = 'websocket' | 'sse';

export interface TransportEvent {
  transport: Transport;
  /** Blocked handshakes counted before the switch. */
  blocked: number;
}

export interface ConnectionEvents {
  message: Message;
  presence: PresenceEvent;
  state: StateEvent;
  error: WshubError;
  recovered: RecoveredEvent;
  welcome: WelcomeFrame;
  /** The connection fell back to server-sent events (`sseFallback`). */
  transport: TransportEvent;
}

export interface HubEvents {
  state: StateEvent;
  error: WshubError;
  welcome: WelcomeFrame;
}

export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed' | 'failed' | 'closed';

export interface SubscriptionEvents {
  message: Message;
  presence: PresenceEvent;
  recovered: RecoveredEvent;
  error: WshubError;
  state: { state: SubscriptionState; code?: string | number | null; reason?: string };
}

export interface PublishOptions {
  /** Idempotency key (1–128 bytes); one is made for you. A repeat within `history.ttl` is acked `duplicate`. */
  key?: string;
  /** Delivered live only: no offset, no history, not retried after a reconnect. */
  ephemeral?: boolean;
  /** false: the sender does not receive its own message. */
  echo?: boolean;
}

export interface Ack {
  /** Absent for an ephemeral publish. */
  offset?: number;
  duplicate?: true;
}

export interface HistoryOptions {
  since?: number;
  limit?: number;
  reverse?: boolean;
}

export interface HistoryPage {
  project: string;
  epoch: string;
  offset: number;
  complete: boolean;
  messages: Message[];
}

interface HandleBase {
  readonly state: ConnectionState;
  /** The hub's base URL, normalised (`ws(s)://`, no trailing slash). */
  readonly url: string;
  /** `'websocket'`, or `'sse'` once a v1 connection fell back to server-sent events (`sseFallback`). */
  readonly transport: Transport;
  readonly released: boolean;
  /** Reconnects now (a "Retry now" button): cuts a pending backoff short, revives a stopped client. */
  reconnect(): void;
  /** Lets go of this handle; the socket closes when the last one is released, after the grace period. */
  release(graceMs?: number): void;
  /** Releases at once (no grace period). */
  close(reason?: string): void;
}

/** A v1 connection (one project per socket). */
export interface Connection extends HandleBase {
  readonly project: string;
  readonly lastOffset: number | null;
  readonly epoch: string | null;
  readonly welcome: WelcomeFrame | null;
  on<K extends keyof ConnectionEvents>(event: K, listener: (payload: ConnectionEvents[K]) => void): () => void;
  /** Resolves with the message's offset. */
  publish(data: Json): Promise<number>;
  presence(): Promise<string[]>;
}

/** A v2 hub: one socket per page, many subscriptions. */
export interface Hub extends HandleBase {
  /** The token's `sub`, once welcomed. */
  readonly user: string | null;
  on<K extends keyof HubEvents>(event: K, listener: (payload: HubEvents[K]) => void): () => void;
  /** The subscription to `project` (`~user`: your personal stream); the same object while it lives. */
  subscribe(project: string, options?: { position?: Position; last?: number }): Subscription;
  publish(project: string, data: Json, options?: PublishOptions): Promise<Ack>;
  presence(project: string): Promise<string[]>;
  history(project: string, options?: HistoryOptions): Promise<HistoryPage>;
}

export interface Subscription {
  readonly project: string;
  readonly state: SubscriptionState;
  readonly position: Position;
  on<K extends keyof SubscriptionEvents>(event: K, listener: (payload: SubscriptionEvents[K]) => void): () => void;
  unsubscribe(): void;
}

/** v1: a handle on the connection to `project` (one socket per project and page). */
export function connect(options: ConnectOptions & { project: string }): Connection;
/** v2: a handle on the page's one connection to the hub. */
export function connect(options: ConnectOptions & { project?: undefined }): Hub;

export function closeAction(code: number): 'stop' | 'refresh' | 'reconnect';
export function backoffDelay(attempt: number, random?: () => number, baseMs?: number, capMs?: number): number;
/** The claims of a JWT, unverified (the client reads `sub` and `exp`). */
export function tokenClaims(token: string): Record<string, unknown>;

export class WshubError extends Error {
  /**
   * `closed`, `connection_closed`, `timeout`, `queue_full`, `unauthorized`, `forbidden`,
   * `rate_limited`, `token_refresh_failed`, `user_mismatch`, `unsubscribed`, `bad_frame`, `invalid_socket`,
   * or the `code` of a server `error` frame.
   */
  readonly code: string;
  readonly closeCode?: number;
  readonly reason?: string;
  /** `timeout`/`connection_closed`/`queue_full`: whether the publish ever reached the socket. */
  readonly sent?: boolean;
  /** `unauthorized`/`forbidden`/`rate_limited`: the status `/ws/check` answered. */
  readonly status?: number;
  readonly project?: string;
  constructor(code: string, message: string, details?: { closeCode?: number; reason?: string; cause?: unknown; sent?: boolean; status?: number; project?: string });
}

export const PROTOCOL: 'wshub.v1';
export const PROTOCOL_V2: 'wshub.v2';
export const BEARER_PREFIX: 'wshub.bearer.';
export const VERSION: string;
