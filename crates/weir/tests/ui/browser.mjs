// The web UI in a real Chromium, driven by Playwright, against `weir serve` on a project the
// Rust test (tests/ui.rs) has built: sign in, trigger a pipeline and watch the grid turn
// green, open a failed attempt's log, clear it and see it rerun, follow a mart column's
// lineage to the raw column. Each main page is saved as a screenshot in $WEIR_SHOTS.
//
// Environment: WEIR_URL, WEIR_TOKEN, WEIR_PROJECT (the project folder), WEIR_SHOTS,
// WEIR_BROWSER_DIR (where scripts/install-browser.sh put playwright-core).

import { createRequire } from 'node:module';
import { writeFileSync, mkdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

const { WEIR_URL: base, WEIR_TOKEN: token, WEIR_PROJECT: project, WEIR_SHOTS: shots, WEIR_BROWSER_DIR: tools } = process.env;
const require = createRequire(join(tools, 'node_modules', 'weir.js'));
const { chromium } = require('playwright-core');

mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.WEIR_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error' && !/401|409|Unauthorized/.test(m.text())) problems.push(`console: ${m.text()}`); });

const step = (name) => console.log(`-- ${name}`);
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const expect = (ok, what) => { if (!ok) throw new Error(what); };

try {
  step('the root leads to the UI, which asks to sign in');
  await page.goto(base);
  await page.waitForSelector('form.login');
  expect(page.url().includes('/ui/'), `the root redirects to /ui/, not ${page.url()}`);
  await shot('sign-in');

  step('a wrong token is refused');
  await page.fill('input[name=token]', 'not-the-token');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('not this server'));

  step('the right token signs in, to the list of pipelines');
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
  await page.waitForSelector('tr[data-pipeline="daily"]');
  await page.waitForSelector('tr[data-pipeline="flaky"]');
  await shot('pipelines');

  step('trigger a pipeline from its page and watch the grid turn green');
  await page.click('tr[data-pipeline="daily"] a');
  await page.waitForSelector('#trigger');
  await page.click('#trigger');
  await page.fill('#trigger-form textarea[name=params]', '{"note": "from the browser"}');
  await page.click('#trigger-form button[type=submit]');
  await page.waitForSelector('.grid a.cell[data-task="marts"]');
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('.grid a.cell')];
    return cells.length >= 3 && cells.every((c) => c.dataset.state === 'success');
  }, null, { timeout: 90_000 });
  const green = await page.$eval('.grid a.cell[data-task="marts"]', (c) => getComputedStyle(c).backgroundColor);
  expect(green === 'rgb(22, 163, 74)', `a successful task's cell is green, not ${green}`);
  await shot('grid');

  step('the graph tab shows the tasks, coloured by the run');
  await page.click('nav.tabs a[data-tab=graph]');
  await page.waitForSelector('svg.graph g.node[data-id="marts"]');
  await shot('pipeline-graph');

  step('the run page has a Gantt chart and the params');
  await page.click('nav.tabs a[data-tab=runs]');
  await page.click('table.runs tbody tr:first-child a');
  await page.waitForSelector('svg.gantt rect');
  expect((await page.textContent('main')).includes('from the browser'), 'the run page shows the params it was triggered with');
  await shot('run');

  step('a failed attempt: its log, then cleared and run again');
  await page.goto(`${base}/ui/#/pipelines/flaky`);
  await page.waitForSelector('#trigger');
  await page.click('#trigger');
  await page.click('#trigger-form button[type=submit]');
  await page.waitForSelector('.grid a.cell[data-task="check"][data-state="failed"]', { timeout: 60_000 });
  await page.waitForSelector('.grid a.cell[data-task="report"][data-state="upstream_failed"]', { timeout: 30_000 });
  await page.click('.grid a.cell[data-task="check"]');
  await page.waitForFunction(() => document.getElementById('log')?.textContent.includes('looking for the fix'));
  await shot('task-log');
  writeFileSync(join(project, 'fixed'), 'yes\n');
  await page.waitForSelector('#clear-down:not([disabled])');
  await page.click('#clear-down');
  await page.click('main p a:nth-of-type(2)'); // to the run
  await page.waitForSelector('table.tasks tr[data-task="report"] .s-success', { timeout: 60_000 });
  await page.waitForSelector('table.tasks tr[data-task="check"] .s-success');

  step('a run retried from its page: its failed tasks cleared at once');
  unlinkSync(join(project, 'fixed'));
  await page.click('header nav a[data-section=pipelines]');
  await page.click('tr[data-pipeline="flaky"] button[data-act=trigger]');
  await page.waitForSelector('table.tasks tr[data-task="report"] .s-upstream_failed', { timeout: 60_000 });
  writeFileSync(join(project, 'fixed'), 'yes\n');
  await page.click('#retry:not([disabled])');
  await page.waitForSelector('table.tasks tr[data-task="report"] .s-success', { timeout: 60_000 });

  step('the asset graph, narrowed by a selection');
  await page.goto(`${base}/ui/#/assets`);
  await page.waitForSelector('svg.graph g.node[data-id="model.t.customer_revenue"]');
  await shot('assets');
  await page.fill('#select input[name=select]', '+customer_revenue');
  await page.click('#select button[type=submit]');
  await page.waitForFunction(() => document.getElementById("count")?.textContent === "6 nodes");
  await page.fill('#select input[name=select]', 'no_such_model+');
  await page.click('#select button[type=submit]');
  await page.waitForFunction(() => /matches no node/.test(document.getElementById('graph')?.textContent || '') || document.getElementById('select-error')?.textContent);

  step('a node page, and a mart column followed to the raw column');
  await page.goto(`${base}/ui/#/assets/model.t.customer_revenue`);
  await page.waitForSelector('table.columns');
  expect((await page.textContent('pre.sql')).includes('sum(m.amount)'), 'the compiled SQL is shown');
  expect(await page.$('table.builds .s-success'), 'the last build is shown');
  await page.click('a[data-lineage="revenue"]');
  await page.waitForSelector('table.lineage');
  const leaves = await page.$$eval('table.lineage tr', (rows) => rows.map((r) => r.textContent.replace(/\s+/g, ' ').trim()));
  expect(leaves.some((l) => l.includes('raw_orders.amount_cents')), `the lineage reaches the raw column: ${leaves.join(' | ')}`);
  expect(leaves.some((l) => l.includes('stg_orders.amount = amount_cents / 100.0')), `the lineage shows the expressions: ${leaves.join(' | ')}`);
  await shot('asset-lineage');
  await page.click('table.lineage a:has-text("stg_orders.amount")');
  await page.waitForFunction(() => location.hash.includes('stg_orders') && document.querySelector('table.lineage'));

  step("a check's chart, with its threshold");
  await page.click('header nav a[data-section=checks]');
  await page.click('table.checks a');
  await page.waitForSelector('.check svg.chart circle');
  expect((await page.$$('.check svg.chart line.threshold')).length >= 2, 'the thresholds are drawn');
  await shot('check');

  step("a load's runs and the row it rejected");
  await page.click('header nav a[data-section=loads]');
  await page.click('table.loads a');
  await page.click('table.loads tr[data-load] a');
  await page.waitForSelector('table.rejected');
  expect((await page.textContent('table.rejected')).includes('payments.csv:3'), 'the rejected row says where it was');
  await shot('load');

  step('streams and CDC');
  await page.click('header nav a[data-section=streams]');
  await page.waitForFunction(() => document.body.dataset.rendered === 'streams');
  await shot('streams');

  step('signing out forgets the token');
  await page.click('#signout');
  await page.waitForSelector('form.login');
  await page.goto(`${base}/ui/#/pipelines`);
  await page.waitForSelector('form.login');

  expect(problems.length === 0, `the page reported errors:\n${problems.join('\n')}`);
  console.log('ok: every step passed');
} catch (e) {
  await shot('failure').catch(() => {});
  console.error(`FAILED: ${e.message}`);
  console.error(`at ${page.url()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
