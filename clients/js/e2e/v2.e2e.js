// End to end: protocol v2 (SPEC §10–§13) from a page in Debian's Chromium, against the real
// `wshub` binary. The JS client does not speak v2 yet, so the page uses the native WebSocket.
// The page is wshub's own origin (the demo page, left unconnected), so its `fetch` of
// `/ws/check` is same-origin and needs no CORS.
// Run: npm ci && node --test v2.e2e.js (in clients/js/e2e), or `cargo xtask test`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, launchBrowser, mintToken, newPage, startServer, waitFor } from './support.js';

const USER = 'alice@example.com';
/** `room:a`: everything; `room:b`: subscribe only (a publish is refused); `~user` by default. */
const CAPS = { 'room:a': ['subscribe', 'publish', 'presence', 'history'], 'room:b': ['subscribe'] };

/** Opens ONE v2 socket in the page, the token as a subprotocol entry; records every frame. */
function openV2(page, token) {
  return page.evaluate(
    ([token]) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/ws`, ['wshub.v2', `wshub.bearer.${token}`]);
        window.v2 = { ws, frames: [], closed: null };
        ws.onmessage = (e) => window.v2.frames.push(e.data);
        ws.onclose = (e) => {
          window.v2.closed = { code: e.code, reason: e.reason };
          reject(new Error(`closed ${e.code} ${e.reason}`));
        };
        ws.onopen = () => resolve(ws.protocol);
      }),
    [token],
  );
}

const frames = async (page) => (await page.evaluate(() => window.v2.frames)).map((f) => JSON.parse(f));
const send = (page, frame) => page.evaluate((f) => window.v2.ws.send(JSON.stringify(f)), frame);

/** Waits until the page has received `n` frames in all; returns them. */
async function received(page, n, what) {
  return waitFor(`${what} (frame ${n})`, async () => {
    const all = await frames(page);
    return all.length >= n && all;
  });
}

/**
 * The frames with what varies between runs replaced by placeholders, each checked first:
 * `conn` and `ts` are integers, `epoch` a non-empty string, an error's `message` a string.
 */
function normalized(list) {
  return list.map((f) => {
    const out = { ...f };
    if ('conn' in out) {
      assert.ok(Number.isInteger(out.conn), JSON.stringify(f));
      out.conn = '<conn>';
    }
    if ('ts' in out) {
      assert.ok(Number.isInteger(out.ts) && out.ts > 1.6e12, JSON.stringify(f));
      out.ts = '<ts>';
    }
    if ('epoch' in out) {
      assert.ok(typeof out.epoch === 'string' && out.epoch.length > 0, JSON.stringify(f));
      out.epoch = '<epoch>';
    }
    if (out.type === 'error') {
      assert.equal(typeof out.message, 'string', JSON.stringify(f));
      out.message = '<message>';
    }
    return out;
  });
}

describe('protocol v2 from a page in Chromium against wshub', { timeout: 120000 }, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test('one socket: two projects and ~user, a refused publish, an unsubscribe, /ws/check', async () => {
    const server = await startServer();
    try {
      const p = await newPage(browser);
      // The demo page of wshub itself, without a token: it opens no socket of its own.
      await p.page.goto(server.http('/'));
      const token = mintToken(USER, [], 3600, { caps: CAPS });
      assert.equal(await openV2(p.page, token), 'wshub.v2', 'the subprotocol is answered');
      await waitFor('the 101 handshake', () => p.seen.handshakes.some((h) => h.status === 101));
      assert.equal(p.seen.sockets.length, 1);
      assert.match(p.seen.sockets[0].url, /\/ws$/);

      let n = 1;
      await received(p.page, n, 'the welcome');
      // One subscribe at a time: each answer before the next request.
      for (const [id, project] of [['s1', 'room:a'], ['s2', 'room:b'], ['s3', '~user']]) {
        await send(p.page, { type: 'subscribe', id, project });
        await received(p.page, ++n, `subscribed ${project}`);
      }

      // The backend publishes to both projects and to the user (`sub` percent-encoded).
      const published = [];
      for (const path of [
        '/api/projects/room:a/messages',
        '/api/projects/room:b/messages',
        `/api/users/${encodeURIComponent(USER)}/messages`,
      ]) {
        const res = await api(server, 'POST', path, { data: { via: path }, from: 'backend' });
        published.push(res);
        await received(p.page, ++n, `the message of ${path}`);
      }
      assert.deepEqual(
        published.map((r) => [r.status, r.body]),
        [[202, { offset: 1 }], [202, { offset: 1 }], [202, { offset: 1 }]],
      );

      // Refused: `room:b` grants subscribe only. Allowed: a publish to `room:a`.
      await send(p.page, { type: 'publish', id: 'p1', project: 'room:b', data: 'nope' });
      await received(p.page, ++n, 'the refusal');
      await send(p.page, { type: 'publish', id: 'p2', project: 'room:a', data: { text: 'hi' } });
      n += 2; // its own copy, then the ack
      await received(p.page, n, 'the publish to room:a');

      // The other subscriptions still receive after the refusal.
      await api(server, 'POST', '/api/projects/room:b/messages', { data: 'b after the refusal' });
      await received(p.page, ++n, 'room:b after the refusal');
      await api(server, 'POST', `/api/users/${encodeURIComponent(USER)}/messages`, { data: 'you again' });
      await received(p.page, ++n, '~user after the refusal');

      // Unsubscribed from room:b: nothing more of it, room:a and ~user still arrive.
      await send(p.page, { type: 'unsubscribe', id: 'u1', project: 'room:b' });
      await received(p.page, ++n, 'unsubscribed');
      const lost = await api(server, 'POST', '/api/projects/room:b/messages', { data: 'unseen' });
      assert.deepEqual([lost.status, lost.body], [202, { offset: 3 }]);
      await api(server, 'POST', '/api/projects/room:a/messages', { data: 'a after' });
      await api(server, 'POST', `/api/users/${encodeURIComponent(USER)}/messages`, { data: 'you after' });
      await send(p.page, { type: 'ping', id: 'last' });
      n += 3;
      await received(p.page, n, 'room:a, ~user and the pong after the unsubscribe');

      const all = await frames(p.page);
      const msg = (project, offset, from, data) => ({ type: 'message', project, offset, from, data, ts: '<ts>' });
      const sub = (id, project) => ({
        type: 'subscribed',
        id,
        project,
        epoch: '<epoch>',
        offset: 0,
        recovered: false,
        missed: 0,
      });
      assert.deepEqual(normalized(all), [
        { type: 'welcome', conn: '<conn>', user: USER, ping_interval_ms: 25000, protocol: 2 },
        sub('s1', 'room:a'),
        sub('s2', 'room:b'),
        sub('s3', '~user'),
        msg('room:a', 1, 'backend', { via: '/api/projects/room:a/messages' }),
        msg('room:b', 1, 'backend', { via: '/api/projects/room:b/messages' }),
        msg('~user', 1, 'backend', { via: `/api/users/${encodeURIComponent(USER)}/messages` }),
        { type: 'error', id: 'p1', project: 'room:b', code: 'forbidden', message: '<message>' },
        msg('room:a', 2, USER, { text: 'hi' }),
        { type: 'ack', id: 'p2', project: 'room:a', offset: 2 },
        msg('room:b', 2, 'api', 'b after the refusal'),
        msg('~user', 2, 'api', 'you again'),
        { type: 'unsubscribed', id: 'u1', project: 'room:b' },
        msg('room:a', 3, 'api', 'a after'),
        msg('~user', 3, 'api', 'you after'),
        { type: 'pong', id: 'last' },
      ]);
      // What the page's WebSocket received is what went over the wire (CDP), byte for byte.
      assert.deepEqual(p.seen.sockets[0].received, await p.page.evaluate(() => window.v2.frames));
      assert.equal(await p.page.evaluate(() => window.v2.closed), null, 'the socket stays open');

      // fetch can carry Authorization where a WebSocket cannot: /ws/check says why a
      // handshake would be refused, same-origin (no CORS).
      const checks = await p.page.evaluate(
        async ([token]) => {
          const check = async (path, auth) => {
            const res = await fetch(path, auth ? { headers: { authorization: `Bearer ${auth}` } } : {});
            const text = await res.text();
            return [res.status, text ? JSON.parse(text).error : null];
          };
          return [
            await check('/ws/check', token),
            await check('/ws/check', `${token}x`),
            await check('/ws/check', null),
            await check(`/ws/check?access_token=${token}`, null),
            await check('/ws/check?subscribe=room:a,room:b,~user', token),
            await check('/ws/check?subscribe=room:a,room:c', token),
          ];
        },
        [token],
      );
      assert.deepEqual(checks, [
        [204, null],
        [401, 'invalid_token'],
        [401, 'missing_token'],
        [204, null],
        [204, null],
        [403, 'forbidden'],
      ]);

      assert.equal(p.seen.sockets.length, 1, 'one WebSocket in all');
      assert.deepEqual(p.seen.wsErrors, []);
      // The refused fetches log "Failed to load resource" lines; nothing else may.
      assert.deepEqual(
        p.errors().filter((e) => !/Failed to load resource: the server responded with a status of 40[13]/.test(e)),
        [],
      );
      await p.page.close();
    } finally {
      await server.stop();
    }
  });
});
