// wshub JavaScript client. Protocol v1 (`connect({project})`: one project per socket) and v2
// (`connect({})` then `hub.subscribe(project)`: many projects over one socket per page).
// One shared link per (hub, project|v2) in the realm, handed out as ref-counted handles.
// The link reconnects with full-jitter backoff, recovers each subscription from its position,
// notices dead links (app pings at the server's ping_interval_ms, online/offline, visibility,
// pagehide/pageshow), asks /ws/check to explain refused handshakes, refreshes tokens in band
// (v2) and paces publishes under the server's rate so it never bans itself. A v1 connection may
// fall back to receiving over server-sent events when WebSockets are blocked (`sseFallback`).
// SPEC §5, §6, §10-§14; README.md explains the rules. Dependency-free ES module.

export const PROTOCOL = 'wshub.v1';
export const PROTOCOL_V2 = 'wshub.v2';
export const BEARER_PREFIX = 'wshub.bearer.';
const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 30000;
const STABLE_MS = 60000;
const REQUEST_TIMEOUT_MS = 10000;
const CONNECT_TIMEOUT_MS = 15000;
const PONG_TIMEOUT_MS = 5000;
const RELEASE_GRACE_MS = 1000;
const REFRESH_AHEAD_MS = 30000;
const TOKEN_FAILURES_MAX = 5;
const SSE_FALLBACK_AFTER = 3;
export const VERSION = '0.2.0';

const PUBLISH_ERROR_CODES = /^(rate_limited|broker_unavailable|publish_not_allowed|forbidden)$/;
const STOP_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);
const PROJECT_ID = /^([A-Za-z0-9._:-]{1,128}|~user)$/;
const noop = () => {};

/** What to do after a close with `code`: 'stop', 'refresh' (new token, reconnect) or 'reconnect'. */
export function closeAction(code) {
  if (code === 4001) return 'refresh';
  if (code === 4008) return 'reconnect';
  if (code >= 4000 || STOP_CODES.has(code)) return 'stop';
  return 'reconnect';
}

/** Full jitter: random() * min(cap, base * 2^attempt). */
export function backoffDelay(attempt, random = Math.random, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS) {
  const r = Math.min(1, Math.max(0, Number(random()) || 0));
  return r * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

export class WshubError extends Error {
  constructor(code, message, details = {}) {
    super(`wshub: ${message}`, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'WshubError';
    this.code = code;
    const { cause, ...rest } = details;
    for (const k in rest) if (rest[k] !== undefined) this[k] = rest[k];
  }
}

/** The claims of a JWT (unverified), or {} when it does not decode. */
export function tokenClaims(token) {
  try {
    const b = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b)) || {};
  } catch {
    return {};
  }
}

/** A small event emitter; listener faults are reported, never thrown into the client. */
class Emitter {
  #l = new Map();
  on(event, fn) {
    const entry = { fn };
    if (!this.#l.has(event)) this.#l.set(event, new Set());
    const set = this.#l.get(event);
    set.add(entry);
    return () => set.delete(entry);
  }
  _emit(event, payload) {
    for (const { fn } of [...(this.#l.get(event) || [])]) {
      try {
        fn(payload);
      } catch (err) {
        if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
        else queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

const REGISTRY = Symbol.for('wshub.client.links.v2');
function registry() {
  if (!(globalThis[REGISTRY] instanceof Map)) globalThis[REGISTRY] = new Map();
  return globalThis[REGISTRY];
}

function baseUrl(url) {
  let u = url;
  if (u === undefined || u === null || u === '') {
    if (typeof location === 'undefined') throw new TypeError('wshub: invalid url');
    u = location.origin;
  }
  u = String(u).trim().replace(/\/+$/, '');
  if (/^https?:\/\//i.test(u)) u = u.replace(/^http/i, 'ws');
  if (!/^wss?:\/\//i.test(u)) throw new TypeError('wshub: invalid url');
  return u;
}

/**
 * A handle on the shared connection for `(url, project)` (v1) or `url` (v2, no `project`).
 * Every call returns a new handle; `release()` (or `close()`) lets go of it, and the socket
 * closes when the last handle is released (after `releaseGraceMs` for `release()`).
 */
export function connect(options) {
  if (options === null || typeof options !== 'object') throw new TypeError('wshub: connect() needs options');
  const url = baseUrl(options.url);
  const project = options.project;
  if (project !== undefined && (typeof project !== 'string' || !PROJECT_ID.test(project) || project === '~user')) {
    throw new TypeError('wshub: invalid project');
  }
  if (typeof options.token !== 'string' && typeof options.getToken !== 'function') {
    throw new TypeError('wshub: connect() needs token or getToken');
  }
  const key = `${url}\n${project ?? ''}`;
  let link = registry().get(key);
  if (link) link._checkUser(options.token);
  else {
    link = new Link(url, project, options, key);
    registry().set(key, link);
    // Started after the caller's listeners are on: they see 'connecting'.
    queueMicrotask(() => link._start());
  }
  return project === undefined ? new Hub(link) : new Connection(link);
}

class Handle {
  #link;
  #offs = [];
  #released = false;
  constructor(link) {
    this.#link = link;
    link._retain();
  }
  get _link() {
    return this.#link;
  }
  _req(project, type, fields, isPublish) {
    if (this.#released) return Promise.reject(new WshubError('closed', 'released'));
    return this.#link._request(project, type, fields, isPublish);
  }
  get state() {
    return this.#link.state;
  }
  get url() {
    return this.#link.url;
  }
  /** 'websocket', or 'sse' once a v1 connection fell back to server-sent events (receive only). */
  get transport() {
    return this.#link.transport;
  }
  get released() {
    return this.#released;
  }
  on(event, fn) {
    const off = this.#link.on(event, fn);
    this.#offs.push(off);
    return off;
  }
  /** Reconnects now (a "Retry now" button): cancels a pending backoff, revives a stopped link. */
  reconnect() {
    this._link.reconnect();
  }
  /** Lets go of this handle; the socket closes when the last one is released, after the grace period. */
  release(graceMs, reason) {
    if (this.#released) return;
    this.#released = true;
    this.#link._release(graceMs, reason);
    for (const off of this.#offs) off();
  }
  /** Releases at once, without a grace period. */
  close(reason) {
    this.release(0, reason);
  }
}

/** A v1 connection: one project per socket. */
class Connection extends Handle {
  get project() {
    return this._sub().project;
  }
  get lastOffset() {
    return this._sub().offset;
  }
  get epoch() {
    return this._sub().epoch;
  }
  get welcome() {
    return this._link.welcome;
  }
  _sub() {
    return [...this._link._subs.values()][0];
  }
  on(event, fn) {
    return ['message', 'presence', 'recovered'].includes(event) ? this._sub().on(event, fn) : super.on(event, fn);
  }
  publish(data) {
    return this._req(this._sub().project, 'publish', { data }, true).then((a) => a.offset);
  }
  presence() {
    return this._req(this._sub().project, 'presence', {}).then((a) => a.users);
  }
}

/** A v2 hub: one socket, many subscriptions. */
class Hub extends Handle {
  get user() {
    return this._link.welcome?.user ?? null;
  }
  /** The subscription to `project` (`~user`: your personal stream); the same object while it lives. */
  subscribe(project, options = {}) {
    return this._link.subscribe(project, options);
  }
  /** Publishes; resolves with `{offset, duplicate}` (`offset` absent when ephemeral). */
  publish(project, data, options = {}) {
    return this._req(project, 'publish', { data, ...options }, true);
  }
  presence(project) {
    return this._req(project, 'presence', {}).then((a) => a.users);
  }
  history(project, options = {}) {
    return this._req(project, 'history', options);
  }
}

/** One project's subscription on a v2 hub (or the project of a v1 connection). */
class Subscription extends Emitter {
  constructor(link, project, options) {
    super();
    this._lk = link;
    this.project = project;
    this.state = 'subscribing';
    const pos = options.position || {};
    this.offset = Number.isInteger(pos.offset) ? pos.offset : null;
    this.epoch = typeof pos.epoch === 'string' ? pos.epoch : null;
    this._last = options.last;
    this._asked = false;
  }
  /** `{offset, epoch}`: keep it (sessionStorage) and pass it as `position` to resume after a reload. */
  get position() {
    return { offset: this.offset, epoch: this.epoch };
  }
  unsubscribe() {
    this._lk._unsubscribe(this);
  }
  _set(state, details = {}) {
    this.state = state;
    this._emit('state', { state, ...details });
  }
  _message(frame) {
    if (Number.isInteger(frame.offset)) {
      if (this.offset !== null && frame.offset <= this.offset) return;
      this.offset = frame.offset;
    }
    const m = { offset: frame.offset, from: frame.from, data: frame.data, ts: frame.ts };
    if (this._lk._v2) m.project = this.project;
    if (frame.ephemeral) m.ephemeral = true;
    this._emit('message', m);
  }
}

/** A token bucket, `rate` per second in bursts of `rate`: take() is 0 when a token was taken, else the ms to wait. */
function bucket(rate, now) {
  let tokens = rate;
  let at = now();
  return () => {
    const t = now();
    tokens = Math.min(rate, tokens + ((t - at) * rate) / 1000);
    at = t;
    return tokens >= 1 ? (tokens -= 1, 0) : Math.ceil(((1 - tokens) * 1000) / rate);
  };
}

class Link extends Emitter {
  state = 'idle';
  transport = 'websocket';
  _subs = new Map();
  welcome = null;
  #o;
  #url;
  #key;
  #token;
  #getToken;
  #needToken;
  #WS;
  #ws = null;
  /** The AbortController of the event stream being read (transport 'sse'). */
  #es = null;
  /** Failed handshakes that /ws/check said would have passed: WebSockets do not get through. */
  #blocked = 0;
  #opened = false;
  #welcomeAt = null;
  #attempt = 0;
  #failures = 0;
  #tokenFailures = 0;
  #gen = 0;
  #stopped = false;
  #holders = 0;
  #timers = {};
  #pending = new Map();
  #queue = [];
  #nextId = 1;
  #buckets;
  #bo;
  #listening = [];
  #T;
  #C;
  _now;

  constructor(url, project, o, key) {
    super();
    this.#o = o;
    this.url = url;
    this.#url = url;
    this.#key = key;
    this._v2 = project === undefined;
    this.#token = typeof o.token === 'string' ? o.token : null;
    this.#getToken = typeof o.getToken === 'function' ? o.getToken : null;
    this.#needToken = this.#token === null;
    this.#WS = o.WebSocket ?? globalThis.WebSocket;
    this.#T = o.setTimeout ?? ((f, ms) => setTimeout(f, ms));
    this.#C = o.clearTimeout ?? ((id) => clearTimeout(id));
    this._now = o.now ?? Date.now;
    this._random = o.random ?? Math.random;
    this._timeout = o.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.#bo = { baseMs: BACKOFF_BASE_MS, capMs: BACKOFF_CAP_MS, attempts: Infinity, ...o.backoff };
    this.#buckets = { publish: bucket(o.publishRate ?? 40, this._now), request: bucket(o.requestRate ?? 15, this._now) };
    this._maxQueue = o.maxQueue ?? 100;
    if (!this._v2) this._subs.set(project, new Subscription(this, project, { position: o.position }));
  }

  #log(level, ...args) {
    this.#o.logger?.[level]?.('wshub:', ...args);
  }
  #timer(name, ms, fn) {
    this.#clear(name);
    this.#timers[name] = this.#T(() => {
      delete this.#timers[name];
      fn();
    }, ms);
  }
  #clear(name) {
    if (this.#timers[name] !== undefined) this.#C(this.#timers[name]);
    delete this.#timers[name];
  }

  _checkUser(token) {
    if (typeof token !== 'string' || this.#token === null) return;
    const a = tokenClaims(token).sub;
    const b = tokenClaims(this.#token).sub;
    if (a !== undefined && b !== undefined && a !== b) {
      throw new WshubError('user_mismatch', 'connected as another user; release every handle first');
    }
  }
  _retain() {
    this.#holders += 1;
    this.#clear('release');
  }
  _release(graceMs = this.#o.releaseGraceMs ?? RELEASE_GRACE_MS, reason) {
    this.#holders -= 1;
    if (this.#holders > 0) return;
    if (graceMs > 0) this.#timer('release', graceMs, () => this.#holders <= 0 && this.close());
    else this.close(reason);
  }

  _start() {
    // No socket during server-side rendering (no WebSocket class): the link waits, idle.
    if (typeof this.#WS !== 'function' || this.#stopped) return;
    const w = typeof window !== 'undefined' && typeof window.addEventListener === 'function' ? window : null;
    const d = typeof document !== 'undefined' && typeof document.addEventListener === 'function' ? document : null;
    const add = (target, event, fn) => {
      if (!target) return;
      target.addEventListener(event, fn);
      this.#listening.push(() => target.removeEventListener(event, fn));
    };
    add(w, 'online', () => this.state === 'reconnecting' && this.reconnect());
    add(w, 'offline', () => this.#drop('offline'));
    add(w, 'pagehide', () => {
      // Close the socket so the page can enter the back/forward cache; pageshow recovers.
      if (this.#stopped) return;
      this.#suspended = true;
      this.#clear('reconnect');
      this.#drop('pagehide', true);
    });
    add(w, 'pageshow', () => {
      if (this.#suspended) {
        this.#suspended = false;
        this.reconnect();
      }
    });
    add(d, 'visibilitychange', () => {
      if (d.visibilityState !== 'visible') return;
      if (this.state === 'open') this.#probe();
      else if (this.state === 'reconnecting') this.reconnect();
    });
    this.#connect();
  }
  #suspended = false;

  /** Reconnects now: a pending backoff is cut short, a stopped link (refused token) revived. */
  reconnect() {
    if (this.#holders <= 0 && this.#stopped) return;
    this.#attempt = 0;
    this.#failures = 0;
    this.#tokenFailures = 0;
    this.#suspended = false;
    if (this.#stopped) {
      this.#stopped = false;
      registry().set(this.#key, this);
    }
    if (this.state === 'open' || this.state === 'connecting') return;
    this.#clear('reconnect');
    this.#connect();
  }

  /** Closes with 1000; pending requests reject with `closed`. */
  close(reason = 'client closed') {
    if (this.#stopped && this.state === 'closed') return this.#final();
    const ws = this.#ws;
    this.#detach();
    try {
      ws?.close(1000, reason);
    } catch {}
    this.#stop(1000, reason, false);
    this.#final();
  }
  #final() {
    for (const off of this.#listening) off();
    this.#listening = [];
    if (registry().get(this.#key) === this) registry().delete(this.#key);
  }

  // === socket life ===

  async #connect() {
    if (this.#stopped) return;
    const gen = ++this.#gen;
    this.#set('connecting');
    if (this.#needToken) {
      let token;
      try {
        token = await this.#getToken();
      } catch (err) {
        if (gen !== this.#gen) return;
        this.#emitError(new WshubError('token_refresh_failed', 'getToken() failed', { cause: err }));
        if (++this.#tokenFailures >= TOKEN_FAILURES_MAX) return this.#stop(null, 'getToken() failed', false);
        return this.#retry(null, 'getToken() failed');
      }
      if (gen !== this.#gen) return;
      this.#tokenFailures = 0;
      if (token === null || token === undefined) return this.#stop(null, 'no token', false);
      if (typeof token !== 'string' || token === '') {
        this.#emitError(new WshubError('token_refresh_failed', 'getToken() failed'));
        return this.#retry(null, 'getToken() failed');
      }
      this.#token = token;
      this.#needToken = false;
    }
    this.#open();
  }

  #socketUrl() {
    const enc = (p) => encodeURIComponent(p).replace(/%3A/gi, ':');
    if (this._v2) return `${this.#url}/ws`;
    const sub = [...this._subs.values()][0];
    let url = `${this.#url}/ws/projects/${enc(sub.project)}`;
    sub._asked = Number.isInteger(sub.offset) && !!sub.epoch;
    if (sub._asked) url += `?since=${sub.offset}&epoch=${encodeURIComponent(sub.epoch)}`;
    return url;
  }

  #open() {
    if (this.transport === 'sse') return void this.#openSse();
    let ws;
    try {
      ws = new this.#WS(this.#socketUrl(), [this._v2 ? PROTOCOL_V2 : PROTOCOL, BEARER_PREFIX + this.#token]);
    } catch (err) {
      this.#emitError(new WshubError('invalid_socket', 'cannot open a WebSocket', { cause: err }));
      return this.#stop(null, 'cannot open a WebSocket', false);
    }
    this.#ws = ws;
    this.#opened = false;
    this.#welcomeAt = null;
    this.#timer('connect', CONNECT_TIMEOUT_MS, () => this.#ws === ws && this.#drop('connect timeout'));
    ws.onopen = () => {
      if (this.#ws === ws) {
        this.#opened = true;
      }
    };
    ws.onmessage = (e) => this.#ws === ws && this.#onText(e.data);
    // A refused handshake and a network fault look the same here: the close says what happened.
    ws.onerror = () => this.#ws === ws && !this.#opened && this.#drop('');
    ws.onclose = (e) => this.#ws === ws && this.#onClose(typeof e.code === 'number' ? e.code : 1006, e.reason ?? '');
  }

  /** Gives up on the socket as a network fault (1006: dead, offline, timeout), or closes it for pagehide (`wait`). */
  #drop(reason, wait) {
    if (!this.#ws && !this.#es) return;
    const ws = this.#ws;
    this.#onClose(1006, reason, wait);
    try {
      ws?.close(wait ? 1000 : undefined, wait ? reason : undefined);
    } catch {}
  }

  #detach() {
    for (const n of ['connect', 'ping', 'pong', 'refresh']) this.#clear(n);
    this.#es?.abort();
    this.#es = null;
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = noop;
  }

  #onClose(code, reason, wait = false) {
    const stable = this.#welcomeAt !== null && this._now() - this.#welcomeAt >= STABLE_MS;
    const opened = this.#opened;
    this.#detach();
    if (stable) {
      this.#attempt = 0;
      this.#failures = 0;
    }
    for (const sub of this._subs.values()) if (sub.state === 'subscribed') sub._set('subscribing');
    for (const [id, r] of this.#pending) {
      if (['subscribe', 'unsubscribe', 'refresh'].includes(r._type)) {
        // Asked again (or moot) on the next connection.
        this.#pending.delete(id);
        this.#C(r._timer);
        continue;
      }
      if (!r._sent) continue;
      r._sent = false;
      // A keyed publish is sent again with its key (the server dedupes); others may have landed.
      if (r._type === 'publish' && !(this._v2 && r._frame.key && !r._frame.ephemeral)) {
        this.#settle(id, new WshubError('connection_closed', `closed (${code} ${reason}) before the ack`, { closeCode: code, reason, sent: true }));
      }
    }
    this.#queue = [...this.#pending.keys()].filter((id) => !this.#pending.get(id)._sent);
    if (wait) return this.#set('reconnecting', { delay: null, attempt: this.#attempt, code, reason });
    const action = closeAction(code);
    if (action === 'stop' || (action === 'refresh' && !this.#getToken)) return this.#stop(code, reason, true);
    if (action === 'refresh') this.#needToken = true;
    // Refused handshakes look like network faults to a browser: /ws/check tells them apart.
    const f = this.#o.fetch === undefined ? globalThis.fetch : this.#o.fetch;
    if (!opened && typeof f === 'function') return this.#check(f, code, reason);
    this.#retry(code, reason);
  }

  /** After a refused handshake: asks /ws/check whether the server refuses us, and why. */
  async #check(f, code, reason) {
    const gen = ++this.#gen;
    const sub = !this._v2 && [...this._subs.values()][0];
    const url = `${this.#url.replace(/^ws/i, 'http')}/ws/check${sub ? `/projects/${sub.project}` : ''}`;
    let status = 0;
    let body = {};
    let retryAfter = 0;
    try {
      // The token in a header, not the URL (and whatever auth.allow_query_token says).
      const res = await f(url, { cache: 'no-store', credentials: 'omit', headers: { authorization: `Bearer ${this.#token}` } });
      status = res.status;
      retryAfter = Number(res.headers?.get?.('retry-after')) || 0;
      if (status !== 204) body = await res.json().catch(() => ({}));
    } catch {
      // Unreachable (or a hub without CORS on /ws/check): a network fault.
    }
    if (gen !== this.#gen || this.#stopped) return;
    // The hub would have taken the handshake, yet it failed: something between blocks WebSockets.
    if (status === 204 && this.#fallback()) return this.#connect();
    if (status === 401 || status === 403) {
      const err = new WshubError(status === 401 ? 'unauthorized' : 'forbidden', body.message || body.error || `handshake refused (${status})`, { status, reason: body.error });
      this.#emitError(err);
      if (!this.#getToken) return this.#stop(null, err.message, false);
      let token;
      try {
        token = await this.#getToken();
      } catch {}
      if (gen !== this.#gen || this.#stopped) return;
      if (typeof token !== 'string' || token === '' || token === this.#token) return this.#stop(null, err.message, false);
      this.#token = token;
    } else if (status === 429) {
      this.#emitError(new WshubError('rate_limited', body.message || 'too many handshakes', { status }));
    }
    this.#retry(code, reason, retryAfter * 1000);
  }

  /** After `sseFallback` blocked handshakes, a v1 link receives over server-sent events instead. */
  #fallback() {
    const after = this.#o.sseFallback === true ? SSE_FALLBACK_AFTER : this.#o.sseFallback;
    if (this._v2 || !(after > 0) || this.transport !== 'websocket' || ++this.#blocked < after) return false;
    this.transport = 'sse';
    this.#log('warn', 'WebSockets are blocked: receiving over server-sent events');
    this._emit('transport', { transport: 'sse', blocked: this.#blocked });
    // Publishes and presence requests need a socket: they fail now rather than at their timeout.
    for (const id of [...this.#pending.keys()]) this.#settle(id, receiveOnly());
    this.#queue = [];
    return true;
  }

  /**
   * Reads `GET /sse/projects/{p}` with fetch: the token in `Authorization` (never in the URL),
   * recovery with `Last-Event-ID`, events handled as the socket's frames. A refusal (not 200)
   * counts as a failed handshake, which /ws/check explains; an end without `event: close` as 1006.
   */
  async #openSse() {
    const ctl = new AbortController();
    const sub = [...this._subs.values()][0];
    const f = this.#o.fetch === undefined ? globalThis.fetch : this.#o.fetch;
    const headers = { authorization: `Bearer ${this.#token}`, accept: 'text/event-stream' };
    sub._asked = Number.isInteger(sub.offset) && !!sub.epoch;
    if (sub._asked) headers['last-event-id'] = `${sub.epoch}:${sub.offset}`;
    this.#es = ctl;
    this.#opened = false;
    this.#welcomeAt = null;
    this.#timer('connect', CONNECT_TIMEOUT_MS, () => this.#es === ctl && this.#drop('connect timeout'));
    try {
      const res = await f(`${this.#url.replace(/^ws/i, 'http')}/sse/projects/${sub.project}`, {
        headers,
        cache: 'no-store',
        credentials: 'omit',
        signal: ctl.signal,
      });
      if (res.status !== 200) throw res.status;
      this.#opened = true;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.#es !== ctl) break;
        text += decoder.decode(value, { stream: true });
        for (let end; (end = text.indexOf('\n\n')) >= 0 && this.#es === ctl; ) {
          this.#onEvent(text.slice(0, end));
          text = text.slice(end + 2);
        }
        // Heartbeats included: any bytes prove the stream alive.
        if (this.#welcomeAt !== null && this.#es === ctl) this.#alive();
      }
    } catch {}
    if (this.#es === ctl) this.#onClose(1006, 'event stream ended');
  }

  /** One server-sent event (wshub writes `\n` line ends, one field per line). */
  #onEvent(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (!data.length) return; // a heartbeat
    let frame;
    try {
      frame = JSON.parse(data.join('\n'));
    } catch {
      return this.#emitError(new WshubError('bad_frame', 'event is not JSON'));
    }
    if (event === 'close') return this.#onClose(Number.isInteger(frame.code) ? frame.code : 1006, String(frame.reason ?? ''));
    // A lost recovery: what a welcome with recovered: false says on a socket.
    if (event === 'reset') {
      const sub = [...this._subs.values()][0];
      frame = { type: 'welcome', project: sub.project, epoch: frame.epoch, offset: frame.offset, recovered: false, missed: 0, ping_interval_ms: this.welcome?.ping_interval_ms };
    }
    this.#onText(frame);
  }

  #retry(code, reason, atLeast = 0) {
    if (++this.#failures > this.#bo.attempts) return this.#stop(code, `gave up after ${this.#bo.attempts} attempts`, true);
    const delay = Math.max(atLeast, backoffDelay(this.#attempt, this._random, this.#bo.baseMs, this.#bo.capMs));
    this.#attempt += 1;
    this.#set('reconnecting', { delay, attempt: this.#attempt, code, reason });
    this.#log('debug', 'reconnecting', { delay, code, reason });
    this.#timer('reconnect', delay, () => this.#connect());
  }

  #stop(code, reason, report) {
    this.#stopped = true;
    this.#gen += 1;
    for (const n of Object.keys(this.#timers)) if (n !== 'release') this.#clear(n);
    if (registry().get(this.#key) === this) registry().delete(this.#key);
    for (const id of [...this.#pending.keys()]) {
      this.#settle(id, new WshubError('closed', `closed (${code} ${reason})`, { closeCode: code ?? undefined, reason }));
    }
    this.#queue = [];
    if (report && code !== 1000) {
      this.#emitError(new WshubError('closed', `closed (${code} ${reason})`, { closeCode: code, reason }));
    }
    this.#set('closed', { code, reason });
    for (const sub of this._subs.values()) sub._set('closed', { code, reason });
  }

  #set(state, details = {}) {
    this.state = state;
    this._emit('state', { state, ...details });
  }
  #emitError(err) {
    this.#log('warn', err.code, err.message);
    this._emit('error', err);
  }

  // === liveness ===

  /** Any frame proves the link alive: the next ping goes out one interval after it. */
  #alive() {
    this.#clear('pong');
    const interval = this.welcome?.ping_interval_ms;
    if (!(interval > 0)) return;
    // A stream cannot be pinged: it has a heartbeat every interval, so silence past the margin is death.
    if (this.#es) return this.#timer('ping', interval + (this.#o.pongTimeoutMs ?? PONG_TIMEOUT_MS), () => this.#drop('no heartbeat'));
    this.#timer('ping', interval, () => this.#probe());
  }
  /** Pings; no frame within the margin declares the link dead. */
  #probe() {
    if (!this.#ws || this.#timers.pong !== undefined) return;
    this.#timer('pong', this.#o.pongTimeoutMs ?? PONG_TIMEOUT_MS, () => this.#drop('ping timeout'));
    this.#send({ type: 'ping' });
  }

  // === token refresh before exp (v2, in band) ===

  #scheduleRefresh() {
    this.#clear('refresh');
    const exp = tokenClaims(this.#token).exp;
    if (!this._v2 || !this.#getToken || !Number.isFinite(exp)) return;
    const left = exp * 1000 - this._now();
    if (left < 1000) return; // too late: the 4001 close refreshes by reconnecting
    const ahead = Math.min(this.#o.refreshAheadMs ?? REFRESH_AHEAD_MS, left / 2);
    this.#timer('refresh', Math.min(2 ** 31 - 1, Math.max(0, left - ahead)), async () => {
      const gen = this.#gen;
      let token;
      try {
        token = await this.#getToken();
      } catch (err) {
        return this.#emitError(new WshubError('token_refresh_failed', 'getToken() failed', { cause: err }));
      }
      if (gen !== this.#gen || typeof token !== 'string' || !token) return;
      // The same token (or one expiring no later) cannot help: ask again a little later.
      if (!(tokenClaims(token).exp > exp)) return this.#scheduleRefresh();
      this._request(null, 'refresh', { token }).then(
        () => {
          this.#token = token;
          this.#scheduleRefresh();
        },
        (err) => this.#emitError(err),
      );
    });
  }

  // === requests ===

  subscribe(project, options) {
    if (typeof project !== 'string' || !PROJECT_ID.test(project)) throw new TypeError('wshub: invalid project');
    let sub = this._subs.get(project);
    if (sub) return sub;
    sub = new Subscription(this, project, options);
    this._subs.set(project, sub);
    if (this.state === 'open') this.#subscribe(sub);
    return sub;
  }
  #subscribe(sub) {
    const f = { project: sub.project };
    sub._asked = Number.isInteger(sub.offset) && !!sub.epoch;
    if (sub._asked) Object.assign(f, { since: sub.offset, epoch: sub.epoch });
    else if (sub._last) f.last = sub._last;
    this._request(sub.project, 'subscribe', f, false, [
      (a) => this.#subscribed(sub, a),
      (err) => {
        if (err.code === 'closed' || this._subs.get(sub.project) !== sub) return;
        this._subs.delete(sub.project);
        sub._set('failed', { code: err.code, reason: err.message });
        sub._emit('error', err);
      },
    ]);
  }
  #subscribed(sub, frame) {
    const recovered = sub._asked && frame.recovered === true;
    if (!recovered) {
      sub.epoch = typeof frame.epoch === 'string' ? frame.epoch : null;
      sub.offset = Number.isInteger(frame.offset) ? frame.offset : null;
    }
    sub._set('subscribed');
    if (sub._asked) {
      const r = { recovered, missed: recovered ? frame.missed | 0 : 0, epoch: sub.epoch, offset: sub.offset };
      if (frame.lost_reason) r.lost_reason = frame.lost_reason;
      sub._emit('recovered', r);
    }
  }
  _unsubscribe(sub) {
    if (this._subs.get(sub.project) !== sub) return;
    this._subs.delete(sub.project);
    sub._set('unsubscribed', { reason: 'client' });
    if (this.state === 'open') this._request(sub.project, 'unsubscribe', { project: sub.project }).catch(noop);
  }

  /**
   * Sends a request and resolves with its answer. Publishes (v2) carry a key: unacknowledged
   * ones are sent again after a reconnect and the server dedupes them.
   */
  _request(project, type, fields, isPublish = false, sync) {
    if (this.#stopped) return Promise.reject(new WshubError('closed', 'closed'));
    if (this.transport === 'sse') return Promise.reject(receiveOnly());
    const frame = { type, ...fields };
    if (this._v2 && project !== null) frame.project = project;
    if (isPublish) {
      const d = frame.data;
      if (d === undefined || d === null || typeof d === 'function' || typeof d === 'symbol') {
        return Promise.reject(new TypeError('wshub: publish() needs data (JSON, not null)'));
      }
      if (this._v2 && frame.key === undefined && !frame.ephemeral) frame.key = randomKey();
      const queued = [...this.#pending.values()].filter((r) => r._type === 'publish' && !r._sent).length;
      if (queued >= this._maxQueue) return Promise.reject(new WshubError('queue_full', 'queue full', { sent: false }));
    }
    const id = (this._v2 ? 'r' : 'p') + this.#nextId++;
    // v1 answers presence without an id: only its publishes carry one.
    if (this._v2 || isPublish) frame.id = id;
    try {
      JSON.stringify(frame);
    } catch (err) {
      return Promise.reject(err);
    }
    const make = (resolve, reject) => {
      const r = { _type: type, _frame: frame, _res: resolve, _rej: reject, _sent: false, _ever: false, _project: project };
      r._timer = this.#T(() => {
        this.#settle(id, new WshubError('timeout', `no answer to ${type} in ${this._timeout} ms${r._ever ? '' : ' (never sent)'}`, { sent: r._ever }));
      }, this._timeout);
      this.#pending.set(id, r);
      this.#queue.push(id);
      this.#pump();
    };
    // Internal requests answer synchronously, so a subscription's state follows its frames.
    return sync ? make(...sync) : new Promise(make);
  }

  #settle(id, err, value) {
    const r = this.#pending.get(id);
    if (!r) return;
    this.#pending.delete(id);
    this.#C(r._timer);
    if (err) r._rej(err);
    else r._res(value);
  }

  /** Sends queued requests in order, publishes and paced requests through their token buckets. */
  #pump() {
    if (this.state !== 'open' || this.#timers.pump !== undefined) return;
    while (this.#queue.length) {
      const id = this.#queue[0];
      const r = this.#pending.get(id);
      if (!r || r._sent) {
        this.#queue.shift();
        continue;
      }
      const take = r._type === 'publish' ? this.#buckets.publish : r._type === 'presence' || r._type === 'history' ? this.#buckets.request : null;
      const wait = take ? take() : 0;
      if (wait > 0) return this.#timer('pump', wait, () => this.#pump());
      if (!this.#send(r._frame)) return;
      r._sent = r._ever = true;
      this.#queue.shift();
    }
  }

  #send(frame) {
    try {
      this.#ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // === frames ===

  #onText(raw) {
    let frame = raw;
    if (typeof raw === 'string') {
      try {
        frame = JSON.parse(raw);
      } catch {
        return this.#emitError(new WshubError('bad_frame', 'frame is not JSON'));
      }
    }
    if (frame === null || typeof frame !== 'object') return;
    if (this.#welcomeAt !== null) this.#alive();
    const sub = this._v2 ? this._subs.get(frame.project) : [...this._subs.values()][0];
    const answer = frame.id !== undefined && this.#pending.get(frame.id);
    switch (frame.type) {
      case 'welcome':
        return this.#onWelcome(frame);
      case 'message':
        return sub?._message(frame);
      case 'presence':
        if (frame.event === 'sync') {
          const users = Array.isArray(frame.users) ? frame.users : [];
          const id = answer ? frame.id : this.#oldest('presence');
          if (id) this.#settle(id, null, { users });
          return sub?._emit('presence', { event: 'sync', users });
        }
        return sub?._emit('presence', { event: frame.event, user: frame.user });
      case 'ack': {
        const a = { offset: frame.offset };
        if (frame.duplicate) a.duplicate = true;
        return this.#settle(frame.id, null, a);
      }
      case 'subscribed':
      case 'history':
      case 'refreshed':
        return this.#settle(frame.id, null, frame);
      case 'unsubscribed':
        if (answer) this.#settle(frame.id, null, frame);
        else if (sub) {
          this._subs.delete(sub.project);
          const err = new WshubError('unsubscribed', `unsubscribed by the server (${frame.reason})`, { project: sub.project, reason: frame.reason });
          sub._set('unsubscribed', { reason: frame.reason });
          sub._emit('error', err);
          this.#emitError(err);
        }
        return;
      case 'error':
        return this.#onError(frame, answer);
      default:
      // pong, and types a newer server added.
    }
  }

  #oldest(type) {
    for (const [id, r] of this.#pending) if (r._sent && r._type === type) return id;
    return null;
  }

  #onWelcome(frame) {
    if (this.#welcomeAt !== null) return;
    this.welcome = frame;
    this.#welcomeAt = this._now();
    if (this.#ws) this.#blocked = 0;
    this.#clear('connect');
    this.#set('open');
    this._emit('welcome', frame);
    this.#alive();
    this.#scheduleRefresh();
    if (this._v2) for (const sub of this._subs.values()) this.#subscribe(sub);
    else this.#subscribed([...this._subs.values()][0], frame);
    this.#queue = [...this.#queue.filter((id) => this.#pending.get(id)?._type === 'subscribe'), ...this.#queue.filter((id) => this.#pending.get(id)?._type !== 'subscribe')];
    this.#pump();
  }

  #onError(frame, answer) {
    const code = typeof frame.code === 'string' ? frame.code : 'unknown';
    const err = new WshubError(code, typeof frame.message === 'string' && frame.message ? frame.message : code, { project: frame.project });
    // v1 error frames carry no id: the server answers publishes in order, so the oldest is meant.
    const id = answer ? frame.id : !this._v2 && PUBLISH_ERROR_CODES.test(code) ? this.#oldest('publish') : null;
    const r = id && this.#pending.get(id);
    if (r) this.#settle(id, err);
    if (!r || r._type !== 'refresh') this.#emitError(err);
  }
}

function receiveOnly() {
  return new WshubError('receive_only', 'receiving over server-sent events: publish through your backend (HTTP API); presence needs a WebSocket');
}

function randomKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36) + Math.random().toString(36).slice(2);
}
