// wshub JavaScript client: one connection per project, reconnection with full-jitter backoff,
// recovery from the last offset, token refresh. Dependency-free ES module for browsers and Node 20+.
// The connection rules it follows are SPEC §6 and docs/close-codes.md; README.md explains them.

/** The subprotocol every connection offers; the server answers with it. */
export const PROTOCOL = 'wshub.v1';
/** The token travels as the subprotocol entry `wshub.bearer.<token>`, never in the URL. */
export const BEARER_PREFIX = 'wshub.bearer.';
/** Backoff: attempt n waits random() * min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2^n). */
export const BACKOFF_BASE_MS = 1000;
export const BACKOFF_CAP_MS = 30000;
/** A connection open (welcome received) this long resets the backoff. */
export const STABLE_MS = 60000;
/** `publish()` and `presence()` reject when no answer came within this long. */
export const REQUEST_TIMEOUT_MS = 10000;
/** A socket without a welcome this long after it was created is given up (as a 1006). */
export const CONNECT_TIMEOUT_MS = 15000;
/** Consecutive handshake failures (closed before opening) after which `getToken` is asked again. */
export const HANDSHAKE_FAILURES_BEFORE_REFRESH = 3;

/** `error` frame codes that answer a publish: they reject the oldest publish waiting for its ack. */
const PUBLISH_ERROR_CODES = new Set(['rate_limited', 'broker_unavailable', 'publish_not_allowed']);

/** Codes after which reconnecting cannot help: the client is at fault or was told to go away. */
const STOP_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);

const PROJECT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * What the client does after a close with `code`:
 * `'stop'` (no reconnect, report), `'refresh'` (new token, then reconnect and recover),
 * `'reconnect'` (backoff, then reconnect and recover).
 *
 * @param {number} code
 * @returns {'stop' | 'refresh' | 'reconnect'}
 */
export function closeAction(code) {
  if (code === 4001) return 'refresh';
  if (code === 4008) return 'reconnect';
  if (code >= 4000) return 'stop'; // 4003, and any code a newer server may add: stop and report
  if (STOP_CODES.has(code)) return 'stop';
  // 1001 draining, 1005/1006 network faults, 1011 server error, 1012 restart, 1013 overloaded,
  // 1014 bad gateway, 1015 TLS, anything else below 4000: back off and try again.
  return 'reconnect';
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry): full jitter,
 * `random() * min(30 s, 1 s * 2^attempt)`.
 *
 * @param {number} attempt
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, random = Math.random) {
  const cap = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 30));
  const r = Math.min(1, Math.max(0, Number(random()) || 0));
  return r * cap;
}

/** An error of the wshub client: `code` says what happened, stable across versions. */
export class WshubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{closeCode?: number, reason?: string, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'WshubError';
    this.code = code;
    if (details.closeCode !== undefined) this.closeCode = details.closeCode;
    if (details.reason !== undefined) this.reason = details.reason;
  }
}

// One connection per (url, project) in this realm, even if the module is loaded twice.
const REGISTRY = Symbol.for('wshub.client.connections.v1');
function registry() {
  if (!(globalThis[REGISTRY] instanceof Map)) globalThis[REGISTRY] = new Map();
  return globalThis[REGISTRY];
}

/**
 * Connects to a project, or returns the connection this realm already has for it.
 *
 * @param {object} options see wshub.d.ts (`ConnectOptions`)
 * @returns {Connection}
 */
export function connect(options) {
  if (options === null || typeof options !== 'object') {
    throw new TypeError('wshub: connect() takes an options object');
  }
  const url = baseUrl(options.url);
  const project = options.project;
  if (typeof project !== 'string' || !PROJECT_ID.test(project)) {
    throw new TypeError('wshub: project must be 1-128 characters of [A-Za-z0-9._:-]');
  }
  const key = `${url}\n${project}`;
  const existing = registry().get(key);
  if (existing) return existing;
  const conn = new Connection(key, url, project, options);
  registry().set(key, conn);
  return conn;
}

/** `ws(s)://host[:port][/prefix]` without a trailing slash; `http(s)` becomes `ws(s)`. */
function baseUrl(url) {
  let base = url;
  if (base === undefined && typeof globalThis.location === 'object' && globalThis.location) {
    base = globalThis.location.origin;
  }
  if (typeof base !== 'string' || base === '') {
    throw new TypeError('wshub: url is required (like "wss://hub.example.com")');
  }
  base = base.replace(/^http(s?):\/\//i, 'ws$1://').replace(/\/+$/, '');
  if (!/^wss?:\/\//i.test(base)) {
    throw new TypeError('wshub: url must start with ws://, wss://, http:// or https://');
  }
  if (/[?#]/.test(base)) throw new TypeError('wshub: url must have no query or fragment');
  return base;
}

function noop() {}

/** The connection to one project. Created by `connect()`; see wshub.d.ts for the API. */
class Connection {
  #key;
  #url;
  #project;
  #WebSocket;
  #getToken;
  #random;
  #setTimeout;
  #clearTimeout;
  #now;
  #requestTimeout;

  #listeners = new Map();
  #state = 'idle';
  #stopped = false;
  /** Bumped whenever a start is superseded, so an awaited getToken() can tell. */
  #generation = 0;

  #ws = null;
  #socketOpened = false;
  #welcome = null;
  #welcomeAt = null;
  #askedRecovery = false;
  #reconnectTimer = null;
  #connectTimer = null;

  /** Reconnect attempts since the last stable connection (the backoff exponent). */
  #attempt = 0;
  /** Consecutive closes before the socket opened (handshake refused or network down). */
  #handshakeFailures = 0;
  #token = null;
  #needToken = false;

  #epoch = null;
  #lastOffset = null;

  #nextId = 1;
  /** id → {frame, resolve, reject, timer, sent}; insertion order is send order. */
  #publishes = new Map();
  /** {resolve, reject, timer, sent}, oldest first; a `sync` answers the oldest sent one. */
  #presenceRequests = [];

  constructor(key, url, project, options) {
    this.#key = key;
    this.#url = url;
    this.#project = project;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError(
        'wshub: no WebSocket implementation; pass {WebSocket} (e.g. from the "ws" package on Node 20/21)',
      );
    }
    if (options.getToken !== undefined && typeof options.getToken !== 'function') {
      throw new TypeError('wshub: getToken must be a function returning a token or a promise of one');
    }
    this.#getToken = options.getToken ?? null;
    if (options.token !== undefined && options.token !== null) {
      if (typeof options.token !== 'string' || options.token === '') {
        throw new TypeError('wshub: token must be a non-empty string');
      }
      this.#token = options.token;
    } else if (!this.#getToken) {
      throw new TypeError('wshub: pass token or getToken');
    } else {
      this.#needToken = true;
    }
    this.#random = options.random ?? Math.random;
    this.#setTimeout = options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this.#clearTimeout = options.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
    this.#now = options.now ?? Date.now;
    this.#requestTimeout = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    // Start after the caller had a chance to subscribe, so it sees the first `connecting`.
    queueMicrotask(() => this.#start());
  }

  // === public API ===

  /** `'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'` */
  get state() {
    return this.#state;
  }

  get project() {
    return this.#project;
  }

  get url() {
    return this.#url;
  }

  /** The offset of the last message seen (or the welcome's offset), `null` before any. */
  get lastOffset() {
    return this.#lastOffset;
  }

  /** The epoch of the history stream the offsets belong to, `null` before the first welcome. */
  get epoch() {
    return this.#epoch;
  }

  /** The welcome frame of the current or last connection, `null` before the first. */
  get welcome() {
    return this.#welcome;
  }

  /**
   * Subscribes to an event; returns the function that unsubscribes.
   * Events: message, presence, state, error, recovered, welcome.
   */
  on(event, fn) {
    if (typeof fn !== 'function') throw new TypeError('wshub: on() takes a function');
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    // Wrap so the same function can be subscribed twice and each unsubscribe removes one.
    const entry = { fn };
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }

  /**
   * Publishes `data` (any JSON value but null) to the project; resolves with its offset.
   * While not connected, the publish waits for the connection (up to the request timeout).
   */
  publish(data) {
    if (this.#stopped) {
      return Promise.reject(new WshubError('closed', 'wshub: the connection is closed'));
    }
    if (data === undefined || data === null || typeof data === 'function' || typeof data === 'symbol') {
      return Promise.reject(new TypeError('wshub: publish() needs data (any JSON value but null)'));
    }
    const id = `p${this.#nextId++}`;
    let text;
    try {
      text = JSON.stringify({ type: 'publish', id, data });
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const entry = { text, resolve, reject, sent: false, timer: null };
      entry.timer = this.#setTimeout(() => {
        if (this.#publishes.get(id) !== entry) return;
        this.#publishes.delete(id);
        reject(new WshubError('timeout', `wshub: no ack for publish ${id} within ${this.#requestTimeout} ms`));
      }, this.#requestTimeout);
      this.#publishes.set(id, entry);
      if (this.#state === 'open') this.#sendPublish(entry);
    });
  }

  /** Asks for the users connected to the project; resolves with the sorted list. */
  presence() {
    if (this.#stopped) {
      return Promise.reject(new WshubError('closed', 'wshub: the connection is closed'));
    }
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, sent: false, timer: null };
      entry.timer = this.#setTimeout(() => {
        const i = this.#presenceRequests.indexOf(entry);
        if (i < 0) return;
        this.#presenceRequests.splice(i, 1);
        reject(new WshubError('timeout', `wshub: no presence answer within ${this.#requestTimeout} ms`));
      }, this.#requestTimeout);
      this.#presenceRequests.push(entry);
      if (this.#state === 'open') this.#sendPresence(entry);
    });
  }

  /** Closes with 1000 and never reconnects; the next `connect()` for the project starts afresh. */
  close(reason = 'client closed') {
    if (this.#stopped) return;
    const ws = this.#ws;
    this.#detach();
    if (ws) {
      try {
        ws.close(1000, reason);
      } catch {
        // Already closing: nothing more to do.
      }
    }
    this.#stop(1000, reason, false);
  }

  // === connection life ===

  async #start() {
    this.#reconnectTimer = null;
    if (this.#stopped) return;
    const generation = ++this.#generation;
    this.#setState('connecting', {});
    if (this.#needToken) {
      let token;
      try {
        token = await this.#getToken();
      } catch (err) {
        if (this.#stopped || generation !== this.#generation) return;
        this.#emit('error', new WshubError('token_refresh_failed', 'wshub: getToken() failed', { cause: err }));
        this.#scheduleReconnect(null, 'token refresh failed');
        return;
      }
      if (this.#stopped || generation !== this.#generation) return;
      if (typeof token !== 'string' || token === '') {
        this.#emit('error', new WshubError('token_refresh_failed', 'wshub: getToken() gave no token'));
        this.#scheduleReconnect(null, 'token refresh failed');
        return;
      }
      this.#token = token;
      this.#needToken = false;
    }
    this.#openSocket();
  }

  #socketUrl() {
    // The project was checked against [A-Za-z0-9._:-]; the server matches the raw path, so the
    // one character encodeURIComponent escapes, ':', must stay as it is (legal in a path).
    const project = encodeURIComponent(this.#project).replace(/%3A/gi, ':');
    let url = `${this.#url}/ws/projects/${project}`;
    // Recover only with both halves: the server refuses one without the other.
    if (this.#welcome && Number.isInteger(this.#lastOffset) && typeof this.#epoch === 'string' && this.#epoch) {
      url += `?since=${this.#lastOffset}&epoch=${encodeURIComponent(this.#epoch)}`;
      this.#askedRecovery = true;
    } else {
      this.#askedRecovery = false;
    }
    return url;
  }

  #openSocket() {
    let ws;
    try {
      ws = new this.#WebSocket(this.#socketUrl(), [PROTOCOL, BEARER_PREFIX + this.#token]);
    } catch (err) {
      // A bad URL or a token with characters a subprotocol cannot carry: retrying cannot help.
      this.#emit('error', new WshubError('invalid_socket', `wshub: cannot open a WebSocket: ${err && err.name}`, { cause: err }));
      this.#stop(null, 'cannot open a WebSocket', false);
      return;
    }
    this.#ws = ws;
    this.#socketOpened = false;
    this.#welcomeAt = null;
    // A handshake that never completes (a black-holed network) must not stall reconnection.
    this.#connectTimer = this.#setTimeout(() => {
      this.#connectTimer = null;
      if (this.#ws === ws) this.#abort(ws, 'connect timeout');
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      this.#socketOpened = true;
      this.#handshakeFailures = 0;
    };
    ws.onmessage = (event) => {
      if (this.#ws === ws) this.#onText(event.data);
    };
    // An error event carries nothing useful (a refused handshake and a network fault look the
    // same), so it is not logged: the close event that follows says what happened. Before the
    // socket opened, an error means the handshake failed; some implementations (Node 20's
    // experimental WebSocket) never send the close then, so it counts as a 1006 right away.
    ws.onerror = () => {
      if (this.#ws === ws && !this.#socketOpened) this.#abort(ws, '');
    };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      this.#onClose(typeof event.code === 'number' ? event.code : 1006, event.reason ?? '');
    };
  }

  /** Gives up on a socket that has not closed on its own: a failed attempt, like a 1006 close. */
  #abort(ws, reason) {
    this.#onClose(1006, reason);
    try {
      ws.close();
    } catch {
      // Already closed or failed.
    }
  }

  /** Stops listening to the current socket; its late events are ignored. */
  #detach() {
    if (this.#connectTimer !== null) {
      this.#clearTimeout(this.#connectTimer);
      this.#connectTimer = null;
    }
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    // Keep an error handler: Node's "ws" throws on an error event nobody listens to.
    ws.onerror = noop;
  }

  #onClose(code, reason) {
    const wasStable = this.#welcomeAt !== null && this.#now() - this.#welcomeAt >= STABLE_MS;
    const opened = this.#socketOpened;
    this.#detach();
    if (wasStable) this.#attempt = 0;
    if (!opened) this.#handshakeFailures += 1;

    // Publishes in flight may or may not have been published: their ack is lost with the socket.
    for (const [id, entry] of this.#publishes) {
      if (!entry.sent) continue;
      this.#publishes.delete(id);
      this.#clearTimeout(entry.timer);
      entry.reject(
        new WshubError('connection_closed', `wshub: connection closed (${code}) before the ack of publish ${id}`, {
          closeCode: code,
          reason,
        }),
      );
    }
    // Presence requests are harmless to repeat: ask again on the next connection.
    for (const entry of this.#presenceRequests) entry.sent = false;

    const action = closeAction(code);
    if (action === 'stop' || (action === 'refresh' && !this.#getToken)) {
      this.#stop(code, reason, true);
      return;
    }
    if (action === 'refresh') this.#needToken = true;
    if (this.#getToken && this.#handshakeFailures >= HANDSHAKE_FAILURES_BEFORE_REFRESH) {
      // Refused handshakes look like network faults to a browser: maybe the token went stale.
      this.#needToken = true;
      this.#handshakeFailures = 0;
    }
    this.#scheduleReconnect(code, reason);
  }

  #scheduleReconnect(code, reason) {
    const delay = backoffDelay(this.#attempt, this.#random);
    this.#attempt += 1;
    this.#setState('reconnecting', { delay, attempt: this.#attempt, code, reason });
    this.#reconnectTimer = this.#setTimeout(() => {
      this.#reconnectTimer = null;
      this.#start();
    }, delay);
  }

  #stop(code, reason, report) {
    this.#stopped = true;
    this.#generation += 1;
    if (this.#reconnectTimer !== null) {
      this.#clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
    }
    if (registry().get(this.#key) === this) registry().delete(this.#key);
    const closed = () =>
      new WshubError('closed', `wshub: connection closed (${code ?? 'no code'}${reason ? ` ${reason}` : ''})`, {
        closeCode: code ?? undefined,
        reason,
      });
    for (const entry of this.#publishes.values()) {
      this.#clearTimeout(entry.timer);
      entry.reject(closed());
    }
    this.#publishes.clear();
    for (const entry of this.#presenceRequests) {
      this.#clearTimeout(entry.timer);
      entry.reject(closed());
    }
    this.#presenceRequests = [];
    if (report && code !== 1000) {
      this.#emit(
        'error',
        new WshubError('closed', `wshub: the server closed the connection with ${code} ${reason}; not reconnecting`, {
          closeCode: code,
          reason,
        }),
      );
    }
    this.#setState('closed', { code, reason });
  }

  #setState(state, details) {
    this.#state = state;
    this.#emit('state', { state, ...details });
  }

  // === frames ===

  #onText(raw) {
    let text = raw;
    if (typeof text !== 'string') {
      try {
        text = new TextDecoder().decode(raw);
      } catch {
        return;
      }
    }
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.#emit('error', new WshubError('bad_frame', 'wshub: the server sent a frame that is not JSON'));
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    switch (frame.type) {
      case 'welcome':
        this.#onWelcome(frame);
        break;
      case 'message':
        this.#onMessage(frame);
        break;
      case 'presence':
        this.#onPresence(frame);
        break;
      case 'ack':
        this.#onAck(frame);
        break;
      case 'error':
        this.#onError(frame);
        break;
      default:
      // A type a newer server added: ignore.
    }
  }

  #onWelcome(frame) {
    if (this.#welcomeAt !== null) return; // only the first frame is a welcome
    const asked = this.#askedRecovery;
    const recovered = asked && frame.recovered === true;
    this.#welcome = frame;
    this.#welcomeAt = this.#now();
    this.#handshakeFailures = 0;
    if (this.#connectTimer !== null) {
      this.#clearTimeout(this.#connectTimer);
      this.#connectTimer = null;
    }
    if (!recovered) {
      // A fresh start, or a recovery that failed: live messages follow the welcome's offset.
      this.#epoch = typeof frame.epoch === 'string' ? frame.epoch : null;
      this.#lastOffset = Number.isInteger(frame.offset) ? frame.offset : null;
    }
    // On success the missed messages follow, after the offset we asked from.
    this.#setState('open', {});
    this.#emit('welcome', frame);
    if (asked) {
      this.#emit('recovered', {
        recovered,
        missed: recovered && Number.isInteger(frame.missed) ? frame.missed : 0,
        epoch: this.#epoch,
        offset: this.#lastOffset,
      });
    }
    for (const entry of this.#publishes.values()) {
      if (!entry.sent && this.#state === 'open') this.#sendPublish(entry);
    }
    for (const entry of this.#presenceRequests) {
      if (!entry.sent && this.#state === 'open') this.#sendPresence(entry);
    }
  }

  #onMessage(frame) {
    if (Number.isInteger(frame.offset)) {
      // Replay and live delivery never overlap, but a duplicate must never reach the app.
      if (this.#lastOffset !== null && frame.offset <= this.#lastOffset) return;
      this.#lastOffset = frame.offset;
    }
    this.#emit('message', { offset: frame.offset, from: frame.from, data: frame.data, ts: frame.ts });
  }

  #onPresence(frame) {
    if (frame.event === 'sync') {
      const users = Array.isArray(frame.users) ? frame.users : [];
      const i = this.#presenceRequests.findIndex((entry) => entry.sent);
      if (i >= 0) {
        const [entry] = this.#presenceRequests.splice(i, 1);
        this.#clearTimeout(entry.timer);
        entry.resolve(users);
      }
      this.#emit('presence', { event: 'sync', users });
    } else {
      this.#emit('presence', { event: frame.event, user: frame.user });
    }
  }

  #onAck(frame) {
    const entry = this.#publishes.get(frame.id);
    if (!entry || !entry.sent) return;
    this.#publishes.delete(frame.id);
    this.#clearTimeout(entry.timer);
    entry.resolve(frame.offset);
  }

  #onError(frame) {
    const code = typeof frame.code === 'string' ? frame.code : 'unknown';
    const message = typeof frame.message === 'string' ? frame.message : '';
    if (PUBLISH_ERROR_CODES.has(code)) {
      // Error frames carry no id; the server answers publishes in order, so this one is for
      // the oldest publish still waiting.
      for (const [id, entry] of this.#publishes) {
        if (!entry.sent) continue;
        this.#publishes.delete(id);
        this.#clearTimeout(entry.timer);
        entry.reject(new WshubError(code, message || code));
        break;
      }
    }
    this.#emit('error', new WshubError(code, message || code));
  }

  #sendPublish(entry) {
    if (this.#send(entry.text)) entry.sent = true;
  }

  #sendPresence(entry) {
    if (this.#send('{"type":"presence"}')) entry.sent = true;
  }

  #send(text) {
    try {
      this.#ws.send(text);
      return true;
    } catch {
      // The socket is going away; its close event follows and the request waits for the next.
      return false;
    }
  }

  #emit(event, payload) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const { fn } of [...set]) {
      try {
        fn(payload);
      } catch (err) {
        // A listener's bug must not break the connection: report it like an event listener's.
        if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
        else queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
