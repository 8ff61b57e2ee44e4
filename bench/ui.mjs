// Opens each page given as NAME=URL in Debian's Chromium, signed in, REPEAT times each in a
// new tab, and prints the median of the time the page took from before its API call to after
// the browser laid out what it drew (the UI keeps it in window.weirTimings[NAME]).
import { createRequire } from 'node:module';
import { join } from 'node:path';

const tools = process.env.WEIR_BROWSER_DIR;
const { chromium } = createRequire(join(tools, 'node_modules', 'weir.js'))('playwright-core');
const repeat = Number(process.env.REPEAT || 5);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
for (const arg of process.argv.slice(2)) {
  const [name, url] = [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)];
  await context.addInitScript((t) => sessionStorage.setItem('weir.token', t), process.env.WEIR_TOKEN);
  const times = [];
  const extra = [];
  for (let i = 0; i < repeat + 1; i++) {
    const page = await context.newPage();
    await page.goto(url);
    await page.waitForFunction((n) => window.weirTimings && window.weirTimings[n] != null, name, { timeout: 60_000 });
    const t = await page.evaluate(() => window.weirTimings);
    if (i > 0) { times.push(t[name]); if (t.layout != null) extra.push(t.layout); } // the first is a warm-up
    await page.close();
  }
  const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const note = extra.length ? ` (of which layout ${median(extra).toFixed(0)})` : '';
  console.log(`  ${name.padEnd(8)} ${median(times).toFixed(0)}${note}`);
}
await browser.close();
