// Liveness (app pings, online/offline, visibility, pagehide/pageshow, reconnect()), refused
// handshakes explained by /ws/check, never self-banning (bounded queue, token bucket) and the
// lifecycle of shared connections (ref-counted handles, another user's token), on a fake clock.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { connect } from '../wshub.js';
import { FakeClock, fakeWebSocketClass, flush, uniqueUrl } from '../support/fakes.js';

// A page: window and document as event targets the tests fire events on.
before(() => {
  globalThis.window = new EventTarget();
  globalThis.document = Object.assign(new EventTarget(), { visibilityState: 'visible' });
});
after(() => {
  delete globalThis.window;
  delete globalThis.document;
});
const fire = (target, type) => target.dispatchEvent(new Event(type));

/** A fake `fetch` for /ws/check answering `status` with `body`; records the URLs. */
function fakeFetch(status = 204, body = {}, headers = {}) {
  const f = async (url, init) => {
    f.calls.push(url);
    f.inits.push(init);
    return { status: f.status, headers: { get: (k) => headers[k] ?? null }, json: async () => f.body };
  };
  f.calls = [];
  f.inits = [];
  f.status = status;
  f.body = body;
  return f;
}

async function setup(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const url = options.url ?? uniqueUrl();
  const room = connect({
    url,
    project: 'p',
    token: 'tok',
    WebSocket: WS,
    random: () => 1,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    fetch: null,
    ...options,
  });
  const states = [];
  room.on('state', (s) => states.push(s));
  const errors = [];
  room.on('error', (e) => errors.push(e));
  await flush();
  return { clock, WS, room, url, states, errors, last: () => states[states.length - 1] };
}

/** A JWT-shaped token (unsigned: the client only reads sub and exp). */
function jwt(claims) {
  const b = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b({ alg: 'HS256' })}.${b(claims)}.sig`;
}

describe('liveness', () => {
  test('pings at ping_interval_ms; a silent link is declared dead within interval + margin and reconnected', async () => {
    const { clock, WS, room, last } = await setup();
    WS.last.welcome({ ping_interval_ms: 2000 });
    clock.advance(1999);
    assert.equal(WS.last.sent.length, 0, 'no ping before the interval');
    clock.advance(1);
    assert.deepEqual(WS.last.sent, [{ type: 'ping' }]);
    assert.equal(room.state, 'open', 'the pong came back');
    const first = WS.last;
    first.autoPong = false; // the link goes silent, no close, no RST
    clock.advance(2000);
    assert.equal(first.sent.length, 2, 'a second ping');
    clock.advance(4999);
    assert.equal(room.state, 'open');
    clock.advance(1);
    assert.equal(room.state, 'reconnecting', 'dead at interval + 5 s margin');
    assert.equal(last().reason, 'ping timeout');
    assert.equal(first.closedWith !== null, true, 'the dead socket is closed');
    clock.advance(last().delay);
    await flush();
    assert.equal(WS.instances.length, 2);
    assert.match(WS.last.url, /since=0&epoch=e1/, 'and recovers');
    room.close();
  });

  test('any frame counts as life: no ping while messages flow', async () => {
    const { clock, WS, room } = await setup();
    WS.last.welcome({ ping_interval_ms: 1000 });
    for (let i = 1; i <= 5; i++) {
      clock.advance(900);
      WS.last.receive({ type: 'message', offset: i, from: 'b', data: i, ts: 1 });
    }
    assert.equal(WS.last.sent.length, 0);
    room.close();
  });

  test('pongTimeoutMs sets the margin', async () => {
    const { clock, WS, room } = await setup({ pongTimeoutMs: 500 });
    WS.last.welcome({ ping_interval_ms: 1000 });
    WS.last.autoPong = false;
    clock.advance(1499);
    assert.equal(room.state, 'open');
    clock.advance(1);
    assert.equal(room.state, 'reconnecting');
    room.close();
  });

  test('offline closes the socket at once; online retries now instead of waiting out the backoff', async () => {
    const { clock, WS, room, last } = await setup();
    WS.last.welcome();
    fire(window, 'offline');
    assert.equal(room.state, 'reconnecting');
    assert.equal(last().reason, 'offline');
    // Failing attempts while offline grow the backoff...
    for (let i = 0; i < 5; i++) {
      clock.advance(last().delay);
      await flush();
      WS.last.failHandshake();
    }
    assert.equal(last().delay, 30000);
    const sockets = WS.instances.length;
    fire(window, 'online');
    await flush();
    assert.equal(WS.instances.length, sockets + 1, 'a new attempt right away');
    WS.last.welcome();
    assert.equal(room.state, 'open');
    WS.last.serverClose(1006);
    assert.equal(last().delay, 1000, 'and the backoff starts over');
    room.close();
  });

  test('visibilitychange to visible probes an open link and retries a waiting one', async () => {
    const { clock, WS, room, last } = await setup();
    WS.last.welcome();
    WS.last.autoPong = false;
    fire(document, 'visibilitychange');
    assert.deepEqual(WS.last.sent, [{ type: 'ping' }], 'probed at once');
    clock.advance(5000);
    assert.equal(room.state, 'reconnecting');
    assert.equal(last().reason, 'ping timeout');
    fire(document, 'visibilitychange');
    await flush();
    assert.equal(WS.instances.length, 2, 'retried now');
    room.close();
  });

  test('pagehide closes the socket (bfcache) and waits; pageshow reconnects and recovers', async () => {
    const { clock, WS, room } = await setup();
    WS.last.welcome({ offset: 3 });
    fire(window, 'pagehide');
    assert.equal(WS.last.closedWith.code, 1000);
    assert.equal(room.state, 'reconnecting');
    assert.deepEqual(clock.pendingDelays(), [], 'no timer while hidden in the cache');
    fire(window, 'pageshow');
    await flush();
    assert.equal(WS.instances.length, 2);
    assert.match(WS.last.url, /since=3&epoch=e1$/);
    room.close();
  });

  test('reconnect() cuts a pending backoff short', async () => {
    const { WS, room, last } = await setup();
    for (let i = 0; i < 3; i++) {
      WS.last.serverClose(1013, 'overloaded');
      room.reconnect();
      await flush();
    }
    assert.equal(WS.instances.length, 4);
    WS.last.serverClose(1013, 'overloaded');
    assert.equal(last().delay, 1000, 'reconnect() resets the backoff');
    room.close();
  });

  test('listeners leave window and document when the connection closes', async () => {
    const { WS, room } = await setup();
    WS.last.welcome();
    room.close();
    fire(window, 'online');
    fire(window, 'pageshow');
    await flush();
    assert.equal(WS.instances.length, 1);
  });
});

describe('refused handshakes, explained by /ws/check', () => {
  test('401: error unauthorized with the server message, and no further attempt', async () => {
    const fetch = fakeFetch(401, { error: 'invalid_token', message: 'token expired' });
    const { clock, WS, room, errors, last } = await setup({ fetch });
    WS.last.failHandshake();
    await flush();
    assert.equal(fetch.calls.length, 1);
    assert.match(fetch.calls[0], /^http:\/\/hub-\d+\.test\/ws\/check\/projects\/p$/);
    assert.equal(fetch.inits[0].headers.authorization, 'Bearer tok', 'the token in a header, never the URL');
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 'unauthorized');
    assert.equal(errors[0].message, 'wshub: token expired');
    assert.equal(errors[0].status, 401);
    assert.equal(last().state, 'closed');
    clock.advance(600000);
    await flush();
    assert.equal(WS.instances.length, 1, 'no further attempts');
    room.close();
  });

  test('403: forbidden; stops unless getToken gives another token', async () => {
    const fetch = fakeFetch(403, { error: 'forbidden', message: 'no access to p' });
    const tokens = ['tok2', 'tok2'];
    const { clock, WS, room, errors, last } = await setup({ fetch, getToken: () => tokens.shift() });
    WS.last.failHandshake();
    await flush();
    assert.equal(errors[0].code, 'forbidden');
    assert.equal(errors[0].message, 'wshub: no access to p');
    assert.equal(last().state, 'reconnecting', 'getToken gave a new token: try it');
    clock.advance(last().delay);
    await flush();
    assert.deepEqual(WS.last.protocols, ['wshub.v1', 'wshub.bearer.tok2']);
    WS.last.failHandshake();
    await flush();
    assert.equal(last().state, 'closed', 'the same token again: stop');
    room.close();
  });

  test('getToken returning null stops', async () => {
    const fetch = fakeFetch(401, { error: 'invalid_token', message: 'bad' });
    const { WS, room, last } = await setup({ fetch, getToken: () => null });
    WS.last.failHandshake();
    await flush();
    assert.equal(last().state, 'closed');
    room.close();
  });

  test('429: error rate_limited and a retry no sooner than Retry-After', async () => {
    const fetch = fakeFetch(429, { error: 'rate_limited', message: 'slow down' }, { 'retry-after': '7' });
    const { room, WS, errors, last } = await setup({ fetch });
    WS.last.failHandshake();
    await flush();
    assert.equal(errors[0].code, 'rate_limited');
    assert.equal(last().state, 'reconnecting');
    assert.equal(last().delay, 7000);
    room.close();
  });

  test('204 (or no answer): a network fault, backoff as usual, no error', async () => {
    const fetch = fakeFetch(204);
    const { WS, room, errors, last } = await setup({ fetch });
    WS.last.failHandshake();
    await flush();
    assert.equal(errors.length, 0);
    assert.equal(last().delay, 1000);
    fetch.status = 0;
    const failing = async () => {
      throw new TypeError('Failed to fetch');
    };
    room.close();
    const second = await setup({ fetch: failing });
    second.WS.last.failHandshake();
    await flush();
    assert.equal(second.last().state, 'reconnecting');
    assert.equal(second.errors.length, 0);
    second.room.close();
  });

  test('a getToken that keeps failing gives up after 5 tries', async () => {
    const { clock, room, errors, last } = await setup({
      token: undefined,
      getToken: () => {
        throw new Error('down');
      },
    });
    for (let i = 0; i < 4; i++) {
      assert.equal(last().state, 'reconnecting');
      clock.advance(last().delay);
      await flush();
    }
    assert.equal(last().state, 'closed');
    assert.equal(errors.length, 5);
    room.close();
  });

  test('backoff options: base, cap, attempts', async () => {
    const { clock, WS, room, errors, last } = await setup({ backoff: { baseMs: 100, capMs: 300, attempts: 3 } });
    const delays = [];
    for (let i = 0; i < 3; i++) {
      WS.last.failHandshake();
      delays.push(last().delay);
      clock.advance(last().delay);
      await flush();
    }
    assert.deepEqual(delays, [100, 200, 300]);
    WS.last.failHandshake();
    assert.equal(last().state, 'closed', 'gave up after 3 attempts');
    assert.equal(errors.at(-1).code, 'closed');
    room.close();
  });
});

describe('never self-ban', () => {
  test('an offline queue drains through the token bucket, under the server rate', async () => {
    const { clock, WS, room } = await setup({ publishRate: 10 });
    const all = [];
    for (let i = 0; i < 25; i++) all.push(room.publish(i).catch(() => {}));
    WS.last.welcome();
    assert.equal(WS.last.sent.length, 10, 'a burst of one second worth');
    clock.advance(100);
    assert.equal(WS.last.sent.length, 11);
    clock.advance(900);
    assert.equal(WS.last.sent.length, 20);
    clock.advance(500);
    assert.equal(WS.last.sent.length, 25);
    assert.deepEqual(
      WS.last.sent.map((f) => f.data),
      [...Array(25).keys()],
      'in order',
    );
    room.close();
  });

  test('the queue is bounded by count: queue_full', async () => {
    const { room } = await setup({ maxQueue: 2 });
    const a = room.publish(1);
    const b = room.publish(2);
    await assert.rejects(room.publish(3), (e) => e.code === 'queue_full' && e.sent === false);
    room.close();
    await Promise.allSettled([a, b]);
  });

  test('bounded by age: a queued publish times out and says it was never sent', async () => {
    const { clock, room } = await setup({ requestTimeoutMs: 3000 });
    const p = room.publish('x');
    clock.advance(3000);
    await assert.rejects(p, (e) => e.code === 'timeout' && e.sent === false && /never sent/.test(e.message));
    room.close();
  });

  test('a sent publish that times out says so', async () => {
    const { clock, WS, room } = await setup();
    WS.last.welcome({ ping_interval_ms: 0 });
    const p = room.publish('x');
    clock.advance(10000);
    await assert.rejects(p, (e) => e.code === 'timeout' && e.sent === true);
    room.close();
  });
});

describe('lifecycle', () => {
  test('release() closes only when the last holder lets go, after the grace period', async () => {
    const { clock, WS, room, url } = await setup({ releaseGraceMs: 2000 });
    WS.last.welcome({ ping_interval_ms: 0 });
    const b = connect({ url, project: 'p', token: 'tok', WebSocket: WS });
    room.release();
    b.release();
    clock.advance(1999);
    assert.equal(WS.last.closedWith, null, 'still open within the grace period');
    // StrictMode: mount, unmount, mount again within the grace period: the same socket.
    const c = connect({ url, project: 'p', token: 'tok', WebSocket: WS });
    clock.advance(5000);
    assert.equal(WS.last.closedWith, null);
    assert.equal(c.state, 'open');
    assert.equal(WS.instances.length, 1);
    c.release();
    clock.advance(2000);
    assert.equal(WS.last.closedWith.code, 1000);
  });

  test('a released handle cannot publish; the others can', async () => {
    const { WS, room, url } = await setup();
    const b = connect({ url, project: 'p', token: 'tok', WebSocket: WS });
    WS.last.welcome();
    room.release();
    await assert.rejects(room.publish(1), (e) => e.code === 'closed');
    const p = b.publish(2);
    assert.equal(WS.last.sent.at(-1).data, 2);
    WS.last.receive({ type: 'ack', id: WS.last.sent.at(-1).id, offset: 1 });
    assert.equal(await p, 1);
    b.close();
  });

  test("another user's token on a second connect() is an error", async () => {
    const url = uniqueUrl();
    const WS = fakeWebSocketClass();
    const a = connect({ url, project: 'p', token: jwt({ sub: 'alice' }), WebSocket: WS, fetch: null });
    assert.throws(
      () => connect({ url, project: 'p', token: jwt({ sub: 'bob' }), WebSocket: WS }),
      (e) => e.code === 'user_mismatch',
    );
    const again = connect({ url, project: 'p', token: jwt({ sub: 'alice', n: 2 }), WebSocket: WS });
    again.release(0);
    a.close();
  });

  test('no WebSocket class (server-side rendering): no socket, state idle', async () => {
    const saved = globalThis.WebSocket;
    delete globalThis.WebSocket;
    try {
      const room = connect({ url: uniqueUrl(), project: 'p', token: 't' });
      await flush();
      assert.equal(room.state, 'idle');
      room.close();
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });

  test('a logger hears about reconnects and errors', async () => {
    const lines = [];
    const logger = { debug: (...a) => lines.push(['debug', ...a]), warn: (...a) => lines.push(['warn', ...a]) };
    const { WS, room } = await setup({ logger });
    WS.last.serverClose(1011, 'oops');
    WS.last.receive('nope');
    assert.ok(lines.some((l) => l[0] === 'debug' && /reconnecting/.test(l[2])));
    room.close();
  });

  test('position resumes a v1 connection after a page reload', async () => {
    const { WS, room } = await setup({ position: { offset: 41, epoch: 'e9' } });
    assert.match(WS.last.url, /\/ws\/projects\/p\?since=41&epoch=e9$/);
    room.close();
  });
});

describe('page events leave a stopped connection alone', () => {
  test('online, pageshow and visibility do not revive a connection refused for good; reconnect() does', async () => {
    const fetch = fakeFetch(401, { error: 'invalid_token', message: 'bad' });
    const { WS, room } = await setup({ fetch });
    WS.last.failHandshake();
    await flush();
    assert.equal(room.state, 'closed');
    fire(window, 'online');
    fire(window, 'pagehide');
    fire(window, 'pageshow');
    fire(document, 'visibilitychange');
    await flush();
    assert.equal(WS.instances.length, 1);
    room.reconnect(); // the "Retry now" button
    await flush();
    assert.equal(WS.instances.length, 2);
    room.close();
  });

  test('pagehide while waiting to reconnect cancels the timer; pageshow retries', async () => {
    const { clock, WS, room } = await setup();
    WS.last.serverClose(1006);
    fire(window, 'pagehide');
    assert.deepEqual(clock.pendingDelays(), []);
    fire(window, 'pageshow');
    await flush();
    assert.equal(WS.instances.length, 2);
    room.close();
  });
});
