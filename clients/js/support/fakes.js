// Test doubles: a fake clock (timers, now) and a fake WebSocket class the tests drive by hand.

/** A clock whose time moves only when the test says so. */
export class FakeClock {
  time = 0;
  #timers = new Map();
  #nextId = 1;

  setTimeout = (fn, ms) => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.time + Math.max(0, ms), fn, ms });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  now = () => this.time;

  /** Delays (ms, as passed to setTimeout) of the timers still pending, oldest first. */
  pendingDelays() {
    return [...this.#timers.values()].map((t) => t.ms);
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms) {
    const target = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.#timers) {
        if (t.at <= target && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (next === null) break;
      this.#timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = target;
  }
}

/** A fresh fake WebSocket class with its own list of instances. */
export function fakeWebSocketClass() {
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    static instances = [];

    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = FakeWebSocket.CONNECTING;
      this.sent = [];
      this.closedWith = null;
      this.autoPong = true;
      this.onopen = null;
      this.onmessage = null;
      this.onerror = null;
      this.onclose = null;
      FakeWebSocket.instances.push(this);
    }

    static get last() {
      return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    }

    send(text) {
      if (this.readyState !== FakeWebSocket.OPEN) throw new Error('InvalidStateError');
      const frame = JSON.parse(text);
      this.sent.push(frame);
      // A live server answers pings at once (set autoPong = false to play a dead link).
      if (frame.type === 'ping' && this.autoPong) this.receive({ type: 'pong', ...(frame.id ? { id: frame.id } : {}) });
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = FakeWebSocket.CLOSED;
    }

    // --- driven by the tests ---

    open() {
      this.readyState = FakeWebSocket.OPEN;
      this.onopen?.({ type: 'open' });
    }

    receive(frame) {
      this.onmessage?.({ type: 'message', data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }

    /** Opens and sends a welcome (fields override the defaults). */
    welcome(fields = {}) {
      this.open();
      this.receive({
        type: 'welcome',
        conn: 1,
        user: 'alice',
        project: 'p',
        epoch: 'e1',
        offset: 0,
        recovered: false,
        missed: 0,
        ping_interval_ms: 25000,
        ...fields,
      });
    }

    /** The server closes with `code`. */
    serverClose(code, reason = '') {
      this.readyState = FakeWebSocket.CLOSED;
      this.onclose?.({ type: 'close', code, reason, wasClean: code !== 1006 });
    }

    /** The handshake fails (e.g. 401): an error, then 1006, never open. */
    failHandshake() {
      this.readyState = FakeWebSocket.CLOSED;
      this.onerror?.({ type: 'error' });
      this.onclose?.({ type: 'close', code: 1006, reason: '', wasClean: false });
    }
  }
  return FakeWebSocket;
}

/** Lets pending promise callbacks and microtasks run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

let counter = 0;
/** A URL no other test uses, so connections never collide in the per-realm registry. */
export function uniqueUrl() {
  counter += 1;
  return `ws://hub-${counter}.test`;
}
