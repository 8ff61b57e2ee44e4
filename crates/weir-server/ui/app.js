// Weir's web UI: one page, routed by the URL's hash, reading the REST API under /api/v1 with
// the token kept in the browser's session storage. No build step and no dependencies: the
// binary embeds this file as it is.

const main = document.getElementById('main');
const TOKEN_KEY = 'weir.token';

// ---------------------------------------------------------------------------------------
// Plumbing: the API, escaping, the router, timers that stop when the page changes.

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = 'GET', body, raw = false } = {}) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401 || r.status === 403) {
    const message = await r.json().then((j) => j.error, () => r.statusText);
    if (r.status === 401) signIn(message);
    throw new ApiError(r.status, message);
  }
  if (!r.ok) {
    const message = await r.json().then((j) => j.error, () => r.statusText);
    throw new ApiError(r.status, message);
  }
  return raw ? r : r.json();
}

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const enc = encodeURIComponent;
const state = (s) => `<span class="state s-${esc(s || 'none')}">${esc((s || 'none').replaceAll('_', ' '))}</span>`;
const when = (t) => (t ? new Date(t).toLocaleString() : '');
const seconds = (a, b) => (a ? ((b ? new Date(b) : new Date()) - new Date(a)) / 1000 : null);
const duration = (s) => (s == null ? '' : s < 60 ? `${s.toFixed(1)}s` : s < 3600 ? `${Math.floor(s / 60)}m ${Math.round(s % 60)}s` : `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`);
const bytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : n < 1073741824 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1073741824).toFixed(2)} GiB`);
const short = (id) => id.split('.').slice(2).join('.') || id;

let page = 0; // bumped on every navigation: work for an older page stops
const timers = [];

function every(ms, f) {
  const mine = page;
  const tick = async () => {
    if (mine !== page) return;
    try { await f(); } catch (e) { if (!(e instanceof ApiError && e.status === 401)) console.warn(e); }
    if (mine === page) timers.push(setTimeout(tick, ms));
  };
  timers.push(setTimeout(tick, ms));
}

function signIn(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (!location.hash.startsWith('#/login')) {
    location.hash = `#/login?next=${enc(location.hash)}${message ? `&why=${enc(message)}` : ''}`;
  }
}

function parseHash() {
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || '') };
}

function setQuery(changes) {
  const { parts, query } = parseHash();
  for (const [k, v] of Object.entries(changes)) {
    if (v === '' || v == null) query.delete(k); else query.set(k, v);
  }
  const q = query.toString();
  location.hash = `#/${parts.map(enc).join('/')}${q ? `?${q}` : ''}`;
}

/// Times a page's render and keeps the figures where a benchmark or a test can read them.
function timed(name, start) {
  void document.body.offsetHeight; // lay the page out: what is timed is what the user sees
  const ms = performance.now() - start;
  window.weirTimings = { ...(window.weirTimings || {}), [name]: ms };
  document.body.dataset.rendered = name;
}

async function route() {
  page += 1;
  timers.splice(0).forEach(clearTimeout);
  const { parts, query } = parseHash();
  const signedIn = !!sessionStorage.getItem(TOKEN_KEY);
  document.getElementById('signout').hidden = !signedIn;
  document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.section === parts[0]));
  if (parts[0] !== 'login' && !signedIn) return signIn();
  const mine = page;
  try {
    const [section, ...rest] = parts;
    if (section === 'login') return loginPage(query);
    if (section === 'assets' && rest.length) return await assetPage(rest.join('/'), query, mine);
    if (section === 'assets') return await assetsPage(query, mine);
    if (section === 'streams') return await streamsPage(mine);
    if (section === 'checks') return await kindPage('check', mine);
    if (section === 'loads') return await kindPage('load', mine);
    if (section === 'pipelines' && rest.length >= 5 && rest[3] === 'tasks') return await taskPage(rest[0], rest[2], rest[4], query, mine);
    if (section === 'pipelines' && rest.length >= 3 && rest[1] === 'runs') return await runPage(rest[0], rest[2], mine);
    if (section === 'pipelines' && rest.length >= 1) return await pipelinePage(rest[0], query, mine);
    if (!section || section === 'pipelines') return await pipelinesPage(mine);
    location.hash = '#/pipelines';
  } catch (e) {
    if (mine !== page || (e instanceof ApiError && e.status === 401)) return;
    main.innerHTML = `<h1>Something went wrong</h1><p class="error">${esc(e.message)}</p>`;
  }
}

window.addEventListener('hashchange', route);
document.getElementById('signout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = '#/login';
});
route();

// ---------------------------------------------------------------------------------------
// Sign in: the API token, checked against the API, kept for the browser session.

function loginPage(query) {
  const why = query.get('why');
  main.innerHTML = `
    <form class="login panel">
      <h1>Sign in to Weir</h1>
      <p class="muted">With this server's API token (<code>$WEIR_API_TOKEN</code>, or <code>server.token</code> in <code>weir.yml</code>).
        It is kept in this tab's session only.</p>
      <input type="password" name="token" placeholder="API token" autocomplete="current-password" required autofocus>
      <button class="primary" type="submit">Sign in</button>
      <p class="error" id="login-error">${why && why !== 'missing token: send Authorization: Bearer <token>' ? esc(why) : ''}</p>
    </form>`;
  main.querySelector('form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = ev.target.token.value.trim();
    const r = await fetch('/api/v1/pipelines', { headers: { Authorization: `Bearer ${token}` } });
    if (!r.ok) {
      const message = await r.json().then((j) => j.error, () => r.statusText);
      document.getElementById('login-error').textContent = r.status === 401 ? 'That is not this server\'s token.' : message;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    const next = query.get('next');
    location.hash = next && !next.startsWith('#/login') ? next : '#/pipelines';
  });
}

// ---------------------------------------------------------------------------------------
// Pipelines: the list, a pipeline's grid, graph and runs, a run's Gantt chart, a task's log.

async function pipelinesPage(mine) {
  const start = performance.now();
  const pipelines = await api('/pipelines');
  const recent = await Promise.all(pipelines.map((p) => api(`/pipelines/${enc(p.name)}/runs?limit=12`)));
  if (mine !== page) return;
  const rows = pipelines.map((p, i) => {
    const marks = recent[i].slice().reverse().map((r) =>
      `<a class="mark s-${esc(r.state)}" href="#/pipelines/${enc(p.name)}/runs/${enc(r.run_id)}" title="${esc(`${r.run_id}: ${r.state}`)}"></a>`).join('');
    return `<tr data-pipeline="${esc(p.name)}">
      <td><a href="#/pipelines/${enc(p.name)}">${esc(p.name)}</a><div class="muted">${esc(p.description || '')}</div></td>
      <td><code>${esc(p.schedule || 'none')}</code> <span class="muted">${esc(p.timezone)}</span></td>
      <td>${p.paused ? '<span class="muted">paused</span>' : esc(when(p.next_run_at))}</td>
      <td><span class="marks">${marks}</span></td>
      <td>${p.tasks.length}</td>
      <td><button type="button" data-act="${p.paused ? 'unpause' : 'pause'}">${p.paused ? 'Unpause' : 'Pause'}</button>
          <button type="button" data-act="trigger">Trigger</button></td>
    </tr>`;
  }).join('');
  main.innerHTML = `<h1>Pipelines</h1>
    ${pipelines.length ? `<table class="pipelines"><thead><tr><th>Pipeline</th><th>Schedule</th><th>Next run</th><th>Last runs</th><th>Tasks</th><th></th></tr></thead>
    <tbody>${rows}</tbody></table>` : '<p class="muted">This project has no pipelines (pipelines/*.yml).</p>'}
    <p class="error" id="act-error"></p>`;
  main.querySelectorAll('tr[data-pipeline] button').forEach((b) => b.addEventListener('click', async () => {
    const name = b.closest('tr').dataset.pipeline;
    try {
      if (b.dataset.act === 'trigger') {
        const run = await api(`/pipelines/${enc(name)}/runs`, { method: 'POST', body: {} });
        location.hash = `#/pipelines/${enc(name)}/runs/${enc(run.run_id)}`;
        return;
      }
      await api(`/pipelines/${enc(name)}/${b.dataset.act}`, { method: 'POST' });
      route();
    } catch (e) {
      document.getElementById('act-error').textContent = e.message;
    }
  }));
  timed('pipelines', start);
}

async function pipelinePage(name, query, mine) {
  const tab = query.get('tab') || 'grid';
  const p = await api(`/pipelines/${enc(name)}`);
  if (mine !== page) return;
  const tabs = ['grid', 'graph', 'runs'].map((t) =>
    `<a href="#/pipelines/${enc(name)}?tab=${t}" class="${t === tab ? 'active' : ''}" data-tab="${t}">${t[0].toUpperCase() + t.slice(1)}</a>`).join('');
  const filters = `
    <label>State <select name="state">${['', 'queued', 'running', 'success', 'failed'].map((s) =>
      `<option value="${s}" ${query.get('state') === s ? 'selected' : ''}>${s || 'any'}</option>`).join('')}</select></label>
    <label>From <input type="date" name="since" value="${esc(query.get('since') || '')}"></label>
    <label>Before <input type="date" name="until" value="${esc(query.get('until') || '')}"></label>
    <label>Runs <select name="limit">${['25', '50', '100'].map((n) =>
      `<option ${(query.get('limit') || '25') === n ? 'selected' : ''}>${n}</option>`).join('')}</select></label>`;
  main.innerHTML = `
    <h1>${esc(p.name)} ${p.paused ? '<span class="state s-queued">paused</span>' : ''}</h1>
    <p class="muted">${esc(p.description || '')} Schedule <code>${esc(p.schedule || 'none')}</code> (${esc(p.timezone)})${p.next_run_at && !p.paused ? `, next run ${esc(when(p.next_run_at))}` : ''}.</p>
    <div class="toolbar">
      <button type="button" class="primary" id="trigger">Trigger run</button>
      <button type="button" id="pause">${p.paused ? 'Unpause' : 'Pause'}</button>
      <span class="error" id="act-error"></span>
    </div>
    <form class="panel" id="trigger-form" hidden>
      <label>Params (JSON)<br><textarea name="params" rows="3" cols="60">{}</textarea></label><br>
      <label>Logical date <input name="date" placeholder="2024-03-01 (optional)"></label>
      <button class="primary" type="submit">Queue run</button>
    </form>
    <nav class="tabs">${tabs}</nav>
    <form class="toolbar" id="filters" ${tab === 'graph' ? 'hidden' : ''}>${filters}</form>
    <div id="tab"></div>`;
  document.getElementById('pause').addEventListener('click', async () => {
    try {
      await api(`/pipelines/${enc(name)}/${p.paused ? 'unpause' : 'pause'}`, { method: 'POST' });
      route();
    } catch (e) { document.getElementById('act-error').textContent = e.message; }
  });
  const form = document.getElementById('trigger-form');
  document.getElementById('trigger').addEventListener('click', () => { form.hidden = !form.hidden; });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const body = { params: JSON.parse(form.params.value || '{}') };
      if (form.date.value.trim()) body.date = form.date.value.trim();
      const run = await api(`/pipelines/${enc(name)}/runs`, { method: 'POST', body });
      form.hidden = true;
      document.getElementById('act-error').textContent = '';
      if (tab !== 'grid') location.hash = `#/pipelines/${enc(name)}/runs/${enc(run.run_id)}`;
      else await refresh();
    } catch (e) { document.getElementById('act-error').textContent = e.message; }
  });
  document.getElementById('filters').addEventListener('change', (ev) => setQuery({ [ev.target.name]: ev.target.value }));
  const params = new URLSearchParams({ limit: query.get('limit') || '25' });
  for (const k of ['state', 'since', 'until']) if (query.get(k)) params.set(k, query.get(k));
  let shown = '';
  const refresh = async () => {
    const start = performance.now();
    const grid = await api(`/pipelines/${enc(name)}/grid?${params}`);
    if (mine !== page) return;
    // Drawn again only when something changed: a zoomed graph stays as it is.
    const key = JSON.stringify(grid);
    if (key === shown) return;
    shown = key;
    const el = document.getElementById('tab');
    if (tab === 'grid') el.innerHTML = gridHtml(name, grid);
    else if (tab === 'graph') el.innerHTML = taskGraphHtml(name, grid);
    else el.innerHTML = runsHtml(name, grid.runs);
    if (tab === 'graph') wireGraph(el.querySelector('svg'));
    timed(tab, start);
  };
  await refresh();
  // The page follows the runs: new ones, and their tasks as they go.
  every(2000, refresh);
}

function gridHtml(name, grid) {
  const runs = grid.runs.slice().reverse(); // oldest on the left, as the newest grows on the right
  if (!runs.length) return '<p class="muted">No runs match.</p>';
  const longest = Math.max(1, ...runs.map((r) => seconds(r.started_at, r.finished_at) || 0));
  const head = runs.map((r) => {
    const d = seconds(r.started_at, r.finished_at);
    const h = Math.max(3, Math.round(((d || 0) / longest) * 44));
    return `<td class="runhead"><a class="bar s-${esc(r.state)}" style="height:${h}px" href="#/pipelines/${enc(name)}/runs/${enc(r.run_id)}"
      title="${esc(`${r.run_id}\n${r.state}, ${duration(d)}\n${when(r.queued_at)}`)}"></a></td>`;
  }).join('');
  const cells = new Map(runs.map((r) => [r.run_id, new Map((r.tasks || []).map((t) => [t.task, t]))]));
  const body = grid.tasks.map((t) => `<tr><th class="task">${esc(t.name)}</th>${runs.map((r) => {
    const ti = cells.get(r.run_id).get(t.name);
    const s = ti ? ti.state : 'none';
    const tip = ti ? `${t.name} · ${r.run_id}\n${s}, try ${ti.try_number}, ${duration(seconds(ti.started_at, ti.finished_at))}` : `${t.name} · ${r.run_id}\nnot started`;
    return `<td><a class="cell s-${esc(s)}" data-task="${esc(t.name)}" data-run="${esc(r.run_id)}" data-state="${esc(s)}"
      href="#/pipelines/${enc(name)}/runs/${enc(r.run_id)}/tasks/${enc(t.name)}" title="${esc(tip)}"></a></td>`;
  }).join('')}</tr>`).join('');
  return `<table class="grid"><tbody><tr><th></th>${head}</tr>${body}</tbody></table>${legend()}`;
}

function legend() {
  const states = [['success', '--success'], ['running', '--running'], ['failed', '--failed'], ['up for retry', '--retry'],
    ['upstream failed', '--upstream'], ['skipped', '--skipped'], ['queued / not started', '--queued']];
  return `<p class="legend">${states.map(([n, c]) => `<span style="--c: var(${c})">${n}</span>`).join('')}</p>`;
}

function taskGraphHtml(name, grid) {
  const last = grid.runs[0];
  const states = new Map((last?.tasks || []).map((t) => [t.task, t.state]));
  const nodes = grid.tasks.map((t) => ({
    id: t.name, label: t.name, sub: t.kind, status: states.get(t.name),
    href: last ? `#/pipelines/${enc(name)}/runs/${enc(last.run_id)}/tasks/${enc(t.name)}` : null,
  }));
  const edges = grid.tasks.flatMap((t) => t.after.map((a) => [a, t.name]));
  return `<p class="muted">${last ? `Coloured by run ${esc(last.run_id)}.` : 'No runs yet.'}</p>${graphSvg(nodes, edges)}`;
}

function runsHtml(name, runs) {
  if (!runs.length) return '<p class="muted">No runs match.</p>';
  return `<table class="runs"><thead><tr><th>Run</th><th>State</th><th>Type</th><th>Data interval</th><th>Queued</th><th>Duration</th><th>Message</th></tr></thead><tbody>
    ${runs.map((r) => `<tr><td><a href="#/pipelines/${enc(name)}/runs/${enc(r.run_id)}">${esc(r.run_id)}</a></td><td>${state(r.state)}</td>
      <td>${esc(r.run_type)}</td><td>${esc(when(r.data_interval_start))} – ${esc(when(r.data_interval_end))}</td>
      <td>${esc(when(r.queued_at))}</td><td>${esc(duration(seconds(r.started_at, r.finished_at)))}</td><td>${esc(r.message || '')}</td></tr>`).join('')}
    </tbody></table>`;
}

async function runPage(name, runId, mine) {
  const [p, first] = await Promise.all([api(`/pipelines/${enc(name)}`), api(`/pipelines/${enc(name)}/runs/${enc(runId)}`)]);
  if (mine !== page) return;
  const draw = (run) => {
    const start = performance.now();
    const byName = new Map((run.tasks || []).map((t) => [t.task, t]));
    const failed = (run.tasks || []).filter((t) => ['failed', 'upstream_failed'].includes(t.state));
    main.innerHTML = `
      <p><a href="#/pipelines/${enc(name)}">${esc(name)}</a></p>
      <h1>Run ${esc(run.run_id)} ${state(run.state)}</h1>
      <p class="muted">${esc(run.run_type)} run; data interval ${esc(when(run.data_interval_start))} – ${esc(when(run.data_interval_end))};
        queued ${esc(when(run.queued_at))}${run.owner ? `, by ${esc(run.owner)}` : ''}. ${esc(run.message || '')}</p>
      <p class="muted">Params <code>${esc(JSON.stringify(run.params))}</code></p>
      <div class="toolbar">
        <button type="button" id="retry" ${failed.length && ['success', 'failed'].includes(run.state) ? '' : 'disabled'}>Clear failed tasks (${failed.length})</button>
        <span class="error" id="act-error"></span>
      </div>
      <h2>Gantt</h2>${ganttSvg(name, run)}
      <h2>Tasks</h2>
      <table class="tasks"><thead><tr><th>Task</th><th>State</th><th>Try</th><th>Started</th><th>Duration</th><th>Message</th><th></th></tr></thead><tbody>
      ${p.tasks.map((t) => {
        const ti = byName.get(t.name);
        return `<tr data-task="${esc(t.name)}"><td><a href="#/pipelines/${enc(name)}/runs/${enc(run.run_id)}/tasks/${enc(t.name)}">${esc(t.name)}</a>
          <span class="muted">${esc(t.kind)}</span></td><td>${state(ti?.state)}</td><td>${ti ? ti.try_number : ''}</td>
          <td>${esc(when(ti?.started_at))}</td><td>${esc(duration(seconds(ti?.started_at, ti?.finished_at)))}</td><td>${esc(ti?.message || '')}</td>
          <td><button type="button" data-clear="${esc(t.name)}" ${ti && ['success', 'failed'].includes(run.state) ? '' : 'disabled'}>Clear</button></td></tr>`;
      }).join('')}</tbody></table>`;
    main.querySelectorAll('button[data-clear]').forEach((b) => b.addEventListener('click', () => clear(name, run.run_id, b.dataset.clear, true)));
    document.getElementById('retry').addEventListener('click', async () => {
      try {
        await api(`/pipelines/${enc(name)}/runs/${enc(run.run_id)}/clear`, { method: 'POST', body: { only_failed: true } });
        route();
      } catch (e) { document.getElementById('act-error').textContent = e.message; }
    });
    timed('run', start);
    return run.state === 'queued' || run.state === 'running';
  };
  let live = draw(first);
  every(1500, async () => {
    if (!live) return;
    const run = await api(`/pipelines/${enc(name)}/runs/${enc(runId)}`);
    if (mine === page) live = draw(run);
  });
}

/// Clears a task (and with `downstream`, what runs after it) so the scheduler runs it again,
/// then follows.
async function clear(name, runId, task, downstream) {
  try {
    await api(`/pipelines/${enc(name)}/runs/${enc(runId)}/tasks/${enc(task)}/clear`, { method: 'POST', body: { downstream } });
    route();
  } catch (e) {
    const el = document.getElementById('act-error');
    if (el) el.textContent = e.message;
  }
}

function ganttSvg(name, run) {
  const tasks = (run.tasks || []).filter((t) => t.started_at).sort((a, b) => new Date(a.started_at) - new Date(b.started_at));
  if (!tasks.length) return '<p class="muted">No task has started yet.</p>';
  const t0 = Math.min(...tasks.map((t) => new Date(t.started_at)));
  const t1 = Math.max(...tasks.map((t) => (t.finished_at ? new Date(t.finished_at) : new Date())).concat([t0 + 1000]));
  const labelW = 180, width = 900, row = 24, chartW = width - labelW - 20;
  const x = (t) => labelW + ((t - t0) / (t1 - t0)) * chartW;
  const bars = tasks.map((t, i) => {
    const a = x(new Date(t.started_at));
    const b = x(t.finished_at ? new Date(t.finished_at) : new Date());
    const y = 24 + i * row;
    const d = seconds(t.started_at, t.finished_at);
    return `<a href="#/pipelines/${enc(name)}/runs/${enc(run.run_id)}/tasks/${enc(t.task)}"><title>${esc(`${t.task}: ${t.state}, ${duration(d)}`)}</title>
      <text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${esc(t.task)}</text>
      <rect class="s-${esc(t.state)}" x="${a}" y="${y + 3}" width="${Math.max(2, b - a)}" height="${row - 8}" rx="3" style="fill: var(--${cssState(t.state)})"></rect>
      <text x="${Math.max(2, b - a) + a + 6}" y="${y + 15}" class="muted">${esc(duration(d))}</text></a>`;
  }).join('');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => `<text x="${labelW + f * chartW}" y="14" text-anchor="middle">${esc(duration(((t1 - t0) * f) / 1000))}</text>`).join('');
  return `<svg class="gantt" width="${width}" height="${30 + tasks.length * row}" role="img" aria-label="Gantt chart">${ticks}${bars}</svg>`;
}

function cssState(s) {
  return ({ success: 'success', pass: 'success', failed: 'failed', error: 'failed', fail: 'failed', running: 'running', up_for_retry: 'retry',
    up_for_reschedule: 'retry', warn: 'retry', skipped: 'skipped', upstream_failed: 'upstream' })[s] || 'queued';
}

async function taskPage(name, runId, task, query, mine) {
  const base = `/pipelines/${enc(name)}/runs/${enc(runId)}/tasks/${enc(task)}`;
  const [run, detail] = await Promise.all([api(`/pipelines/${enc(name)}/runs/${enc(runId)}`), api(base)]);
  if (mine !== page) return;
  const attempts = detail.attempts;
  const chosen = Number(query.get('attempt')) || (attempts.length ? attempts[attempts.length - 1].attempt : 0);
  const attempt = attempts.find((a) => a.attempt === chosen);
  const finished = ['success', 'failed'].includes(run.state);
  main.innerHTML = `
    <p><a href="#/pipelines/${enc(name)}">${esc(name)}</a> / <a href="#/pipelines/${enc(name)}/runs/${enc(runId)}">${esc(runId)}</a></p>
    <h1>${esc(task)} ${state(detail.instance?.state)}</h1>
    <p class="muted">${esc(detail.instance?.message || '')}</p>
    <div class="toolbar">
      <button type="button" id="clear" ${finished ? '' : 'disabled'}>Clear</button>
      <button type="button" id="clear-down" ${finished ? '' : 'disabled'}>Clear with downstream</button>
      <span class="muted">${finished ? '' : 'Tasks of a run can be cleared once it has finished.'}</span>
      <span class="error" id="act-error"></span>
    </div>
    <nav class="tabs">${attempts.map((a) => `<a href="#${base}?attempt=${a.attempt}" class="${a.attempt === chosen ? 'active' : ''}"
      data-attempt="${a.attempt}">Attempt ${a.attempt} ${state(a.state)}</a>`).join('') || '<span class="muted">No attempt yet.</span>'}</nav>
    ${attempt ? `<p class="muted">Started ${esc(when(attempt.started_at))}${attempt.finished_at ? `, took ${esc(duration(seconds(attempt.started_at, attempt.finished_at)))}` : ', running'}${attempt.exit_code != null ? `, exit code ${attempt.exit_code}` : ''}${attempt.worker ? ` on ${esc(attempt.worker)}` : ''}. ${esc(attempt.message || '')}</p>` : ''}
    <pre class="log" id="log"></pre>`;
  document.getElementById('clear').addEventListener('click', () => clear(name, runId, task, false));
  document.getElementById('clear-down').addEventListener('click', () => clear(name, runId, task, true));
  // Until the task is done, the page follows it: a new attempt, or a new state, draws it again.
  const done = ['success', 'failed', 'skipped', 'upstream_failed'].includes(detail.instance?.state) && (!attempt || attempt.finished_at);
  if (!done) {
    every(1500, async () => {
      const d = await api(base);
      if (mine === page && (d.attempts.length !== attempts.length || d.instance?.state !== detail.instance?.state)) route();
    });
  }
  if (!attempt) return;
  // The log, then what is appended to it while the attempt runs.
  let offset = 0;
  const log = document.getElementById('log');
  const follow = async () => {
    const r = await api(`${base}/logs?attempt=${chosen}&offset=${offset}`, { raw: true });
    const text = await r.text();
    if (mine !== page) return;
    offset = Number(r.headers.get('weir-log-size')) || offset + text.length;
    if (text) {
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(text);
      if (atEnd) log.scrollTop = log.scrollHeight;
    }
  };
  await follow();
  if (!attempt.finished_at) every(1000, follow);
}

// ---------------------------------------------------------------------------------------
// Graphs: a layered layout, left to right, drawn as SVG, zoomed with the wheel, panned by drag.

/// Places nodes in columns by their longest path from a root, orders each column to keep
/// edges short (a few barycentre sweeps each way), and returns each node's position.
function layout(ids, edges) {
  const preds = new Map(ids.map((i) => [i, []]));
  const succs = new Map(ids.map((i) => [i, []]));
  for (const [a, b] of edges) if (preds.has(a) && preds.has(b) && a !== b) { preds.get(b).push(a); succs.get(a).push(b); }
  const indeg = new Map(ids.map((i) => [i, preds.get(i).length]));
  const layer = new Map();
  const queue = ids.filter((i) => indeg.get(i) === 0);
  queue.forEach((i) => layer.set(i, 0));
  for (let k = 0; k < queue.length; k++) {
    const n = queue[k];
    for (const s of succs.get(n)) {
      layer.set(s, Math.max(layer.get(s) ?? 0, layer.get(n) + 1));
      indeg.set(s, indeg.get(s) - 1);
      if (indeg.get(s) === 0) queue.push(s);
    }
  }
  for (const i of ids) if (!layer.has(i)) layer.set(i, 0); // in a cycle: shown, not ordered
  const layers = [];
  for (const i of ids) (layers[layer.get(i)] ||= []).push(i);
  const cols = layers.filter(Boolean);
  const pos = new Map();
  const place = (col) => col.forEach((n, k) => pos.set(n, k));
  cols.forEach(place);
  const bary = (n, next) => {
    const ns = next.get(n).filter((m) => pos.has(m));
    return ns.length ? ns.reduce((s, m) => s + pos.get(m), 0) / ns.length : pos.get(n);
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let c = 1; c < cols.length; c++) { const key = new Map(cols[c].map((n) => [n, bary(n, preds)])); cols[c].sort((a, b) => key.get(a) - key.get(b)); place(cols[c]); }
    for (let c = cols.length - 2; c >= 0; c--) { const key = new Map(cols[c].map((n) => [n, bary(n, succs)])); cols[c].sort((a, b) => key.get(a) - key.get(b)); place(cols[c]); }
  }
  const tallest = Math.max(1, ...cols.map((c) => c.length));
  const out = new Map();
  cols.forEach((col, c) => col.forEach((n, k) => out.set(n, { x: c * 250, y: (k + (tallest - col.length) / 2) * 44 })));
  return { pos: out, width: cols.length * 250, height: tallest * 44 };
}

function graphSvg(nodes, edges) {
  const { pos, width, height } = layout(nodes.map((n) => n.id), edges);
  const W = 200, H = 32;
  const paths = edges.filter(([a, b]) => pos.has(a) && pos.has(b)).map(([a, b]) => {
    const p = pos.get(a), q = pos.get(b);
    const x1 = p.x + W, y1 = p.y + H / 2, x2 = q.x, y2 = q.y + H / 2, mx = (x1 + x2) / 2;
    return `<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}"/>`;
  }).join('');
  const boxes = nodes.map((n) => {
    const p = pos.get(n.id);
    const label = n.label.length > 26 ? `${n.label.slice(0, 25)}…` : n.label;
    const colour = n.status ? `var(--${cssState(n.status)})` : '#cbd5e1';
    return `<g class="node" data-id="${esc(n.id)}" ${n.href ? `data-href="${esc(n.href)}"` : ''} transform="translate(${p.x},${p.y})">
      <title>${esc(`${n.label} (${n.sub})${n.status ? `: ${n.status}` : ''}`)}</title>
      <rect width="${W}" height="${H}" style="stroke:${colour}"></rect><rect width="6" height="${H}" style="fill:${colour};stroke:none"></rect>
      <text x="12" y="13" class="kind">${esc(n.sub)}</text><text x="12" y="26">${esc(label)}</text></g>`;
  }).join('');
  const pad = 20;
  return `<svg class="graph" viewBox="${-pad} ${-pad} ${Math.max(width, 400) + 2 * pad} ${Math.max(height, 200) + 2 * pad}" data-nodes="${nodes.length}">
    <g>${paths}${boxes}</g></svg>`;
}

/// Wheel to zoom about the pointer, drag to pan, click a node to open it.
function wireGraph(svg) {
  if (!svg) return;
  let [x, y, w, h] = svg.getAttribute('viewBox').split(' ').map(Number);
  const set = () => svg.setAttribute('viewBox', `${x} ${y} ${w} ${h}`);
  svg.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
    const k = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    x += fx * w * (1 - k); y += fy * h * (1 - k); w *= k; h *= k;
    set();
  }, { passive: false });
  let drag = null;
  svg.addEventListener('pointerdown', (ev) => { drag = { sx: ev.clientX, sy: ev.clientY, x, y, moved: false }; });
  svg.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    const dx = ev.clientX - drag.sx, dy = ev.clientY - drag.sy;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    x = drag.x - (dx * w) / r.width; y = drag.y - (dy * h) / r.height;
    set();
  });
  svg.addEventListener('pointerup', (ev) => {
    const moved = drag?.moved;
    drag = null;
    const g = ev.target.closest('g.node');
    if (!moved && g?.dataset.href) location.hash = g.dataset.href;
  });
  svg.addEventListener('pointerleave', () => { drag = null; });
}

// ---------------------------------------------------------------------------------------
// Assets: the whole project as one graph, and a page per node with its column lineage.

async function assetsPage(query, mine) {
  const select = query.get('select') || '';
  const tests = query.get('tests') === '1';
  main.innerHTML = `<h1>Assets</h1>
    <form class="toolbar" id="select">
      <input name="select" size="40" placeholder="Selection, as in dbt: +daily_revenue, tag:nightly" value="${esc(select)}">
      <button type="submit">Select</button>
      <label><input type="checkbox" name="tests" ${tests ? 'checked' : ''}> tests and checks</label>
      <span class="muted" id="count"></span><span class="error" id="select-error"></span>
    </form>
    <p class="legend">${[['success', '--success'], ['error / fail', '--failed'], ['warn', '--retry'], ['skipped', '--skipped'], ['never built', '--queued']]
      .map(([n, c]) => `<span style="--c: var(${c})">${n}</span>`).join('')}</p>
    <div id="graph"><p class="muted">Loading…</p></div>`;
  const form = document.getElementById('select');
  form.addEventListener('submit', (ev) => { ev.preventDefault(); setQuery({ select: form.select.value.trim() }); });
  form.tests.addEventListener('change', () => setQuery({ tests: form.tests.checked ? '1' : '' }));
  const start = performance.now();
  let graph;
  try {
    graph = await api(`/assets${select ? `?select=${enc(select)}` : ''}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 400) { document.getElementById('select-error').textContent = e.message; document.getElementById('graph').innerHTML = ''; return; }
    throw e;
  }
  if (mine !== page) return;
  const shown = graph.nodes.filter((n) => tests || !['test', 'check'].includes(n.kind));
  const ids = new Set(shown.map((n) => n.id));
  const nodes = shown.map((n) => ({ id: n.id, label: n.name, sub: n.kind, status: n.status, href: `#/assets/${enc(n.id)}` }));
  const edges = shown.flatMap((n) => n.depends_on.filter((d) => ids.has(d)).map((d) => [d, n.id]));
  document.getElementById('count').textContent = `${shown.length} node${shown.length === 1 ? '' : 's'}`;
  const el = document.getElementById('graph');
  const laid = performance.now();
  el.innerHTML = shown.length ? graphSvg(nodes, edges) : '<p class="muted">The selection matches no node.</p>';
  window.weirTimings = { ...(window.weirTimings || {}), layout: performance.now() - laid };
  wireGraph(el.querySelector('svg'));
  timed('assets', start);
}

async function assetPage(id, query, mine) {
  const start = performance.now();
  const column = query.get('column');
  const [a, lineage] = await Promise.all([
    api(`/assets/${enc(id)}`),
    column ? api(`/assets/${enc(id)}/lineage?column=${enc(column)}`).catch((e) => ({ error: e.message })) : null,
  ]);
  if (mine !== page) return;
  const link = (i) => `<a href="#/assets/${enc(i)}">${esc(short(i))}</a> <span class="muted">${esc(i.split('.')[0])}</span>`;
  const traced = !!a.relation; // every column of a table has lineage: what feeds it, what it feeds
  main.innerHTML = `
    <p><a href="#/assets?select=${enc(`+${a.name}+`)}">Assets</a></p>
    <h1>${esc(a.name)} <span class="muted">${esc(a.kind)}${a.materialized ? `, ${esc(a.materialized)}` : ''}</span> ${a.status ? state(a.status) : ''}</h1>
    <p>${esc(a.description)}</p>
    <p class="muted">${a.relation ? `<code>${esc(a.relation)}</code> · ` : ''}${esc(a.path)}</p>
    <div class="split">
      <div>
        ${a.relation ? `<h2>Columns</h2>
        ${a.columns.length ? `<table class="columns"><thead><tr><th>Column</th><th>Type</th><th>Description</th>${traced ? '<th></th>' : ''}</tr></thead><tbody>
        ${a.columns.map((c) => `<tr${c.name === column ? ' class="active"' : ''}><td><code>${esc(c.name)}</code></td><td>${esc(c.data_type || '')}</td><td>${esc(c.description)}</td>
          ${traced ? `<td><a href="#/assets/${enc(id)}?column=${enc(c.name)}" data-lineage="${esc(c.name)}">lineage</a></td>` : ''}</tr>`).join('')}
        </tbody></table>` : '<p class="muted">No columns known: it is not built, and its YAML declares none.</p>'}` : ''}
        ${column ? `<h2>Lineage of ${esc(column)}</h2>${lineageHtml(lineage)}` : ''}
        <h2>Upstream</h2>${a.upstream.length ? `<ul>${a.upstream.map((u) => `<li>${link(u)}</li>`).join('')}</ul>` : '<p class="muted">None.</p>'}
        <h2>Downstream</h2>${a.downstream.length ? `<ul>${a.downstream.map((u) => `<li>${link(u)}</li>`).join('')}</ul>` : '<p class="muted">None.</p>'}
      </div>
      <div>
        <h2>Builds</h2>
        ${a.builds.length ? `<table class="builds"><thead><tr><th>Status</th><th>Finished</th><th>Took</th><th>Rows</th><th>By</th></tr></thead><tbody>
        ${a.builds.map((b) => `<tr><td>${state(b.status)}</td><td>${esc(when(b.completed_at))}</td><td>${esc(duration(b.seconds))}</td><td>${b.rows ?? ''}</td>
          <td>${b.pipeline ? `<a href="#/pipelines/${enc(b.pipeline)}/runs/${enc(b.run_id)}">${esc(b.pipeline)}</a>` : 'weir build'}</td></tr>
          ${b.message && b.status !== 'success' ? `<tr><td colspan="5" class="error">${esc(b.message)}</td></tr>` : ''}`).join('')}
        </tbody></table>` : '<p class="muted">Never built while this store kept history.</p>'}
        <h2>Tests and checks</h2>
        ${a.tests.length ? `<ul>${a.tests.map((t) => `<li>${t.status ? state(t.status) : state('none')} <a href="#/assets/${enc(t.id)}">${esc(t.name)}</a> <span class="muted">${esc(t.kind)}</span></li>`).join('')}</ul>` : '<p class="muted">None.</p>'}
        <div id="history"></div>
        ${a.compiled_sql != null ? `<h2>Compiled SQL</h2><pre class="sql">${esc(a.compiled_sql)}</pre>` : ''}
        ${a.compile_error ? `<h2>Compiled SQL</h2><p class="error">${esc(a.compile_error)}</p>` : ''}
      </div>
    </div>`;
  if (a.kind === 'check') await checkHistory(id, mine);
  if (a.kind === 'load' || a.kind === 'cdc') await loadHistory(id, query, mine);
  timed('asset', start);
}

/// A check suite's checks, each as a chart of its measured values with its threshold.
async function checkHistory(id, mine) {
  const h = await api(`/assets/${enc(id)}/checks?limit=100`);
  if (mine !== page) return;
  document.getElementById('history').innerHTML = `<h2>Checks on <code>${esc(h.dataset)}</code></h2>
    ${h.checks.map((c) => `<div class="panel check" data-check="${esc(c.check)}">
      <p><code>${esc(c.check)}</code> ${c.points.length ? state(c.points[c.points.length - 1].status) : state('none')} <span class="muted">${esc(c.location)}</span></p>
      ${c.points.length ? chartSvg(c) : '<p class="muted">Never measured.</p>'}
      ${c.points.length && c.points[c.points.length - 1].message ? `<p class="error">${esc(c.points[c.points.length - 1].message)}</p>` : ''}
      ${c.samples?.length ? `<p class="muted">Failing rows, sampled</p>${tableHtml(Object.keys(c.samples[0]), c.samples.map((r) => Object.values(r)))}` : ''}
    </div>`).join('')}`;
}

function chartSvg(c) {
  const pts = c.points.filter((p) => p.value != null);
  if (!pts.length) return '<p class="muted">No numeric values measured.</p>';
  const W = 520, H = 150, L = 48, R = 10, T = 10, B = 22;
  const values = pts.map((p) => p.value).concat(c.threshold_values);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (lo === hi) { lo -= 1; hi += 1; }
  const times = pts.map((p) => new Date(p.measured_at).getTime());
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const line = pts.map((p, i) => `${i ? 'L' : 'M'}${x(times[i]).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ');
  const dots = pts.map((p, i) => `<circle cx="${x(times[i])}" cy="${y(p.value)}" r="3.5" style="fill: var(--${cssState(p.status)})"><title>${esc(`${p.value} (${p.status}) ${when(p.measured_at)}`)}</title></circle>`).join('');
  const limits = c.threshold_values.map((v) => `<line class="threshold" x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"></line><text x="${W - R}" y="${y(v) - 3}" text-anchor="end">${esc(c.threshold)}</text>`).join('');
  const axis = [lo, hi].map((v) => `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${esc(Number(v.toPrecision(4)))}</text>`).join('');
  return `<svg class="chart" width="${W}" height="${H}" role="img" aria-label="${esc(c.check)} over time">${axis}${limits}<path class="line" d="${line}"></path>${dots}
    <text x="${L}" y="${H - 6}">${esc(when(pts[0].measured_at))}</text><text x="${W - R}" y="${H - 6}" text-anchor="end">${esc(when(pts[pts.length - 1].measured_at))}</text></svg>`;
}

/// A load's runs, the cursor, and the rows a chosen run rejected.
async function loadHistory(id, query, mine) {
  const h = await api(`/assets/${enc(id)}/loads?limit=50`);
  if (mine !== page) return;
  const chosen = query.get('rejected');
  const el = document.getElementById('history');
  el.innerHTML = `<h2>Load runs into <code>${esc(h.destination)}</code></h2>
    <p class="muted">Cursor ${h.cursor ? `at <code>${esc(h.cursor)}</code>` : 'none'}.</p>
    ${h.runs.length ? `<table class="loads"><thead><tr><th>Status</th><th>Started</th><th>Took</th><th>Read</th><th>Loaded</th><th>Rejected</th><th>Cursor</th></tr></thead><tbody>
    ${h.runs.map((r) => `<tr data-load="${esc(r.load_id)}"><td>${state(r.status === 'committed' ? 'success' : r.status)}</td><td>${esc(when(r.started_at))}</td>
      <td>${esc(duration(seconds(r.started_at, r.finished_at)))}</td><td>${r.rows_read ?? ''}</td><td>${r.rows_loaded ?? ''}</td>
      <td>${r.rows_rejected ? `<a href="#/assets/${enc(id)}?rejected=${enc(r.load_id)}">${r.rows_rejected}</a>` : (r.rows_rejected ?? '')}</td><td><code>${esc(r.cursor || '')}</code></td></tr>
      ${r.message && r.status !== 'committed' ? `<tr><td colspan="7" class="error">${esc(r.message)}</td></tr>` : ''}`).join('')}
    </tbody></table>` : '<p class="muted">No runs recorded.</p>'}
    <div id="rejected"></div>`;
  if (chosen) {
    const rows = await api(`/assets/${enc(id)}/rejected?load_id=${enc(chosen)}`);
    if (mine !== page) return;
    document.getElementById('rejected').innerHTML = `<h2>Rejected by run ${esc(chosen)}</h2>${rows.rows.length ? tableHtml(rows.columns, rows.rows, 'rejected') : '<p class="muted">None kept.</p>'}`;
  }
}

function tableHtml(columns, rows, cls = '') {
  return `<table class="${cls}"><thead><tr>${columns.map((c) => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody>
    ${rows.map((r) => `<tr>${r.map((v) => `<td><code>${esc(typeof v === 'object' && v !== null ? JSON.stringify(v) : v)}</code></td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

/// The check suites or the loads of the project, each with its last status.
async function kindPage(kind, mine) {
  const start = performance.now();
  const graph = await api(`/assets?select=${enc(`resource_type:${kind}`)}`);
  if (mine !== page) return;
  const title = kind === 'check' ? 'Checks' : 'Loads';
  const rows = graph.nodes.map((n) => `<tr data-id="${esc(n.id)}"><td><a href="#/assets/${enc(n.id)}">${esc(n.name)}</a></td><td>${esc(n.kind)}</td>
    <td>${kind === 'check' ? esc(n.depends_on.map(short).join(', ')) : `<code>${esc(n.relation || '')}</code>`}</td>
    <td>${n.status ? state(n.status) : state('none')}</td><td>${esc(when(n.last_built_at))}</td></tr>`).join('');
  main.innerHTML = `<h1>${title}</h1>${graph.nodes.length ? `<table class="${kind}s"><thead><tr><th>Name</th><th>Kind</th><th>${kind === 'check' ? 'Checks' : 'Writes'}</th>
    <th>Last status</th><th>When</th></tr></thead><tbody>${rows}</tbody></table>` : `<p class="muted">This project has no ${title.toLowerCase()}.</p>`}`;
  timed(`${kind}s`, start);
}

function lineageHtml(l) {
  if (!l) return '';
  if (l.error) return `<p class="error">${esc(l.error)}</p>`;
  const rows = l.steps.map((s) => {
    const arrow = s.depth === 0 ? '' : s.direction === 'down' ? '→ ' : '← ';
    const pad = `padding-left:${8 + s.depth * 18}px`;
    const where = s.node && s.expression != null
      ? `<a href="#/assets/${enc(s.node)}?column=${enc(s.column)}">${esc(short(s.node))}.${esc(s.column)}</a>`
      : `${s.node ? `<a href="#/assets/${enc(s.node)}">${esc(s.relation || short(s.node))}</a>` : esc(s.relation)}${(s.relation || '').includes(' ') ? ': ' : '.'}${esc(s.column)} <span class="muted">${esc(s.node ? s.node.split('.')[0] : 'outside the project')}</span>`;
    const expr = s.expression != null ? ` = <code>${esc(s.expression)}</code>` : '';
    const note = s.opaque ? ` <span class="muted">(not traced further: ${esc(s.opaque)})</span>` : '';
    return `<tr data-depth="${s.depth}" data-direction="${s.direction}"><td style="${pad}">${arrow}${where}${expr}${note}</td></tr>`;
  }).join('');
  return `<table class="lineage"><tbody>${rows}</tbody></table>`;
}

// ---------------------------------------------------------------------------------------
// Streams and CDC: each stream job's live figures and each CDC source's position, refreshed
// every two seconds.

async function streamsPage(mine) {
  const draw = async () => {
    const start = performance.now();
    const [jobs, cdc] = await Promise.all([api('/streams'), api('/cdc')]);
    if (mine !== page) return;
    main.innerHTML = `<h1>Stream jobs</h1>
      ${jobs.length ? `<table class="streams"><thead><tr><th>Job</th><th>State</th><th>Reads → writes</th><th>Window</th><th>Events/s</th><th>Lag</th>
        <th>Watermark</th><th>Read</th><th>Late</th><th>Rejected</th><th>Open windows</th><th>Latency p50 / p99</th></tr></thead><tbody>
      ${jobs.map((j) => `<tr data-job="${esc(j.name)}"><td>${esc(j.name)}<div class="muted">${esc(j.path)}</div></td><td>${state(j.state)}${j.restarts ? ` <span class="muted">${j.restarts} restarts</span>` : ''}
        ${j.last_error ? `<div class="error">${esc(j.last_error)}</div>` : ''}</td>
        <td>${esc(j.topic)}${j.joined_topic ? ` ⋈ ${esc(j.joined_topic)}` : ''} → <code>${esc(j.sink)}</code></td><td>${esc(j.window)}</td>
        <td>${Math.round(j.events_per_second).toLocaleString()}</td><td>${j.lag.toLocaleString()}</td><td>${esc(when(j.watermark))}</td>
        <td>${j.events.read.toLocaleString()}</td><td>${j.events.late.toLocaleString()}</td><td>${j.events.rejected.toLocaleString()}</td><td>${j.windows_held}</td>
        <td>${j.result_latency_ms ? `${j.result_latency_ms.p50} / ${j.result_latency_ms.p99} ms` : ''}</td></tr>`).join('')}
      </tbody></table>` : '<p class="muted">This project has no stream jobs (streams/*.sql).</p>'}
      <h1>CDC sources</h1>
      ${cdc.length ? `<table class="cdc"><thead><tr><th>Source</th><th>State</th><th>Server at</th><th>Slot confirmed</th><th>Mirrors at</th><th>Lag</th><th>Retained WAL</th></tr></thead><tbody>
      ${cdc.map((c) => `<tr data-source="${esc(c.name)}"><td>${esc(c.name)}<div class="muted">${esc(c.kind)}: ${esc(c.source)}, ${esc(c.tables.join(', '))}</div></td>
        <td>${state(c.state === 'following' ? 'running' : c.state === 'error' || c.state.includes('lost') || c.state.includes('missing') ? 'failed' : 'queued')} ${esc(c.state)}
          ${c.error ? `<div class="error">${esc(c.error)}</div>` : ''}</td>
        <td><code>${esc(c.server_position || '')}</code></td><td><code>${esc(c.confirmed || '')}</code></td>
        <td><code>${esc(c.mirror_position || '')}</code><div class="muted">${esc(c.mirror_updated_at || '')}</div></td>
        <td>${c.lag_bytes != null ? `${bytes(c.lag_bytes)}` : ''}${c.lag_seconds != null ? `, ${duration(c.lag_seconds)}` : ''}</td>
        <td>${c.retained_wal_bytes != null ? `<span class="${c.retained_wal_bytes > c.max_retained_wal_bytes ? 'error' : ''}">${bytes(c.retained_wal_bytes)}</span>
          <span class="muted">of ${bytes(c.max_retained_wal_bytes)}${c.wal_status ? `, ${esc(c.wal_status)}` : ''}</span>` : ''}</td></tr>`).join('')}
      </tbody></table>` : '<p class="muted">This project has no CDC sources (loads with <code>mode: cdc</code>).</p>'}`;
    timed('streams', start);
  };
  await draw();
  every(2000, draw);
}
