import type { TaskSummaryFieldsFragment } from '../gql/graphql';
import { relativeTime, shortId, typeLabel } from '../lib/format';
import { Link } from '../lib/router';
import { ProgressBar, StatusBadge, useNow } from './bits';
import { TaskActions } from './TaskActions';

type Props = {
  tasks: readonly TaskSummaryFieldsFragment[];
  label: string;
  showError?: boolean;
  actions?: 'both' | 'retry' | 'cancel' | 'none';
  compact?: boolean;
};

export function entityLabel(task: TaskSummaryFieldsFragment): string {
  if (task.environment) {
    return `${task.project?.name ?? '?'} / ${task.environment.name}`;
  }
  return task.entityId;
}

export function TaskTable({ tasks, label, showError = false, actions = 'none', compact }: Props) {
  const now = useNow(5000);
  return (
    <div className="table-wrap">
      <table className={`tasks${compact ? ' compact' : ''}`} aria-label={label}>
        <thead>
          <tr>
            <th scope="col">Task</th>
            <th scope="col">Entity</th>
            <th scope="col">Status</th>
            <th scope="col">Attempt</th>
            <th scope="col" className="col-progress">
              Progress
            </th>
            {!compact && <th scope="col">Created</th>}
            {showError && <th scope="col">Error</th>}
            {actions !== 'none' && (
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            )}
          </tr>
        </thead>
        <tbody>
          {tasks.map((task) => (
            <tr
              key={task.id}
              data-task-id={task.id}
              data-status={task.status}
              aria-label={`${typeLabel(task.type)} ${shortId(task.id)}`}
            >
              <td>
                <Link to={`/tasks/${task.id}`} className="task-link">
                  {typeLabel(task.type)}
                </Link>
                <span className="muted mono small"> {shortId(task.id)}</span>
              </td>
              <td className="entity" title={task.entityId}>
                {task.project && task.environment ? (
                  <Link to={`/projects/${task.project.id}`}>{entityLabel(task)}</Link>
                ) : (
                  entityLabel(task)
                )}
              </td>
              <td>
                <StatusBadge status={task.status} />
                {task.status === 'QUEUED' && task.queuePosition != null && (
                  <span className="queue-pos" data-queue-position={task.queuePosition}>
                    {task.queuePosition === 0 ? 'next' : `${task.queuePosition} ahead`}
                  </span>
                )}
                {task.deadLettered && <span className="tag tag-dead">dead letter</span>}
                {task.cancelRequested && task.status === 'RUNNING' && (
                  <span className="tag">cancelling</span>
                )}
              </td>
              <td className="num">
                {task.attempt}/{task.maxAttempts}
              </td>
              <td className="col-progress">
                <ProgressBar
                  value={task.progress}
                  status={task.status}
                  label={`Progress of ${typeLabel(task.type)} ${shortId(task.id)}`}
                />
              </td>
              {!compact && (
                <td className="muted nowrap" title={task.createdAt}>
                  {relativeTime(task.createdAt, now)}
                </td>
              )}
              {showError && <td className="error-cell">{task.error ?? '—'}</td>}
              {actions !== 'none' && (
                <td>
                  <TaskActions task={task} show={actions} compact />
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
