// What the end-to-end tests share: the real `wshub` binary on a loopback port, HS256 tokens
// minted with node's crypto, and Debian's Chromium driven by playwright-core (no browser download).

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const SERVER_BIN = process.env.WSHUB_BIN ?? join(ROOT, 'target/debug/wshub');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = join(ROOT, 'target/e2e');

export const SECRET = 'e2e-test-secret-0123456789abcdef';
export const API_KEY = 'e2e-test-api-key';

const b64url = (value) => Buffer.from(value).toString('base64url');

/**
 * An HS256 JWT for `sub`, granting `projects`, valid for `ttlSeconds`; `claims` adds or
 * overrides claims (`{ caps: {...} }`, `{ personal: false }`).
 */
export function mintToken(sub, projects, ttlSeconds = 3600, claims = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(
    JSON.stringify({ sub, projects, iat: now, nbf: now - 1, exp: now + ttlSeconds, ...claims }),
  );
  const signature = createHmac('sha256', SECRET).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` (sync or async) until it is truthy; fails with `what` after `timeoutMs`. */
export async function waitFor(what, pred, timeoutMs = 10000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await pred();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * Starts `wshub` with a fresh config: demo on, JSON logs, the test secret and API key, plus
 * `extra` TOML (whole sections) and `env` (`WSHUB__SERVER__ADMIN_PAGE: 'true'`). `listen`
 * defaults to an ephemeral port; the `listening` log line says which.
 */
export async function startServer({ listen = '127.0.0.1:0', extra = '', env: moreEnv = {} } = {}) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`${SERVER_BIN} is missing: run cargo build -p server --bin wshub`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'wshub-e2e-'));
  const config = join(dir, 'wshub.toml');
  writeFileSync(
    config,
    `[server]\nlisten = "${listen}"\ndemo = true\n\n[log]\nformat = "json"\nlevel = "debug"\n\n` +
      `[auth]\nhs256_secrets = ["${SECRET}"]\napi_keys = ["${API_KEY}"]\n${extra}\n`,
  );
  const env = { ...process.env, ...moreEnv };
  delete env.RUST_LOG;
  if (!extra.includes('handshake_rate_per_ip')) env.WSHUB__LIMITS__HANDSHAKE_RATE_PER_IP = '1000000';
  const child = spawn(SERVER_BIN, ['--config', config], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  createInterface({ input: child.stderr }).on('line', (line) => logs.push(`stderr: ${line}`));
  const addr = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => reject(new Error(`wshub did not start:\n${logs.join('\n')}`)), 10000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      logs.push(line);
      try {
        const v = JSON.parse(line);
        if (v.message === 'listening' || v.fields?.message === 'listening') {
          clearTimeout(timer);
          resolveAddr(v.addr ?? v.fields?.addr);
        }
      } catch {
        // Not JSON: keep it in the logs.
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`wshub exited with ${code} before listening:\n${logs.join('\n')}`));
    });
  });
  return {
    addr,
    pid: child.pid,
    logs,
    exited,
    http: (path) => `http://${addr}${path}`,
    /** Sends `signal` to the process by its PID and waits for the exit. */
    async stop(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, signal);
        } catch {
          // Already gone.
        }
      }
      const status = await exited;
      rmSync(dir, { recursive: true, force: true });
      return status;
    },
  };
}

/** `POST`/`GET` on the HTTP API with the test API key. */
export async function api(server, method, path, body) {
  const res = await fetch(server.http(path), {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Chromium with a fresh profile, headless, nothing downloaded or phoned home. */
export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'wshub-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1200, height: 800 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A new page that records its console, page errors, WebSockets (with the handshake status from
 * CDP) and close frames. Navigate it with `page.goto`.
 */
export async function newPage(browser) {
  const page = await browser.context.newPage();
  // The working tree's client, not the copy embedded in the binary at its last build (set
  // WSHUB_E2E_EMBEDDED_CLIENT=1 to test the binary's own /client.js).
  if (!process.env.WSHUB_E2E_EMBEDDED_CLIENT) {
    await page.route('**/client.js', (route) =>
      route.fulfill({
        status: 200,
        contentType: 'text/javascript',
        body: readFileSync(join(ROOT, 'clients/js/wshub.js'), 'utf8'),
      }),
    );
  }
  const seen = { console: [], pageErrors: [], sockets: [], handshakes: [], wsErrors: [] };
  page.on('console', (m) => seen.console.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => seen.pageErrors.push(String(e)));
  page.on('websocket', (ws) => {
    const entry = { url: ws.url(), at: Date.now(), sent: [], received: [], closed: false, error: null };
    seen.sockets.push(entry);
    ws.on('framesent', (f) => entry.sent.push(f.payload));
    ws.on('framereceived', (f) => entry.received.push(f.payload));
    ws.on('socketerror', (e) => {
      entry.error = e;
      seen.wsErrors.push(e);
    });
    ws.on('close', () => {
      entry.closed = true;
    });
  });
  const cdp = await browser.context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) =>
    seen.handshakes.push({ requestId: e.requestId, status: e.response.status }),
  );
  cdp.on('Network.webSocketFrameError', (e) => seen.wsErrors.push(e.errorMessage));
  const errors = () => [
    ...seen.pageErrors,
    ...seen.console.filter((m) => m.type === 'error').map((m) => m.text),
  ];
  return { page, seen, errors, cdp };
}

/** The demo page for `project`, connected with `token` (from the URL, as a newcomer would). */
export async function openDemo(page, server, { token, project = 'demo' }) {
  await page.goto(server.http(`/?project=${encodeURIComponent(project)}&token=${encodeURIComponent(token)}`));
}

/** The page's recorded client events (`window.wshubEvents`). */
export const events = (page) => page.evaluate(() => window.wshubEvents ?? []);

/** Waits for the page's connection to reach `state` (and, when given, `code`). */
export async function waitForState(page, state, { code, after = 0, timeoutMs = 10000 } = {}) {
  return waitFor(
    `state ${state}${code === undefined ? '' : ` ${code}`}`,
    async () =>
      (await events(page)).find(
        (e) => e.event === 'state' && e.state === state && e.t >= after && (code === undefined || e.code === code),
      ),
    timeoutMs,
  );
}

export function ensureArtifacts() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}
