import { useEffect, useRef, useState } from 'react';
import { useQuery } from '@apollo/client/react';
import { TaskDetailQuery } from '../lib/documents';
import {
  FINAL_STATUSES,
  between,
  formatBytes,
  formatDateTime,
  formatTime,
  shortId,
  titleCase,
  typeLabel,
} from '../lib/format';
import { useTaskEvents, useTaskStream, type TaskEvent } from '../lib/live';
import { Link } from '../lib/router';
import { ErrorNote, Loading, ProgressBar, StatusBadge, useNow } from '../components/bits';
import { TaskActions } from '../components/TaskActions';

const LOG_KINDS = new Set<TaskEvent['kind']>([
  'LOG',
  'STARTED',
  'STEP_FAILED',
  'RETRY_SCHEDULED',
  'ARTIFACT',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'QUEUED',
]);

export function TaskPage({ id }: { id: string }) {
  const { data, error, loading } = useQuery(TaskDetailQuery, { variables: { id } });
  const task = data?.task;
  const [events, setEvents] = useState<TaskEvent[]>([]);
  const [stepLogsOnly, setStepLogsOnly] = useState(false);
  const logRef = useRef<HTMLOListElement>(null);
  useNow(1000); // running durations tick

  useEffect(() => setEvents([]), [id]);
  const live = Boolean(task) && !FINAL_STATUSES.has(task!.status);
  useTaskStream(id, Boolean(task), live, (fresh) => setEvents((prev) => [...prev, ...fresh]));
  // A finished task's stream has ended; a retry (from anywhere) queues it again: its entity's
  // events show it, are written into the cache, and the stream above starts again.
  useTaskEvents({ entityId: task?.entityId ?? '' }, () => undefined, { enabled: Boolean(task) && !live });

  // Keep the log scrolled to the newest line unless the reader scrolled up.
  const pinned = useRef(true);
  useEffect(() => {
    const el = logRef.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, [events.length, stepLogsOnly]);
  const onLogScroll = () => {
    const el = logRef.current;
    if (el) pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  };

  if (error) return <ErrorNote error={error} />;
  if (!task) {
    if (loading) return <Loading label="Loading task…" />;
    return (
      <section>
        <h1>Task not found</h1>
        <p>
          No task with id <code>{id}</code>. <Link to="/">Back to the feed</Link>
        </p>
      </section>
    );
  }

  const logLines = events.filter((e) => e.message && (stepLogsOnly ? e.kind === 'LOG' : LOG_KINDS.has(e.kind)));
  const lastSequence = events.length ? events[events.length - 1].sequence : 0;

  return (
    <section aria-labelledby="task-heading" className="task-page" data-task-id={task.id} data-last-sequence={lastSequence} data-event-count={events.length}>
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/">Tasks</Link> <span aria-hidden="true">/</span> {typeLabel(task.type)} {shortId(task.id)}
      </nav>
      <div className="card task-head">
        <div className="task-title">
          <h1 id="task-heading">
            {typeLabel(task.type)} <span className="mono muted">{shortId(task.id)}</span>
          </h1>
          <StatusBadge status={task.status} />
          {task.deadLettered && <span className="tag tag-dead">dead letter</span>}
          {task.cancelRequested && task.status === 'RUNNING' && <span className="tag">cancel requested</span>}
        </div>
        <ProgressBar value={task.progress} status={task.status} label="Task progress" size="large" />
        <dl className="facts">
          <div>
            <dt>Entity</dt>
            <dd className="mono">{task.entityId}</dd>
          </div>
          {task.project && (
            <div>
              <dt>Project</dt>
              <dd>
                <Link to={`/projects/${task.project.id}`}>{task.project.name}</Link>
                {task.environment && ` / ${task.environment.name}`}
              </dd>
            </div>
          )}
          <div>
            <dt>Attempt</dt>
            <dd>
              {task.attempt} of {task.maxAttempts}
            </dd>
          </div>
          {task.status === 'QUEUED' && (
            <div>
              <dt>Queue position</dt>
              <dd data-queue-position={task.queuePosition ?? ''}>
                {task.queuePosition == null ? '—' : task.queuePosition === 0 ? 'next' : `${task.queuePosition} ahead`}
                {task.runAfter && ` · not before ${formatTime(task.runAfter)}`}
              </dd>
            </div>
          )}
          <div>
            <dt>Created</dt>
            <dd>{formatDateTime(task.createdAt)}</dd>
          </div>
          <div>
            <dt>Started</dt>
            <dd>{formatDateTime(task.startedAt)}</dd>
          </div>
          <div>
            <dt>Finished</dt>
            <dd>
              {formatDateTime(task.finishedAt)}
              {task.startedAt && task.finishedAt && ` (${between(task.startedAt, task.finishedAt)})`}
            </dd>
          </div>
          {task.correlationId && (
            <div>
              <dt>Correlation id</dt>
              <dd className="mono">{task.correlationId}</dd>
            </div>
          )}
        </dl>
        <TaskActions task={task} />
      </div>

      {task.error && (
        <div className="card error-card" role="region" aria-label="Error">
          <h2>{task.status === 'FAILED' ? 'Failed' : 'Last failed attempt'}</h2>
          <pre className="error-text">{task.error}</pre>
        </div>
      )}

      <div className="grid-2">
        <div className="card">
          <h2 id="steps-heading">Steps</h2>
          <ol className="timeline" aria-labelledby="steps-heading">
            {task.steps.map((step) => (
              <li
                key={step.index}
                className={`step step-${step.status.toLowerCase()}`}
                data-step={step.name}
                data-status={step.status}
                aria-label={`Step ${step.name}: ${titleCase(step.status)}`}
              >
                <span className="step-marker" aria-hidden="true" />
                <div className="step-body">
                  <div className="step-line">
                    <strong>{step.name}</strong>
                    <StatusBadge status={step.status} />
                    <span className="muted small step-times">
                      {step.startedAt && `started ${formatTime(step.startedAt)}`}
                      {step.finishedAt && ` · finished ${formatTime(step.finishedAt)}`}
                      {step.startedAt && ` · ${between(step.startedAt, step.finishedAt)}`}
                    </span>
                  </div>
                  <ProgressBar value={step.progress} status={step.status} label={`Step ${step.name} progress`} size="small" />
                  {step.message && <p className="step-message">{step.message}</p>}
                </div>
              </li>
            ))}
          </ol>
        </div>

        <div className="card">
          <div className="card-head">
            <h2 id="log-heading">Live log</h2>
            <label className="inline-check">
              <input type="checkbox" checked={stepLogsOnly} onChange={(e) => setStepLogsOnly(e.target.checked)} />
              Step messages only
            </label>
          </div>
          <ol className="log" ref={logRef} onScroll={onLogScroll} aria-labelledby="log-heading" tabIndex={0}>
            {logLines.length === 0 && <li className="muted">No messages yet.</li>}
            {logLines.map((e) => (
              <li key={e.sequence} data-sequence={e.sequence} data-kind={e.kind} className={`log-${e.kind.toLowerCase()}`}>
                <span className="log-time">{formatTime(e.at)}</span>
                <span className="log-step">{e.step?.name ?? titleCase(e.kind)}</span>
                <span className="log-msg">{e.message}</span>
              </li>
            ))}
          </ol>
        </div>
      </div>

      <div className="card">
        <h2 id="artifacts-heading">Artifacts</h2>
        {task.artifacts.length === 0 ? (
          <p className="muted">No artifacts.</p>
        ) : (
          <div className="table-wrap">
            <table aria-labelledby="artifacts-heading" className="artifacts">
              <thead>
                <tr>
                  <th scope="col">Kind</th>
                  <th scope="col">Path</th>
                  <th scope="col">Size</th>
                  <th scope="col">SHA-256</th>
                  <th scope="col">
                    <span className="visually-hidden">Download</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {task.artifacts.map((a) => (
                  <tr key={a.id} data-artifact-id={a.id}>
                    <td>{a.kind}</td>
                    <td className="mono small">{a.path}</td>
                    <td className="num">{formatBytes(a.sizeBytes)}</td>
                    <td className="mono small sha" title={a.sha256}>
                      {a.sha256}
                    </td>
                    <td>
                      <a href={a.url} download aria-label={`Download ${a.path.split('/').pop()}`}>
                        Download
                      </a>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>

      <details className="card">
        <summary>Input and metadata</summary>
        <pre className="json">{JSON.stringify({ input: task.input, metadata: task.metadata, idempotencyKey: task.idempotencyKey }, null, 2)}</pre>
      </details>
    </section>
  );
}
