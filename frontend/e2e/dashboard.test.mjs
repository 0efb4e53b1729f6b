// End-to-end: the dashboard in headless Chromium against a real `cloudops serve`.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  Server,
  createProjectAndEnv,
  deploy,
  getTask,
  launchBrowser,
  openPage,
  screenshot,
  waitFor,
} from './lib.mjs';

const short = (id) => id.slice(0, 8);

describe('dashboard', () => {
  /** @type {Server} */
  let server;
  let browser;

  before(async () => {
    server = await new Server({ name: 'dashboard' }).start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test('the API serves the dashboard, its client routes and our own GraphiQL', async () => {
    const home = await fetch(`${server.url}/`);
    assert.equal(home.status, 200);
    assert.match(await home.text(), /<div id="root">/);
    const deep = await fetch(`${server.url}/tasks/some-task-id`);
    assert.equal(deep.status, 200, 'client routes fall back to index.html');
    assert.match(await deep.text(), /<div id="root">/);
    assert.equal((await fetch(`${server.url}/assets/missing.js`)).status, 404);
    const ide = await fetch(`${server.url}/graphql`, { headers: { accept: 'text/html' } });
    const html = await ide.text();
    assert.match(html, /<title>CloudOps GraphiQL<\/title>/);
    assert.doesNotMatch(html, /unpkg|jsdelivr|esm\.sh/, 'no CDN scripts');

    // GraphiQL runs a subscription over the page's own WebSocket.
    const page = await openPage(browser, `${server.url}/graphql`);
    const editor = page.locator('.graphiql-query-editor .monaco-editor');
    await editor.waitFor();
    // Monaco may still be settling when it first shows: type until the editor holds exactly
    // the subscription (a half-typed query would be sent over HTTP and refused).
    const typed = 'subscription Watch { taskEvents { taskId sequence kind status } }';
    await waitFor(
      async () => {
        await editor.click();
        await page.keyboard.press('Control+A');
        await page.keyboard.press('Delete');
        await page.keyboard.insertText(typed);
        const shown = await page.locator('.graphiql-query-editor .view-lines').innerText();
        return shown.replace(/\s+/g, ' ').trim() === typed;
      },
      { timeout: 20_000, interval: 500, message: 'the subscription in the editor' },
    );
    // graphql-ws connects on the first subscription: the socket opening shows it was sent.
    // GraphiQL reads the operation from the editor a moment after the text changes; an
    // Execute before that sends the old operation over HTTP (refused). Press again until the
    // socket opens, slowly enough that a socket still opening is not stopped by a press.
    let opened = false;
    page.on('websocket', () => {
      opened = true;
    });
    await page.waitForTimeout(1_000);
    await waitFor(
      async () => {
        if (opened) return true;
        await page.getByRole('button', { name: /Execute query/ }).click();
        return false;
      },
      { timeout: 40_000, interval: 5_000, message: 'GraphiQL opening its WebSocket' },
    );
    // The subscription is registered on the server a moment after the socket opens, and an
    // event published before that is not replayed without a taskId: keep producing events
    // until one arrives rather than guessing how long the start takes.
    let produced = 0;
    await waitFor(
      async () => {
        if (/"taskEvents"/.test(await page.locator('.graphiql-response').innerText())) return true;
        await server.gql(
          `mutation { restartWorkload(input: {namespace: "shop", name: "graphiql-${produced++}"}) { task { id } } }`,
        );
        return false;
      },
      { timeout: 30_000, interval: 2_000, message: 'a subscription event in GraphiQL' },
    );
    await screenshot(page, 'graphiql-subscription');
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  test('create a project and an environment, deploy, and watch it complete live', async () => {
    const page = await openPage(browser, `${server.url}/projects`);
    await page.getByLabel('Project name').fill('webshop');
    await page.getByLabel('Description').fill('The customer-facing shop');
    // A bad address among the recipients is named next to their input; nothing is created.
    const recipients = page.getByLabel('E-mail recipients');
    await recipients.fill('ops@example.com, nope');
    await page.getByRole('button', { name: 'Create project' }).click();
    await waitFor(async () => (await recipients.getAttribute('aria-invalid')) === 'true', {
      message: 'E-mail recipients marked invalid',
    });
    const recipientsError = (await recipients.getAttribute('aria-describedby')).split(' ')[0];
    assert.match(await page.locator(`[id="${recipientsError}"]`).innerText(), /'nope' is not an email address/);
    await recipients.fill('ops@example.com');
    await page.getByLabel('Teams webhook URL').fill('https://example.invalid/webhook');
    await page.getByRole('button', { name: 'Create project' }).click();
    await page.getByRole('heading', { level: 1, name: 'webshop' }).waitFor();
    assert.equal(
      await page.getByLabel('Notifications').innerText(),
      'When a task ends, a Teams channel, ops@example.com hear of it.',
    );

    await page.getByLabel('Environment name').fill('prod');
    await page.getByLabel('Environment type').selectOption('PROD');
    await page.getByRole('button', { name: 'Create environment' }).click();
    const deployForm = page.getByRole('form', { name: 'Deploy to prod' });
    await deployForm.waitFor();

    // A userError is shown next to the input it names, and nothing is queued.
    await deployForm.getByLabel('Version').fill('1 2');
    await deployForm.getByRole('button', { name: 'Deploy' }).click();
    const version = deployForm.getByLabel('Version');
    await waitFor(async () => (await version.getAttribute('aria-invalid')) === 'true', { message: 'Version marked invalid' });
    const describedBy = await version.getAttribute('aria-describedby');
    assert.match(await page.locator(`[id="${describedBy.split(' ')[0]}"]`).innerText(), /whitespace/);
    await screenshot(page, 'deploy-user-error');

    // The page is never reloaded from here on: a marker on window must survive.
    await page.evaluate(() => {
      window.__noReload = true;
    });
    // Another deployment goes first (through the API), so this one waits in the queue and the
    // page is open before its first step runs.
    const url = new URL(page.url());
    const environmentId = (
      await server.gql('query($p: ID!) { project(id: $p) { environments { id } } }', { p: url.pathname.split('/').pop() })
    ).project.environments[0].id;
    await deploy(server, environmentId, '1.4.1');
    await version.fill('1.4.2');
    await deployForm.getByLabel('Image').fill('registry.local/shop:1.4.2');
    await deployForm.getByRole('button', { name: 'Deploy' }).click();
    const history = page.getByRole('table', { name: 'Tasks of prod' });
    await waitFor(async () => (await history.locator('tbody tr').count()) === 2, { message: 'both deployments in the history' });
    await history.getByRole('link', { name: 'Deployment' }).first().click(); // newest first: 1.4.2

    await page.getByRole('heading', { level: 1, name: /Deployment/ }).waitFor();
    // Record every value the progress bar takes, to see it move.
    await page.evaluate(() => {
      const bar = document.querySelector('[role="progressbar"][aria-label="Task progress"]');
      window.__progress = [bar.getAttribute('aria-valuenow')];
      new MutationObserver(() => window.__progress.push(bar.getAttribute('aria-valuenow'))).observe(bar, {
        attributes: true,
        attributeFilter: ['aria-valuenow'],
      });
    });
    const bar = page.getByRole('progressbar', { name: 'Task progress' });
    await waitFor(async () => (await bar.getAttribute('aria-valuenow')) === '100', { timeout: 20_000, message: 'progress 100%' });
    const steps = page.locator('ol.timeline > li');
    await waitFor(async () => {
      const statuses = await steps.evaluateAll((els) => els.map((e) => e.dataset.status));
      return statuses.length === 4 && statuses.every((s) => s === 'COMPLETED');
    }, { message: 'every step COMPLETED' });
    assert.deepEqual(await steps.evaluateAll((els) => els.map((e) => e.dataset.step)), ['validate', 'plan', 'apply', 'verify']);
    await page.getByText('Completed', { exact: true }).first().waitFor();
    const seen = new Set(await page.evaluate(() => window.__progress));
    assert.ok(seen.size >= 4, `the progress bar moved through several values, saw ${[...seen]}`);

    // The log has the steps' messages, and the artifact its checksum and download link.
    const log = page.getByRole('list', { name: 'Live log' });
    await log.getByText('rolled out 1.4.2').waitFor();
    await log.getByText('health checks passed').waitFor();
    const artifacts = page.getByRole('table', { name: 'Artifacts' });
    const download = artifacts.getByRole('link', { name: 'Download plan.json' });
    const href = await download.getAttribute('href');
    const bytes = await fetch(`${server.url}${href}`);
    assert.equal(bytes.status, 200);
    const sha = bytes.headers.get('x-checksum-sha256');
    await artifacts.getByText(sha).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Cancel' }).isDisabled(), true);
    assert.equal(await page.getByRole('button', { name: 'Retry' }).isDisabled(), true);
    await screenshot(page, 'deploy-completed');

    // Back on the project, the current version moved without a reload.
    await page.getByRole('link', { name: 'webshop', exact: true }).click();
    await page.getByLabel('Current version of prod').getByText('1.4.2').waitFor();
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was never reloaded');
    await screenshot(page, 'project');

    // The feed shows it too, filtered by project.
    await page.getByRole('link', { name: 'Tasks', exact: true }).click();
    await page.getByLabel('Project').selectOption({ label: 'webshop' });
    const feed = page.getByRole('table', { name: 'Tasks' });
    await waitFor(async () => (await feed.locator('tbody tr').count()) === 2, { message: 'the two tasks of webshop' });
    assert.deepEqual(await feed.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.status)), ['COMPLETED', 'COMPLETED']);
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  test('a dead-lettered task is listed with its error and can be retried', async () => {
    const { environmentId } = await createProjectAndEnv(server, 'fragile', 'dev', 'DEV');
    const task = await deploy(server, environmentId, '0.9.0', { simulate: { failStep: 'apply' } });
    await waitFor(async () => (await getTask(server, task.id)).deadLettered, { timeout: 20_000, message: 'dead-lettered' });

    const page = await openPage(browser, `${server.url}/dead-letters`);
    const table = page.getByRole('table', { name: 'Dead-lettered tasks' });
    const row = table.locator(`tr[data-task-id="${task.id}"]`);
    await row.waitFor();
    await row.getByText(/simulated failure in step 'apply'/).waitFor();
    await screenshot(page, 'dead-letters');

    await row.getByRole('button', { name: `Retry Deployment task ${short(task.id)}` }).click();
    await row.waitFor({ state: 'detached' });
    const retried = await getTask(server, task.id);
    assert.equal(retried.deadLettered, false);
    assert.equal(retried.attempt, 1);
    assert.ok(['QUEUED', 'RUNNING', 'FAILED'].includes(retried.status), retried.status);

    // The task page shows the error of the failed attempt and the retry enabled exactly when allowed.
    await page.goto(`${server.url}/tasks/${task.id}`);
    await waitFor(async () => (await getTask(server, task.id)).deadLettered, { timeout: 20_000, message: 'dead-lettered again' });
    await page.getByRole('region', { name: 'Error' }).getByText(/simulated failure/).waitFor();
    await waitFor(async () => !(await page.getByRole('button', { name: 'Retry' }).isDisabled()), { message: 'Retry enabled' });
    assert.equal(await page.getByRole('button', { name: 'Cancel' }).isDisabled(), true);
    const apply = page.locator('ol.timeline > li[data-step="apply"]');
    assert.equal(await apply.getAttribute('data-status'), 'FAILED');
    await screenshot(page, 'task-failed');

    // Retried from elsewhere (here the API), the open page follows the task again to its end.
    const section = page.locator('section.task-page');
    const held = Number(await section.getAttribute('data-last-sequence'));
    await server.gql('mutation($id: ID!) { retryTask(id: $id) { task { id } } }', { id: task.id });
    await waitFor(async () => {
      const now = await server.gql('query($id: ID!) { task(id: $id) { deadLettered events(afterSequence: 0, first: 200) { sequence } } }', { id: task.id });
      return now.task.deadLettered && now.task.events.at(-1).sequence;
    }, { timeout: 20_000, message: 'dead-lettered a third time' }).then(async (lastStored) => {
      assert.ok(lastStored > held);
      await waitFor(async () => Number(await section.getAttribute('data-last-sequence')) === lastStored, {
        message: `the page holding sequence ${lastStored}`,
      });
      assert.equal(Number(await section.getAttribute('data-event-count')), lastStored);
    });
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  test('databases, workloads and sandboxes', async () => {
    const page = await openPage(browser, `${server.url}/operations`);
    const backup = page.getByRole('form', { name: 'Back up a database' });
    await backup.getByLabel('Engine').selectOption('POSTGRES');
    await backup.getByLabel('Instance id').fill('orders-db');
    await backup.getByRole('button', { name: 'Back up' }).click();
    await backup.getByRole('link', { name: /task/ }).waitFor();

    const restore = page.getByRole('form', { name: 'Restore a database' });
    await restore.getByLabel('Engine').selectOption('POSTGRES');
    await restore.getByLabel('Instance id').fill('orders-db');
    // The backup completes live and becomes a choice.
    const choice = restore.getByLabel('Backup');
    await waitFor(async () => (await choice.locator('option').count()) > 1, { timeout: 20_000, message: 'a backup to choose' });
    await choice.selectOption({ index: 1 });
    await restore.getByRole('button', { name: 'Restore' }).click();
    await restore.getByRole('link', { name: /task/ }).waitFor();

    const restart = page.getByRole('form', { name: 'Restart a workload' });
    await restart.getByLabel('Namespace').fill('Bad_Namespace');
    await restart.getByLabel('Workload name').fill('api');
    await restart.getByRole('button', { name: 'Restart' }).click();
    await restart.getByText(/DNS|label|lowercase|must/i).first().waitFor();
    assert.equal(await restart.getByLabel('Namespace').getAttribute('aria-invalid'), 'true');
    await restart.getByLabel('Namespace').fill('shop');
    await restart.getByRole('button', { name: 'Restart' }).click();
    await restart.getByRole('link', { name: /task/ }).waitFor();

    const table = page.getByRole('table', { name: 'Database and workload tasks' });
    await waitFor(async () => (await table.locator('tbody tr[data-status="COMPLETED"]').count()) === 3, {
      timeout: 20_000,
      message: 'backup, restore and restart completed',
    });
    await screenshot(page, 'operations');

    // Sandboxes: created from the project page, with a live TTL countdown.
    const { projectId } = await createProjectAndEnv(server, 'playground', 'dev', 'DEV');
    await page.goto(`${server.url}/projects/${projectId}`);
    const form = page.getByRole('form', { name: 'Create sandbox' });
    await form.getByLabel('Sandbox name').fill('feature-x');
    await form.getByLabel('TTL (minutes)').fill('30');
    await form.getByRole('button', { name: 'Create sandbox' }).click();
    const timer = page.getByRole('table', { name: 'Sandboxes' }).getByRole('timer');
    await timer.waitFor();
    const first = await timer.innerText();
    await waitFor(async () => (await timer.innerText()) !== first, { message: 'the countdown ticks' });
    assert.match(await timer.innerText(), /^(29m|30m)/);
    await screenshot(page, 'sandboxes');
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });
});

test('without a build, / says how to make one and the API still answers', async () => {
  const bare = new Server({ name: 'no-dashboard', env: { CLOUDOPS_FRONTEND_DIST: '/nonexistent/dist' } });
  await bare.start();
  try {
    const home = await fetch(`${bare.url}/`);
    assert.equal(home.status, 200);
    assert.match(await home.text(), /npm run build/);
    assert.equal((await fetch(`${bare.url}/tasks/x`)).status, 404);
    const data = await bare.gql('{ health { status } }');
    assert.equal(data.health.status, 'ok');
  } finally {
    await bare.stop();
  }
});
