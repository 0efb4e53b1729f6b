import { Header } from './components/Header';
import { DeadLettersPage } from './pages/DeadLettersPage';
import { OperationsPage } from './pages/OperationsPage';
import { ProjectPage } from './pages/ProjectPage';
import { ProjectsPage } from './pages/ProjectsPage';
import { TaskPage } from './pages/TaskPage';
import { TasksPage } from './pages/TasksPage';
import { Link, useLocation } from './lib/router';

function Page({ pathname }: { pathname: string }) {
  let m: RegExpMatchArray | null;
  if (pathname === '/' || pathname === '/tasks') return <TasksPage />;
  if ((m = pathname.match(/^\/tasks\/([^/]+)$/))) return <TaskPage key={m[1]} id={decodeURIComponent(m[1])} />;
  if (pathname === '/projects') return <ProjectsPage />;
  if ((m = pathname.match(/^\/projects\/([^/]+)$/))) return <ProjectPage key={m[1]} id={decodeURIComponent(m[1])} />;
  if (pathname === '/operations') return <OperationsPage />;
  if (pathname === '/dead-letters') return <DeadLettersPage />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        Nothing at <code>{pathname}</code>. <Link to="/">Go to the task feed</Link>
      </p>
    </section>
  );
}

export function App() {
  const { pathname } = useLocation();
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <Header />
      <main id="main">
        <Page pathname={pathname} />
      </main>
    </>
  );
}
