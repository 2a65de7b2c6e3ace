// The SSE fallback of a v1 connection (`sseFallback`), on a fake clock: WebSocket handshakes
// that fail while /ws/check answers 204 (the hub would take them: something blocks WebSockets)
// switch the link to `GET /sse/projects/{p}` read with fetch, receive only; the stream recovers
// with Last-Event-ID, obeys `event: close`, and is declared dead after a heartbeat's silence.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { connect } from '../wshub.js';
import { FakeClock, fakeWebSocketClass, flush, uniqueUrl } from '../support/fakes.js';

/** A response body the test writes to: `push(text)` a chunk, `end()`, `fail()`. */
function streamBody() {
  const chunks = [];
  let waiting = null;
  const deliver = (item) => {
    if (waiting) {
      const w = waiting;
      waiting = null;
      w(item);
    } else chunks.push(item);
  };
  const encoder = new TextEncoder();
  return {
    push: (text) => deliver({ value: encoder.encode(text), done: false }),
    end: () => deliver({ value: undefined, done: true }),
    fail: () => deliver(new Error('network')),
    getReader: () => ({
      read: () =>
        new Promise((resolve, reject) => {
          const settle = (item) => (item instanceof Error ? reject(item) : resolve(item));
          if (chunks.length) settle(chunks.shift());
          else waiting = settle;
        }),
    }),
  };
}

/**
 * A fake fetch: /ws/check answers `checkStatus`; each /sse request gets a new stream (or the
 * status of `sseStatus`), recorded in `f.streams` with its URL and init.
 */
function fakeFetch({ checkStatus = 204, sseStatus = 200 } = {}) {
  const f = async (url, init) => {
    f.calls.push({ url, init });
    if (url.includes('/ws/check')) {
      return { status: f.checkStatus, headers: { get: () => null }, json: async () => ({ error: 'invalid_token', message: 'no' }) };
    }
    if (f.sseStatus !== 200) return { status: f.sseStatus, headers: { get: () => null }, json: async () => ({}) };
    const body = streamBody();
    init.signal?.addEventListener('abort', () => body.fail());
    f.streams.push({ url, init, body });
    return { status: 200, headers: { get: () => 'text/event-stream' }, body, json: async () => ({}) };
  };
  f.calls = [];
  f.streams = [];
  f.checkStatus = checkStatus;
  f.sseStatus = sseStatus;
  return f;
}

const welcome = (fields = {}) =>
  `id: e1:${fields.offset ?? 0}\nevent: welcome\ndata: ${JSON.stringify({
    type: 'welcome',
    conn: 7,
    user: 'alice',
    project: 'p',
    epoch: 'e1',
    offset: 0,
    recovered: false,
    missed: 0,
    ping_interval_ms: 25000,
    ...fields,
  })}\n\n`;
const message = (offset, data = { n: offset }) =>
  `id: e1:${offset}\nevent: message\ndata: ${JSON.stringify({ type: 'message', offset, from: 'bob', data, ts: 1 })}\n\n`;

async function setup(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const fetch = options.fetch ?? fakeFetch();
  const room = connect({
    url: uniqueUrl(),
    project: 'p',
    token: 'tok',
    WebSocket: WS,
    random: () => 1,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    fetch,
    sseFallback: true,
    ...options,
  });
  const rec = { states: [], errors: [], messages: [], transports: [], recovered: [] };
  room.on('state', (s) => rec.states.push(s));
  room.on('error', (e) => rec.errors.push(e));
  room.on('message', (m) => rec.messages.push(m));
  room.on('transport', (t) => rec.transports.push(t));
  room.on('recovered', (r) => rec.recovered.push(r));
  await flush();
  return { clock, WS, room, fetch, rec };
}

/** Fails the pending handshake and waits for /ws/check; then moves past the backoff, to the next socket. */
async function blockHandshake({ clock, WS }) {
  const sockets = WS.instances.length;
  WS.last.failHandshake();
  await flush();
  await flush();
  for (let waited = 0; WS.instances.length === sockets && waited < 60000; waited += 100) {
    clock.advance(100);
    await flush();
  }
}

describe('SSE fallback (v1)', () => {
  test('three blocked handshakes switch to an event stream: token in a header, receive only', async () => {
    const s = await setup();
    const { WS, room, fetch, rec } = s;
    assert.equal(room.transport, 'websocket');
    await blockHandshake(s);
    await blockHandshake(s);
    assert.equal(room.transport, 'websocket', 'two are not enough');
    assert.equal(WS.instances.length, 3);
    WS.last.failHandshake();
    await flush();
    await flush();
    assert.equal(room.transport, 'sse');
    assert.deepEqual(rec.transports, [{ transport: 'sse', blocked: 3 }]);
    assert.equal(WS.instances.length, 3, 'no more sockets');
    assert.equal(fetch.streams.length, 1, 'the stream is opened at once');
    const { url, init } = fetch.streams[0];
    assert.match(url, /^http:\/\/hub-\d+\.test\/sse\/projects\/p$/);
    assert.ok(!url.includes('tok'), 'never the token in the URL');
    assert.equal(init.headers.authorization, 'Bearer tok');
    assert.equal(init.headers['last-event-id'], undefined);
    assert.equal(init.credentials, 'omit');

    fetch.streams[0].body.push(welcome() + message(1));
    await flush();
    assert.equal(room.state, 'open');
    assert.equal(room.welcome.conn, 7);
    assert.deepEqual(rec.messages, [{ offset: 1, from: 'bob', data: { n: 1 }, ts: 1 }]);
    // A message split across chunks, and a heartbeat.
    fetch.streams[0].body.push(message(2).slice(0, 20));
    await flush();
    fetch.streams[0].body.push(message(2).slice(20) + ':\n\n');
    await flush();
    assert.deepEqual(rec.messages.map((m) => m.offset), [1, 2]);
    assert.equal(room.lastOffset, 2);

    await assert.rejects(room.publish({ x: 1 }), (e) => e.code === 'receive_only');
    await assert.rejects(room.presence(), (e) => e.code === 'receive_only');
    room.close();
    await flush();
    assert.equal(fetch.streams[0].init.signal.aborted, true, 'close() ends the stream');
  });

  test('a publish waiting for the socket fails with receive_only at the switch', async () => {
    const s = await setup({ sseFallback: 1 });
    const pending = s.room.publish({ early: true }).catch((e) => e);
    s.WS.last.failHandshake();
    await flush();
    await flush();
    assert.equal(s.room.transport, 'sse');
    assert.equal((await pending).code, 'receive_only');
  });

  test('a cut stream reconnects with backoff and recovers with Last-Event-ID', async () => {
    const s = await setup({ sseFallback: 1 });
    const { clock, WS, room, fetch, rec } = s;
    WS.last.failHandshake();
    await flush();
    await flush();
    fetch.streams[0].body.push(welcome() + message(1) + message(2));
    await flush();
    fetch.streams[0].body.fail();
    await flush();
    assert.equal(room.state, 'reconnecting');
    assert.equal(rec.states.at(-1).code, 1006);
    assert.equal(fetch.streams.length, 1, 'waits for the backoff');
    clock.advance(1000);
    await flush();
    assert.equal(fetch.streams.length, 2);
    assert.equal(fetch.streams[1].init.headers['last-event-id'], 'e1:2');
    fetch.streams[1].body.push(welcome({ offset: 4, recovered: true, missed: 2 }).replace(/^id: .*\n/, '') + message(3) + message(4));
    await flush();
    assert.deepEqual(rec.messages.map((m) => m.offset), [1, 2, 3, 4]);
    assert.deepEqual(rec.recovered, [{ recovered: true, missed: 2, epoch: 'e1', offset: 2 }]);
    assert.equal(room.transport, 'sse', 'it stays on the stream');
    assert.equal(WS.instances.length, 1);
    room.close();
  });

  test('event: reset is a lost recovery: the position moves to the present', async () => {
    const s = await setup({ sseFallback: 1, position: { offset: 5, epoch: 'old' } });
    s.WS.last.failHandshake();
    await flush();
    await flush();
    assert.equal(s.fetch.streams[0].init.headers['last-event-id'], 'old:5');
    s.fetch.streams[0].body.push('id: e2:9\nevent: reset\ndata: {"epoch":"e2","offset":9}\n\n' + message(10).replaceAll('e1', 'e2'));
    await flush();
    assert.equal(s.room.state, 'open');
    assert.deepEqual(s.rec.recovered, [{ recovered: false, missed: 0, epoch: 'e2', offset: 9 }]);
    assert.deepEqual(s.rec.messages.map((m) => m.offset), [10]);
    assert.equal(s.room.epoch, 'e2');
    s.room.close();
  });

  test('event: close obeys the close code: 1001 reconnects, 4003 stops', async () => {
    const s = await setup({ sseFallback: 1 });
    const { clock, WS, room, fetch, rec } = s;
    WS.last.failHandshake();
    await flush();
    await flush();
    fetch.streams[0].body.push(welcome() + 'event: close\ndata: {"code":1001,"reason":"server shutting down"}\n\n');
    await flush();
    assert.equal(room.state, 'reconnecting');
    assert.equal(rec.states.at(-1).code, 1001);
    assert.equal(fetch.streams[0].init.signal.aborted, true);
    clock.advance(1000);
    await flush();
    fetch.streams[1].body.push(welcome() + 'event: close\ndata: {"code":4003,"reason":"access revoked"}\n\n');
    await flush();
    assert.equal(room.state, 'closed');
    assert.equal(rec.states.at(-1).code, 4003);
    clock.advance(120000);
    await flush();
    assert.equal(fetch.streams.length, 2, 'no reconnect after 4003');
  });

  test('silence past ping_interval + pongTimeoutMs declares the stream dead; heartbeats keep it alive', async () => {
    const s = await setup({ sseFallback: 1, pongTimeoutMs: 5000 });
    const { clock, WS, room, fetch } = s;
    WS.last.failHandshake();
    await flush();
    await flush();
    fetch.streams[0].body.push(welcome({ ping_interval_ms: 10000 }));
    await flush();
    for (let i = 0; i < 5; i += 1) {
      clock.advance(10000);
      fetch.streams[0].body.push(':\n\n');
      await flush();
    }
    assert.equal(room.state, 'open', 'heartbeats every interval');
    clock.advance(15001);
    await flush();
    assert.equal(room.state, 'reconnecting');
    assert.equal(fetch.streams[0].init.signal.aborted, true);
    room.close();
  });

  test('a refused stream is explained by /ws/check like a refused handshake', async () => {
    const fetch = fakeFetch();
    const s = await setup({ sseFallback: 1, fetch });
    s.WS.last.failHandshake();
    await flush();
    await flush();
    assert.equal(s.room.transport, 'sse');
    s.fetch.streams[0].body.push(welcome());
    await flush();
    fetch.sseStatus = 401;
    fetch.checkStatus = 401;
    s.fetch.streams[0].body.end();
    await flush();
    s.clock.advance(1000);
    await flush();
    await flush();
    await flush();
    assert.equal(s.room.state, 'closed', 'a refused token stops the client (no getToken)');
    assert.equal(s.rec.errors.at(-1).code, 'unauthorized');
  });

  test('off by default, never for refusals, never on v2', async () => {
    const off = await setup({ sseFallback: undefined });
    for (let i = 0; i < 5; i += 1) await blockHandshake(off);
    assert.equal(off.room.transport, 'websocket');
    assert.equal(off.fetch.streams.length, 0);
    off.room.close();

    const refused = await setup({ fetch: fakeFetch({ checkStatus: 429 }) });
    for (let i = 0; i < 5; i += 1) await blockHandshake(refused);
    assert.equal(refused.room.transport, 'websocket', 'a 429 is a refusal, not a block');
    refused.room.close();

    const clock = new FakeClock();
    const WS = fakeWebSocketClass();
    const fetch = fakeFetch();
    const hub = connect({ url: uniqueUrl(), token: 'tok', WebSocket: WS, fetch, sseFallback: 1, random: () => 1, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now });
    await flush();
    for (let i = 0; i < 3; i += 1) await blockHandshake({ clock, WS });
    assert.equal(WS.instances.length, 4);
    assert.equal(hub.transport, 'websocket');
    assert.equal(fetch.streams.length, 0);
    hub.close();
  });

  test('a WebSocket that opens resets the count of blocked handshakes', async () => {
    const s = await setup({ sseFallback: 2 });
    await blockHandshake(s);
    s.WS.last.welcome();
    s.WS.last.serverClose(1001, 'draining');
    for (let sockets = s.WS.instances.length; s.WS.instances.length === sockets; ) {
      s.clock.advance(100);
      await flush();
    }
    await blockHandshake(s);
    assert.equal(s.room.transport, 'websocket', 'one blocked since the last open');
    s.WS.last.failHandshake();
    await flush();
    await flush();
    assert.equal(s.room.transport, 'sse');
    s.room.close();
  });
});
