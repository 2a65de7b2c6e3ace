// Prints a protocol v2 exchange captured from the real `wshub` binary, frames verbatim (the
// "Example exchange (v2)" of docs/protocol.md is its output). Not a test: it stops at the
// first frame that is not the expected type.
// Run (in clients/js/e2e, after `npm ci` and `cargo build -p server --bin wshub`):
//   node --experimental-websocket v2-exchange.js        (Node 20, 21; Node 22+ needs no flag)

import { api, mintToken, sleep, startServer, waitFor } from './support.js';

if (typeof WebSocket !== 'function') {
  console.error('no global WebSocket: run with node --experimental-websocket (Node 20, 21)');
  process.exit(2);
}

const ALL = ['subscribe', 'publish', 'presence', 'history'];
const out = [];
const line = (who, arrow, text) => out.push(`${who.padEnd(7)} ${arrow} ${text}`);
/** A token shortened for printing, as the docs show one. */
const short = (token) => `${token.slice(0, 3)}…`;

/** A v2 connection with the token as a subprotocol entry; records every frame it receives. */
async function connect(who, token, query = '') {
  line(who, '→', `GET /ws${query}  Sec-WebSocket-Protocol: wshub.v2, wshub.bearer.${short(token)}`);
  const ws = new WebSocket(`ws://${server.addr}/ws${query}`, ['wshub.v2', `wshub.bearer.${token}`]);
  const client = { who, ws, frames: [], seen: 0 };
  ws.onmessage = (e) => client.frames.push(e.data);
  ws.onclose = (e) => (client.closed = { code: e.code, reason: e.reason });
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`${who}: handshake failed`));
  });
  line(who, '←', `101 Switching Protocols  Sec-WebSocket-Protocol: ${ws.protocol}`);
  return client;
}

/** Prints the next frames of `client`, checking their types. */
async function expect(client, ...types) {
  const want = client.seen + types.length;
  await waitFor(`${client.who}: ${types.join(', ')}`, () => client.frames.length >= want, 5000);
  for (const [i, type] of types.entries()) {
    const text = client.frames[client.seen + i];
    const got = JSON.parse(text);
    if (got.type !== type) throw new Error(`${client.who}: expected ${type}, got ${text}`);
    line(client.who, '←', text);
  }
  client.seen = want;
  return client.frames.slice(want - types.length, want).map((t) => JSON.parse(t));
}

function send(client, frame) {
  const text = JSON.stringify(frame);
  client.ws.send(text);
  line(client.who, '→', frame.token ? text.replace(frame.token, short(frame.token)) : text);
}

async function post(path, body) {
  line('backend', '→', `POST ${path}  ${JSON.stringify(body)}`);
  const res = await api(server, 'POST', path, body);
  line('backend', '←', `${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

const server = await startServer();
try {
  const aliceToken = mintToken('alice', [], 3600, { caps: { 'chat:*': ALL, 'feed:*': ['subscribe'] } });
  const bobToken = mintToken('bob', ['chat:1']);

  await post('/api/projects/chat:1/messages', { data: { text: 'before anyone' }, from: 'billing' });
  await post('/api/projects/chat:1/messages', { data: { text: 'still before' } });

  const alice = await connect('alice', aliceToken, '?subscribe=chat:1&last.chat:1=1');
  const [, subscribed] = await expect(alice, 'welcome', 'subscribed', 'message');
  send(alice, { type: 'subscribe', id: 's1', project: '~user' });
  await expect(alice, 'subscribed');
  send(alice, { type: 'subscribe', id: 's2', project: 'feed:news' });
  await expect(alice, 'subscribed');

  const bob = await connect('bob', bobToken, '?subscribe=chat:1');
  await expect(bob, 'welcome', 'subscribed');
  await expect(alice, 'presence');
  send(bob, { type: 'publish', id: 'b1', project: 'chat:1', data: { text: 'hi' } });
  await expect(alice, 'message');
  await expect(bob, 'message', 'ack');

  send(alice, { type: 'publish', id: 'a1', project: 'feed:news', data: { text: 'may I?' } });
  await expect(alice, 'error');
  send(alice, { type: 'publish', id: 'a2', project: 'chat:1', data: { text: 'to bob only' }, echo: false });
  await expect(bob, 'message');
  await expect(alice, 'ack');
  send(alice, { type: 'presence', id: 'a3', project: 'chat:1' });
  await expect(alice, 'presence');
  send(alice, { type: 'history', id: 'a4', project: 'chat:1', since: 2, limit: 10 });
  await expect(alice, 'history');

  await post('/api/users/alice/messages', { data: { text: 'your order shipped' } });
  await expect(alice, 'message');

  // A new token without feed:*: that subscription ends, the others stay.
  const narrower = mintToken('alice', [], 7200, { caps: { 'chat:*': ALL } });
  send(alice, { type: 'refresh', id: 'a5', token: narrower });
  await expect(alice, 'unsubscribed', 'refreshed');
  send(alice, { type: 'unsubscribe', id: 'a6', project: 'chat:1' });
  await expect(alice, 'unsubscribed');
  await expect(bob, 'presence');
  send(alice, { type: 'ping', id: 'a7' });
  await expect(alice, 'pong');
  send(alice, { type: 'subscribe', id: 'a8', project: 'chat:1', since: 1, epoch: 'not-the-epoch' });
  const [lost] = await expect(alice, 'subscribed');
  await expect(bob, 'presence');
  const position = 4; // the last offset of chat:1 alice saw live (her echo-less publish)
  if (lost.recovered !== false) throw new Error('expected a lost recovery');

  alice.ws.close(1000, 'later');
  line('alice', '→', `close 1000 "later"  (position in chat:1: epoch ${subscribed.epoch}, offset ${position})`);
  await waitFor('alice closed', () => alice.closed, 5000);
  line('alice', '←', `close ${alice.closed.code} "${alice.closed.reason}"`);
  await expect(bob, 'presence');
  send(bob, { type: 'publish', id: 'b2', project: 'chat:1', data: { text: 'while you were away' } });
  await expect(bob, 'message', 'ack');
  await post(`/api/users/${encodeURIComponent('alice')}/messages`, { data: { text: 'and a receipt' } });

  const back = await connect(
    'alice',
    narrower,
    `?subscribe=chat:1,~user&since.chat:1=${position}&epoch.chat:1=${subscribed.epoch}&last.~user=1`,
  );
  await expect(back, 'welcome', 'subscribed', 'message', 'subscribed', 'message');
  await expect(bob, 'presence');
  await sleep(100);
  back.ws.close();
  bob.ws.close();
} finally {
  console.log(out.join('\n'));
  await server.stop();
}
