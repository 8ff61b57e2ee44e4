// Saves a picture of each page of the web UI on the example shop (run by
// scripts/ui-screenshots.sh) into $WEIR_SHOTS.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';

const { WEIR_URL: base, WEIR_TOKEN: token, WEIR_SHOTS: shots, WEIR_BROWSER_DIR: tools } = process.env;
const { chromium } = createRequire(join(tools, 'node_modules', 'weir.js'))('playwright-core');
mkdirSync(shots, { recursive: true });
const api = async (method, path, body) => {
  const r = await fetch(`${base}/api/v1${path}`, { method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body });
  return r.json();
};
// A few runs of the nightly pipeline, for the grid, the run and its logs.
for (let i = 0; i < 4; i++) {
  const run = await api('POST', '/pipelines/daily/runs', '{}');
  for (let k = 0; k < 100; k++) {
    const r = await api('GET', `/pipelines/daily/runs/${encodeURIComponent(run.run_id)}`);
    if (r.state === 'success' || r.state === 'failed') break;
    await new Promise((f) => setTimeout(f, 200));
  }
}
const runs = await api('GET', '/pipelines/daily/runs?limit=1');
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
const visit = async (name, hash, ready) => {
  await page.goto(`${base}/ui/${hash}`);
  await page.waitForSelector(ready);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, `${name}.png`) });
};
await visit('sign-in', '#/login', 'form.login');
await page.fill('input[name=token]', token);
await page.click('button[type=submit]');
await page.waitForSelector('tr[data-pipeline]');
const run = encodeURIComponent(runs[0].run_id);
await visit('pipelines', '#/pipelines', 'tr[data-pipeline]');
await visit('grid', '#/pipelines/daily', '.grid a.cell');
await visit('run', `#/pipelines/daily/runs/${run}`, 'svg.gantt rect');
await visit('task-log', `#/pipelines/daily/runs/${run}/tasks/report`, '#log');
await visit('assets', '#/assets', 'svg.graph g.node');
await visit('asset-lineage', '#/assets/model.shop.daily_revenue?column=revenue', 'table.lineage');
await visit('check', '#/assets/check.shop.stg_orders', '.check svg.chart');
await visit('load', '#/assets/load.shop.orders', 'table.loads');
await visit('streams', '#/streams', 'table.streams');
await browser.close();
console.log(`pictures in ${shots}`);
