// A loopback TCP proxy the end-to-end tests can cut: a network fault between the browser and
// wshub. Plain TCP, so HTTP (the demo page, /client.js) and WebSockets both go through it.

import { createConnection, createServer } from 'node:net';

/** Drops `socket` with a TCP RST where node can (no FIN, no close frame: the peer sees a fault). */
function reset(socket) {
  if (socket.destroyed) return;
  if (typeof socket.resetAndDestroy === 'function' && socket._handle) socket.resetAndDestroy();
  else socket.destroy();
}

/**
 * Listens on 127.0.0.1 (an ephemeral port unless `port` is given) and forwards every connection
 * to `target` (`host:port`). With `refuseUpgrades`, a connection whose request asks for a
 * WebSocket upgrade is reset before wshub sees it (a network that blocks WebSockets; counted in
 * `upgradesRefused`), while plain HTTP passes.
 *
 * `cut()` resets every live connection, both halves, and from then on resets each new one as
 * soon as it is accepted, so reconnect attempts fail (and are counted in `refused`) while the
 * port stays the same. `restore()` forwards again. `accepted` counts forwarded connections;
 * `refusedAt` holds the times (ms) of the connections reset on arrival.
 */
export async function startProxy(target, { port = 0, refuseUpgrades = false } = {}) {
  const [targetHost, targetPort] = splitAddr(target);
  const pairs = new Set();
  const stalled = new Set();
  let isCut = false;
  // heads: each request a forwarded client sent (the chunk with its request line and headers,
  // kept-alive connections included), for tests that check what a browser asked for
  // (`Last-Event-ID` on a reconnect, where the token went).
  const stats = { accepted: 0, refused: 0, refusedAt: [], acceptedAt: [], heads: [], upgradesRefused: 0 };

  const server = createServer((client) => {
    client.on('error', () => {});
    if (isCut) {
      stats.refused += 1;
      stats.refusedAt.push(Date.now());
      reset(client);
      return;
    }
    stats.accepted += 1;
    stats.acceptedAt.push(Date.now());
    client.setNoDelay(true);
    const upstream = createConnection({ host: targetHost, port: targetPort });
    upstream.setNoDelay(true);
    upstream.on('error', () => {});
    const pair = { client, upstream };
    pairs.add(pair);
    // Whichever side ends or fails, the other goes the same way; a reset stays a reset.
    const finish = (to, aborted) => {
      pairs.delete(pair);
      if (aborted) reset(to);
      else to.end();
    };
    client.on('close', (hadError) => !stalled.has(pair) && finish(upstream, hadError || isCut));
    upstream.on('close', (hadError) => !stalled.has(pair) && finish(client, hadError || isCut));
    client.on('data', (chunk) => {
      if (/^[A-Z]+ \S+ HTTP\/1\.1\r\n/.test(chunk.toString('latin1', 0, 2100))) stats.heads.push(chunk.toString('latin1'));
    });
    if (refuseUpgrades) {
      // The request's first bytes are looked at before anything is forwarded (browsers open a
      // WebSocket on a connection of its own).
      client.once('data', (chunk) => {
        if (/\r\nupgrade:\s*websocket/i.test(chunk.toString('latin1'))) {
          stats.upgradesRefused += 1;
          pairs.delete(pair);
          reset(client);
          upstream.destroy();
          return;
        }
        upstream.write(chunk);
        client.pipe(upstream);
      });
    } else {
      client.pipe(upstream);
    }
    upstream.pipe(client);
  });
  server.on('error', () => {});
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = `127.0.0.1:${server.address().port}`;

  return {
    addr,
    stats,
    /** `http://<proxy addr><path>`, like `server.http`. */
    http: (path) => `http://${addr}${path}`,
    /** Resets every live connection and refuses new ones until `restore()`; returns how many it cut. */
    cut() {
      isCut = true;
      const n = pairs.size;
      for (const { client, upstream } of pairs) {
        reset(client);
        reset(upstream);
      }
      pairs.clear();
      return n;
    },
    /**
     * Stops forwarding on every live connection without closing it (no FIN, no RST): a link
     * that went silent, as when a laptop changes networks (`{downOnly: true}`: only wshub's half
     * goes silent). New connections are forwarded.
     * Returns how many it stalled; `release()` resets them later.
     */
    stall({ downOnly = false } = {}) {
      const n = pairs.size;
      for (const pair of pairs) {
        // downOnly: the client's frames still reach wshub, wshub's answers are lost.
        if (!downOnly) {
          pair.client.unpipe(pair.upstream);
          pair.client.pause();
        }
        pair.upstream.unpipe(pair.client);
        pair.upstream.pause();
        stalled.add(pair);
      }
      pairs.clear();
      return n;
    },
    /** Resets the stalled connections. */
    releaseStalled() {
      for (const { client, upstream } of stalled) {
        reset(client);
        reset(upstream);
      }
      stalled.clear();
    },
    /** How many connections are being forwarded right now. */
    live: () => pairs.size,
    /** Forwards new connections again, on the same port. */
    restore() {
      isCut = false;
    },
    /** Stops listening and resets whatever is still connected. */
    async close() {
      isCut = true;
      this.releaseStalled();
      for (const { client, upstream } of pairs) {
        reset(client);
        reset(upstream);
      }
      pairs.clear();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function splitAddr(addr) {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i).replace(/^\[|\]$/g, ''), Number(addr.slice(i + 1))];
}
