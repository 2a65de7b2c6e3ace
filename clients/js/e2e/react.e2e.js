// End to end: a React page built with the package (`@wshub/client/react`, bundled by esbuild
// from clients/js's devDependencies), in StrictMode, in Chromium against wshub: exactly one
// socket, one subscription, live messages, presence, a publish from a button.
// Run: (cd .. && npm ci) && npm ci && node --test react.e2e.js, or `cargo xtask test`.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { api, launchBrowser, mintToken, newPage, sleep, startServer, waitFor } from './support.js';

const here = dirname(fileURLToPath(import.meta.url));
const client = join(here, '..');
const { build } = createRequire(join(client, 'package.json'))('esbuild');

/** The page's bundle; `@wshub/client` resolves like an installed package (through its exports map). */
async function bundle() {
  const modules = mkdtempSync(join(tmpdir(), 'wshub-react-e2e-'));
  mkdirSync(join(modules, '@wshub'));
  symlinkSync(client, join(modules, '@wshub/client'));
  const out = await build({
    entryPoints: [join(here, 'react-app/app.jsx')],
    bundle: true,
    write: false,
    format: 'esm',
    jsx: 'automatic',
    minify: true,
    define: { 'process.env.NODE_ENV': '"development"' },
    nodePaths: [modules, join(client, 'node_modules')],
    logLevel: 'warning',
  });
  rmSync(modules, { recursive: true, force: true });
  return out.outputFiles[0].text;
}

describe('a React page (StrictMode) built with @wshub/client/react', { timeout: 120000 }, () => {
  let browser;
  let js;
  before(async () => {
    js = await bundle();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test('opens exactly one socket, subscribes once, shows messages and presence, publishes', async () => {
    const server = await startServer();
    try {
      const p = await newPage(browser);
      const token = mintToken('alice', ['*']);
      // A loopback page server of its own (a fulfilled route would count as a public address
      // and Chromium's local network access checks would block the socket to wshub).
      const html = `<!doctype html><div id="root"></div><script>window.TOKEN=${JSON.stringify(token)};window.HUB=${JSON.stringify(server.http(''))}</script><script type="module">${js.replace(/<\/script/g, '<\\/script')}</script>`;
      const pages = createServer((req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(html);
      });
      await new Promise((r) => pages.listen(0, '127.0.0.1', r));
      await p.page.goto(`http://127.0.0.1:${pages.address().port}/`);
      pages.close();
      await waitFor('open', async () => (await p.page.textContent('#state').catch(() => null)) === 'open');
      await waitFor('subscribed', async () => (await p.page.locator('#sub-state').allTextContents()).every((s) => s === 'subscribed'));
      await waitFor('presence', async () => (await p.page.locator('#users').first().textContent()) === 'alice');
      await api(server, 'POST', '/api/projects/room:a/messages', { data: { text: 'from backend' } });
      await p.page.locator('#send').first().click();
      await waitFor('both messages in both rooms', async () => (await p.page.locator('#messages li').count()) === 4);
      await sleep(1500); // beyond the release grace period: a StrictMode churn would show by now
      assert.equal(p.seen.sockets.length, 1, 'exactly one socket');
      const sent = p.seen.sockets[0].sent.map((f) => JSON.parse(f));
      assert.equal(sent.filter((f) => f.type === 'subscribe').length, 1, 'one subscribe for two components');
      assert.equal(sent.filter((f) => f.type === 'unsubscribe').length, 0);
      assert.equal(sent.filter((f) => f.type === 'publish').length, 1);
      assert.deepEqual(await p.page.locator('#messages').first().locator('li').allTextContents(), [
        '{"text":"from backend"}',
        '{"text":"from react"}',
      ]);
      assert.deepEqual(p.errors(), []);
      await p.page.close();
    } finally {
      await server.stop();
    }
  });
});
