import { useState } from 'react';
import { useMutation } from '@apollo/client/react';
import type { TaskStatus, TaskType } from '../gql/graphql';
import { CancelTaskMutation, RetryTaskMutation } from '../lib/documents';
import { canCancel, canRetry, shortId, typeLabel } from '../lib/format';

type Props = {
  task: { id: string; status: TaskStatus; type: TaskType; cancelRequested?: boolean };
  show?: 'both' | 'retry' | 'cancel';
  compact?: boolean;
};

/** Cancel / Retry, each enabled exactly when the API allows it. */
export function TaskActions({ task, show = 'both', compact = false }: Props) {
  const [cancel, cancelState] = useMutation(CancelTaskMutation);
  const [retry, retryState] = useMutation(RetryTaskMutation);
  const [message, setMessage] = useState<string | null>(null);
  const name = `${typeLabel(task.type)} task ${shortId(task.id)}`;
  const cancellable = canCancel(task.status) && !task.cancelRequested;

  const onCancel = async () => {
    setMessage(null);
    try {
      const { data } = await cancel({ variables: { id: task.id } });
      const errors = data?.cancelTask.userErrors ?? [];
      if (errors.length) setMessage(errors.map((e) => e.message).join('; '));
    } catch (e) {
      setMessage((e as Error).message);
    }
  };
  const onRetry = async () => {
    setMessage(null);
    try {
      const { data } = await retry({ variables: { id: task.id } });
      const errors = data?.retryTask.userErrors ?? [];
      if (errors.length) setMessage(errors.map((e) => e.message).join('; '));
    } catch (e) {
      setMessage((e as Error).message);
    }
  };

  return (
    <div className={`task-actions${compact ? ' compact' : ''}`}>
      {show !== 'retry' && (
        <button
          type="button"
          className="danger"
          onClick={onCancel}
          disabled={!cancellable || cancelState.loading}
          aria-busy={cancelState.loading}
          aria-label={compact ? `Cancel ${name}` : undefined}
          title={task.cancelRequested ? 'Cancel requested: stops at the next step boundary' : undefined}
        >
          {cancelState.loading ? 'Cancelling…' : task.cancelRequested ? 'Cancel requested' : 'Cancel'}
        </button>
      )}
      {show !== 'cancel' && (
        <button
          type="button"
          className="secondary"
          onClick={onRetry}
          disabled={!canRetry(task.status) || retryState.loading}
          aria-busy={retryState.loading}
          aria-label={compact ? `Retry ${name}` : undefined}
        >
          {retryState.loading ? 'Retrying…' : 'Retry'}
        </button>
      )}
      {message && (
        <span className="action-error" role="alert">
          {message}
        </span>
      )}
    </div>
  );
}
