// Protocol v2 (SPEC §10-§13): one socket, many subscriptions, the personal stream, history,
// presence, idempotent publishes retried with their key after a reconnect, ephemeral
// publishes, in-band token refresh; on a fake clock and a fake WebSocket.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { connect } from '../wshub.js';
import { FakeClock, fakeWebSocketClass, flush, uniqueUrl } from '../support/fakes.js';

function jwt(claims) {
  const b = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b({ alg: 'HS256' })}.${b(claims)}.sig`;
}

async function setup(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const hub = connect({
    url: uniqueUrl(),
    token: 'tok',
    WebSocket: WS,
    random: () => 1,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    fetch: null,
    ...options,
  });
  const errors = [];
  hub.on('error', (e) => errors.push(e));
  const states = [];
  hub.on('state', (s) => states.push(s));
  await flush();
  /** The v2 welcome. */
  const welcome = (fields = {}) => {
    WS.last.open();
    WS.last.receive({ type: 'welcome', conn: 1, user: 'alice', ping_interval_ms: 0, protocol: 2, ...fields });
  };
  /** Answers the last sent request `type` (for project) with `frame` (its id filled in). */
  const answer = (type, frame, project) => {
    const req = [...WS.last.sent].reverse().find((f) => f.type === type && (project === undefined || f.project === project));
    assert.ok(req, `a ${type} request was sent`);
    WS.last.receive({ id: req.id, ...frame });
    return req;
  };
  const subscribed = (project, fields = {}) =>
    answer('subscribe', { type: 'subscribed', project, epoch: 'e1', offset: 0, recovered: false, missed: 0, ...fields }, project);
  return { clock, WS, hub, errors, states, welcome, answer, subscribed };
}

const msg = (project, offset, data = offset) => ({ type: 'message', project, offset, from: 'bob', data, ts: 5 });

describe('v2: one socket, many subscriptions', () => {
  test('GET /ws with the wshub.v2 subprotocol and the token beside it', async () => {
    const { WS, hub } = await setup();
    assert.match(WS.last.url, /^ws:\/\/hub-\d+\.test\/ws$/);
    assert.deepEqual(WS.last.protocols, ['wshub.v2', 'wshub.bearer.tok']);
    hub.close();
  });

  test('subscriptions are sent once open, each with its own listeners, state and position', async () => {
    const { WS, hub, welcome, subscribed } = await setup();
    const a = hub.subscribe('room:a');
    const me = hub.subscribe('~user');
    assert.equal(hub.subscribe('room:a'), a, 'the same subscription while it lives');
    assert.equal(a.state, 'subscribing');
    const got = { a: [], me: [] };
    a.on('message', (m) => got.a.push(m));
    me.on('message', (m) => got.me.push(m));
    welcome();
    assert.equal(hub.user, 'alice');
    assert.deepEqual(
      WS.last.sent.map((f) => [f.type, f.project]),
      [['subscribe', 'room:a'], ['subscribe', '~user']],
    );
    subscribed('room:a', { offset: 4 });
    subscribed('~user');
    assert.equal(a.state, 'subscribed');
    WS.last.receive(msg('room:a', 5));
    WS.last.receive(msg('~user', 1, 'hi me'));
    WS.last.receive(msg('room:a', 5)); // a duplicate never reaches the app
    assert.deepEqual(got.a.map((m) => [m.project, m.offset]), [['room:a', 5]]);
    assert.deepEqual(got.me.map((m) => m.data), ['hi me']);
    assert.deepEqual(a.position, { offset: 5, epoch: 'e1' });
    hub.close();
  });

  test('a subscribe made while open goes out at once; unsubscribe stops delivery', async () => {
    const { WS, hub, welcome, subscribed, answer } = await setup();
    welcome();
    const a = hub.subscribe('a');
    assert.equal(WS.last.sent.at(-1).type, 'subscribe');
    subscribed('a');
    const got = [];
    a.on('message', (m) => got.push(m.offset));
    a.unsubscribe();
    assert.deepEqual(WS.last.sent.at(-1), { type: 'unsubscribe', project: 'a', id: WS.last.sent.at(-1).id });
    assert.equal(a.state, 'unsubscribed');
    answer('unsubscribe', { type: 'unsubscribed', project: 'a' });
    WS.last.receive(msg('a', 1));
    assert.deepEqual(got, []);
    hub.close();
  });

  test('after a reconnect every subscription recovers from its own position', async () => {
    const { WS, hub, welcome, subscribed, clock, states } = await setup();
    const a = hub.subscribe('a');
    const b = hub.subscribe('b');
    const rec = [];
    a.on('recovered', (r) => rec.push(['a', r]));
    b.on('recovered', (r) => rec.push(['b', r]));
    welcome();
    subscribed('a', { offset: 3 });
    subscribed('b', { epoch: 'eb', offset: 7 });
    WS.last.receive(msg('a', 4));
    WS.last.serverClose(1001, 'draining');
    assert.equal(a.state, 'subscribing');
    clock.advance(states.at(-1).delay);
    await flush();
    welcome();
    assert.deepEqual(
      WS.last.sent.map((f) => [f.project, f.since, f.epoch]),
      [['a', 4, 'e1'], ['b', 7, 'eb']],
    );
    subscribed('a', { offset: 6, recovered: true, missed: 2 });
    subscribed('b', { epoch: 'eb2', offset: 0, recovered: false, lost_reason: 'epoch_changed' });
    assert.deepEqual(rec, [
      ['a', { recovered: true, missed: 2, epoch: 'e1', offset: 4 }],
      ['b', { recovered: false, missed: 0, epoch: 'eb2', offset: 0, lost_reason: 'epoch_changed' }],
    ]);
    hub.close();
  });

  test('subscribe options: position after a reload, or the last k messages', async () => {
    const { WS, hub, welcome } = await setup();
    hub.subscribe('a', { position: { offset: 9, epoch: 'x' } });
    hub.subscribe('b', { last: 10 });
    welcome();
    assert.deepEqual(
      WS.last.sent.map(({ project, since, epoch, last }) => ({ project, since, epoch, last })),
      [
        { project: 'a', since: 9, epoch: 'x', last: undefined },
        { project: 'b', since: undefined, epoch: undefined, last: 10 },
      ],
    );
    hub.close();
  });

  test('a refused subscription fails alone; a server unsubscribe (forbidden) ends it with an error', async () => {
    const { WS, hub, welcome, answer, subscribed, errors } = await setup();
    const a = hub.subscribe('a');
    const b = hub.subscribe('b');
    const aErrors = [];
    a.on('error', (e) => aErrors.push(e.code));
    welcome();
    answer('subscribe', { type: 'error', project: 'a', code: 'forbidden', message: 'no' }, 'a');
    assert.equal(a.state, 'failed');
    assert.deepEqual(aErrors, ['forbidden']);
    subscribed('b');
    WS.last.receive({ type: 'unsubscribed', project: 'b', reason: 'forbidden' });
    assert.equal(b.state, 'unsubscribed');
    assert.ok(errors.some((e) => e.code === 'unsubscribed' && e.reason === 'forbidden' && e.project === 'b'));
    assert.equal(hub.state, 'open', 'the connection stays');
    assert.notEqual(hub.subscribe('a'), a, 'a new subscription can be made');
    hub.close();
  });

  test('presence and history by request id; presence events per subscription', async () => {
    const { WS, hub, welcome, answer, subscribed } = await setup();
    const a = hub.subscribe('a');
    const events = [];
    a.on('presence', (p) => events.push(p));
    welcome();
    subscribed('a');
    WS.last.receive({ type: 'presence', project: 'a', event: 'join', user: 'bob' });
    const p = hub.presence('a');
    answer('presence', { type: 'presence', project: 'a', event: 'sync', users: ['alice', 'bob'] });
    assert.deepEqual(await p, ['alice', 'bob']);
    const h = hub.history('a', { limit: 2, reverse: true });
    const req = answer('history', { type: 'history', project: 'a', epoch: 'e1', offset: 9, complete: false, messages: [msg('a', 9)] });
    assert.deepEqual([req.limit, req.reverse, req.project], [2, true, 'a']);
    const result = await h;
    assert.equal(result.complete, false);
    assert.equal(result.messages[0].offset, 9);
    assert.deepEqual(events.map((e) => e.event), ['join', 'sync']);
    hub.close();
  });
});

describe('v2: publishing', () => {
  test('a publish carries a key and resolves with {offset}; a duplicate ack says so', async () => {
    const { WS, hub, welcome, answer } = await setup();
    welcome();
    const p = hub.publish('a', { t: 1 });
    const req = answer('publish', { type: 'ack', project: 'a', offset: 3 });
    assert.equal(typeof req.key, 'string');
    assert.ok(req.key.length >= 8 && req.key.length <= 128);
    assert.deepEqual(await p, { offset: 3 });
    const q = hub.publish('a', 2, { key: 'mine' });
    assert.equal(answer('publish', { type: 'ack', project: 'a', offset: 3, duplicate: true }).key, 'mine');
    assert.deepEqual(await q, { offset: 3, duplicate: true });
    hub.close();
  });

  test('unacknowledged publishes are sent again after a reconnect with the same key (exactly once)', async () => {
    const { WS, hub, welcome, answer, clock, states } = await setup();
    welcome();
    const p1 = hub.publish('a', 1);
    const p2 = hub.publish('a', 2);
    const sent = WS.last.sent.map((f) => f.key);
    WS.last.serverClose(1006);
    const p3 = hub.publish('a', 3); // made while down: queued
    clock.advance(states.at(-1).delay);
    await flush();
    welcome();
    const again = WS.last.sent.filter((f) => f.type === 'publish');
    assert.deepEqual(again.map((f) => f.data), [1, 2, 3], 'in order');
    assert.deepEqual(again.slice(0, 2).map((f) => f.key), sent);
    for (const [i, f] of again.entries()) {
      WS.last.receive({ type: 'ack', id: f.id, project: 'a', offset: 10 + i, ...(i === 0 ? { duplicate: true } : {}) });
    }
    assert.deepEqual(await Promise.all([p1, p2, p3]), [{ offset: 10, duplicate: true }, { offset: 11 }, { offset: 12 }]);
    hub.close();
  });

  test('ephemeral publishes carry no key, are not retried, and ack without an offset', async () => {
    const { WS, hub, welcome, answer } = await setup();
    welcome();
    const p = hub.publish('a', 'typing', { ephemeral: true });
    const req = answer('publish', { type: 'ack', project: 'a' });
    assert.equal(req.ephemeral, true);
    assert.equal(req.key, undefined);
    assert.deepEqual(await p, { offset: undefined });
    const q = hub.publish('a', 'typing', { ephemeral: true, echo: false });
    assert.equal(WS.last.sent.at(-1).echo, false);
    WS.last.serverClose(1006);
    await assert.rejects(q, (e) => e.code === 'connection_closed' && e.sent === true);
    hub.close();
  });

  test('ephemeral messages arrive without offsets and do not move the position', async () => {
    const { WS, hub, welcome, subscribed } = await setup();
    const a = hub.subscribe('a');
    const got = [];
    a.on('message', (m) => got.push(m));
    welcome();
    subscribed('a', { offset: 2 });
    WS.last.receive({ type: 'message', project: 'a', from: 'bob', data: 'typing', ts: 1, ephemeral: true });
    assert.equal(got[0].ephemeral, true);
    assert.equal(a.position.offset, 2);
    hub.close();
  });

  test('an error answering a publish rejects that publish (by id)', async () => {
    const { hub, welcome, answer } = await setup();
    welcome();
    const p = hub.publish('a', 1);
    const q = hub.publish('b', 2);
    answer('publish', { type: 'error', project: 'b', code: 'forbidden', message: 'no publish grant' }, 'b');
    await assert.rejects(q, (e) => e.code === 'forbidden');
    answer('publish', { type: 'ack', project: 'a', offset: 1 }, 'a');
    assert.deepEqual(await p, { offset: 1 });
    hub.close();
  });

  test('requests are paced under the request rate', async () => {
    const { WS, hub, welcome, clock } = await setup({ requestRate: 5 });
    welcome();
    for (let i = 0; i < 8; i++) hub.presence('a').catch(() => {});
    assert.equal(WS.last.sent.length, 5);
    clock.advance(600);
    assert.equal(WS.last.sent.length, 8);
    hub.close();
  });
});

describe('v2: token refresh in band', () => {
  test('before exp, getToken is asked and the token sent in a refresh frame; the socket stays', async () => {
    const clock = new FakeClock();
    clock.time = 1_000_000;
    const exp = (s) => Math.floor(clock.time / 1000) + s;
    let n = 0;
    const tokens = [];
    const { WS, hub, welcome, answer } = await setup({
      clock,
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      token: jwt({ sub: 'alice', exp: exp(120) }),
      getToken: () => {
        const t = jwt({ sub: 'alice', exp: exp(120), n: ++n });
        tokens.push(t);
        return t;
      },
    });
    welcome();
    clock.advance(89_000);
    await flush();
    assert.equal(tokens.length, 0, 'not yet');
    clock.advance(1_000);
    await flush();
    assert.equal(tokens.length, 1, '30 s before exp');
    const req = answer('refresh', { type: 'refreshed', exp: exp(120) });
    assert.equal(req.token, tokens[0]);
    await flush();
    assert.equal(WS.instances.length, 1, 'the same socket');
    clock.advance(90_000);
    await flush();
    assert.equal(tokens.length, 2, 'and again before the new exp');
    hub.close();
  });

  test('a refused refresh is reported (the 4001 that follows refreshes by reconnecting)', async () => {
    const clock = new FakeClock();
    const { hub, welcome, answer, errors } = await setup({
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      token: jwt({ sub: 'alice', exp: 60 }),
      getToken: () => jwt({ sub: 'bob', exp: 600 }),
    });
    welcome();
    clock.advance(30_000);
    await flush();
    answer('refresh', { type: 'error', code: 'invalid_token', message: 'another user' });
    await flush();
    assert.deepEqual(errors.map((e) => e.code), ['invalid_token']);
    hub.close();
  });
});

describe('v2: refresh edge cases', () => {
  test('getToken giving the same token: asked again closer to exp, never a refresh frame, no spin', async () => {
    const clock = new FakeClock();
    const token = jwt({ sub: 'alice', exp: 120 });
    let calls = 0;
    const { WS, hub, welcome } = await setup({
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      token,
      getToken: () => {
        calls += 1;
        return token;
      },
    });
    welcome();
    for (let t = 0; t < 130; t++) {
      clock.advance(1000);
      await flush();
    }
    assert.ok(calls >= 2 && calls <= 8, `${calls} calls`);
    assert.equal(WS.last.sent.filter((f) => f.type === 'refresh').length, 0);
    hub.close();
  });

  test('a 4001 on v2 asks getToken and reconnects, resubscribing with positions', async () => {
    const { WS, hub, welcome, subscribed, clock, states } = await setup({ getToken: () => 'fresh' });
    hub.subscribe('a');
    welcome();
    subscribed('a', { offset: 2 });
    WS.last.serverClose(4001, 'token expired');
    clock.advance(states.at(-1).delay);
    await flush();
    assert.deepEqual(WS.last.protocols, ['wshub.v2', 'wshub.bearer.fresh']);
    welcome();
    assert.deepEqual(WS.last.sent.map((f) => [f.type, f.since]), [['subscribe', 2]]);
    hub.close();
  });
});
