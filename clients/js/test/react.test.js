// React bindings: no socket during server-side rendering; the provider's StrictMode double
// mount shares one socket. Rendered with react-dom/server (no DOM needed).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fakeWebSocketClass, uniqueUrl } from '../support/fakes.js';

let React;
let server;
let react;
try {
  React = await import('react');
  server = await import('react-dom/server');
  react = await import('../react.js');
} catch {
  // The devDependencies are missing (npm ci): skipped below.
}
const skip = react ? false : 'react is not installed: run npm ci in clients/js';

test('server-side rendering opens no socket and reports idle', { skip }, () => {
  const WS = fakeWebSocketClass();
  const { WshubProvider, useConnectionState, usePresence } = react;
  function Status() {
    const users = usePresence('chat:1');
    return React.createElement('p', null, `${useConnectionState()} ${users.length}`);
  }
  const html = server.renderToString(
    React.createElement(
      React.StrictMode,
      null,
      React.createElement(WshubProvider, { options: { url: uniqueUrl(), token: 't', WebSocket: WS } }, React.createElement(Status)),
    ),
  );
  assert.equal(html, '<p>idle 0</p>');
  assert.equal(WS.instances.length, 0);
});
