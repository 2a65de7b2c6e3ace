// End to end: the demo page served by the real `wshub` binary, in Debian's Chromium.
// Run: npm ci && node --test demo.e2e.js (in clients/js/e2e), or `cargo xtask test`.

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  api,
  ensureArtifacts,
  events,
  launchBrowser,
  mintToken,
  newPage,
  openDemo,
  sleep,
  startServer,
  waitFor,
  waitForState,
} from './support.js';
import { startProxy } from './proxy.js';

/** Console lines that would mean an abnormal close or a WebSocket failure. */
const abnormal = (lines) => lines.filter((l) => /1006|websocket/i.test(l));

describe('demo page in Chromium against wshub', { timeout: 180000 }, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test('(1) the page connects (101), sends and receives; screenshot', async () => {
    const server = await startServer();
    try {
      const alice = await newPage(browser);
      await openDemo(alice.page, server, { token: mintToken('alice', ['demo']) });
      await waitForState(alice.page, 'open');
      await waitFor('the 101 handshake', () => alice.seen.handshakes.some((h) => h.status === 101));
      assert.equal(alice.seen.sockets.length, 1);
      assert.match(alice.seen.sockets[0].url, /\/ws\/projects\/demo$/);

      // A second user joins: alice sees the presence change.
      const bob = await newPage(browser);
      await openDemo(bob.page, server, { token: mintToken('bob', ['demo']) });
      await waitForState(bob.page, 'open');
      await waitFor('bob in alice\'s presence list', async () =>
        (await alice.page.locator('#presence li').allTextContents()).includes('bob'),
      );

      // Alice sends from the box; both pages show it.
      await alice.page.fill('#send-text', '{"text": "hello from alice"}');
      await alice.page.click('#send');
      for (const p of [alice.page, bob.page]) {
        await waitFor('the message row', async () =>
          (await p.locator('#messages tr').allTextContents()).some((t) => t.includes('hello from alice')),
        );
      }
      const row = await alice.page.locator('#messages tr').last().locator('td').allTextContents();
      assert.equal(row[1], 'alice');
      assert.equal(JSON.parse(row[2]).text, 'hello from alice');

      // A backend publish over the HTTP API reaches the page too.
      const res = await api(server, 'POST', '/api/projects/demo/messages', { data: { n: 2 }, from: 'backend' });
      assert.equal(res.status, 202);
      await waitFor('the backend message', async () =>
        (await events(alice.page)).some((e) => e.event === 'message' && e.from === 'backend' && e.offset === res.body.offset),
      );
      assert.ok(alice.seen.sockets[0].sent.some((f) => f.includes('"publish"')));
      assert.ok(alice.seen.sockets[0].received.some((f) => f.includes('"welcome"')));

      // The screenshot of a live session is not blank.
      await waitFor('two message rows', async () => (await alice.page.locator('#messages tr').count()) >= 2);
      const file = join(ensureArtifacts(), 'demo.png');
      await alice.page.screenshot({ path: file, fullPage: true });
      assert.ok(statSync(file).size > 20000, `screenshot ${file} is ${statSync(file).size} bytes`);

      assert.deepEqual(alice.errors(), []);
      assert.deepEqual(bob.errors(), []);
      await alice.page.close();
      await bob.page.close();
    } finally {
      await server.stop();
    }
  });

  test('(2) normal closes from the page and from the server: 1000, no reconnect, no errors', async () => {
    const server = await startServer();
    try {
      // From the page: the Disconnect button (room.close()).
      const a = await newPage(browser);
      await openDemo(a.page, server, { token: mintToken('alice', ['demo']) });
      await waitForState(a.page, 'open');
      await a.page.click('#disconnect');
      const closed = await waitForState(a.page, 'closed');
      assert.equal(closed.code, 1000);
      await waitFor('the socket closed', () => a.seen.sockets[0].closed);
      assert.equal(await a.page.textContent('#state'), 'closed');

      // From the server: the admin API closes the project.
      const b = await newPage(browser);
      await openDemo(b.page, server, { token: mintToken('bob', ['room-2']), project: 'room-2' });
      await waitForState(b.page, 'open');
      const res = await api(server, 'POST', '/api/admin/projects/room-2/close');
      assert.equal(res.status, 200);
      assert.equal(res.body.closed, 1);
      const serverClosed = await waitForState(b.page, 'closed');
      assert.equal(serverClosed.code, 1000);
      assert.equal(serverClosed.reason, 'project closed');
      assert.match(await b.page.textContent('#state-detail'), /code 1000/);

      await sleep(2500); // a reconnect would have started by now (first backoff ≤ 1 s)
      for (const p of [a, b]) {
        assert.equal(p.seen.sockets.length, 1, 'no reconnect after 1000');
        assert.ok(!(await events(p.page)).some((e) => e.event === 'state' && e.state === 'reconnecting'));
        assert.deepEqual(abnormal(p.errors()), [], 'no 1006 and no WebSocket error in the console');
        assert.deepEqual(p.errors(), []);
        assert.deepEqual(p.seen.wsErrors, []);
        await p.page.close();
      }
    } finally {
      await server.stop();
    }
  });

  test('(3) a network fault: the proxy is cut (1006), messages meanwhile, backoff, recovered:true, each message once', async () => {
    const server = await startServer();
    // The page, its /client.js and its WebSocket all reach wshub through the proxy; the test
    // publishes over HTTP to wshub directly.
    const proxy = await startProxy(server.addr);
    try {
      const a = await newPage(browser);
      await openDemo(a.page, proxy, { token: mintToken('alice', ['demo']) });
      await waitForState(a.page, 'open');
      assert.ok(a.seen.sockets[0].url.startsWith(`ws://${proxy.addr}/`), a.seen.sockets[0].url);

      const published = [];
      const publish = async (label) => {
        const res = await api(server, 'POST', '/api/projects/demo/messages', { data: { label } });
        assert.equal(res.status, 202);
        published.push({ offset: res.body.offset, data: { label } });
      };
      const messages = async () =>
        (await events(a.page)).filter((e) => e.event === 'message').map((e) => ({ offset: e.offset, data: e.data }));

      for (let i = 1; i <= 3; i++) await publish(`before ${i}`);
      await waitFor('the messages before the cut', async () => (await messages()).length === 3);

      // The fault: every connection through the proxy is reset, and so is every new one.
      const cutAt = Date.now();
      assert.ok(proxy.cut() >= 1, 'the WebSocket was going through the proxy');
      const first = await waitForState(a.page, 'reconnecting', { after: cutAt });
      assert.equal(first.code, 1006, 'a reset connection is an abnormal close');
      assert.equal(first.attempt, 1);

      for (let i = 1; i <= 10; i++) await publish(`during ${i}`);
      // Reconnect attempts reach the cut proxy and fail: two of them, so that three backoff
      // delays (caps 1 s, 2 s, 4 s) are checked below.
      await waitFor(
        'two refused reconnect attempts',
        async () =>
          proxy.stats.refused >= 2 &&
          (await events(a.page)).some((e) => e.event === 'state' && e.state === 'reconnecting' && e.attempt >= 3),
        15000,
      );
      assert.ok(!(await events(a.page)).some((e) => e.event === 'state' && e.state === 'open' && e.t >= cutAt));

      const restoredAt = Date.now();
      proxy.restore();
      await waitForState(a.page, 'open', { after: restoredAt, timeoutMs: 40000 });
      const recovered = await waitFor('the recovered event', async () =>
        (await events(a.page)).find((e) => e.event === 'recovered' && e.t >= restoredAt),
      );
      assert.equal(recovered.recovered, true, 'the memory broker kept the history');
      assert.equal(recovered.missed, 10);
      const welcome = (await events(a.page)).findLast((e) => e.event === 'welcome');
      assert.equal(welcome.recovered, true);
      assert.equal(welcome.missed, 10);

      for (let i = 1; i <= 2; i++) await publish(`after ${i}`);
      await waitFor('every message', async () => (await messages()).length >= published.length);
      await sleep(300); // a duplicate would arrive right behind the last message

      // Exactly once, in order: in the page's events and on the wire, across all its sockets.
      assert.deepEqual(await messages(), published);
      assert.deepEqual(
        published.map((m) => m.offset),
        Array.from({ length: 15 }, (_, i) => i + 1),
      );
      const wire = a.seen.sockets.flatMap((s) =>
        s.received.map((f) => JSON.parse(f)).filter((f) => f.type === 'message').map((f) => f.offset),
      );
      assert.deepEqual(wire, published.map((m) => m.offset), 'no frame twice on the wire either');

      // Backoff: full jitter, attempt n waits within [0, min(30 s, 1 s * 2^(n-1))], and the
      // client really waited that long before its next connection reached the proxy.
      const attempts = (await events(a.page)).filter((e) => e.event === 'state' && e.state === 'reconnecting');
      const reached = [...proxy.stats.refusedAt, ...proxy.stats.acceptedAt.filter((t) => t >= restoredAt)];
      for (const [i, e] of attempts.entries()) {
        assert.equal(e.attempt, i + 1);
        assert.equal(e.code, 1006, `attempt ${e.attempt} after ${e.code}`);
        assert.ok(e.delay >= 0 && e.delay <= Math.min(30000, 1000 * 2 ** i), `attempt ${e.attempt} waited ${e.delay} ms`);
        const next = reached.find((t) => t >= e.t);
        assert.ok(next !== undefined && next >= e.t + e.delay - 25, `attempt ${e.attempt} connected before its delay`);
      }
      // Each refused handshake is followed by a GET /ws/check (refused by the cut proxy too).
      assert.equal(proxy.stats.refused, 2 * (attempts.length - 1), 'every attempt but the last was refused, and its check');
      // Playwright may not report a socket reset before its handshake; the proxy counts them all.
      assert.ok(a.seen.sockets.length >= 2 && a.seen.sockets.length <= attempts.length + 1, `${a.seen.sockets.length} sockets`);

      // The 1006 is expected here (the page's state says so); nothing was uncaught.
      const errors = a.errors();
      // Chromium logs each attempt the proxy reset: ERR_CONNECTION_RESET, or
      // ERR_SOCKET_NOT_CONNECTED when the reset beats its connect.
      const failed = errors.filter(
        (l) => l.startsWith(`WebSocket connection to 'ws://${proxy.addr}/`) && /failed: .*net::ERR_[A-Z_]+$/.test(l),
      );
      const checks = errors.filter((l) => /^Failed to load resource: net::ERR_[A-Z_]+$/.test(l));
      console.log(
        `3: cut for ${restoredAt - cutAt} ms; ${attempts.length} reconnect attempt(s), ${proxy.stats.refused} refused ` +
          `(delays ${attempts.map((e) => Math.round(e.delay)).join(', ')} ms); missed ${recovered.missed}; ` +
          `console lines ${a.seen.console.length}, errors ${errors.length} (${failed.length} WebSocket handshake(s) reset by the cut proxy), ` +
          `"1006" in console: ${errors.filter((l) => l.includes('1006')).length}; page errors ${a.seen.pageErrors.length}; ` +
          `CDP WebSocket errors ${a.seen.wsErrors.length}; sockets seen by Playwright ${a.seen.sockets.length}`,
      );
      assert.deepEqual(a.seen.pageErrors, []);
      assert.equal(errors.length, failed.length + checks.length, `only the handshakes and checks the cut proxy reset in the console: ${JSON.stringify(errors)}`);
      assert.equal(failed.length + checks.length, proxy.stats.refused, 'one console line per reset attempt or check');
      await a.page.close();
    } finally {
      await proxy.close();
      await server.stop();
    }
  });

  test('(3b) SIGTERM: the page sees 1001, backs off, reconnects to the restarted server, recovered:false', async () => {
    let server = await startServer({ extra: '[shutdown]\ndrain = "1s"\n' });
    const { addr } = server;
    try {
      const a = await newPage(browser);
      await openDemo(a.page, server, { token: mintToken('alice', ['demo']) });
      await waitForState(a.page, 'open');
      await api(server, 'POST', '/api/projects/demo/messages', { data: 'before the restart' });
      await waitFor('the first message', async () => (await events(a.page)).some((e) => e.event === 'message'));

      const stopped = await server.stop('SIGTERM');
      assert.equal(stopped.code, 0, 'a drained server exits 0');
      const reconnecting = await waitForState(a.page, 'reconnecting');
      assert.equal(reconnecting.code, 1001, 'a clean 1001, not a 1006');
      assert.ok(reconnecting.reason.length > 0, 'the 1001 carries a reason');

      // Down for a while: the attempts meanwhile are refused and back off.
      await sleep(2500);
      const restartedAt = Date.now();
      server = await startServer({ listen: addr, extra: '[shutdown]\ndrain = "1s"\n' });
      await waitForState(a.page, 'open', { after: restartedAt, timeoutMs: 40000 });
      const recovered = await waitFor('the recovered event', async () =>
        (await events(a.page)).find((e) => e.event === 'recovered'),
      );
      assert.equal(recovered.recovered, false, 'a restarted memory broker has a new epoch');

      // Backoff: the attempts while the server was down were spaced, not a tight loop.
      const attempts = (await events(a.page)).filter((e) => e.event === 'state' && e.state === 'reconnecting');
      for (const [i, e] of attempts.entries()) {
        assert.ok(e.delay <= Math.min(30000, 1000 * 2 ** i), `attempt ${i} waited ${e.delay} ms`);
      }
      const refused = a.errors().filter((l) => /ERR_CONNECTION_REFUSED|failed/i.test(l));
      console.log(
        `3b: ${attempts.length} reconnect attempt(s); console errors: ${a.errors().length} ` +
          `(${refused.length} refused connection(s) while the server was down), ` +
          `"1006" in console: ${a.errors().filter((l) => l.includes('1006')).length}`,
      );
      assert.equal(a.errors().length, refused.length, `only refused connections: ${a.errors().join('\n')}`);
      assert.deepEqual(a.seen.pageErrors, []);
      await a.page.close();
    } finally {
      await server.stop();
    }
  });

  test('(4) two connect() calls share one socket (a handle each); projects are independent', async () => {
    const server = await startServer();
    try {
      const a = await newPage(browser);
      const token = mintToken('alice', ['demo', 'other']);
      await openDemo(a.page, server, { token });
      await waitForState(a.page, 'open');
      const shared = await a.page.evaluate(async (token) => {
        const { connect } = await import('/client.js');
        const again = connect({ project: 'demo', token });
        const other = connect({ project: 'other', token });
        window.otherMessages = [];
        other.on('message', (m) => window.otherMessages.push(m));
        await new Promise((resolve) => {
          if (other.state === 'open') resolve();
          else other.on('state', (s) => s.state === 'open' && resolve());
        });
        await other.publish({ to: 'other' });
        await window.wshubRoom.publish({ to: 'demo' });
        return again !== window.wshubRoom && again.state === 'open' && other !== window.wshubRoom;
      }, token);
      assert.ok(shared, 'a second connect() for demo is a handle on the open connection');
      await waitFor('both messages', async () =>
        (await a.page.evaluate(() => window.otherMessages.length)) >= 1 &&
        (await events(a.page)).some((e) => e.event === 'message'),
      );
      await sleep(300);
      const other = await a.page.evaluate(() => window.otherMessages.map((m) => m.data));
      const demo = (await events(a.page)).filter((e) => e.event === 'message').map((e) => e.data);
      assert.deepEqual(other, [{ to: 'other' }]);
      assert.deepEqual(demo, [{ to: 'demo' }]);
      const urls = a.seen.sockets.map((s) => s.url.replace(/^.*\/ws\/projects\//, ''));
      assert.deepEqual(urls.sort(), ['demo', 'other'], 'one socket per project');
      assert.deepEqual(a.errors(), []);
      await a.page.close();
    } finally {
      await server.stop();
    }
  });

  test('(5) max_connections overload: 1013 with its reason, then a retry gets in', async () => {
    const server = await startServer({ extra: '[limits]\nmax_connections = 1\n' });
    try {
      const a = await newPage(browser);
      await openDemo(a.page, server, { token: mintToken('alice', ['demo']) });
      await waitForState(a.page, 'open');
      const b = await newPage(browser);
      await openDemo(b.page, server, { token: mintToken('bob', ['demo']) });
      const refused = await waitForState(b.page, 'reconnecting', { code: 1013 });
      assert.equal(refused.reason, 'server overloaded');
      assert.match(await b.page.textContent('#state-detail'), /code 1013/);

      await a.page.click('#disconnect');
      await waitForState(b.page, 'open', { timeoutMs: 40000 });
      const attempts = (await events(b.page)).filter((e) => e.event === 'state' && e.state === 'reconnecting');
      console.log(`5: bob got in after ${attempts.length} refusal(s) (${attempts.map((e) => e.code).join(', ')}); console errors: ${b.errors().length}`);
      assert.ok(attempts.every((e) => e.code === 1013));
      assert.deepEqual(abnormal(b.errors()), []);
      await a.page.close();
      await b.page.close();
    } finally {
      await server.stop();
    }
  });

  test('(6) an expired token: 4001, getToken called, reconnected', async () => {
    const server = await startServer({ extra: 'leeway = "0s"\n' });
    try {
      const a = await newPage(browser);
      await openDemo(a.page, server, { token: mintToken('alice', ['demo']) });
      await waitForState(a.page, 'open');
      const short = mintToken('alice', ['expiring'], 2);
      const fresh = mintToken('alice', ['expiring'], 3600);
      await a.page.evaluate(
        async ({ short, fresh }) => {
          const { connect } = await import('/client.js');
          window.expiring = { states: [], tokenCalls: 0 };
          const room = connect({
            project: 'expiring',
            token: short,
            getToken: async () => {
              window.expiring.tokenCalls += 1;
              return fresh;
            },
          });
          room.on('state', (s) => window.expiring.states.push(s));
        },
        { short, fresh },
      );
      const seen = () => a.page.evaluate(() => window.expiring);
      await waitFor('the 4001 close', async () => (await seen()).states.some((s) => s.code === 4001), 10000);
      await waitFor('the reconnection', async () => (await seen()).states.filter((s) => s.state === 'open').length >= 2, 10000);
      const state = await seen();
      assert.equal(state.tokenCalls, 1);
      const close = state.states.find((s) => s.code === 4001);
      console.log(`6: 4001 reason "${close.reason}"; getToken calls ${state.tokenCalls}; console errors: ${a.errors().length}`);
      assert.deepEqual(a.errors(), []);
      await a.page.close();
    } finally {
      await server.stop();
    }
  });

  test('(7) a forbidden project: the handshake fails, /ws/check says forbidden, the client reports it and stops', async () => {
    const server = await startServer();
    try {
      const a = await newPage(browser);
      await a.page.goto(server.http('/'));
      const token = mintToken('alice', ['demo']);
      const started = Date.now();
      await a.page.evaluate(async (token) => {
        const { connect } = await import('/client.js');
        window.forbidden = [];
        // random() = 1: the longest waits the backoff allows, 1 s, 2 s, 4 s…
        const room = connect({ project: 'secret', token, random: () => 1 });
        room.on('state', (s) => window.forbidden.push({ ...s, t: Date.now() }));
        room.on('error', (e) => window.forbidden.push({ error: e.code, status: e.status, message: e.message }));
      }, token);
      await sleep(3500);
      const sockets = a.seen.sockets.filter((s) => s.url.endsWith('/secret'));
      const states = await a.page.evaluate(() => window.forbidden);
      const attempts = states.filter((s) => s.state === 'reconnecting');
      console.log(
        `7: ${sockets.length} handshake(s) in ${Date.now() - started} ms (delays ${attempts.map((s) => s.delay).join(', ')} ms); ` +
          `console errors: ${a.errors().length}; handshake statuses: ${a.seen.handshakes.map((h) => h.status).join(', ')}`,
      );
      // One handshake, one check that answers 403 with the server's message, then nothing.
      assert.equal(sockets.length, 1, `${sockets.length} handshakes`);
      assert.ok(states.every((s) => s.state !== 'open'));
      assert.deepEqual(attempts, []);
      const error = states.find((s) => s.error);
      assert.equal(error.error, 'forbidden');
      assert.equal(error.status, 403);
      assert.ok(error.message.length > 0);
      assert.equal(states.at(-1).state, 'closed');
      await a.page.close();
    } finally {
      await server.stop();
    }
  });
});
