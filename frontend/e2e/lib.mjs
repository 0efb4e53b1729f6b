// Helpers of the end-to-end tests: a real `cloudops serve` on a free port with a temporary
// database and data directory, headless Debian Chromium driven by playwright-core, and a
// small GraphQL client for arranging state through the API.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdirSync, mkdtempSync, existsSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const FRONTEND = resolve(here, '..');
export const REPO = resolve(FRONTEND, '..');
export const OUTPUT = join(FRONTEND, 'test-output');
const CLOUDOPS = process.env.CLOUDOPS_BIN ?? join(REPO, '.venv', 'bin', 'cloudops');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A `cloudops serve` process. `start()` spawns it and waits for /healthz; `stop()` sends
 * SIGTERM and waits for the exit; `restart()` does both on the same port, database and data.
 */
export class Server {
  constructor({ env = {}, name = 'server' } = {}) {
    // Database, data directory and server logs, kept under test-output/ for a look after a
    // failure (npm run test:e2e starts from an empty test-output/).
    mkdirSync(join(OUTPUT, 'servers'), { recursive: true });
    this.dir = mkdtempSync(join(OUTPUT, 'servers', `${name}-`));
    this.name = name;
    this.extraEnv = env;
    this.proc = null;
    this.port = null;
    this.starts = 0;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    this.starts += 1;
    const log = createWriteStream(join(this.dir, `server-${this.starts}.log`));
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CLOUDOPS_'))),
      CLOUDOPS_DATABASE_URL: `sqlite+aiosqlite:///${join(this.dir, 'c.db')}`,
      CLOUDOPS_DATA_DIR: join(this.dir, 'data'),
      CLOUDOPS_HOST: '127.0.0.1',
      CLOUDOPS_PORT: String(this.port),
      CLOUDOPS_STEP_DELAY: '0.3',
      CLOUDOPS_RETRY_BASE_DELAY: '0.05',
      CLOUDOPS_REAPER_INTERVAL: '3600',
      CLOUDOPS_SHUTDOWN_GRACE: '0.5',
      ...this.extraEnv,
    };
    this.proc = spawn(CLOUDOPS, ['serve'], { cwd: this.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.pipe(log);
    this.proc.stderr.pipe(log);
    this.exited = once(this.proc, 'exit');
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`${this.name} exited with ${this.proc.exitCode}; log in ${this.dir}`);
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.ok) return this;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${this.name} did not answer /healthz in 30 s; log in ${this.dir}`);
      await sleep(100);
    }
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc?.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(timer);
  }

  async restart({ downFor = 0 } = {}) {
    await this.stop();
    if (downFor) await sleep(downFor);
    await this.start();
  }

  async gql(query, variables = {}) {
    const res = await fetch(`${this.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query, variables }),
    });
    const body = await res.json();
    if (body.errors) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
    return body.data;
  }
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (npm run test:e2e does it)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A page that fails the test on uncaught errors, with its console kept for diagnosis. */
export async function openPage(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 950 } });
  const page = await context.newPage();
  page.consoleLines = [];
  page.pageErrors = [];
  page.on('console', (m) => page.consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.pageErrors.push(String(e)));
  page.setDefaultTimeout(15_000);
  await page.goto(url);
  return page;
}

export async function screenshot(page, name) {
  mkdirSync(OUTPUT, { recursive: true });
  const path = join(OUTPUT, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

export async function waitFor(check, { timeout = 15_000, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${message} (last: ${last})`);
    await sleep(interval);
  }
}

export const TASK_FIELDS = 'id status progress attempt deadLettered queuePosition steps { name status }';

export async function createProjectAndEnv(server, project = 'shop', env = 'prod', type = 'PROD') {
  const p = await server.gql(
    'mutation($n: String!) { createProject(input: {name: $n}) { project { id } userErrors { message } } }',
    { n: project },
  );
  const projectId = p.createProject.project.id;
  const e = await server.gql(
    'mutation($p: ID!, $n: String!, $t: EnvironmentType!) { createEnvironment(input: {projectId: $p, name: $n, type: $t}) { environment { id } userErrors { message } } }',
    { p: projectId, n: env, t: type },
  );
  return { projectId, environmentId: e.createEnvironment.environment.id };
}

export async function deploy(server, environmentId, version, metadata = null) {
  const d = await server.gql(
    `mutation($e: ID!, $v: String!, $m: JSON) { deploy(input: {environmentId: $e, version: $v, metadata: $m}) { task { ${TASK_FIELDS} } userErrors { field message } } }`,
    { e: environmentId, v: version, m: metadata },
  );
  if (d.deploy.userErrors.length) throw new Error(JSON.stringify(d.deploy.userErrors));
  return d.deploy.task;
}

export async function getTask(server, id) {
  const d = await server.gql(`query($id: ID!) { task(id: $id) { ${TASK_FIELDS} error events(first: 200) { sequence kind } } }`, { id });
  return d.task;
}
