import { useState, type FormEvent } from 'react';
import { useMutation, useQuery } from '@apollo/client/react';
import type { EnvironmentFieldsFragment, EnvironmentType } from '../gql/graphql';
import {
  CreateEnvironmentMutation,
  CreateSandboxMutation,
  DeployMutation,
  ProjectQuery,
} from '../lib/documents';
import { formatDateTime, formatDuration, titleCase } from '../lib/format';
import { useListRefetch, useTaskEvents } from '../lib/live';
import { Link } from '../lib/router';
import { Empty, ErrorNote, Flash, Loading, useNow } from '../components/bits';
import { Field, FieldErrors, FormErrors, SubmitButton, asUserErrors, type UserErrors } from '../components/forms';
import { TaskTable } from '../components/TaskTable';

const ENV_TYPES: EnvironmentType[] = ['DEV', 'STAGE', 'PROD'];

function CreateEnvironmentForm({ projectId }: { projectId: string }) {
  const [name, setName] = useState('');
  const [type, setType] = useState<EnvironmentType>('DEV');
  const [errors, setErrors] = useState<UserErrors>([]);
  const [done, setDone] = useState<string | null>(null);
  const [create, { loading }] = useMutation(CreateEnvironmentMutation, { refetchQueries: ['Project', 'Projects'] });
  const fe = new FieldErrors(errors, ['name', 'type']);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors([]);
    setDone(null);
    try {
      const { data } = await create({ variables: { input: { projectId, name, type } } });
      const result = data?.createEnvironment;
      if (result?.userErrors.length) setErrors(result.userErrors);
      else if (result?.environment) {
        setDone(`Environment ${result.environment.name} created.`);
        setName('');
      }
    } catch (err) {
      setErrors(asUserErrors(err as Error));
    }
  };

  return (
    <form className="card form" onSubmit={submit} aria-label="Create environment" noValidate>
      <h2>New environment</h2>
      <Field label="Environment name" error={fe.for('name')}>
        {(p) => <input {...p} value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />}
      </Field>
      <Field label="Environment type" error={fe.for('type')}>
        {(p) => (
          <select {...p} value={type} onChange={(e) => setType(e.target.value as EnvironmentType)}>
            {ENV_TYPES.map((t) => (
              <option key={t} value={t}>
                {titleCase(t)}
              </option>
            ))}
          </select>
        )}
      </Field>
      <FormErrors errors={fe.general} />
      <Flash text={done} />
      <div className="form-actions">
        <SubmitButton pending={loading} pendingText="Creating…">
          Create environment
        </SubmitButton>
      </div>
    </form>
  );
}

function CreateSandboxForm({ projectId }: { projectId: string }) {
  const [name, setName] = useState('');
  const [ttl, setTtl] = useState('60');
  const [errors, setErrors] = useState<UserErrors>([]);
  const [create, { loading }] = useMutation(CreateSandboxMutation, { refetchQueries: ['Project'] });
  const fe = new FieldErrors(errors, ['name', 'ttlMinutes']);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors([]);
    const ttlMinutes = Number.parseInt(ttl, 10);
    if (!Number.isFinite(ttlMinutes)) {
      setErrors([{ field: ['input', 'ttlMinutes'], message: 'a whole number of minutes', code: 'INVALID_INPUT' }]);
      return;
    }
    try {
      const { data } = await create({ variables: { input: { projectId, name, ttlMinutes } } });
      const result = data?.createSandbox;
      if (result?.userErrors.length) setErrors(result.userErrors);
      else setName('');
    } catch (err) {
      setErrors(asUserErrors(err as Error));
    }
  };

  return (
    <form className="form inline-form" onSubmit={submit} aria-label="Create sandbox" noValidate>
      <Field label="Sandbox name" error={fe.for('name')} hint="lowercase letters, digits and -">
        {(p) => <input {...p} value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />}
      </Field>
      <Field label="TTL (minutes)" error={fe.for('ttlMinutes')}>
        {(p) => <input {...p} type="number" min={1} max={10080} value={ttl} onChange={(e) => setTtl(e.target.value)} />}
      </Field>
      <FormErrors errors={fe.general} />
      <div className="form-actions">
        <SubmitButton pending={loading} pendingText="Creating…">
          Create sandbox
        </SubmitButton>
      </div>
    </form>
  );
}

function DeployForm({ env }: { env: EnvironmentFieldsFragment }) {
  const [version, setVersion] = useState('');
  const [image, setImage] = useState('');
  const [errors, setErrors] = useState<UserErrors>([]);
  const [done, setDone] = useState<string | null>(null);
  const [deploy, { loading }] = useMutation(DeployMutation, { refetchQueries: ['Project'] });
  const fe = new FieldErrors(errors, ['version', 'image']);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors([]);
    setDone(null);
    try {
      const { data } = await deploy({
        variables: { input: { environmentId: env.id, version, image: image || null } },
      });
      const result = data?.deploy;
      if (result?.userErrors.length) setErrors(result.userErrors);
      else if (result?.task) {
        setDone(
          result.task.status === 'QUEUED' && result.task.queuePosition
            ? `Deployment of ${version} queued (${result.task.queuePosition} ahead).`
            : `Deployment of ${version} queued.`,
        );
        setVersion('');
      }
    } catch (err) {
      setErrors(asUserErrors(err as Error));
    }
  };

  return (
    <form className="form inline-form" onSubmit={submit} aria-label={`Deploy to ${env.name}`} noValidate>
      <Field label="Version" error={fe.for('version')}>
        {(p) => <input {...p} value={version} onChange={(e) => setVersion(e.target.value)} placeholder="e.g. 1.4.2" autoComplete="off" />}
      </Field>
      <Field label="Image" error={fe.for('image')} hint="Optional">
        {(p) => <input {...p} value={image} onChange={(e) => setImage(e.target.value)} placeholder="e.g. registry/app:1.4.2" autoComplete="off" />}
      </Field>
      <FormErrors errors={fe.general} />
      <div className="form-actions">
        <SubmitButton pending={loading} pendingText="Deploying…">
          Deploy
        </SubmitButton>
      </div>
      <Flash text={done} />
    </form>
  );
}

function EnvironmentCard({ env }: { env: EnvironmentFieldsFragment }) {
  const tasks = env.tasks.edges.map((e) => e.node);
  return (
    <article className="card env-card" aria-labelledby={`env-${env.id}`} data-environment={env.name}>
      <header className="env-head">
        <h3 id={`env-${env.id}`}>{env.name}</h3>
        <span className={`chip chip-${env.type.toLowerCase()}`}>{titleCase(env.type)}</span>
        <span className="env-version" aria-label={`Current version of ${env.name}`}>
          {env.currentVersion ? (
            <>
              current <strong>{env.currentVersion}</strong>
            </>
          ) : (
            <span className="muted">nothing deployed yet</span>
          )}
        </span>
      </header>
      <DeployForm env={env} />
      <h4>Task history</h4>
      {tasks.length === 0 ? (
        <p className="muted small">No tasks yet.</p>
      ) : (
        <TaskTable tasks={tasks} label={`Tasks of ${env.name}`} compact actions="cancel" />
      )}
    </article>
  );
}

function Countdown({ expiresAt }: { expiresAt: string }) {
  const now = useNow(1000);
  const left = new Date(expiresAt).getTime() - now;
  if (left <= 0) return <span className="tag tag-dead">expired</span>;
  return (
    <span className={`countdown${left < 60_000 ? ' soon' : ''}`} role="timer" aria-label="Time to live">
      {formatDuration(left)} left
    </span>
  );
}

function Sandboxes({ projectId, sandboxes }: { projectId: string; sandboxes: EnvironmentFieldsFragment[] }) {
  return (
    <section className="card" aria-labelledby="sandboxes-heading">
      <h2 id="sandboxes-heading">Sandboxes</h2>
      <CreateSandboxForm projectId={projectId} />
      {sandboxes.length === 0 ? (
        <p className="muted">No sandboxes.</p>
      ) : (
        <div className="table-wrap">
          <table className="sandboxes" aria-label="Sandboxes">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">TTL</th>
                <th scope="col">Expires</th>
                <th scope="col">Time left</th>
                <th scope="col">Provisioning</th>
              </tr>
            </thead>
            <tbody>
              {sandboxes.map((s) => {
                const task = s.tasks.edges[0]?.node;
                return (
                  <tr key={s.id} data-sandbox={s.name}>
                    <td>{s.name}</td>
                    <td className="num">{s.ttlMinutes} min</td>
                    <td className="muted">{formatDateTime(s.expiresAt)}</td>
                    <td>{s.expired ? <span className="tag tag-dead">expired</span> : s.expiresAt && <Countdown expiresAt={s.expiresAt} />}</td>
                    <td>{task ? <Link to={`/tasks/${task.id}`}>{titleCase(task.status)}</Link> : '—'}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export function ProjectPage({ id }: { id: string }) {
  const { data, error, loading, refetch } = useQuery(ProjectQuery, { variables: { id } });
  const refetchSoon = useListRefetch(refetch, 500);
  // New tasks of this project, and finished deployments (current version), read the project again.
  useTaskEvents(
    { projectId: id },
    (event, known) => {
      if (!known || event.kind === 'COMPLETED' || event.kind === 'QUEUED') refetchSoon();
    },
    { onGap: refetchSoon },
  );

  const project = data?.project;
  if (error) return <ErrorNote error={error} />;
  if (!project) return loading ? <Loading /> : <Empty>No such project.</Empty>;
  const envs = project.environments.filter((e) => e.type !== 'SANDBOX');
  const sandboxes = project.environments.filter((e) => e.type === 'SANDBOX');

  return (
    <section aria-labelledby="project-heading">
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span> {project.name}
      </nav>
      <div className="page-head">
        <h1 id="project-heading">{project.name}</h1>
        {project.description && <p className="muted">{project.description}</p>}
        <p className="muted small" aria-label="Notifications">
          {notifiedBy(project.teamsWebhookUrl, project.emailRecipients)}
        </p>
      </div>
      <div className="grid-sidebar">
        <div className="stack">
          <h2 className="section-title">Environments</h2>
          {envs.length === 0 && <Empty>No environments yet: create one to deploy to.</Empty>}
          {envs.map((env) => (
            <EnvironmentCard key={env.id} env={env} />
          ))}
          <Sandboxes projectId={project.id} sandboxes={sandboxes} />
        </div>
        <div className="stack">
          <CreateEnvironmentForm projectId={project.id} />
          <div className="card">
            <h2>Activity</h2>
            <p className="muted small">
              All tasks of this project in the <Link to={`/?project=${project.id}`}>live feed</Link>.
            </p>
          </div>
        </div>
      </div>
    </section>
  );
}

/** Who hears when a task of the project ends. */
function notifiedBy(webhook: string | null | undefined, emails: readonly string[]): string {
  const who = [...(webhook ? ['a Teams channel'] : []), ...emails];
  return who.length ? `When a task ends, ${who.join(', ')} hear of it.` : 'Nobody is notified when a task ends.';
}
