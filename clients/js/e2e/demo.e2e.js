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
});
