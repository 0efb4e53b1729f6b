// The one graphql-ws client of the page, and a tiny store of its connection state that the
// header's live indicator and the live views read.
import { createClient, type Client } from 'graphql-ws';
import { graphqlWsUrl } from './urls';

export type ConnectionState = 'connecting' | 'live' | 'reconnecting';

type Listener = () => void;

let state: ConnectionState = 'connecting';
let everConnected = false;
const stateListeners = new Set<Listener>();
const closedListeners = new Set<Listener>();
const reconnectedListeners = new Set<Listener>();

function setState(next: ConnectionState) {
  if (next === state) return;
  state = next;
  stateListeners.forEach((l) => l());
}

export const wsClient: Client = createClient({
  url: graphqlWsUrl(),
  // Connect at once and stay connected, so the indicator means something on every page.
  lazy: false,
  keepAlive: 10_000,
  retryAttempts: Infinity,
  shouldRetry: () => true,
  // Quick first retries (a restarting server is back in seconds), capped at 5 s.
  retryWait: async (retries) => {
    const delay = Math.min(5_000, 250 * 2 ** retries) + Math.random() * 250;
    await new Promise((resolve) => setTimeout(resolve, delay));
  },
  on: {
    connecting: () => setState(everConnected ? 'reconnecting' : 'connecting'),
    connected: () => {
      const wasReconnect = everConnected;
      everConnected = true;
      setState('live');
      if (wasReconnect) reconnectedListeners.forEach((l) => l());
    },
    closed: () => {
      if (everConnected) setState('reconnecting');
      closedListeners.forEach((l) => l());
    },
  },
});

export function connectionState(): ConnectionState {
  return state;
}

export function onConnectionState(listener: Listener): () => void {
  stateListeners.add(listener);
  return () => stateListeners.delete(listener);
}

/** Called each time the socket closes (before any retry). */
export function onConnectionClosed(listener: Listener): () => void {
  closedListeners.add(listener);
  return () => closedListeners.delete(listener);
}

/** Called each time the socket is connected again after it had been lost. */
export function onReconnected(listener: Listener): () => void {
  reconnectedListeners.add(listener);
  return () => reconnectedListeners.delete(listener);
}
