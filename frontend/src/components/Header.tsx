import { useSyncExternalStore } from 'react';
import { useQuery } from '@apollo/client/react';
import { HealthQuery } from '../lib/documents';
import { connectionState, onConnectionState, type ConnectionState } from '../lib/connection';
import { Link, useLocation } from '../lib/router';

const NAV = [
  { to: '/', label: 'Tasks', match: (p: string) => p === '/' || p.startsWith('/tasks') },
  { to: '/projects', label: 'Projects', match: (p: string) => p.startsWith('/projects') },
  { to: '/operations', label: 'Databases & workloads', match: (p: string) => p.startsWith('/operations') },
  { to: '/dead-letters', label: 'Dead letters', match: (p: string) => p.startsWith('/dead-letters') },
];

const LIVE_TEXT: Record<ConnectionState, string> = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
};

export function LiveIndicator() {
  const state = useSyncExternalStore(onConnectionState, connectionState);
  return (
    <span
      className={`live live-${state}`}
      role="status"
      aria-live="polite"
      aria-label={`Live updates: ${LIVE_TEXT[state]}`}
      data-state={state}
      title="Subscription WebSocket"
    >
      <span className="dot" aria-hidden="true" />
      {LIVE_TEXT[state]}
    </span>
  );
}

function Health() {
  const { data, error } = useQuery(HealthQuery, { pollInterval: 5000, notifyOnNetworkStatusChange: false });
  const health = data?.health;
  const down = Boolean(error) || !health;
  const status = down ? (error ? 'unreachable' : '…') : health.status;
  return (
    <span
      className={`health health-${down ? 'down' : health.status}`}
      aria-label={`API health: ${status}`}
      data-health={status}
      title={
        health
          ? `database ${health.database ? 'ok' : 'down'} · bus ${health.bus} · broadcast ${health.broadcast} ${
              health.broadcastConnected ? 'connected' : 'disconnected: live updates pause, tasks go on'
            }`
          : error?.message
      }
    >
      <span>API {status}</span>
      {health && (
        <>
          <span className="muted">v{health.version}</span>
          <span className="muted">
            {health.queuedTasks} queued · {health.runningTasks} running
          </span>
        </>
      )}
    </span>
  );
}

export function Header() {
  const { pathname } = useLocation();
  return (
    <header className="topbar">
      <div className="brand">
        <span className="logo" aria-hidden="true">
          ◆
        </span>
        CloudOps <span className="brand-sub">control room</span>
      </div>
      <nav aria-label="Main">
        {NAV.map((item) => (
          <Link
            key={item.to}
            to={item.to}
            className={item.match(pathname) ? 'active' : undefined}
            aria-current={item.match(pathname) ? 'page' : undefined}
          >
            {item.label}
          </Link>
        ))}
        <a href="/graphql" target="_blank" rel="noreferrer">
          GraphiQL ↗
        </a>
      </nav>
      <div className="status-area">
        <Health />
        <LiveIndicator />
      </div>
    </header>
  );
}
