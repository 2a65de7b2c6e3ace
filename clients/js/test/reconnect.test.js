// Backoff, close-code policy, token refresh and handshake failures, on a fake clock.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { backoffDelay, closeAction, connect } from '../wshub.js';
import { FakeClock, fakeWebSocketClass, flush, uniqueUrl } from '../support/fakes.js';

/** A connection on a fake clock and a fake WebSocket class; `random` fixed unless given. */
async function setup(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const room = connect({
    url: uniqueUrl(),
    project: 'p',
    token: 'tok-1',
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
  return { clock, WS, room, states, errors };
}

/** Waits out the pending reconnect timer and lets the new socket open. */
async function reconnectNow(clock) {
  const delays = clock.pendingDelays();
  assert.equal(delays.length, 1, `one reconnect timer pending, got ${JSON.stringify(delays)}`);
  clock.advance(delays[0]);
  await flush();
}

const lastState = (states) => states[states.length - 1];

describe('backoff', () => {
  test('with random() fixed at 1: 1 s, 2 s, 4 s, 8 s, 16 s, then capped at 30 s', async () => {
    const { clock, WS, room, states } = await setup();
    const delays = [];
    for (let i = 0; i < 7; i++) {
      WS.last.failHandshake();
      const s = lastState(states);
      assert.equal(s.state, 'reconnecting');
      assert.equal(s.attempt, i + 1);
      assert.equal(s.code, 1006);
      delays.push(s.delay);
      await reconnectNow(clock);
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    assert.equal(WS.instances.length, 8, 'one socket per attempt, no hammering');
    room.close();
  });

  test('full jitter: random() in [0, 1) gives a delay in [0, cap)', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const cap = Math.min(30000, 1000 * 2 ** attempt);
      assert.equal(backoffDelay(attempt, () => 0), 0);
      assert.equal(backoffDelay(attempt, () => 0.5), cap / 2);
      const top = backoffDelay(attempt, () => 0.9999999);
      assert.ok(top >= 0 && top < cap, `attempt ${attempt}: ${top} < ${cap}`);
    }
    for (let i = 0; i < 1000; i++) {
      const attempt = i % 10;
      const d = backoffDelay(attempt, Math.random);
      assert.ok(d >= 0 && d < Math.min(30000, 1000 * 2 ** attempt));
    }
    assert.equal(backoffDelay(1000, () => 1), 30000, 'huge attempts stay capped');
  });

  test('the delay passed to setTimeout is the jittered one', async () => {
    const { clock, WS, room } = await setup({ random: () => 0.25 });
    WS.last.welcome();
    WS.last.serverClose(1001, 'server shutting down');
    assert.deepEqual(clock.pendingDelays(), [250]);
    clock.advance(249);
    await flush();
    assert.equal(WS.instances.length, 1, 'not before the delay');
    clock.advance(1);
    await flush();
    assert.equal(WS.instances.length, 2);
    room.close();
  });

  test('resets after a connection stable for a minute', async () => {
    const { clock, WS, room, states } = await setup();
    for (let i = 0; i < 4; i++) {
      WS.last.failHandshake();
      await reconnectNow(clock);
    }
    WS.last.welcome();
    clock.advance(60000);
    WS.last.serverClose(1006);
    assert.equal(lastState(states).delay, 1000, 'back to the first step');
    assert.equal(lastState(states).attempt, 1);
    room.close();
  });

  test('does not reset when the connection dropped within the minute', async () => {
    const { clock, WS, room, states } = await setup();
    for (let i = 0; i < 3; i++) {
      WS.last.failHandshake();
      await reconnectNow(clock);
    }
    WS.last.welcome();
    clock.advance(59999);
    WS.last.serverClose(1006);
    assert.equal(lastState(states).delay, 8000, 'keeps growing');
    room.close();
  });
});

describe('close codes', () => {
  const table = [
    [1000, 'stop'],
    [1001, 'reconnect'],
    [1003, 'stop'],
    [1006, 'reconnect'],
    [1007, 'stop'],
    [1008, 'stop'],
    [1009, 'stop'],
    [1011, 'reconnect'],
    [1013, 'reconnect'],
    [4001, 'refresh'],
    [4003, 'stop'],
    [4008, 'reconnect'],
    [4000, 'stop'],
    [4999, 'stop'],
  ];

  for (const [code, action] of table) {
    test(`${code}: ${action}`, async () => {
      assert.equal(closeAction(code), action);
      let tokens = 0;
      const { clock, WS, room, states, errors } = await setup({
        getToken: () => `fresh-${++tokens}`,
      });
      WS.last.welcome();
      WS.last.serverClose(code, 'why');
      const s = lastState(states);
      if (action === 'stop') {
        assert.deepEqual(s, { state: 'closed', code, reason: 'why' });
        assert.equal(room.state, 'closed');
        assert.deepEqual(clock.pendingDelays(), [], 'no reconnect timer');
        clock.advance(120000);
        await flush();
        assert.equal(WS.instances.length, 1, 'never reconnects');
        if (code === 1000) {
          assert.equal(errors.length, 0, '1000 is a normal end');
        } else {
          assert.equal(errors.length, 1, 'stop and report');
          assert.equal(errors[0].code, 'closed');
          assert.equal(errors[0].closeCode, code);
        }
      } else {
        assert.equal(s.state, 'reconnecting');
        assert.equal(s.code, code);
        assert.equal(s.reason, 'why');
        assert.equal(errors.length, 0, `${code} is not an error to report`);
        await reconnectNow(clock);
        assert.equal(WS.instances.length, 2, 'reconnected');
        assert.match(WS.last.url, /\?since=0&epoch=e1$/, 'and recovers');
        assert.equal(tokens, action === 'refresh' ? 1 : 0);
        room.close();
      }
    });
  }

  test('4001 without getToken stops: an expired token cannot be reused', async () => {
    const { WS, room, states, errors } = await setup();
    WS.last.welcome();
    WS.last.serverClose(4001, 'token expired');
    assert.deepEqual(lastState(states), { state: 'closed', code: 4001, reason: 'token expired' });
    assert.equal(room.state, 'closed');
    assert.equal(errors[0].closeCode, 4001);
  });

  test('1006 is a network fault: nothing goes to console.error', async (t) => {
    const spy = t.mock.method(console, 'error', () => {});
    const warn = t.mock.method(console, 'warn', () => {});
    const { clock, WS, room } = await setup();
    WS.last.welcome();
    WS.last.serverClose(1006);
    WS.last.onerror?.({ type: 'error' });
    await reconnectNow(clock);
    WS.last.failHandshake();
    assert.equal(spy.mock.callCount(), 0);
    assert.equal(warn.mock.callCount(), 0);
    room.close();
  });
});

describe('tokens', () => {
  test('on 4001, getToken is called and the new token goes in the subprotocol', async () => {
    const calls = [];
    const { clock, WS, room } = await setup({
      token: undefined,
      getToken: async () => {
        calls.push(calls.length);
        return `jwt-${calls.length}`;
      },
    });
    assert.equal(calls.length, 1, 'the first token comes from getToken');
    assert.deepEqual(WS.last.protocols, ['wshub.v1', 'wshub.bearer.jwt-1']);
    WS.last.welcome({ offset: 3 });
    WS.last.serverClose(4001, 'token expired');
    assert.equal(calls.length, 1, 'asked when reconnecting');
    await reconnectNow(clock);
    assert.equal(calls.length, 2);
    assert.equal(WS.instances.length, 2);
    assert.deepEqual(WS.last.protocols, ['wshub.v1', 'wshub.bearer.jwt-2']);
    assert.match(WS.last.url, /\?since=3&epoch=e1$/, 'and recovers');
    room.close();
  });

  test('the token never appears in the URL', async () => {
    const token = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl';
    const { clock, WS, room } = await setup({ token });
    WS.last.welcome({ offset: 5 });
    WS.last.receive({ type: 'message', offset: 6, from: 'bob', data: 1, ts: 1 });
    WS.last.serverClose(1001);
    await reconnectNow(clock);
    for (const ws of WS.instances) {
      assert.ok(!ws.url.includes(token), ws.url);
      assert.ok(!ws.url.includes('access_token'), ws.url);
      assert.ok(!ws.url.includes('eyJ'), ws.url);
      assert.deepEqual(ws.protocols, ['wshub.v1', `wshub.bearer.${token}`]);
    }
    room.close();
  });

  test('failed handshakes back off; without /ws/check (fetch: null) they are network faults', async () => {
    let tokens = 0;
    const { clock, WS, room, states } = await setup({
      token: undefined,
      getToken: () => `t${++tokens}`,
    });
    assert.equal(tokens, 1);
    const delays = [];
    for (let i = 0; i < 6; i++) {
      WS.last.failHandshake(); // a 401 looks like this to a browser
      delays.push(lastState(states).delay);
      await reconnectNow(clock);
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000], 'never hammers');
    assert.equal(tokens, 1, 'the token is asked again only when /ws/check says it is refused (liveness.test.js)');
    room.close();
  });

  test('an error before open without a close event (Node 20 WebSocket) is a failed attempt', async () => {
    const { clock, WS, room, states } = await setup();
    const first = WS.last;
    first.onerror({ type: 'error' }); // and no close event ever comes
    assert.deepEqual(lastState(states), { state: 'reconnecting', delay: 1000, attempt: 1, code: 1006, reason: '' });
    assert.ok(first.closedWith, 'the stuck socket is closed');
    first.serverClose(1006); // a late close changes nothing
    await reconnectNow(clock);
    assert.equal(WS.instances.length, 2);
    room.close();
  });

  test('a handshake that never completes is given up after 15 s', async () => {
    const { clock, WS, room, states } = await setup();
    clock.advance(14999);
    assert.equal(room.state, 'connecting');
    clock.advance(1);
    assert.deepEqual(lastState(states), {
      state: 'reconnecting',
      delay: 1000,
      attempt: 1,
      code: 1006,
      reason: 'connect timeout',
    });
    assert.ok(WS.instances[0].closedWith);
    await reconnectNow(clock);
    WS.last.welcome();
    clock.advance(60000);
    assert.equal(room.state, 'open', 'no connect timeout once welcomed');
    room.close();
  });

  test('an opened socket resets the handshake-failure count', async () => {
    let tokens = 0;
    const { clock, WS, room } = await setup({ getToken: () => `t${++tokens}` });
    WS.last.failHandshake();
    await reconnectNow(clock);
    WS.last.failHandshake();
    await reconnectNow(clock);
    WS.last.open(); // upgraded, then refused after the upgrade
    WS.last.serverClose(1013, 'server overloaded');
    await reconnectNow(clock);
    WS.last.failHandshake();
    await reconnectNow(clock);
    assert.equal(tokens, 0, 'the token was fine: no refresh');
    room.close();
  });

  test('a failing getToken is reported and retried with backoff', async () => {
    let calls = 0;
    const { clock, WS, room, states, errors } = await setup({
      token: undefined,
      getToken: async () => {
        calls += 1;
        if (calls < 3) throw new Error('backend down');
        return 'ok';
      },
    });
    assert.equal(WS.instances.length, 0);
    assert.equal(errors[0].code, 'token_refresh_failed');
    assert.equal(lastState(states).delay, 1000);
    await reconnectNow(clock);
    assert.equal(lastState(states).delay, 2000);
    await reconnectNow(clock);
    assert.equal(calls, 3);
    assert.equal(WS.instances.length, 1);
    assert.deepEqual(WS.last.protocols, ['wshub.v1', 'wshub.bearer.ok']);
    room.close();
  });

  test('connect needs token or getToken', () => {
    const WS = fakeWebSocketClass();
    assert.throws(() => connect({ url: uniqueUrl(), project: 'p', WebSocket: WS }), TypeError);
    assert.throws(() => connect({ url: uniqueUrl(), project: 'no spaces', token: 't', WebSocket: WS }), TypeError);
  });
});

describe('states', () => {
  test('connecting, open, reconnecting, connecting, open, closed', async () => {
    const { clock, WS, room, states } = await setup();
    WS.last.welcome();
    WS.last.serverClose(1011, 'oops');
    await reconnectNow(clock);
    WS.last.welcome({ recovered: true });
    room.close();
    assert.deepEqual(states, [
      { state: 'connecting' },
      { state: 'open' },
      { state: 'reconnecting', delay: 1000, attempt: 1, code: 1011, reason: 'oops' },
      { state: 'connecting' },
      { state: 'open' },
      { state: 'closed', code: 1000, reason: 'client closed' },
    ]);
  });

  test('a close while waiting to reconnect cancels the reconnect', async () => {
    const { clock, WS, room } = await setup();
    WS.last.serverClose(1006);
    room.close();
    assert.deepEqual(clock.pendingDelays(), []);
    clock.advance(60000);
    await flush();
    assert.equal(WS.instances.length, 1);
  });

  test('late events of a replaced socket are ignored', async () => {
    const { clock, WS, room, states } = await setup();
    const first = WS.last;
    first.welcome();
    first.serverClose(1006);
    await reconnectNow(clock);
    const before = states.length;
    first.receive({ type: 'message', offset: 9, from: 'x', data: 1, ts: 1 });
    first.serverClose(1000);
    assert.equal(states.length, before);
    assert.equal(room.state, 'connecting');
    room.close();
  });
});
