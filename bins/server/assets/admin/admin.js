// The operator's page of wshub (GET /admin, server.admin_page): totals and rates, the busiest
// projects, a paged project list, one project's connections and presence, a live tail of its
// messages, and disconnect/close buttons behind a confirmation.
// The admin key lives in this tab's sessionStorage and travels as `Authorization: Bearer`,
// never in a URL. Everything the server sends is shown with textContent, never as HTML.
// Served with a strict CSP: no inline code, no other origin, nothing fetched from outside.

const KEY = 'wshub.admin.key';
const POLL_MS = 1000;
const TAIL_ROWS = 200;
const TAIL_RETRY_MS = 2000;
const PROJECT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem(KEY) || '';
let project = null;
let tail = null;
let pollTimer = null;
let previous = null;
let cursors = [''];
let nextCursor = null;

class Refused extends Error {}

function setStatus(text, kind = '') {
  $('status').textContent = text;
  $('status').dataset.kind = kind;
}

/** An admin API call with the key in a header; the JSON answer, or an Error with the server's message. */
async function call(method, path) {
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${key}` },
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: the status says enough.
  }
  if (res.status === 401) throw new Refused(body?.message || 'the key was refused');
  if (!res.ok) throw new Error(`${body?.error || res.status}: ${body?.message || res.statusText}`);
  return body;
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function emptyRow(tbody, columns, text) {
  const tr = document.createElement('tr');
  const td = cell(text, 'empty');
  td.colSpan = columns;
  tr.append(td);
  tbody.replaceChildren(tr);
}

function projectRows(tbody, list, empty) {
  if (!list.length) return emptyRow(tbody, 2, empty);
  tbody.replaceChildren(
    ...list.map(({ project: p, members }) => {
      const tr = document.createElement('tr');
      tr.className = 'pick';
      tr.dataset.project = p;
      tr.append(cell(p), cell(String(members), 'num'));
      tr.addEventListener('click', () => openProject(p));
      return tr;
    }),
  );
}

const rate = (now, before, field, seconds) => Math.max(0, (now[field] - before[field]) / seconds).toFixed(1);

async function refreshStats() {
  const stats = await call('GET', '/api/admin/stats');
  const t = performance.now();
  $('t-connections').textContent = String(stats.connections);
  $('t-projects').textContent = String(stats.projects);
  if (previous) {
    const seconds = (t - previous.t) / 1000;
    $('t-published').textContent = rate(stats, previous.stats, 'published_total', seconds);
    $('t-in').textContent = rate(stats, previous.stats, 'messages_in_total', seconds);
    $('t-out').textContent = rate(stats, previous.stats, 'messages_out_total', seconds);
  }
  previous = { t, stats };
  projectRows($('busiest'), stats.busiest, 'no project has members');
  $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function refreshProjects() {
  const cursor = cursors[cursors.length - 1];
  const page = await call('GET', `/api/admin/projects?limit=20&cursor=${encodeURIComponent(cursor)}`);
  projectRows($('projects'), page.projects, 'no project has members');
  nextCursor = page.next_cursor;
  $('projects-next').disabled = nextCursor === null;
}

function age(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h`;
}

async function refreshProject() {
  if (!project) return;
  const p = project;
  const [{ connections }, { users }] = await Promise.all([
    call('GET', `/api/admin/projects/${p}/connections`),
    call('GET', `/api/admin/projects/${p}/presence`),
  ]);
  if (p !== project) return;
  const tbody = $('connections');
  if (!connections.length) emptyRow(tbody, 6, 'no connection on this node');
  else {
    tbody.replaceChildren(
      ...connections.map((c) => {
        const tr = document.createElement('tr');
        tr.dataset.conn = String(c.conn);
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'danger small';
        button.textContent = 'Disconnect…';
        button.addEventListener('click', () => disconnect(c));
        const actions = document.createElement('td');
        actions.append(button);
        tr.append(
          cell(String(c.conn)),
          cell(c.user),
          cell(age(c.age_ms), 'num'),
          cell(`${c.queue_frames} / ${c.queue_bytes} B`, 'num'),
          cell(c.remote ?? ''),
          actions,
        );
        return tr;
      }),
    );
  }
  // Presence across the deployment (the broker's view), with connection counts.
  const list = $('presence');
  if (!users.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = 'nobody';
    list.replaceChildren(li);
  } else {
    list.replaceChildren(
      ...users.map(({ user, connections: n }) => {
        const li = document.createElement('li');
        li.textContent = n > 1 ? `${user} (${n} connections)` : user;
        return li;
      }),
    );
  }
}

async function poll() {
  clearTimeout(pollTimer);
  if (!key) return;
  try {
    await refreshStats();
    await refreshProjects();
    await refreshProject();
    if ($('status').dataset.kind !== 'error') setStatus('connected', 'ok');
  } catch (err) {
    if (err instanceof Refused) return forget(`${err.message}: enter an admin API key`);
    setStatus(err.message, 'error');
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

async function disconnect(c) {
  if (!confirm(`Disconnect connection ${c.conn} of ${c.user}? It is closed with 1000 and will not reconnect on its own.`)) return;
  try {
    await call('POST', `/api/admin/connections/${c.conn}/disconnect`);
    setStatus(`connection ${c.conn} disconnected`, 'ok');
  } catch (err) {
    setStatus(err.message, 'error');
  }
  refreshProject().catch(() => {});
}

async function closeProject() {
  const p = project;
  if (!p || !confirm(`Close project ${p}? Every member on this node is closed with 1000.`)) return;
  try {
    const { closed } = await call('POST', `/api/admin/projects/${p}/close`);
    setStatus(`project ${p} closed (${closed} member${closed === 1 ? '' : 's'})`, 'ok');
  } catch (err) {
    setStatus(err.message, 'error');
  }
}

// === the live tail: a fetch of the admin event stream, read chunk by chunk ===

function tailRow(frame) {
  const tr = document.createElement('tr');
  tr.append(
    cell(frame.offset === undefined ? '' : String(frame.offset), 'num'),
    cell(frame.from ?? ''),
    cell(JSON.stringify(frame.data), 'data'),
  );
  const tbody = $('tail');
  tbody.prepend(tr);
  while (tbody.children.length > TAIL_ROWS) tbody.lastElementChild.remove();
}

function tailEvent(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7);
    else if (line.startsWith('data: ')) data.push(line.slice(6));
  }
  if (!data.length) return; // a heartbeat
  let value;
  try {
    value = JSON.parse(data.join('\n'));
  } catch {
    return;
  }
  if (event === 'welcome' || event === 'reset') $('tail-state').textContent = 'live';
  else if (event === 'message') tailRow(value);
  else if (event === 'close') $('tail-state').textContent = `closed by the server (${value.code} ${value.reason})`;
}

async function startTail(p) {
  tail?.abort();
  const ctl = new AbortController();
  tail = ctl;
  $('tail').replaceChildren();
  $('tail-state').textContent = 'connecting';
  for (;;) {
    try {
      const res = await fetch(`/api/admin/projects/${p}/tail`, {
        headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream' },
        cache: 'no-store',
        credentials: 'omit',
        signal: ctl.signal,
      });
      if (res.status !== 200) {
        $('tail-state').textContent = `refused (${res.status})`;
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          tailEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch {
      // The stream broke (or was aborted, checked below).
    }
    if (ctl.signal.aborted) return;
    $('tail-state').textContent = 'reconnecting';
    await new Promise((resolve) => setTimeout(resolve, TAIL_RETRY_MS));
    if (ctl.signal.aborted) return;
  }
}

function openProject(p) {
  if (!PROJECT_ID.test(p)) return setStatus('a project id is 1 to 128 of A-Z a-z 0-9 . _ : -', 'error');
  project = p;
  $('project').value = p;
  $('project-close').disabled = false;
  refreshProject().catch((err) => setStatus(err.message, 'error'));
  startTail(p);
}

function forget(message) {
  key = '';
  sessionStorage.removeItem(KEY);
  clearTimeout(pollTimer);
  tail?.abort();
  setStatus(message, message ? 'error' : '');
}

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('key').value.trim();
  $('key').value = '';
  if (!value) return setStatus('enter a key', 'error');
  key = value;
  sessionStorage.setItem(KEY, key);
  setStatus('checking the key…');
  poll();
  if (project) startTail(project);
});
$('key-forget').addEventListener('click', () => forget(''));
$('project-form').addEventListener('submit', (e) => {
  e.preventDefault();
  openProject($('project').value.trim());
});
$('project-close').addEventListener('click', closeProject);
$('projects-next').addEventListener('click', () => {
  if (nextCursor === null) return;
  cursors.push(nextCursor);
  refreshProjects().catch((err) => setStatus(err.message, 'error'));
});
$('projects-first').addEventListener('click', () => {
  cursors = [''];
  refreshProjects().catch((err) => setStatus(err.message, 'error'));
});

emptyRow($('busiest'), 2, 'enter a key');
emptyRow($('projects'), 2, 'enter a key');
emptyRow($('connections'), 6, 'open a project');
if (key) poll();
else setStatus('enter an admin API key');
