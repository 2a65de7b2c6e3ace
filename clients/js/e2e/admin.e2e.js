// End to end: the operator's page (GET /admin, server.admin_page) in Debian's Chromium against
// the real `wshub`: the key typed into the page (kept in sessionStorage, sent as a header, never
// in a URL), a connection opened by the test listed with its user, a message published by the
// test in the live tail, and a disconnect, confirmed in the dialog, closing that connection
// with 1000. No console error anywhere; a screenshot lands in target/e2e/admin.png.
// Run: npm ci && node --test admin.e2e.js (in clients/js/e2e), or `cargo xtask test`.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { API_KEY, api, ensureArtifacts, launchBrowser, mintToken, newPage, startServer, waitFor } from './support.js';

/** Opens a raw v1 WebSocket in `page` (the demo page) and records how it ends in `window.sock`. */
function openSocket(page, addr, project, token) {
  return page.evaluate(
    ([addr, project, token]) =>
      new Promise((resolve, reject) => {
        const sock = (window.sock = { frames: [], close: null });
        const ws = new WebSocket(`ws://${addr}/ws/projects/${project}`, ['wshub.v1', `wshub.bearer.${token}`]);
        ws.onmessage = (e) => {
          const frame = JSON.parse(e.data);
          sock.frames.push(frame);
          if (frame.type === 'welcome') resolve(frame);
        };
        ws.onclose = (e) => {
          sock.close = { code: e.code, reason: e.reason };
          reject(new Error(`closed ${e.code}`));
        };
      }),
    [addr, project, token],
  );
}

describe('the operator page in Chromium against wshub', { timeout: 120000 }, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test('shows a connection, tails a message, disconnects with 1000 after a confirmation; no console error', async () => {
    const server = await startServer({ env: { WSHUB__SERVER__ADMIN_PAGE: 'true' } });
    try {
      // The connection the operator will see, opened from another page.
      const member = await newPage(browser);
      await member.page.goto(server.http('/'));
      const welcome = await openSocket(member.page, server.addr, 'ops-room', mintToken('carol', ['ops-room']));

      const admin = await newPage(browser);
      const requests = [];
      admin.page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization }));
      const dialogs = [];
      admin.page.on('dialog', (d) => {
        dialogs.push(d.message());
        d.accept();
      });
      await admin.page.goto(server.http('/admin'));
      await admin.page.fill('#key', API_KEY);
      await admin.page.click('#key-save');
      await admin.page.waitForSelector('#status[data-kind="ok"]');
      // The key is kept in the tab, not in the field, and never in a URL.
      assert.equal(await admin.page.inputValue('#key'), '');
      assert.equal(await admin.page.evaluate(() => sessionStorage.getItem('wshub.admin.key')), API_KEY);

      // The busiest projects list the room; a click opens it.
      await admin.page.click('#busiest tr[data-project="ops-room"]');
      await admin.page.waitForSelector(`#connections tr[data-conn="${welcome.conn}"]`);
      const row = await admin.page.textContent(`#connections tr[data-conn="${welcome.conn}"]`);
      assert.match(row, /carol/);
      await waitFor('the tail to be live', async () => (await admin.page.textContent('#tail-state')) === 'live');
      await waitFor('the presence list', async () => /carol/.test(await admin.page.textContent('#presence')));

      // A message published by the test shows in the tail.
      const published = await api(server, 'POST', '/api/projects/ops-room/messages', { data: { text: 'deploy at 5' }, from: 'ops-bot' });
      assert.equal(published.status, 202);
      await waitFor('the tail row', async () => /deploy at 5/.test(await admin.page.textContent('#tail')));
      const tailRow = await admin.page.textContent('#tail tr');
      assert.match(tailRow, new RegExp(`^${published.body.offset}ops-bot`));
      await waitFor('the totals', async () => Number(await admin.page.textContent('#t-connections')) >= 2);

      await admin.page.screenshot({ path: join(ensureArtifacts(), 'admin.png'), fullPage: true });

      // Disconnect, confirmed in the dialog: the member's socket closes with 1000.
      await admin.page.click(`#connections tr[data-conn="${welcome.conn}"] button`);
      await waitFor('the close', () => member.page.evaluate(() => window.sock.close));
      const close = await member.page.evaluate(() => window.sock.close);
      assert.deepEqual(close, { code: 1000, reason: 'disconnected by an operator' });
      assert.equal(dialogs.length, 1);
      assert.match(dialogs[0], new RegExp(`Disconnect connection ${welcome.conn} of carol`));
      await waitFor('the row to go', async () => (await admin.page.$(`#connections tr[data-conn="${welcome.conn}"]`)) === null);

      for (const r of requests) {
        assert.ok(!r.url.includes(API_KEY), `the key is in a URL: ${r.url}`);
        if (new URL(r.url).pathname.startsWith('/api/admin/')) assert.equal(r.auth, `Bearer ${API_KEY}`, r.url);
      }
      assert.ok(requests.every((r) => r.url.startsWith(`http://${server.addr}/`)), 'nothing fetched from elsewhere');
      assert.deepEqual(admin.errors(), [], 'no console error on the admin page');
      assert.deepEqual(member.errors(), [], 'no console error on the member page');
      await admin.page.close();
      await member.page.close();
    } finally {
      await server.stop();
    }
  });
});
