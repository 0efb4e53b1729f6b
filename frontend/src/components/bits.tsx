import { useEffect, useState, useSyncExternalStore } from 'react';
import type { StepStatus, TaskStatus } from '../gql/graphql';
import { percent, titleCase } from '../lib/format';

export function StatusBadge({ status }: { status: TaskStatus | StepStatus }) {
  return (
    <span className={`badge badge-${status.toLowerCase()}`} data-status={status}>
      {titleCase(status)}
    </span>
  );
}

export function ProgressBar({
  value,
  label,
  status,
  size = 'normal',
}: {
  value: number;
  label: string;
  status?: TaskStatus | StepStatus;
  size?: 'normal' | 'small' | 'large';
}) {
  const pct = Math.round(Math.max(0, Math.min(1, value)) * 100);
  return (
    <div className={`progress progress-${size}`}>
      <div
        className={`progress-track ${status ? `progress-${status.toLowerCase()}` : ''}`}
        role="progressbar"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={pct}
        aria-valuetext={percent(value)}
      >
        <div className="progress-fill" style={{ width: `${pct}%` }} />
      </div>
      {size !== 'small' && <span className="progress-text">{pct}%</span>}
    </div>
  );
}

/** The current time, re-rendered every `interval` ms (one shared timer per interval). */
const clocks = new Map<number, { now: number; listeners: Set<() => void>; timer?: number }>();

export function useNow(interval = 1000): number {
  let clock = clocks.get(interval);
  if (!clock) {
    clock = { now: Date.now(), listeners: new Set() };
    clocks.set(interval, clock);
  }
  const c = clock;
  return useSyncExternalStore(
    (listener) => {
      c.listeners.add(listener);
      if (c.timer === undefined) {
        c.timer = window.setInterval(() => {
          c.now = Date.now();
          c.listeners.forEach((l) => l());
        }, interval);
      }
      return () => {
        c.listeners.delete(listener);
        if (!c.listeners.size && c.timer !== undefined) {
          window.clearInterval(c.timer);
          c.timer = undefined;
        }
      };
    },
    () => c.now,
  );
}

export function Empty({ children }: { children: React.ReactNode }) {
  return <p className="empty">{children}</p>;
}

export function Loading({ label = 'Loading…' }: { label?: string }) {
  return (
    <p className="loading" role="status" aria-live="polite">
      {label}
    </p>
  );
}

export function ErrorNote({ error }: { error: { message: string } | undefined | null }) {
  if (!error) return null;
  return (
    <p className="error-note" role="alert">
      {error.message}
    </p>
  );
}

/** Shows `text` for a few seconds after it changes (mutation confirmations). */
export function Flash({ text }: { text: string | null }) {
  const [shown, setShown] = useState(text);
  useEffect(() => {
    setShown(text);
    if (!text) return;
    const t = setTimeout(() => setShown(null), 6000);
    return () => clearTimeout(t);
  }, [text]);
  if (!shown) return null;
  return (
    <p className="flash" role="status">
      {shown}
    </p>
  );
}
