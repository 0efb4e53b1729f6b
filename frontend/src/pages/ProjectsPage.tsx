import { useState, type FormEvent } from 'react';
import { useMutation, useQuery } from '@apollo/client/react';
import { CreateProjectMutation, ProjectsQuery } from '../lib/documents';
import { titleCase } from '../lib/format';
import { Link, navigate } from '../lib/router';
import { Empty, ErrorNote, Loading } from '../components/bits';
import { Field, FieldErrors, FormErrors, SubmitButton, asUserErrors, type UserErrors } from '../components/forms';

function CreateProjectForm() {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [webhook, setWebhook] = useState('');
  const [emails, setEmails] = useState('');
  const [errors, setErrors] = useState<UserErrors>([]);
  const [create, { loading }] = useMutation(CreateProjectMutation, { refetchQueries: ['Projects'] });
  const fe = new FieldErrors(errors, ['name', 'description', 'teamsWebhookUrl', 'emailRecipients']);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors([]);
    try {
      const { data } = await create({
        variables: {
          input: {
            name,
            description: description || null,
            teamsWebhookUrl: webhook.trim() || null,
            emailRecipients: emails
              .split(',')
              .map((address) => address.trim())
              .filter(Boolean),
          },
        },
      });
      const result = data?.createProject;
      if (result?.userErrors.length) setErrors(result.userErrors);
      else if (result?.project) navigate(`/projects/${result.project.id}`);
    } catch (err) {
      setErrors(asUserErrors(err as Error));
    }
  };

  return (
    <form className="card form" onSubmit={submit} aria-label="Create project" noValidate>
      <h2>New project</h2>
      <Field label="Project name" error={fe.for('name')}>
        {(p) => <input {...p} value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />}
      </Field>
      <Field label="Description" error={fe.for('description')} hint="Optional">
        {(p) => <input {...p} value={description} onChange={(e) => setDescription(e.target.value)} />}
      </Field>
      <Field
        label="Teams webhook URL"
        error={fe.for('teamsWebhookUrl')}
        hint="Optional: told when a task of this project ends"
      >
        {(p) => (
          <input {...p} type="url" value={webhook} onChange={(e) => setWebhook(e.target.value)} autoComplete="off" />
        )}
      </Field>
      <Field label="E-mail recipients" error={fe.for('emailRecipients')} hint="Optional, comma separated">
        {(p) => <input {...p} value={emails} onChange={(e) => setEmails(e.target.value)} autoComplete="off" />}
      </Field>
      <FormErrors errors={fe.general} />
      <div className="form-actions">
        <SubmitButton pending={loading} pendingText="Creating…">
          Create project
        </SubmitButton>
      </div>
    </form>
  );
}

export function ProjectsPage() {
  const { data, error, loading } = useQuery(ProjectsQuery);
  const projects = data?.projects.edges.map((e) => e.node) ?? [];
  return (
    <section aria-labelledby="projects-heading">
      <div className="page-head">
        <h1 id="projects-heading">Projects</h1>
        <p className="muted">Projects hold environments: deploy to them, and spin up short-lived sandboxes.</p>
      </div>
      <div className="grid-sidebar">
        <div>
          <ErrorNote error={error} />
          {loading && !data && <Loading />}
          {data && projects.length === 0 && <Empty>No projects yet: create the first one.</Empty>}
          <ul className="project-list" aria-label="Projects">
            {projects.map((p) => (
              <li key={p.id} className="card project-card">
                <div>
                  <Link to={`/projects/${p.id}`} className="project-name">
                    {p.name}
                  </Link>
                  {p.description && <p className="muted">{p.description}</p>}
                </div>
                <ul className="env-chips" aria-label={`Environments of ${p.name}`}>
                  {p.environments.length === 0 && <li className="muted small">no environments</li>}
                  {p.environments.map((env) => (
                    <li key={env.id} className={`chip chip-${env.type.toLowerCase()}${env.expired ? ' chip-expired' : ''}`}>
                      {env.name}
                      <span className="chip-sub">
                        {titleCase(env.type)}
                        {env.currentVersion ? ` · ${env.currentVersion}` : ''}
                      </span>
                    </li>
                  ))}
                </ul>
              </li>
            ))}
          </ul>
        </div>
        <CreateProjectForm />
      </div>
    </section>
  );
}
