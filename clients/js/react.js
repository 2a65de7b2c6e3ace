// React bindings for @wshub/client (v2 hub): a provider holding one ref-counted handle, and
// hooks for the connection state, subscriptions, presence and publishing. The socket opens in
// an effect, so server-side rendering never connects; StrictMode's mount/unmount/mount reuses
// the same socket (the handle's release has a grace period).

import { createContext, createElement, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { connect } from './wshub.js';

const HubContext = createContext(null);

/** `<WshubProvider options={{url, getToken}}>`: one hub for the tree below (v2: no `project`). */
export function WshubProvider({ options, children }) {
  const [hub, setHub] = useState(null);
  const latest = useRef(options);
  latest.current = options;
  const url = options && options.url;
  useEffect(() => {
    const handle = connect(latest.current);
    setHub(handle);
    return () => {
      handle.release();
      setHub(null);
    };
  }, [url]);
  return createElement(HubContext.Provider, { value: hub }, children);
}

/** The hub handle of the nearest provider; null before it connected (and during SSR). */
export function useHub() {
  return useContext(HubContext);
}

const noSubscribe = () => () => {};
/** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'. */
export function useConnectionState() {
  const hub = useHub();
  return useSyncExternalStore(
    hub ? (fn) => hub.on('state', fn) : noSubscribe,
    () => (hub ? hub.state : 'idle'),
    () => 'idle',
  );
}

// Components share one subscription per project: it ends when the last one unmounts.
const holders = new WeakMap();
function hold(hub, project) {
  const sub = hub.subscribe(project);
  holders.set(sub, (holders.get(sub) || 0) + 1);
  return () => {
    const n = holders.get(sub) - 1;
    holders.set(sub, n);
    if (n === 0) sub.unsubscribe();
  };
}

/** Subscribes while mounted; `onMessage` may change between renders. Returns the subscription's state. */
export function useSubscription(project, onMessage) {
  const hub = useHub();
  const handler = useRef(onMessage);
  handler.current = onMessage;
  const [state, setState] = useState('idle');
  useEffect(() => {
    if (!hub || !project) return undefined;
    const unhold = hold(hub, project);
    const sub = hub.subscribe(project);
    setState(sub.state);
    const offs = [sub.on('message', (m) => handler.current && handler.current(m)), sub.on('state', (s) => setState(s.state))];
    return () => {
      for (const off of offs) off();
      unhold();
    };
  }, [hub, project]);
  return state;
}

/** The users online in `project`, kept current by join/leave events (subscribes while mounted). */
export function usePresence(project) {
  const hub = useHub();
  const [users, setUsers] = useState([]);
  useEffect(() => {
    if (!hub || !project) return undefined;
    let live = true;
    const unhold = hold(hub, project);
    const sub = hub.subscribe(project);
    const sync = () =>
      hub.presence(project).then(
        (list) => live && setUsers([...list].sort()),
        () => {},
      );
    const offs = [
      sub.on('presence', (p) => {
        if (p.event === 'join') setUsers((u) => (u.includes(p.user) ? u : [...u, p.user].sort()));
        else if (p.event === 'leave') setUsers((u) => u.filter((x) => x !== p.user));
      }),
      sub.on('state', (s) => s.state === 'subscribed' && sync()),
    ];
    if (sub.state === 'subscribed') sync();
    return () => {
      live = false;
      for (const off of offs) off();
      unhold();
    };
  }, [hub, project]);
  return users;
}

/** `publish(project, data, options?)`, bound to the provider's hub. */
export function usePublish() {
  const hub = useHub();
  return useCallback(
    (project, data, options) => (hub ? hub.publish(project, data, options) : Promise.reject(new Error('wshub: not connected yet'))),
    [hub],
  );
}
