import { useQuery } from '@apollo/client/react';
import { TasksQuery } from '../lib/documents';
import { useListRefetch, useTaskEvents } from '../lib/live';
import { Empty, ErrorNote, Loading } from '../components/bits';
import { TaskTable } from '../components/TaskTable';

export function DeadLettersPage() {
  const { data, previousData, error, refetch } = useQuery(TasksQuery, {
    variables: { first: 100, filter: { deadLettered: true } },
  });
  const current = data ?? previousData;
  const all = current?.tasks.edges.map((e) => e.node) ?? [];
  // A retried task leaves at once (its cached deadLettered turns false).
  const tasks = all.filter((t) => t.deadLettered);
  const ids = new Set(all.map((t) => t.id));
  const refetchSoon = useListRefetch(refetch);
  useTaskEvents({}, (event) => {
    if (event.kind === 'FAILED' && !ids.has(event.taskId)) refetchSoon();
  }, { onGap: refetchSoon });

  return (
    <section aria-labelledby="dead-heading">
      <div className="page-head">
        <h1 id="dead-heading">Dead letters</h1>
        <p className="muted">
          Tasks that failed every attempt. Retry queues one again at the back of its entity's queue, with a fresh plan.
        </p>
      </div>
      <ErrorNote error={error} />
      {!current && !error && <Loading />}
      {current && tasks.length === 0 && <Empty>No dead letters. All clear.</Empty>}
      {tasks.length > 0 && (
        <div className="card flush">
          <TaskTable tasks={tasks} label="Dead-lettered tasks" showError actions="retry" />
        </div>
      )}
    </section>
  );
}
