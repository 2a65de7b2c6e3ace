// End to end: the JS client (this working tree's `wshub.js`, served to the page in place of the
// binary's /client.js) in Debian's Chromium against the real `wshub`: a link that goes silent,
// offline/online, a refused token, expiry refreshed in band, idempotent publishes.
// Run: npm ci && node --test client.e2e.js (in clients/js/e2e), or `cargo xtask test`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, launchBrowser, mintToken, newPage, sleep, startServer, waitFor } from './support.js';
import { startProxy } from './proxy.js';

/**
 * Opens wshub's demo page (no token: it opens no socket of its own) at `origin`, with the
 * working tree's client at /client.js, and `window.mintToken(sub, ttl)` minting in node.
 */
async function openPage(browser, origin) {
  const p = await newPage(browser); // serves the working tree's client at /client.js
  await p.page.exposeFunction('mintToken', (sub, ttl, projects = ['*']) => mintToken(sub, projects, ttl));
  await p.page.goto(origin('/'));
  return p;
}

/** Connects in the page (`options` JSON; `getToken: true` asks node for fresh tokens) and records. */
function pageConnect(page, options, subscribe = []) {
  return page.evaluate(
    async ([options, subscribe]) => {
      const { connect } = await import('/client.js');
      const rec = (window.rec = { events: [], messages: [], errors: [] });
      const t0 = Date.now();
      const o = { ...options };
      if (o.getToken) {
        const [sub, ttl] = o.getToken;
        o.getToken = () => window.mintToken(sub, ttl);
      }
      if (o.random === 1) o.random = () => 1;
      const hub = (window.hub = connect(o));
      hub.on('state', (s) => rec.events.push({ t: Date.now() - t0, at: Date.now(), ...s }));
      hub.on('error', (e) => rec.errors.push({ code: e.code, message: e.message, status: e.status }));
      for (const project of subscribe) {
        const sub = hub.subscribe(project);
        sub.on('message', (m) => rec.messages.push(m));
      }
      if (!subscribe.length && options.project) hub.on('message', (m) => rec.messages.push(m));
    },
    [options, subscribe],
  );
}
const rec = (page) => page.evaluate(() => window.rec);
const stateOf = (page) => page.evaluate(() => window.hub.state);

describe('the JS client in Chromium against wshub', { timeout: 180000 }, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test('GET /client.js (demo on) is importable from any origin and names its version', async () => {
    const server = await startServer();
    try {
      const res = await fetch(server.http('/client.js'), { headers: { origin: 'http://app.example.test' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.equal(res.headers.get('cross-origin-resource-policy'), 'cross-origin');
      const body = await res.text();
      const version = /export const VERSION = '([^']+)'/.exec(body)[1];
      assert.equal(res.headers.get('x-wshub-client-version'), version);
    } finally {
      await server.stop();
    }
  });

  test('a link cut silently (no RST) is noticed within ping_interval + margin and recovered, nothing lost', async () => {
    const server = await startServer({ extra: '[timeouts]\nping_interval = "2s"\npong_timeout = "30s"\n' });
    const proxy = await startProxy(server.addr);
    try {
      const p = await openPage(browser, proxy.http);
      const token = mintToken('alice', ['*']);
      await pageConnect(p.page, { token }, ['room:a']);
      await waitFor('subscribed', async () => (await p.page.evaluate(() => window.hub.subscribe('room:a').state)) === 'subscribed');
      await api(server, 'POST', '/api/projects/room:a/messages', { data: 1 });
      await waitFor('message 1', async () => (await rec(p.page)).messages.length === 1);
      assert.ok(proxy.stall() >= 1, 'the socket (and any idle HTTP connection) stalled');
      const stalledAt = Date.now();
      // Published while the link is dead: must arrive after the recovery.
      await api(server, 'POST', '/api/projects/room:a/messages', { data: 2 });
      await api(server, 'POST', '/api/projects/room:a/messages', { data: 3 });
      // From the recorded state changes, not the state now: the reconnect that follows may be
      // immediate (full jitter), and the link open again before anyone looks.
      const dead = async () => (await rec(p.page)).events.find((e) => e.state === 'reconnecting');
      await waitFor('declared dead', async () => Boolean(await dead()), 12000);
      const event = await dead();
      const detectedIn = event.at - stalledAt;
      assert.ok(detectedIn <= 2000 + 5000 + 1500, `detected in ${detectedIn} ms (ping 2 s + margin 5 s)`);
      assert.equal(event.reason, 'ping timeout');
      await waitFor('recovered', async () => (await rec(p.page)).messages.length === 3, 10000);
      const { messages } = await rec(p.page);
      assert.deepEqual(messages.map((m) => [m.offset, m.data]), [[1, 1], [2, 2], [3, 3]], 'nothing lost, nothing twice');
      assert.equal(await stateOf(p.page), 'open');
      assert.deepEqual(p.errors(), []);
      await p.page.close();
    } finally {
      await proxy.close();
      await server.stop();
    }
  });

  test('offline marks the link down; online reconnects at once instead of waiting out the backoff', async () => {
    const server = await startServer();
    try {
      const p = await openPage(browser, server.http);
      await pageConnect(p.page, { project: 'demo', token: mintToken('alice', ['demo']), random: 1, backoff: { baseMs: 20000 } });
      await waitFor('open', async () => (await stateOf(p.page)) === 'open');
      await browser.context.setOffline(true);
      await waitFor('down', async () => (await rec(p.page)).events.some((e) => e.reason === 'offline'), 5000);
      assert.equal(await stateOf(p.page), 'reconnecting');
      await sleep(500);
      const sockets = p.seen.sockets.length;
      const onlineAt = Date.now();
      await browser.context.setOffline(false);
      await waitFor('open again', async () => (await stateOf(p.page)) === 'open', 5000);
      assert.ok(Date.now() - onlineAt < 3000, 'at once, not after the 20 s backoff');
      assert.equal(p.seen.sockets.length, sockets + 1, 'one new socket');
      await p.page.close();
    } finally {
      await browser.context.setOffline(false);
      await server.stop();
    }
  });

  test('a refused token is reported as error unauthorized, with no further attempts', async () => {
    const server = await startServer();
    try {
      const p = await openPage(browser, server.http);
      // Expired an hour ago: the handshake answers 401, which a browser sees as a bare 1006.
      await pageConnect(p.page, { project: 'demo', token: mintToken('alice', ['demo'], -3600) });
      await waitFor('closed', async () => (await stateOf(p.page)) === 'closed', 10000);
      const { errors } = await rec(p.page);
      assert.equal(errors.length, 1, JSON.stringify(errors));
      assert.equal(errors[0].code, 'unauthorized');
      assert.equal(errors[0].status, 401);
      assert.match(errors[0].message, /expired/i);
      await sleep(3000);
      assert.equal(p.seen.sockets.length, 1, 'no further attempts');
      await p.page.close();
    } finally {
      await server.stop();
    }
  });

  test('a token no longer valid at a reconnect (server restarted meanwhile): unauthorized, then no further attempts', async () => {
    // enforce_expiry off: the open socket outlives its token, as one whose key was rotated would.
    const extra = 'leeway = "0s"\nenforce_expiry = false\n\n[shutdown]\ndrain = "1s"\n';
    const first = await startServer({ extra });
    let second;
    try {
      const p = await openPage(browser, first.http);
      await pageConnect(p.page, { url: first.http(''), token: mintToken('alice', ['*'], 2), random: 1, backoff: { baseMs: 300, capMs: 1000 } }, ['room:a']);
      await waitFor('open', async () => (await stateOf(p.page)) === 'open');
      await sleep(2500); // the token expires; the socket stays open
      assert.equal(await stateOf(p.page), 'open');
      await first.stop('SIGTERM');
      await waitFor('reconnecting', async () => (await stateOf(p.page)) === 'reconnecting');
      second = await startServer({ listen: first.addr, extra });
      await waitFor('closed', async () => (await stateOf(p.page)) === 'closed', 15000);
      const { errors, events } = await rec(p.page);
      const refused = errors.filter((e) => e.code === 'unauthorized');
      assert.equal(refused.length, 1, JSON.stringify(errors));
      assert.equal(refused[0].status, 401);
      assert.match(refused[0].message, /expired/i);
      assert.ok(events.some((e) => e.state === 'reconnecting' && e.code === 1001), 'the drain was a reconnect');
      const sockets = p.seen.sockets.length;
      await sleep(3000);
      assert.equal(p.seen.sockets.length, sockets, 'no further attempts');
      await p.page.close();
    } finally {
      await first.stop();
      await second?.stop();
    }
  });

  test('a token about to expire is refreshed in band: the socket stays', async () => {
    const server = await startServer({ extra: 'leeway = "0s"\n' });
    try {
      const p = await openPage(browser, server.http);
      await pageConnect(p.page, { token: mintToken('alice', ['*'], 4), getToken: ['alice', 4] }, ['room:a']);
      await waitFor('open', async () => (await stateOf(p.page)) === 'open');
      await sleep(7000); // beyond the first token's exp (4 s) and the second's
      assert.equal(await stateOf(p.page), 'open');
      assert.equal(p.seen.sockets.length, 1, 'the same socket throughout');
      const refreshes = p.seen.sockets[0].sent.filter((f) => JSON.parse(f).type === 'refresh').length;
      assert.ok(refreshes >= 2, `${refreshes} refresh frames`);
      const refreshed = p.seen.sockets[0].received.filter((f) => JSON.parse(f).type === 'refreshed').length;
      assert.equal(refreshed, refreshes, 'each answered');
      await api(server, 'POST', '/api/projects/room:a/messages', { data: 'still here' });
      await waitFor('delivered', async () => (await rec(p.page)).messages.length === 1);
      await p.page.close();
    } finally {
      await server.stop();
    }
  });

  // The server's idempotency keys (SPEC §10) make the resent publish a duplicate.
  test('exactly once: a publish whose ack was lost is sent again with its key after the reconnect', async () => {
    const server = await startServer({ extra: '[timeouts]\nping_interval = "1s"\npong_timeout = "30s"\n' });
    const proxy = await startProxy(server.addr);
    try {
      const p = await openPage(browser, proxy.http);
      await pageConnect(p.page, { token: mintToken('alice', ['*']), pongTimeoutMs: 1000 }, ['room:a']);
      await waitFor('subscribed', async () => (await p.page.evaluate(() => window.hub.subscribe('room:a').state)) === 'subscribed');
      proxy.stall({ downOnly: true }); // the publish reaches wshub; its ack and the message do not come back
      await p.page.evaluate(() => {
        window.ack = null;
        window.hub.publish('room:a', 'exactly once').then((a) => (window.ack = a));
      });
      await waitFor('the ack after the reconnect', () => p.page.evaluate(() => window.ack), 15000);
      const keys = p.seen.sockets.flatMap((s) => s.sent.map((f) => JSON.parse(f)).filter((f) => f.type === 'publish').map((f) => f.key));
      assert.equal(keys.length, 2, 'sent on the dead socket, then again');
      assert.equal(keys[0], keys[1], 'with the same key');
      await sleep(500);
      const { messages } = await rec(p.page);
      assert.deepEqual(messages.map((m) => m.data), ['exactly once']);
      const history = await api(server, 'GET', '/api/projects/room:a/messages?since=0');
      assert.equal(history.body.messages.length, 1, 'published once');
      assert.equal((await p.page.evaluate(() => window.ack)).duplicate, true);
      await p.page.close();
    } finally {
      await proxy.close();
      await server.stop();
    }
  });

  // The server's idempotency keys (SPEC §10): the second publish is acked as a duplicate.
  test('a publish repeated with its key is acked as a duplicate and delivered once', async () => {
    const server = await startServer();
    try {
      const p = await openPage(browser, server.http);
      await pageConnect(p.page, { token: mintToken('alice', ['*']) }, ['room:a']);
      await waitFor('subscribed', async () => (await p.page.evaluate(() => window.hub.subscribe('room:a').state)) === 'subscribed');
      const acks = await p.page.evaluate(async () => [
        await window.hub.publish('room:a', 'once', { key: 'k-1' }),
        await window.hub.publish('room:a', 'once', { key: 'k-1' }),
        await window.hub.publish('room:a', 'after'),
      ]);
      assert.deepEqual(acks.slice(0, 2), [{ offset: 1 }, { offset: 1, duplicate: true }]);
      // Messages arrive in offset order: once the one after is in, a second copy of the keyed
      // one would have been too.
      await waitFor('the message after', async () => (await rec(p.page)).messages.some((m) => m.data === 'after'));
      assert.deepEqual((await rec(p.page)).messages.map((m) => m.data), ['once', 'after']);
      await p.page.close();
    } finally {
      await server.stop();
    }
  });
});
