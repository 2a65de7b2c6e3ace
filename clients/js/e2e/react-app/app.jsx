// The React e2e page: built by react.e2e.js with esbuild from the package itself
// (`@wshub/client/react`), rendered in StrictMode. It must open exactly one socket.
import { StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { WshubProvider, useConnectionState, usePresence, usePublish, useSubscription } from '@wshub/client/react';

function Status() {
  return <p id="state">{useConnectionState()}</p>;
}

function Room({ project }) {
  const [messages, setMessages] = useState([]);
  const state = useSubscription(project, (m) => setMessages((list) => [...list, m]));
  const users = usePresence(project);
  const publish = usePublish();
  return (
    <section>
      <p id="sub-state">{state}</p>
      <p id="users">{users.join(',')}</p>
      <ul id="messages">
        {messages.map((m) => (
          <li key={m.offset}>{JSON.stringify(m.data)}</li>
        ))}
      </ul>
      <button id="send" onClick={() => publish(project, { text: 'from react' })}>
        send
      </button>
    </section>
  );
}

function App() {
  return (
    <WshubProvider options={{ url: window.HUB, token: window.TOKEN }}>
      <Status />
      <Room project="room:a" />
      {/* A second component on the same project shares the subscription. */}
      <Room project="room:a" />
    </WshubProvider>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
