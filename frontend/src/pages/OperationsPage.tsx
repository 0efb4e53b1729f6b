import { useEffect, useState, type FormEvent } from 'react';
import { useMutation, useQuery } from '@apollo/client/react';
import type { DatabaseEngine, TaskType } from '../gql/graphql';
import {
  BackupDatabaseMutation,
  BackupsQuery,
  RestartWorkloadMutation,
  RestoreDatabaseMutation,
  TasksQuery,
} from '../lib/documents';
import { formatBytes, formatDateTime, shortId, titleCase } from '../lib/format';
import { useCoalesced, useListRefetch, useTaskEvents } from '../lib/live';
import { Link } from '../lib/router';
import { Empty, ErrorNote } from '../components/bits';
import { Field, FieldErrors, FormErrors, SubmitButton, asUserErrors, type UserErrors } from '../components/forms';
import { TaskTable } from '../components/TaskTable';

const ENGINES: DatabaseEngine[] = ['POSTGRES', 'MYSQL', 'SQLSERVER', 'SQLITE'];
const OPS_TYPES: TaskType[] = ['DB_BACKUP', 'DB_RESTORE', 'RESTART_WORKLOAD'];

function EngineSelect({ value, onChange, ...p }: { value: DatabaseEngine; onChange: (v: DatabaseEngine) => void; id: string }) {
  return (
    <select {...p} value={value} onChange={(e) => onChange(e.target.value as DatabaseEngine)}>
      {ENGINES.map((e) => (
        <option key={e} value={e}>
          {e === 'SQLSERVER' ? 'SQL Server' : e === 'POSTGRES' ? 'PostgreSQL' : e === 'MYSQL' ? 'MySQL' : 'SQLite'}
        </option>
      ))}
    </select>
  );
}

function QueuedLink({ task }: { task: { id: string } | null }) {
  if (!task) return null;
  return (
    <p className="flash" role="status">
      Queued as <Link to={`/tasks/${task.id}`}>task {shortId(task.id)}</Link>.
    </p>
  );
}

function BackupForm() {
  const [engine, setEngine] = useState<DatabaseEngine>('POSTGRES');
  const [instanceId, setInstanceId] = useState('');
  const [errors, setErrors] = useState<UserErrors>([]);
  const [queued, setQueued] = useState<{ id: string } | null>(null);
  const [backup, { loading }] = useMutation(BackupDatabaseMutation);
  const fe = new FieldErrors(errors, ['engine', 'instanceId']);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors([]);
    setQueued(null);
    try {
      const { data } = await backup({ variables: { input: { engine, instanceId } } });
      const r = data?.backupDatabase;
      if (r?.userErrors.length) setErrors(r.userErrors);
      else setQueued(r?.task ?? null);
    } catch (err) {
      setErrors(asUserErrors(err as Error));
    }
  };
  return (
    <form className="card form" onSubmit={submit} aria-label="Back up a database" noValidate>
      <h2>Back up a database</h2>
      <Field label="Engine" error={fe.for('engine')}>
        {(p) => <EngineSelect {...p} value={engine} onChange={setEngine} />}
      </Field>
      <Field label="Instance id" error={fe.for('instanceId')}>
        {(p) => <input {...p} value={instanceId} onChange={(e) => setInstanceId(e.target.value)} placeholder="orders-db" autoComplete="off" />}
      </Field>
      <FormErrors errors={fe.general} />
      <div className="form-actions">
        <SubmitButton pending={loading} pendingText="Starting backup…">
          Back up
        </SubmitButton>
      </div>
      <QueuedLink task={queued} />
    </form>
  );
}

function RestoreForm() {
  const [engine, setEngine] = useState<DatabaseEngine>('POSTGRES');
  const [instanceId, setInstanceId] = useState('');
  const [debouncedInstance, setDebouncedInstance] = useState('');
  const [artifactId, setArtifactId] = useState('');
  const [errors, setErrors] = useState<UserErrors>([]);
  const [queued, setQueued] = useState<{ id: string } | null>(null);
  const [restore, { loading }] = useMutation(RestoreDatabaseMutation);
  const fe = new FieldErrors(errors, ['engine', 'instanceId', 'artifactId']);

  useEffect(() => {
    const t = setTimeout(() => setDebouncedInstance(instanceId.trim()), 300);
    return () => clearTimeout(t);
  }, [instanceId]);
  const entityId = `db:${engine.toLowerCase()}:${debouncedInstance}`;
  const backups = useQuery(BackupsQuery, {
    variables: { entityId },
    skip: !debouncedInstance,
    fetchPolicy: 'cache-and-network',
  });
  // A backup of this instance that completes while the form is open shows up in the list.
  const refetchSoon = useCoalesced(() => void backups.refetch());
  useTaskEvents(
    {},
    (event) => {
      if (event.entityId === entityId && event.type === 'DB_BACKUP' && event.kind === 'COMPLETED') refetchSoon();
    },
    { enabled: Boolean(debouncedInstance) },
  );
  const artifacts = debouncedInstance
    ? (backups.data?.tasks.edges ?? []).flatMap((e) => e.node.artifacts.filter((a) => a.kind === 'db_backup'))
    : [];
  useEffect(() => {
    if (artifactId && !artifacts.some((a) => a.id === artifactId)) setArtifactId('');
  }, [artifacts, artifactId]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors([]);
    setQueued(null);
    try {
      const { data } = await restore({ variables: { input: { engine, instanceId, artifactId } } });
      const r = data?.restoreDatabase;
      if (r?.userErrors.length) setErrors(r.userErrors);
      else setQueued(r?.task ?? null);
    } catch (err) {
      setErrors(asUserErrors(err as Error));
    }
  };
  return (
    <form className="card form" onSubmit={submit} aria-label="Restore a database" noValidate>
      <h2>Restore a database</h2>
      <Field label="Engine" error={fe.for('engine')}>
        {(p) => <EngineSelect {...p} value={engine} onChange={setEngine} />}
      </Field>
      <Field label="Instance id" error={fe.for('instanceId')}>
        {(p) => <input {...p} value={instanceId} onChange={(e) => setInstanceId(e.target.value)} placeholder="orders-db" autoComplete="off" />}
      </Field>
      <Field
        label="Backup"
        error={fe.for('artifactId')}
        hint={debouncedInstance ? (artifacts.length ? undefined : 'No completed backups of this instance yet') : 'Enter an instance id first'}
      >
        {(p) => (
          <select {...p} value={artifactId} onChange={(e) => setArtifactId(e.target.value)} disabled={!artifacts.length}>
            <option value="">Choose a backup…</option>
            {artifacts.map((a) => (
              <option key={a.id} value={a.id}>
                {formatDateTime(a.createdAt)} · {formatBytes(a.sizeBytes)} · {a.sha256.slice(0, 12)}
              </option>
            ))}
          </select>
        )}
      </Field>
      <FormErrors errors={fe.general} />
      <div className="form-actions">
        <SubmitButton pending={loading} pendingText="Starting restore…">
          Restore
        </SubmitButton>
      </div>
      <QueuedLink task={queued} />
    </form>
  );
}

function RestartForm() {
  const [namespace, setNamespace] = useState('');
  const [name, setName] = useState('');
  const [errors, setErrors] = useState<UserErrors>([]);
  const [queued, setQueued] = useState<{ id: string } | null>(null);
  const [restart, { loading }] = useMutation(RestartWorkloadMutation);
  const fe = new FieldErrors(errors, ['namespace', 'name']);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors([]);
    setQueued(null);
    try {
      const { data } = await restart({ variables: { input: { namespace, name } } });
      const r = data?.restartWorkload;
      if (r?.userErrors.length) setErrors(r.userErrors);
      else setQueued(r?.task ?? null);
    } catch (err) {
      setErrors(asUserErrors(err as Error));
    }
  };
  return (
    <form className="card form" onSubmit={submit} aria-label="Restart a workload" noValidate>
      <h2>Restart a workload</h2>
      <Field label="Namespace" error={fe.for('namespace')}>
        {(p) => <input {...p} value={namespace} onChange={(e) => setNamespace(e.target.value)} placeholder="shop" autoComplete="off" />}
      </Field>
      <Field label="Workload name" error={fe.for('name')}>
        {(p) => <input {...p} value={name} onChange={(e) => setName(e.target.value)} placeholder="api" autoComplete="off" />}
      </Field>
      <FormErrors errors={fe.general} />
      <div className="form-actions">
        <SubmitButton pending={loading} pendingText="Restarting…">
          Restart
        </SubmitButton>
      </div>
      <QueuedLink task={queued} />
    </form>
  );
}

export function OperationsPage() {
  const { data, previousData, error, refetch } = useQuery(TasksQuery, {
    variables: { first: 20, filter: { type: OPS_TYPES } },
  });
  const current = data ?? previousData;
  const tasks = current?.tasks.edges.map((e) => e.node) ?? [];
  const ids = new Set(tasks.map((t) => t.id));
  const refetchSoon = useListRefetch(refetch);
  useTaskEvents({}, (event) => {
    if (OPS_TYPES.includes(event.type) && !ids.has(event.taskId)) refetchSoon();
  }, { onGap: refetchSoon });
  return (
    <section aria-labelledby="ops-heading">
      <div className="page-head">
        <h1 id="ops-heading">Databases &amp; workloads</h1>
        <p className="muted">Backups and restores of one instance, and restarts of one workload, run one at a time.</p>
      </div>
      <div className="grid-3">
        <BackupForm />
        <RestoreForm />
        <RestartForm />
      </div>
      <h2 className="section-title">Recent {OPS_TYPES.map((t) => titleCase(t).toLowerCase()).join(', ')} tasks</h2>
      <ErrorNote error={error} />
      {current && tasks.length === 0 && <Empty>None yet.</Empty>}
      {tasks.length > 0 && (
        <div className="card flush">
          <TaskTable tasks={tasks} label="Database and workload tasks" actions="both" />
        </div>
      )}
    </section>
  );
}
