// The singleton, recovery, dedupe, publish/ack and presence, on a fake clock and a fake WebSocket.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { connect, WshubError } from '../wshub.js';
import { FakeClock, fakeWebSocketClass, flush, uniqueUrl } from '../support/fakes.js';

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
  const messages = [];
  room.on('message', (m) => messages.push(m));
  const recovered = [];
  room.on('recovered', (r) => recovered.push(r));
  const states = [];
  room.on('state', (s) => states.push(s));
  /** Waits out the reconnect delay just announced (other timers, like request timeouts, may run). */
  const reconnectNow = async () => {
    const last = states[states.length - 1];
    assert.equal(last.state, 'reconnecting');
    clock.advance(last.delay);
    await flush();
  };
  await flush();
  return { clock, WS, room, url, messages, recovered, reconnectNow };
}

const msg = (offset, data = offset) => ({ type: 'message', offset, from: 'bob', data, ts: 1000 + offset });

describe('one connection per project', () => {
  test('a second connect for the same project shares the socket through its own handle', async () => {
    const { WS, room, url } = await setup();
    const again = connect({ url, project: 'p', token: 'other', WebSocket: WS });
    assert.notEqual(again, room, 'a handle per holder');
    const slash = connect({ url: `${url}/`, project: 'p', token: 'other', WebSocket: WS });
    await flush();
    assert.equal(WS.instances.length, 1, 'one socket; a trailing slash names the same hub');
    WS.last.welcome();
    assert.equal(again.state, 'open');
    room.close();
    again.close();
    assert.equal(WS.last.closedWith, null, 'open while a holder is left');
    slash.close();
    assert.equal(WS.last.closedWith.code, 1000, 'closed with the last holder');
  });

  test('different projects get different connections', async () => {
    const { WS, room, url } = await setup();
    const other = connect({ url, project: 'q', token: 'tok', WebSocket: WS });
    assert.notEqual(other, room);
    await flush();
    assert.equal(WS.instances.length, 2);
    assert.ok(WS.instances[1].url.endsWith('/ws/projects/q'));
    room.close();
    other.close();
  });

  test('close removes the singleton: the next connect starts afresh', async () => {
    const { WS, room, url } = await setup();
    room.close();
    assert.equal(WS.instances[0].closedWith.code, 1000);
    const fresh = connect({ url, project: 'p', token: 'tok', WebSocket: WS });
    assert.notEqual(fresh, room);
    fresh.close();
  });

  test('a connection the server ended for good is removed too', async () => {
    const { WS, room, url } = await setup();
    WS.last.welcome();
    WS.last.serverClose(4003, 'access revoked');
    const fresh = connect({ url, project: 'p', token: 'tok', WebSocket: WS });
    assert.notEqual(fresh, room);
    fresh.close();
  });

  test('URL: base, /ws/projects/{project}, http(s) becomes ws(s)', async () => {
    const WS = fakeWebSocketClass();
    const room = connect({ url: 'https://hub.example.com/', project: 'a.b:c-1_2', token: 't', WebSocket: WS });
    await flush();
    assert.equal(WS.last.url, 'wss://hub.example.com/ws/projects/a.b:c-1_2');
    room.close();
  });
});

describe('recovery', () => {
  test('the first connection asks for nothing; a reconnect carries since and epoch', async () => {
    const { clock, WS, room, reconnectNow } = await setup();
    assert.ok(WS.last.url.endsWith('/ws/projects/p'), WS.last.url);
    WS.last.welcome({ epoch: 'ep/1', offset: 10 });
    WS.last.receive(msg(11));
    WS.last.receive(msg(12));
    assert.equal(room.lastOffset, 12);
    WS.last.serverClose(1006);
    await reconnectNow();
    assert.ok(WS.last.url.endsWith('/ws/projects/p?since=12&epoch=ep%2F1'), WS.last.url);
    room.close();
  });

  test('recovered:true keeps the offset, reports missed, and the replay is delivered', async () => {
    const { clock, WS, room, reconnectNow, messages, recovered } = await setup();
    WS.last.welcome({ offset: 4 });
    WS.last.receive(msg(5));
    WS.last.serverClose(4008, 'slow consumer');
    await reconnectNow();
    assert.match(WS.last.url, /since=5&epoch=e1/);
    WS.last.welcome({ offset: 7, recovered: true, missed: 2 });
    WS.last.receive(msg(6));
    WS.last.receive(msg(7));
    WS.last.receive(msg(8));
    assert.deepEqual(recovered, [{ recovered: true, missed: 2, epoch: 'e1', offset: 5 }]);
    assert.deepEqual(
      messages.map((m) => m.offset),
      [5, 6, 7, 8],
    );
    room.close();
  });

  test('recovered:false surfaces as an event and restarts from the welcome', async () => {
    const { clock, WS, room, reconnectNow, messages, recovered } = await setup();
    WS.last.welcome({ offset: 4 });
    WS.last.receive(msg(5));
    WS.last.serverClose(1001, 'server shutting down');
    await reconnectNow();
    WS.last.welcome({ epoch: 'e2', offset: 2, recovered: false, missed: 0 });
    assert.deepEqual(recovered, [{ recovered: false, missed: 0, epoch: 'e2', offset: 2 }]);
    assert.equal(room.epoch, 'e2');
    assert.equal(room.lastOffset, 2);
    WS.last.receive(msg(3));
    assert.deepEqual(
      messages.map((m) => m.offset),
      [5, 3],
      'offsets of the new epoch are delivered even though they are lower',
    );
    WS.last.serverClose(1006);
    await reconnectNow();
    assert.match(WS.last.url, /since=3&epoch=e2$/);
    room.close();
  });

  test('no recovered event on the first connection', async () => {
    const { WS, room, recovered } = await setup();
    WS.last.welcome();
    assert.deepEqual(recovered, []);
    room.close();
  });

  test('a drop before any welcome does not ask for recovery', async () => {
    const { clock, WS, room, reconnectNow } = await setup();
    WS.last.failHandshake();
    await reconnectNow();
    assert.ok(WS.last.url.endsWith('/ws/projects/p'), WS.last.url);
    room.close();
  });
});

describe('messages', () => {
  test('delivered with offset, from, data, ts', async () => {
    const { WS, room, messages } = await setup();
    WS.last.welcome();
    WS.last.receive({ type: 'message', offset: 1, from: 'alice', data: { text: 'hi' }, ts: 42 });
    assert.deepEqual(messages, [{ offset: 1, from: 'alice', data: { text: 'hi' }, ts: 42 }]);
    room.close();
  });

  test('deduplicated by offset within an epoch', async () => {
    const { WS, room, messages } = await setup();
    WS.last.welcome({ offset: 10 });
    for (const offset of [9, 10, 11, 11, 12, 10, 13]) WS.last.receive(msg(offset));
    assert.deepEqual(
      messages.map((m) => m.offset),
      [11, 12, 13],
    );
    room.close();
  });

  test('presence join/leave/sync reach the presence listeners', async () => {
    const { WS, room } = await setup();
    const events = [];
    room.on('presence', (p) => events.push(p));
    WS.last.welcome();
    WS.last.receive({ type: 'presence', event: 'join', user: 'bob' });
    WS.last.receive({ type: 'presence', event: 'leave', user: 'bob' });
    WS.last.receive({ type: 'presence', event: 'sync', users: ['alice'] });
    assert.deepEqual(events, [
      { event: 'join', user: 'bob' },
      { event: 'leave', user: 'bob' },
      { event: 'sync', users: ['alice'] },
    ]);
    room.close();
  });

  test('on() returns an unsubscribe function', async () => {
    const { WS, room } = await setup();
    const seen = [];
    const off = room.on('message', (m) => seen.push(m.offset));
    WS.last.welcome();
    WS.last.receive(msg(1));
    off();
    WS.last.receive(msg(2));
    assert.deepEqual(seen, [1]);
    room.close();
  });

  test('the welcome event carries the welcome frame', async () => {
    const { WS, room } = await setup();
    const welcomes = [];
    room.on('welcome', (w) => welcomes.push(w));
    WS.last.welcome({ conn: 7, user: 'alice' });
    assert.equal(welcomes.length, 1);
    assert.equal(welcomes[0].conn, 7);
    assert.equal(room.welcome.user, 'alice');
    room.close();
  });

  test('server error frames become error events', async () => {
    const { WS, room } = await setup();
    const errors = [];
    room.on('error', (e) => errors.push(e));
    WS.last.welcome();
    WS.last.receive({ type: 'error', code: 'unknown_type', message: 'unknown type `dance`' });
    WS.last.receive('not json');
    assert.equal(errors.length, 2);
    assert.ok(errors[0] instanceof WshubError);
    assert.equal(errors[0].code, 'unknown_type');
    assert.equal(errors[1].code, 'bad_frame');
    room.close();
  });

  test('a throwing listener does not break delivery to the others', async (t) => {
    const { WS, room } = await setup();
    const seen = [];
    room.on('message', () => {
      throw new Error('app bug');
    });
    room.on('message', (m) => seen.push(m.offset));
    // Reported the way the DOM reports a throwing event listener (reportError), not swallowed.
    const uncaught = [];
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'reportError');
    globalThis.reportError = (err) => uncaught.push(err.message);
    t.after(() => {
      if (saved) Object.defineProperty(globalThis, 'reportError', saved);
      else delete globalThis.reportError;
    });
    WS.last.welcome();
    WS.last.receive(msg(1));
    await flush();
    assert.deepEqual(seen, [1]);
    assert.deepEqual(uncaught, ['app bug'], 'reported, not swallowed');
    room.close();
  });
});

describe('publish', () => {
  test('sends a publish frame with a unique id and resolves with the ack offset', async () => {
    const { WS, room } = await setup();
    WS.last.welcome();
    const a = room.publish({ text: 'a' });
    const b = room.publish('b');
    const [fa, fb] = WS.last.sent;
    assert.equal(fa.type, 'publish');
    assert.deepEqual(fa.data, { text: 'a' });
    assert.equal(fb.data, 'b');
    assert.equal(typeof fa.id, 'string');
    assert.notEqual(fa.id, fb.id);
    WS.last.receive({ type: 'ack', id: fb.id, offset: 8 });
    WS.last.receive({ type: 'ack', id: fa.id, offset: 7 });
    assert.equal(await a, 7);
    assert.equal(await b, 8);
    room.close();
  });

  test('rejects when the connection closes before the ack', async () => {
    const { WS, room } = await setup();
    WS.last.welcome();
    const p = room.publish(1);
    WS.last.serverClose(1006);
    await assert.rejects(p, (err) => err instanceof WshubError && err.code === 'connection_closed' && err.closeCode === 1006);
    room.close();
  });

  test('rejects on close()', async () => {
    const { WS, room } = await setup();
    WS.last.welcome();
    const p = room.publish(1);
    const q = room.presence();
    room.close();
    await assert.rejects(p, { code: 'closed' });
    await assert.rejects(q, { code: 'closed' });
    await assert.rejects(room.publish(2), { code: 'closed' });
  });

  test('an error frame for a publish rejects the oldest pending one', async () => {
    const { WS, room } = await setup();
    WS.last.welcome();
    const a = room.publish(1);
    const b = room.publish(2);
    WS.last.receive({ type: 'error', code: 'rate_limited', message: 'publish rate exceeded; slow down' });
    await assert.rejects(a, { code: 'rate_limited' });
    WS.last.receive({ type: 'error', code: 'broker_unavailable', message: 'redis down' });
    await assert.rejects(b, { code: 'broker_unavailable' });
    room.close();
  });

  test('other error frames leave publishes alone', async () => {
    const { WS, room } = await setup();
    room.on('error', () => {});
    WS.last.welcome();
    const a = room.publish(1);
    WS.last.receive({ type: 'error', code: 'unknown_type', message: 'x' });
    WS.last.receive({ type: 'ack', id: WS.last.sent[0].id, offset: 1 });
    assert.equal(await a, 1);
    room.close();
  });

  test('times out after 10 s without an ack', async () => {
    const { clock, WS, room } = await setup();
    WS.last.welcome();
    const p = room.publish(1);
    clock.advance(9999);
    await flush();
    clock.advance(1);
    await assert.rejects(p, { code: 'timeout' });
    WS.last.receive({ type: 'ack', id: WS.last.sent[0].id, offset: 1 }); // late: ignored
    room.close();
  });

  test('while connecting, waits and is sent once open', async () => {
    const { WS, room } = await setup();
    const p = room.publish('early');
    assert.deepEqual(WS.last.sent, []);
    WS.last.welcome();
    assert.equal(WS.last.sent.length, 1);
    WS.last.receive({ type: 'ack', id: WS.last.sent[0].id, offset: 3 });
    assert.equal(await p, 3);
    room.close();
  });

  test('refuses null and undefined data', async () => {
    const { WS, room } = await setup();
    WS.last.welcome();
    await assert.rejects(room.publish(null), TypeError);
    await assert.rejects(room.publish(undefined), TypeError);
    assert.deepEqual(WS.last.sent, []);
    room.close();
  });
});

describe('presence', () => {
  test('sends a presence request and resolves with the sync users', async () => {
    const { WS, room } = await setup();
    WS.last.welcome();
    const p = room.presence();
    assert.deepEqual(WS.last.sent, [{ type: 'presence' }]);
    WS.last.receive({ type: 'presence', event: 'join', user: 'carol' });
    WS.last.receive({ type: 'presence', event: 'sync', users: ['alice', 'bob'] });
    assert.deepEqual(await p, ['alice', 'bob']);
    room.close();
  });

  test('a request in flight at a drop is asked again after the reconnect', async () => {
    const { clock, WS, room, reconnectNow } = await setup();
    WS.last.welcome();
    const p = room.presence();
    WS.last.serverClose(1006);
    await reconnectNow();
    WS.last.welcome({ recovered: true });
    assert.deepEqual(WS.last.sent, [{ type: 'presence' }]);
    WS.last.receive({ type: 'presence', event: 'sync', users: ['alice'] });
    assert.deepEqual(await p, ['alice']);
    room.close();
  });

  test('times out after 10 s', async () => {
    const { clock, WS, room } = await setup();
    WS.last.welcome();
    const p = room.presence();
    clock.advance(10000);
    await assert.rejects(p, { code: 'timeout' });
    room.close();
  });
});
