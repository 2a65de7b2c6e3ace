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

  test('(4) two connect() calls share one socket; projects are independent', async () => {
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
        return again === window.wshubRoom && other !== window.wshubRoom;
      }, token);
      assert.ok(shared, 'a second connect() for demo returned the first connection');
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

  test('(7) a forbidden project: the handshake fails and the client backs off', async () => {
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
      }, token);
      await sleep(6500);
      const sockets = a.seen.sockets.filter((s) => s.url.endsWith('/secret'));
      const states = await a.page.evaluate(() => window.forbidden);
      const attempts = states.filter((s) => s.state === 'reconnecting');
      console.log(
        `7: ${sockets.length} handshake(s) in ${Date.now() - started} ms (delays ${attempts.map((s) => s.delay).join(', ')} ms); ` +
          `console errors: ${a.errors().length}; handshake statuses: ${a.seen.handshakes.map((h) => h.status).join(', ')}`,
      );
      // Attempts at 0 s, 1 s and 3 s; the next would be at 7 s.
      assert.ok(sockets.length >= 2 && sockets.length <= 3, `${sockets.length} handshakes`);
      assert.ok(states.every((s) => s.state !== 'open'));
      assert.ok(attempts.every((s) => s.code === 1006));
      assert.deepEqual(attempts.map((s) => s.delay).slice(0, 3), [1000, 2000, 4000].slice(0, attempts.length));
      await a.page.close();
    } finally {
      await server.stop();
    }
  });
});
