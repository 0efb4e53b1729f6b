import { useMemo, useState } from 'react';
import { useQuery } from '@apollo/client/react';
import type { TaskFilter, TaskStatus, TaskType } from '../gql/graphql';
import { ProjectsQuery, TasksQuery } from '../lib/documents';
import { TASK_STATUSES, TASK_TYPES, titleCase, typeLabel } from '../lib/format';
import { useListRefetch, useTaskEvents, type TaskEvent } from '../lib/live';
import { useSearchParam } from '../lib/router';
import { Empty, ErrorNote, Loading } from '../components/bits';
import { TaskTable } from '../components/TaskTable';

const PAGE = 50;

export function TasksPage() {
  const [status, setStatus] = useSearchParam('status');
  const [type, setType] = useSearchParam('type');
  const [projectId, setProjectId] = useSearchParam('project');
  const [dead, setDead] = useSearchParam('dead');
  const [first, setFirst] = useState(PAGE);
  const projects = useQuery(ProjectsQuery);

  const filter: TaskFilter = useMemo(
    () => ({
      ...(status ? { status: [status as TaskStatus] } : {}),
      ...(type ? { type: [type as TaskType] } : {}),
      ...(projectId ? { projectId } : {}),
      ...(dead ? { deadLettered: true } : {}),
    }),
    [status, type, projectId, dead],
  );
  const { data, previousData, error, refetch } = useQuery(TasksQuery, {
    variables: { first, filter },
  });
  const current = data ?? previousData;
  const nodes = current?.tasks.edges.map((e) => e.node) ?? [];
  // A task whose status changed since the list was read may no longer match the filter.
  const shown = nodes.filter(
    (t) => (!status || t.status === status) && (!dead || t.deadLettered),
  );
  const ids = new Set(nodes.map((t) => t.id));

  const refetchSoon = useListRefetch(refetch);
  const accepts = (event: TaskEvent) =>
    (!status || event.status === status) && (!type || event.type === type) && !dead;
  useTaskEvents(
    projectId ? { projectId } : {},
    (event) => {
      if (!ids.has(event.taskId) && accepts(event)) refetchSoon();
    },
    { onGap: refetchSoon },
  );

  return (
    <section aria-labelledby="tasks-heading">
      <div className="page-head">
        <h1 id="tasks-heading">Live task feed</h1>
        <p className="muted">
          Every operation as a task, newest first. Progress, status and queue positions update live.
        </p>
      </div>
      <form className="filters card" role="search" aria-label="Task filters" onSubmit={(e) => e.preventDefault()}>
        <div className="field">
          <label htmlFor="filter-status">Status</label>
          <select id="filter-status" value={status} onChange={(e) => setStatus(e.target.value)}>
            <option value="">All statuses</option>
            {TASK_STATUSES.map((s) => (
              <option key={s} value={s}>
                {titleCase(s)}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="filter-type">Type</label>
          <select id="filter-type" value={type} onChange={(e) => setType(e.target.value)}>
            <option value="">All types</option>
            {TASK_TYPES.map((t) => (
              <option key={t} value={t}>
                {typeLabel(t)}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="filter-project">Project</label>
          <select id="filter-project" value={projectId} onChange={(e) => setProjectId(e.target.value)}>
            <option value="">All projects</option>
            {projects.data?.projects.edges.map(({ node }) => (
              <option key={node.id} value={node.id}>
                {node.name}
              </option>
            ))}
          </select>
        </div>
        <div className="field field-check">
          <input
            id="filter-dead"
            type="checkbox"
            checked={Boolean(dead)}
            onChange={(e) => setDead(e.target.checked ? '1' : '')}
          />
          <label htmlFor="filter-dead">Dead-lettered only</label>
        </div>
        <div className="filters-summary muted" aria-live="polite">
          {current ? `${current.tasks.totalCount} task${current.tasks.totalCount === 1 ? '' : 's'}` : ''}
        </div>
      </form>
      <ErrorNote error={error} />
      {!current && !error && <Loading label="Loading tasks…" />}
      {current && shown.length === 0 && (
        <Empty>No tasks match. Deploy something from a project, or back up a database.</Empty>
      )}
      {shown.length > 0 && (
        <div className="card flush">
          <TaskTable tasks={shown} label="Tasks" actions="both" />
        </div>
      )}
      {current?.tasks.pageInfo.hasNextPage && (
        <div className="more">
          <button type="button" className="secondary" onClick={() => setFirst((n) => Math.min(200, n + PAGE))} disabled={first >= 200}>
            Show more
          </button>
        </div>
      )}
    </section>
  );
}
