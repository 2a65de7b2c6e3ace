// End to end: server-sent events (GET /sse/projects/{p}, SPEC §14) in Debian's Chromium against
// the real `wshub`, through a loopback TCP proxy the test cuts mid-stream: a real `EventSource`
// reconnects on its own with `Last-Event-ID` and recovers exactly what it missed; and the JS
// client, behind a proxy that refuses WebSocket upgrades, falls back to receiving over SSE.
// Run: npm ci && node --test sse.e2e.js (in clients/js/e2e), or `cargo xtask test`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, launchBrowser, mintToken, newPage, startServer, waitFor } from './support.js';
import { startProxy } from './proxy.js';

/** Opens an EventSource in `page` on `path` and records everything it sees in `window.es`. */
function openEventSource(page, path) {
  return page.evaluate((path) => {
    const rec = (window.es = { opens: 0, errors: 0, welcomes: [], resets: [], messages: [], closes: [] });
    const source = (window.source = new EventSource(path));
    source.onopen = () => {
      rec.opens += 1;
    };
    source.onerror = () => {
      rec.errors += 1;
    };
    source.addEventListener('welcome', (e) => rec.welcomes.push({ id: e.lastEventId, ...JSON.parse(e.data) }));
    source.addEventListener('reset', (e) => rec.resets.push({ id: e.lastEventId, ...JSON.parse(e.data) }));
    source.addEventListener('message', (e) => rec.messages.push({ id: e.lastEventId, ...JSON.parse(e.data) }));
    source.addEventListener('close', (e) => rec.closes.push(JSON.parse(e.data)));
  }, path);
}
const recorded = (page) => page.evaluate(() => window.es);

async function publish(server, project, range) {
  for (const n of range) {
    const { status, body } = await api(server, 'POST', `/api/projects/${project}/messages`, { data: { n } });
    assert.equal(status, 202);
    assert.equal(body.offset, n);
  }
}
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('server-sent events in Chromium against wshub', { timeout: 120000 }, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test('an EventSource cut mid-stream reconnects with Last-Event-ID: nothing lost, nothing twice, ids continue', async () => {
    const server = await startServer();
    const proxy = await startProxy(server.addr);
    try {
      const p = await newPage(browser);
      await p.page.goto(proxy.http('/'));
      const token = mintToken('alice', ['room']);
      await openEventSource(p.page, `/sse/projects/room?access_token=${token}`);
      const first = await waitFor('the welcome', async () => (await recorded(p.page)).welcomes[0]);
      const epoch = first.epoch;
      assert.equal(first.id, `${epoch}:0`, 'a fresh stream is told the present');
      assert.equal(first.recovered, false);

      await publish(server, 'room', range(1, 5));
      await waitFor('messages 1-5', async () => (await recorded(p.page)).messages.length === 5);

      // The link goes down mid-stream (both halves reset), and stays down while 6-10 are published.
      assert.ok(proxy.cut() >= 1, 'the stream was going through the proxy');
      await waitFor('the EventSource to notice', async () => (await recorded(p.page)).errors >= 1);
      await publish(server, 'room', range(6, 10));
      // A reconnect attempt fails while the link is down; the EventSource keeps trying.
      await waitFor('a reconnect refused while cut', () => proxy.stats.refused >= 1, 15000);
      const before = proxy.stats.heads.length;
      proxy.restore();
      await waitFor('the recovering welcome', async () => (await recorded(p.page)).welcomes.length === 2, 20000);
      await publish(server, 'room', range(11, 12));
      await waitFor('messages 1-12', async () => (await recorded(p.page)).messages.length >= 12);

      const rec = await recorded(p.page);
      assert.deepEqual(
        rec.messages.map((m) => m.offset),
        range(1, 12),
        'every message once, in order',
      );
      for (const m of rec.messages) {
        assert.equal(m.id, `${epoch}:${m.offset}`);
        assert.deepEqual(m.data, { n: m.offset });
      }
      const again = rec.welcomes[1];
      assert.equal(again.recovered, true);
      assert.equal(again.missed, 5);
      assert.equal(again.offset, 10);
      // The browser asked for exactly what it had seen last.
      const reconnects = proxy.stats.heads.slice(before).filter((h) => h.startsWith('GET /sse/projects/room'));
      assert.equal(reconnects.length, 1, reconnects.join('\n---\n'));
      assert.match(reconnects[0], new RegExp(`\\r\\nlast-event-id: ${epoch}:5\\r\\n`, 'i'));
      assert.deepEqual(rec.resets, []);
      assert.deepEqual(rec.closes, []);
      assert.deepEqual(
        p.errors().filter((e) => !/net::ERR_|Failed to load resource/.test(e)),
        [],
        'no console error but the cut itself',
      );
      await p.page.evaluate(() => window.source.close());
      await p.page.close();
    } finally {
      await proxy.close();
      await server.stop();
    }
  });

  test('the JS client behind a network that blocks WebSockets falls back to SSE, says so, and recovers a cut', async () => {
    const server = await startServer();
    const proxy = await startProxy(server.addr, { refuseUpgrades: true });
    try {
      const p = await newPage(browser);
      await p.page.goto(proxy.http('/'));
      const token = mintToken('alice', ['room']);
      await p.page.evaluate(async (token) => {
        const { connect } = await import('/client.js');
        const rec = (window.rec = { states: [], transports: [], messages: [], errors: [] });
        const room = (window.room = connect({ project: 'room', token, sseFallback: 3, backoff: { baseMs: 100, capMs: 400 } }));
        room.on('state', (s) => rec.states.push({ state: s.state, code: s.code }));
        room.on('transport', (t) => rec.transports.push({ ...t, state: room.state }));
        room.on('message', (m) => rec.messages.push(m));
        room.on('error', (e) => rec.errors.push(e.code));
      }, token);
      const rec = () => p.page.evaluate(() => window.rec);
      await waitFor('the switch to SSE', async () => (await rec()).transports.length === 1, 30000);
      await waitFor('open over SSE', () => p.page.evaluate(() => window.room.state === 'open'));
      assert.equal(await p.page.evaluate(() => window.room.transport), 'sse');
      assert.equal((await rec()).transports[0].blocked, 3);
      assert.equal(proxy.stats.upgradesRefused, 3, 'three WebSocket handshakes were blocked');
      const streams = () => proxy.stats.heads.filter((h) => h.startsWith('GET /sse/projects/room'));
      assert.equal(streams().length, 1);
      assert.match(streams()[0], /\r\nauthorization: Bearer /i, 'the token in a header');
      assert.ok(!streams()[0].split('\r\n')[0].includes(token), 'never in the URL');

      await publish(server, 'room', range(1, 3));
      await waitFor('messages 1-3 over SSE', async () => (await rec()).messages.length === 3);
      const publishing = await p.page.evaluate(() => window.room.publish({ no: 'socket' }).then(() => 'sent', (e) => e.code));
      assert.equal(publishing, 'receive_only');

      // The stream is cut; 4-6 are published meanwhile; the client reconnects over SSE and recovers.
      proxy.cut();
      await waitFor('the client to notice', () => p.page.evaluate(() => window.room.state === 'reconnecting'));
      await publish(server, 'room', range(4, 6));
      proxy.restore();
      await waitFor('messages 1-6', async () => (await rec()).messages.length >= 6, 20000);
      const r = await rec();
      assert.deepEqual(r.messages.map((m) => m.offset), range(1, 6), 'nothing lost, nothing twice');
      assert.equal(streams().length, 2);
      assert.match(streams()[1], new RegExp(`\\r\\nlast-event-id: [^\\r]+:3\\r\\n`, 'i'));
      assert.equal(proxy.stats.upgradesRefused, 3, 'no WebSocket tried after the switch');
      assert.deepEqual(r.errors, []);
      assert.deepEqual(
        p.errors().filter((e) => !/^WebSocket connection to .* failed|net::ERR_|Failed to load resource/.test(e)),
        [],
        'no console error but the blocked sockets and the cut',
      );
      await p.page.evaluate(() => window.room.close());
      await p.page.close();
    } finally {
      await proxy.close();
      await server.stop();
    }
  });
});
