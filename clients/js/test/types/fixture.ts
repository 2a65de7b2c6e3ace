// Type-checked (never run) by test/types.test.js with `tsc --noEmit`, strict, under nodenext
// and bundler resolution: the real WebSocket classes (the DOM's, the `ws` package's) must be
// accepted, and the API's types must flow through.
import { connect, WshubError, type Ack, type Connection, type Hub, type Message, type Subscription } from '@wshub/client';
import { WshubProvider, useConnectionState, usePresence, usePublish, useSubscription } from '@wshub/client/react';
import WS from 'ws';
import { createElement } from 'react';

const dom: Hub = connect({ url: 'wss://hub.example.com', token: 't', WebSocket: WebSocket });
const node: Connection = connect({ url: 'ws://127.0.0.1:8080', project: 'demo', token: 't', WebSocket: WS });
const global22: Hub = connect({ url: 'ws://x', getToken: async () => null, WebSocket: globalThis.WebSocket });

const sub: Subscription = dom.subscribe('chat:1', { position: { offset: 3, epoch: 'e' } });
sub.on('message', (m: Message) => m.data);
sub.on('recovered', (r) => (r.recovered ? r.missed : r.lost_reason));
const ack: Promise<Ack> = dom.publish('chat:1', { text: 'hi' }, { key: 'k', ephemeral: false, echo: true });
const offset: Promise<number> = node.publish({ text: 'hi' });
node.on('state', (s) => (s.state === 'reconnecting' ? s.delay : null));
const blocked: Connection = connect({ url: 'ws://x', project: 'demo', token: 't', sseFallback: 3 });
blocked.on('transport', (t) => (t.transport === 'sse' ? t.blocked : 0));
const receiving: 'websocket' | 'sse' = blocked.transport;
void receiving;
dom.on('error', (e: WshubError) => e.code === 'unauthorized' && e.status);
dom.history('chat:1', { limit: 10, reverse: true }).then((page) => page.messages.map((m) => m.offset));
global22.release(500);
node.close('bye');
void [ack, offset];

// @ts-expect-error: v2 publish needs a project
dom.publish({ text: 'hi' });
// @ts-expect-error: not a WebSocket class
connect({ project: 'p', token: 't', WebSocket: Date });

function App() {
  const state: string = useConnectionState();
  const users: string[] = usePresence('chat:1');
  const publish = usePublish();
  useSubscription('chat:1', (m) => console.log(m.offset));
  void publish('chat:1', 1);
  return createElement('p', null, `${state} ${users.length}`);
}
createElement(WshubProvider, { options: { url: 'wss://hub', token: 't' } }, createElement(App));
