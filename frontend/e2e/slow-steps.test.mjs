// End-to-end, with slower steps (1.2 s): queues that stay put long enough to be watched, and a
// server restart under an open task page.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, createProjectAndEnv, deploy, getTask, launchBrowser, openPage, screenshot, waitFor } from './lib.mjs';

const short = (id) => id.slice(0, 8);

/** @type {Server} */
let server;
let browser;

before(async () => {
  // Slower steps: a deployment runs for about 5 s, so queues stay put while the test looks at
  // them, and steps run while the page is cut off from the server.
  server = await new Server({ name: 'slow-steps', env: { CLOUDOPS_STEP_DELAY: '1.2' } }).start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the feed follows new tasks and queue positions live, and cancels a queued task', async () => {
  const { environmentId } = await createProjectAndEnv(server, 'queueing', 'stage', 'STAGE');
  const page = await openPage(browser, `${server.url}/`);
  const feed = page.getByRole('table', { name: 'Tasks' });
  await waitFor(async () => (await page.getByRole('status', { name: /^Live updates/ }).getAttribute('data-state')) === 'live', {
    message: 'live',
  });
  await page.evaluate(() => {
    window.__noReload = true;
  });
  const running = await deploy(server, environmentId, '2.0.0');
  const queued = await deploy(server, environmentId, '2.0.1');
  const last = await deploy(server, environmentId, '2.0.2');
  assert.equal(queued.status, 'QUEUED');

  const row = (task) => feed.locator(`tr[data-task-id="${task.id}"]`);
  // "<status> <queue position>" of a row, e.g. "QUEUED 0" (shown as "next") or "RUNNING -".
  // Read in one DOM call: asking "is there a position?" and then "which?" races with the
  // re-render that removes it (a cancelled task has none), and the second call then waits
  // for an element that never comes back.
  const state = async (task) => {
    const r = row(task);
    if (!(await r.count())) return 'absent';
    return r.evaluate(
      (el) => {
        const pos = el.querySelector('[data-queue-position]');
        return `${el.dataset.status} ${pos ? pos.dataset.queuePosition : '-'}`;
      },
      undefined,
      { timeout: 2_000 },
    );
  };
  const expectState = async (task, wanted, timeout = 15_000) => {
    let last;
    await waitFor(async () => (last = await state(task)) === wanted, { timeout, message: `${wanted}` }).catch(async (e) => {
      await screenshot(page, 'feed-queue-failure');
      const api = await getTask(server, task.id);
      throw new Error(`${e.message}; the row shows ${last}; the API says ${api.status} ${api.queuePosition}`);
    });
  };
  await row(last).waitFor();
  await expectState(queued, 'QUEUED 0');
  await row(queued).getByText('next').waitFor();
  await expectState(last, 'QUEUED 1');
  await row(last).getByText('1 ahead').waitFor();
  await screenshot(page, 'feed-queue');

  await row(queued).getByRole('button', { name: `Cancel Deployment task ${short(queued.id)}` }).click();
  await expectState(queued, 'CANCELLED -');
  // The task behind it moves up without a reload.
  await expectState(last, 'QUEUED 0');
  await row(last).getByText('next').waitFor();
  assert.equal((await getTask(server, queued.id)).status, 'CANCELLED');
  assert.equal(await row(queued).getByRole('button', { name: /^Retry/ }).isDisabled(), false);
  assert.equal(await row(queued).getByRole('button', { name: /^Cancel/ }).isDisabled(), true);

  // Everything runs to the end live.
  await waitFor(async () => (await row(last).getAttribute('data-status')) === 'COMPLETED', { timeout: 30_000, message: 'last completed' });
  assert.equal(await row(running).getAttribute('data-status'), 'COMPLETED');
  assert.equal(await row(last).getByRole('progressbar').getAttribute('aria-valuenow'), '100');
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was never reloaded');
  await screenshot(page, 'feed-cancelled');
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});

test('a server restart under an open task page: reconnecting, then live, and no step update missing', async () => {
  const { environmentId } = await createProjectAndEnv(server, 'resilient', 'prod', 'PROD');
  const task = await deploy(server, environmentId, '5.0.0');
  const page = await openPage(browser, `${server.url}/tasks/${task.id}`);
  await page.evaluate(() => {
    window.__noReload = true;
  });
  const live = page.getByRole('status', { name: /^Live updates/ });
  const state = () => live.getAttribute('data-state');
  await waitFor(async () => (await state()) === 'live', { message: 'live' });
  const step = (name) => page.locator(`ol.timeline > li[data-step="${name}"]`);
  await waitFor(async () => (await step('validate').getAttribute('data-status')) === 'COMPLETED', {
    message: 'validate completed before the restart',
  });

  await server.stop();
  await waitFor(async () => (await state()) === 'reconnecting', { message: 'reconnecting' });
  await screenshot(page, 'restart-reconnecting');
  const before = Number(await page.locator('section.task-page').getAttribute('data-last-sequence'));

  await server.start();
  await waitFor(async () => (await state()) === 'live', { timeout: 20_000, message: 'live again' });
  const bar = page.getByRole('progressbar', { name: 'Task progress' });
  await waitFor(async () => (await bar.getAttribute('aria-valuenow')) === '100', { timeout: 30_000, message: 'progress 100%' });
  await waitFor(async () => {
    const statuses = await page.locator('ol.timeline > li').evaluateAll((els) => els.map((e) => e.dataset.status));
    return statuses.length === 4 && statuses.every((s) => s === 'COMPLETED');
  }, { message: 'every step COMPLETED' });

  // Every event the server stored reached the page exactly once, in order: no gap, no duplicate.
  const { task: stored } = await server.gql('query($id: ID!) { task(id: $id) { status events(first: 200) { sequence kind } } }', { id: task.id });
  assert.equal(stored.status, 'COMPLETED');
  const lastStored = stored.events.at(-1).sequence;
  await waitFor(async () => Number(await page.locator('section.task-page').getAttribute('data-last-sequence')) === lastStored, {
    message: `the page holding sequence ${lastStored}`,
  });
  const section = page.locator('section.task-page');
  assert.equal(Number(await section.getAttribute('data-event-count')), lastStored, 'one event per sequence');
  assert.ok(lastStored > before, 'events arrived after the restart');
  const log = page.getByRole('list', { name: 'Live log' });
  await log.getByText('rolled out 5.0.0').waitFor();
  await log.getByText('health checks passed').waitFor();
  await log.getByText('deployment completed').waitFor();
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was never reloaded');
  await screenshot(page, 'restart-caught-up');
  assert.deepEqual(page.pageErrors, []);
});
