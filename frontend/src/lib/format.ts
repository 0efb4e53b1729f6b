import type { TaskStatus, TaskType } from '../gql/graphql';

export const TASK_STATUSES: TaskStatus[] = ['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'];
export const TASK_TYPES: TaskType[] = [
  'DEPLOYMENT',
  'DB_BACKUP',
  'DB_RESTORE',
  'RESTART_WORKLOAD',
  'SANDBOX',
];

export const FINAL_STATUSES: ReadonlySet<TaskStatus> = new Set<TaskStatus>([
  'COMPLETED',
  'FAILED',
  'CANCELLED',
]);

export const canCancel = (status: TaskStatus) => status === 'QUEUED' || status === 'RUNNING';
export const canRetry = (status: TaskStatus) => status === 'FAILED' || status === 'CANCELLED';

const TYPE_LABELS: Record<TaskType, string> = {
  DEPLOYMENT: 'Deployment',
  DB_BACKUP: 'DB backup',
  DB_RESTORE: 'DB restore',
  RESTART_WORKLOAD: 'Restart workload',
  SANDBOX: 'Sandbox',
};

export const typeLabel = (type: TaskType) => TYPE_LABELS[type] ?? type;

export const titleCase = (value: string) =>
  value.charAt(0) + value.slice(1).toLowerCase().replace(/_/g, ' ');

export const shortId = (id: string) => id.slice(0, 8);

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const date = new Date(iso);
  return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

export function formatDuration(ms: number): string {
  if (ms < 0) ms = 0;
  const totalSeconds = Math.floor(ms / 1000);
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  const days = Math.floor(totalSeconds / 86400);
  const hours = Math.floor((totalSeconds % 86400) / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (days) return `${days}d ${hours}h`;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${seconds.toString().padStart(2, '0')}s`;
  return `${seconds}s`;
}

export function between(start: string | null | undefined, end: string | null | undefined): string {
  if (!start) return '';
  const from = new Date(start).getTime();
  const to = end ? new Date(end).getTime() : Date.now();
  return formatDuration(to - from);
}

export function relativeTime(iso: string, now: number = Date.now()): string {
  const diff = now - new Date(iso).getTime();
  if (diff < 5_000) return 'just now';
  if (diff < 60_000) return `${Math.floor(diff / 1000)}s ago`;
  if (diff < 3_600_000) return `${Math.floor(diff / 60_000)}m ago`;
  if (diff < 86_400_000) return `${Math.floor(diff / 3_600_000)}h ago`;
  return formatDateTime(iso);
}

export const percent = (progress: number) => `${Math.round(progress * 100)}%`;
