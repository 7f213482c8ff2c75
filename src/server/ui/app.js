// event-pusher status page: polls the public admin API every 2 s and renders
// the backends (with a delivered-per-second sparkline) and one backend's dead
// letters, with pause/resume and replay. Plain JavaScript, no dependencies,
// no inline script (the page's Content-Security-Policy forbids it).
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const PAGE_SIZE = 20;
  // Five minutes of samples at one per refresh.
  const HISTORY_SAMPLES = 150;
  const TOKEN_KEY = 'event-pusher.admin-token';

  // Script errors and CSP violations: shown in the error banner (never
  // swallowed) and kept in a global the browser test reads at the end.
  const scriptErrors = [];
  window.__eventPusherErrors = scriptErrors;
  const recordScriptError = (message) => {
    scriptErrors.push(message);
    showError(message, 'script');
  };
  window.addEventListener('error', (e) => recordScriptError(`script error: ${e.message} (${e.filename}:${e.lineno})`));
  window.addEventListener('unhandledrejection', (e) => recordScriptError(`script error: ${e.reason}`));
  document.addEventListener('securitypolicyviolation', (e) =>
    recordScriptError(`blocked by the page's security policy: ${e.violatedDirective} ${e.blockedURI}`));

  const byId = (id) => document.getElementById(id);
  const action = (name) => document.querySelector(`[data-action="${name}"]`);

  /** Create an element: `h('td', {class: 'num'}, 'text', childNode)`. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  // ---- messages -------------------------------------------------------

  // Which part of the page raised the error on show: a successful refresh
  // clears only the error a failed refresh put there.
  let errorSource = null;

  function showError(message, source) {
    errorSource = source;
    byId('error-text').textContent = message;
    byId('error').hidden = false;
  }

  function clearError(source) {
    if (source && errorSource !== source) return;
    errorSource = null;
    byId('error').hidden = true;
  }

  let noticeTimer = null;
  function notice(message) {
    const node = byId('notice');
    node.textContent = message;
    node.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { node.hidden = true; }, 8000);
  }

  // ---- the admin API ----------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** The token refused (or missing): the page asks for one. */
  class AuthError extends ApiError {}

  /**
   * One call to the admin API (relative URL, so a path prefix is kept).
   * Resolves to `{data, headers}`; rejects with an ApiError whose message
   * names the call and carries the server's `{"error": ...}` text.
   */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `cannot reach the sidecar (${method} ${path}): ${e.message}`);
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    const serverMessage = (data && typeof data.error === 'string') ? data.error : (text.trim() || resp.statusText);
    if (resp.status === 401) throw new AuthError(401, serverMessage);
    if (!resp.ok) throw new ApiError(resp.status, `${method} ${path} failed (${resp.status}): ${serverMessage}`);
    if (data === null) throw new ApiError(resp.status, `${method} ${path}: the answer is not JSON`);
    return { data, headers: resp.headers };
  }

  // ---- token flow --------------------------------------------------------

  function askForToken(refusedMessage) {
    stopPolling();
    byId('content').hidden = true;
    byId('forget-token').hidden = true;
    const msg = byId('token-message');
    msg.textContent = refusedMessage ? `Token refused: ${refusedMessage}` : '';
    msg.classList.toggle('refused', Boolean(refusedMessage));
    byId('token-form').hidden = false;
    setRefreshStatus('waiting for the token');
    byId('token').focus();
  }

  /** A 401 from any call: drop the refused token and ask again. */
  function onAuthError(err) {
    const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(hadToken ? err.message : null);
  }

  /** Route an error from a call: 401 to the token prompt, the rest to the banner. */
  function report(err, source) {
    if (err instanceof AuthError) {
      onAuthError(err);
    } else {
      showError(err.message || String(err), source);
    }
  }

  byId('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = byId('token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    byId('token').value = '';
    byId('token-form').hidden = true;
    startPolling();
  });

  action('forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(null);
  });

  // ---- polling -----------------------------------------------------------

  let timer = null;
  // Bumped on every start/stop so a refresh that was in flight then does
  // not schedule a second loop.
  let generation = 0;

  function startPolling() {
    stopPolling();
    tick(generation);
  }

  function stopPolling() {
    generation += 1;
    clearTimeout(timer);
    timer = null;
  }

  async function tick(gen) {
    try {
      await refreshBackends();
      await refreshCluster();
      if (gen !== generation) return;
      showContent();
      clearError('refresh');
      setRefreshStatus(`updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`);
      await refreshDeadLettersIfChanged();
    } catch (err) {
      if (gen !== generation) return;
      report(err, 'refresh');
      if (err instanceof AuthError) return;
      setRefreshStatus(`refresh failed at ${new Date().toLocaleTimeString()}; retrying`);
    }
    if (gen === generation) timer = setTimeout(() => tick(gen), REFRESH_MS);
  }

  function showContent() {
    byId('token-form').hidden = true;
    byId('content').hidden = false;
    byId('forget-token').hidden = sessionStorage.getItem(TOKEN_KEY) === null;
  }

  function setRefreshStatus(text) {
    byId('refresh-status').textContent = text;
  }

  // ---- cluster store -----------------------------------------------------

  // The server marks the section when [cluster] is configured; without it
  // the page never asks (the sidecar would answer 404).
  async function refreshCluster() {
    if (byId('cluster').dataset.configured !== 'true') return;
    const { data } = await api('GET', 'v1/cluster');
    const store = data.store || {};
    const storeLine = byId('cluster-store');
    storeLine.dataset.up = store.up ? 'true' : 'false';
    storeLine.className = `store ${store.up ? 'up' : 'down'}`;
    let text = `Store ${store.up ? 'up' : 'DOWN'} (${store.postgres || 'postgres'})`;
    if (store.since) text += ` since ${formatTime(store.since)}`;
    if (!store.up && store.last_error) text += ` — ${store.last_error}`;
    storeLine.textContent = `${text} · this node: ${data.node}`;
    const nodes = Array.isArray(data.nodes) ? data.nodes : [];
    byId('cluster-nodes').textContent = nodes.length
      ? `Nodes seen in the last 30 s (${nodes.length}): ${nodes.map((n) => n.name).join(', ')}`
      : 'No nodes seen in the last 30 s.';
    byId('cluster-nodes').dataset.count = String(nodes.length);
    byId('cluster').hidden = false;
  }

  // ---- backends --------------------------------------------------------

  /** `KIND.NAME`: unambiguous where several kinds share a name. */
  const keyOf = (b) => `${b.kind}.${b.name}`;

  // KIND.NAME -> [{t, delivered}], oldest first.
  const history = new Map();
  let backends = [];

  async function refreshBackends() {
    const { data } = await api('GET', 'v1/backends');
    if (!Array.isArray(data)) throw new ApiError(200, 'GET v1/backends: expected a JSON array');
    const now = performance.now();
    for (const b of data) {
      const samples = history.get(keyOf(b)) || [];
      samples.push({ t: now, delivered: b.delivered });
      if (samples.length > HISTORY_SAMPLES + 1) samples.shift();
      history.set(keyOf(b), samples);
    }
    backends = data;
    renderBackends();
    renderBackendChoice();
  }

  /** Delivered per second between consecutive samples (a restart's reset counts 0). */
  function ratesOf(key) {
    const samples = history.get(key) || [];
    const rates = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i].t - samples[i - 1].t) / 1000;
      const dn = samples[i].delivered - samples[i - 1].delivered;
      rates.push(dt > 0 && dn > 0 ? dn / dt : 0);
    }
    return rates;
  }

  function stateOf(b) {
    // Disabled (auto-disable) is paused too: say why it is not delivering.
    if (b.disabled) return ['disabled', 'disabled'];
    if (b.paused) return ['paused', 'paused'];
    if (b.circuit_open) return ['circuit-open', 'circuit open'];
    if (!b.ready) return ['not-ready', 'not ready'];
    return ['ready', 'ready'];
  }

  const NUMBER_FIELDS = [
    ['queued', 'Queued'],
    ['in_flight', 'In flight'],
    ['delivered', 'Delivered'],
    ['failed', 'Failed'],
    ['dead_letters', 'Dead letters'],
    ['overflow_dead_lettered', 'Overflowed'],
    ['throttled_seconds', 'Throttled s'],
  ];

  function createBackendRow(key) {
    const [kind, ...rest] = key.split('.');
    const toggle = h('button', { type: 'button', 'data-action': 'pause' }, 'Pause');
    toggle.addEventListener('click', () => setPaused(key, toggle));
    const row = h('tr', { 'data-backend': key },
      h('th', { scope: 'row', 'data-label': 'Backend' },
        h('span', {}, h('span', { class: 'kind' }, `${kind}.`), rest.join('.'))),
      h('td', { 'data-label': 'State' }, h('span', { class: 'state', 'data-field': 'state' })),
      ...NUMBER_FIELDS.map(([field, label]) =>
        h('td', { class: 'num', 'data-label': label }, h('span', {}, h('span', { 'data-field': field })))),
      h('td', { class: 'spark', 'data-label': 'Delivered / s' },
        h('span', {}, h('span', { class: 'rate', 'data-field': 'rate' }), sparkline())),
      h('td', { class: 'actions' }, toggle));
    const deadCell = row.querySelector('[data-field="dead_letters"]');
    const show = h('button', { type: 'button', class: 'link', 'data-action': 'show-dead-letters', hidden: true },
      'show');
    show.setAttribute('aria-label', `Show the dead letters of ${key}`);
    show.addEventListener('click', () => chooseBackend(key, true));
    deadCell.after(' ', show);
    return row;
  }

  function updateBackendRow(row, b) {
    const key = keyOf(b);
    const [state, label] = stateOf(b);
    row.dataset.state = state;
    const badge = row.querySelector('[data-field="state"]');
    badge.textContent = label;
    badge.dataset.state = state;
    for (const [field] of NUMBER_FIELDS) {
      const cell = row.querySelector(`[data-field="${field}"]`);
      cell.textContent = Number(b[field]).toLocaleString('en-US', { maximumFractionDigits: 1 });
      cell.dataset.value = String(b[field]);
    }
    row.querySelector('[data-action="show-dead-letters"]').hidden = !(b.dead_letters > 0);
    // One button whose action flips in place, so keyboard focus stays on it.
    const toggle = row.querySelector('.actions button');
    if (!toggle.disabled) {
      const verb = b.paused ? 'resume' : 'pause';
      toggle.dataset.action = verb;
      toggle.textContent = b.paused ? 'Resume' : 'Pause';
      toggle.setAttribute('aria-label', `${b.paused ? 'Resume' : 'Pause'} ${key}`);
    }
    const rates = ratesOf(key);
    const current = rates.length ? rates[rates.length - 1] : 0;
    row.querySelector('[data-field="rate"]').textContent = `${formatRate(current)}/s`;
    drawSparkline(row.querySelector('svg'), rates, key);
  }

  function renderBackends() {
    const tbody = byId('backend-rows');
    reconcile(tbody, backends, keyOf, (b) => createBackendRow(keyOf(b)), updateBackendRow,
      (row) => row.dataset.backend);
    byId('no-backends').hidden = backends.length > 0;
  }

  async function setPaused(key, button) {
    const verb = button.dataset.action;
    button.disabled = true;
    try {
      const { data } = await api('POST', `v1/backends/${encodeURIComponent(key)}/${verb}`);
      const i = backends.findIndex((b) => keyOf(b) === key);
      if (i >= 0 && data && typeof data === 'object') backends[i] = { ...backends[i], ...data };
      notice(`${verb === 'pause' ? 'Paused' : 'Resumed'} ${key}.`);
      clearError('action');
    } catch (err) {
      report(err, 'action');
    } finally {
      button.disabled = false;
      renderBackends();
    }
  }

  // ---- sparkline ---------------------------------------------------------

  const SPARK_W = 120;
  const SPARK_H = 26;

  function sparkline() {
    const node = svg('svg', {
      class: 'sparkline', viewBox: `0 0 ${SPARK_W} ${SPARK_H}`, width: SPARK_W, height: SPARK_H,
      role: 'img', preserveAspectRatio: 'none',
    });
    node.append(
      svg('line', { class: 'base', x1: 0, y1: SPARK_H - 0.5, x2: SPARK_W, y2: SPARK_H - 0.5 }),
      svg('path', { class: 'area' }),
      svg('polyline', { class: 'line' }));
    return node;
  }

  function drawSparkline(node, rates, key) {
    const peak = Math.max(1, ...rates);
    // Newest at the right edge; the width stands for the full five minutes.
    const step = SPARK_W / HISTORY_SAMPLES;
    const x0 = SPARK_W - step * Math.max(rates.length - 1, 0);
    const y = (r) => (SPARK_H - 1 - (r / peak) * (SPARK_H - 3)).toFixed(1);
    const points = (rates.length ? rates : [0]).map((r, i) => `${(x0 + i * step).toFixed(1)},${y(r)}`);
    // One sample: a short level stroke at the right edge, not a ramp.
    if (points.length === 1) points.unshift(`${(SPARK_W - step).toFixed(1)},${y(rates[0] || 0)}`);
    node.querySelector('.line').setAttribute('points', points.join(' '));
    const first = points[0].split(',')[0];
    node.querySelector('.area').setAttribute('d',
      `M${first},${SPARK_H} L${points.join(' L')} L${SPARK_W},${SPARK_H} Z`);
    const now = rates.length ? rates[rates.length - 1] : 0;
    node.setAttribute('aria-label',
      `${key} delivered per second over the last 5 minutes: now ${formatRate(now)}, peak ${formatRate(Math.max(0, ...rates))}`);
  }

  function formatRate(r) {
    if (r === 0) return '0';
    if (r < 10) return r.toFixed(1);
    return Math.round(r).toLocaleString('en-US');
  }

  // ---- dead letters -------------------------------------------------------

  const dead = {
    backend: null,
    // cursors[i]: the `after` for page i (null for the first page).
    cursors: [null],
    page: 0,
    hasOlder: false,
    // The backend's dead-letter count when its list was last read: the
    // list is read again only when the count moves.
    seenCount: null,
    // Reads started; only the newest one renders.
    requests: 0,
  };

  function renderBackendChoice() {
    const select = byId('dead-backend');
    if (dead.backend === null && backends.length) {
      const withDead = backends.find((b) => b.dead_letters > 0) || backends[0];
      dead.backend = keyOf(withDead);
    }
    reconcile(select, backends, keyOf, (b) => h('option', { value: keyOf(b) }), (opt, b) => {
      opt.textContent = `${keyOf(b)} (${Number(b.dead_letters).toLocaleString('en-US')})`;
    }, (opt) => opt.value);
    if (dead.backend !== null && select.value !== dead.backend) select.value = dead.backend;
  }

  byId('dead-backend').addEventListener('change', (e) => chooseBackend(e.target.value, false));

  function chooseBackend(key, focusList) {
    dead.backend = key;
    byId('dead-backend').value = key;
    resetPages();
    loadDeadLetters().then(() => {
      if (focusList) byId('dead-heading').scrollIntoView({ block: 'start' });
    });
  }

  function resetPages() {
    dead.cursors = [null];
    dead.page = 0;
  }

  async function refreshDeadLettersIfChanged() {
    const b = backends.find((x) => keyOf(x) === dead.backend);
    if (!b || b.dead_letters === dead.seenCount) return;
    await loadDeadLetters();
  }

  /** Newest first: by `dead_at`, then by id (ULIDs sort by time). */
  function newestFirst(records) {
    return records.slice().sort((a, b) =>
      String(b.dead_at).localeCompare(String(a.dead_at)) || String(b.id).localeCompare(String(a.id)));
  }

  /**
   * Read the current page. The API pages with `limit`/`after`/`order=desc`
   * and `X-Next-After`; a server that ignores those answers every record,
   * and the page then pages on its own side.
   */
  async function loadDeadLetters() {
    const key = dead.backend;
    if (key === null) return;
    const countAtRequest = (backends.find((b) => keyOf(b) === key) || {}).dead_letters;
    const query = new URLSearchParams({ backend: key, limit: String(PAGE_SIZE), order: 'desc' });
    const cursor = dead.cursors[dead.page];
    if (cursor) query.set('after', cursor);
    dead.requests += 1;
    const request = dead.requests;
    let data;
    let headers;
    try {
      ({ data, headers } = await api('GET', `v1/dead-letters?${query}`));
    } catch (err) {
      if (request === dead.requests) report(err, 'dead-letters');
      return;
    }
    // A later read (another backend or page chosen, a replay) supersedes this one.
    if (request !== dead.requests) return;
    if (!Array.isArray(data)) {
      showError('GET v1/dead-letters: expected a JSON array', 'dead-letters');
      return;
    }
    clearError('dead-letters');
    let rows;
    let next = null;
    if (data.length > PAGE_SIZE) {
      const all = newestFirst(data);
      const lastPage = Math.max(0, Math.ceil(all.length / PAGE_SIZE) - 1);
      if (dead.page > lastPage) {
        dead.page = lastPage;
        dead.cursors.length = lastPage + 1;
      }
      rows = all.slice(dead.page * PAGE_SIZE, (dead.page + 1) * PAGE_SIZE);
      if (all.length > (dead.page + 1) * PAGE_SIZE) next = rows[rows.length - 1].id;
    } else {
      if (data.length === 0 && dead.page > 0) {
        // The page emptied (replayed elsewhere): start over from the newest.
        resetPages();
        return loadDeadLetters();
      }
      rows = newestFirst(data);
      next = headers.get('X-Next-After');
    }
    dead.hasOlder = Boolean(next);
    if (next) dead.cursors[dead.page + 1] = next;
    dead.seenCount = countAtRequest;
    renderDeadLetters(rows);
  }

  function eventClass(ev) {
    if (ev.event === 'chat') return ev.type || 'normal';
    return ev.event || '?';
  }

  /** The user the event is about: the sender of what a user sent, else the receiver. */
  function eventUser(ev) {
    if (ev.event === 'presence') return ev.jid;
    if (ev.event === 'unacked') return ev.to;
    if (ev.direction === 'out') return ev.to;
    return ev.from;
  }

  function formatTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function createDeadRow(rec) {
    const button = h('button', { type: 'button', 'data-action': 'replay' }, 'Replay');
    button.setAttribute('aria-label', `Replay event ${rec.id}`);
    button.addEventListener('click', () => replay([rec.id], button));
    return h('tr', { 'data-id': rec.id },
      h('td', { 'data-label': 'Dead since', class: 'when' }),
      h('td', { 'data-label': 'Class', class: 'class' }),
      h('td', { 'data-label': 'User', class: 'user' }),
      h('td', { 'data-label': 'Attempts', class: 'num attempts' }),
      h('td', { 'data-label': 'Last error', class: 'last-error' }),
      h('td', { class: 'actions' }, button));
  }

  function updateDeadRow(row, rec) {
    const ev = rec.event || {};
    const err = rec.last_error || {};
    const signature = `${rec.dead_at}|${rec.attempts}|${err.status}|${err.message}`;
    if (row.dataset.signature === signature) return;
    row.dataset.signature = signature;
    row.querySelector('.when').replaceChildren(
      h('time', { datetime: rec.dead_at, title: `dead at ${rec.dead_at}; first attempt ${rec.first_attempt_at}; last attempt ${rec.last_attempt_at}` },
        formatTime(rec.dead_at)));
    row.querySelector('.class').textContent = eventClass(ev);
    const user = eventUser(ev) || '';
    const userCell = row.querySelector('.user');
    userCell.textContent = user;
    userCell.title = ev.event === 'chat' ? `${ev.from || ''} → ${ev.to || ''} (${ev.direction || ''})` : user;
    row.querySelector('.attempts').textContent = String(rec.attempts);
    const details = h('details', {},
      h('summary', {}, 'event'),
      h('pre', {}, JSON.stringify(ev, null, 2)));
    const parts = [];
    if (err.status !== undefined && err.status !== null) parts.push(h('span', { class: 'status' }, String(err.status)));
    parts.push(h('span', { class: 'message', title: err.message || '' }, err.message || ''), details);
    row.querySelector('.last-error').replaceChildren(...parts);
  }

  function renderDeadLetters(rows) {
    reconcile(byId('dead-rows'), rows, (r) => r.id, createDeadRow, updateDeadRow, (row) => row.dataset.id);
    byId('no-dead').hidden = rows.length > 0 || dead.page > 0;
    const total = (backends.find((b) => keyOf(b) === dead.backend) || {}).dead_letters;
    action('replay-all').disabled = !total;
    action('replay-all').setAttribute('aria-label', `Replay all dead letters of ${dead.backend}`);
    action('newer').disabled = dead.page === 0;
    action('older').disabled = !dead.hasOlder;
    byId('page-label').textContent = `page ${dead.page + 1}`;
  }

  /** Replay `ids` (null: all) of the chosen backend. */
  async function replay(ids, button) {
    const key = dead.backend;
    const body = ids ? { backend: key, ids } : { backend: key };
    // Where focus goes when the replayed row disappears: the next row's button.
    const row = button.closest('tr');
    const nextRow = row && (row.nextElementSibling || row.previousElementSibling);
    button.disabled = true;
    try {
      const { data } = await api('POST', 'v1/dead-letters/replay', body);
      const n = data && typeof data.replayed === 'number' ? data.replayed : 0;
      notice(n === 0 ? 'Nothing to replay: already replayed?' :
        `Replayed ${n.toLocaleString('en-US')} dead letter${n === 1 ? '' : 's'} of ${key}.`);
      clearError('action');
      await refreshBackends();
      if (!ids) resetPages();
      await loadDeadLetters();
    } catch (err) {
      report(err, 'action');
    } finally {
      button.disabled = false;
    }
    if (ids && !button.isConnected) {
      const target = nextRow && nextRow.isConnected ? nextRow.querySelector('[data-action="replay"]') : action('replay-all');
      if (target) target.focus();
    }
  }

  action('replay-all').addEventListener('click', (e) => replay(null, e.currentTarget));
  action('reload-dead-letters').addEventListener('click', () => loadDeadLetters());
  action('older').addEventListener('click', () => {
    if (!dead.hasOlder) return;
    dead.page += 1;
    loadDeadLetters();
  });
  action('newer').addEventListener('click', () => {
    if (dead.page === 0) return;
    dead.page -= 1;
    loadDeadLetters();
  });
  action('dismiss-error').addEventListener('click', () => clearError(null));

  // ---- keyed list update --------------------------------------------------

  /**
   * Make `parent`'s children match `items` in order, reusing the node of
   * each key: rows keep their focus, open <details> and selection across
   * refreshes. Nodes move only when out of place.
   */
  function reconcile(parent, items, keyOfItem, create, update, keyOfNode) {
    const existing = new Map();
    for (const node of Array.from(parent.children)) existing.set(keyOfNode(node), node);
    const wanted = new Set(items.map(keyOfItem));
    for (const [k, node] of existing) {
      if (!wanted.has(k)) node.remove();
    }
    items.forEach((item, i) => {
      const k = keyOfItem(item);
      let node = existing.get(k);
      if (!node) node = create(item);
      update(node, item);
      if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
    });
  }

  startPolling();
})();
