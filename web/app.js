/* app.js — Ferry's dashboard: login, the API client, a poller that keeps an hour of history
 * in the page, and one render function per page (hash routes):
 *
 *   #/                       overview: rates, totals, connections, memory, disk, alarms, alerts
 *   #/queues                 queues: depth, unacked, consumers, oldest age, rates, depth chart
 *   #/queue/{vhost}/{name}   one queue: details, chart, bindings, consumers, get, publish, purge
 *   #/dead-letters           dead-letter queues: peek, redrive, purge
 *   #/alerts                 alerts: state (red when firing), define, delete
 *
 * Every request carries the Basic credentials from the login form (sessionStorage, like
 * RabbitMQ's UI); a 401 brings the login form back. All data comes from the management API
 * (RabbitMQ's shapes) and Ferry's /api/ferry additions; on a broker without the latter
 * (RabbitMQ) the Ferry-only columns show "-". Errors are shown in a banner, never thrown. */
'use strict';

const HOUR = 3600e3;
const $ = (sel, root = document) => root.querySelector(sel);
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const enc = encodeURIComponent;

/* ---------- formatting ---------- */
const fmt = {
  num(v) { return typeof v === 'number' ? v.toLocaleString('en-US') : '-'; },
  rate(v) {
    if (typeof v !== 'number') return '-';
    if (v === 0) return '0';
    return v < 10 ? v.toFixed(1) : v < 1e4 ? v.toFixed(0) : (v / 1000).toFixed(1) + 'k';
  },
  bytes(v) {
    if (typeof v !== 'number') return '-';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 || v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ' + u[i];
  },
  age(s) {
    if (typeof s !== 'number' || s < 0) return '-';
    if (s === 0) return '0s';
    if (s < 1) return Math.round(s * 1000) + 'ms';
    if (s < 60) return Math.floor(s) + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + (Math.floor(s) % 60 ? (Math.floor(s) % 60) + 's' : '');
    if (s < 86400) return Math.floor(s / 3600) + 'h' + (Math.floor(s / 60) % 60 ? (Math.floor(s / 60) % 60) + 'm' : '');
    return Math.floor(s / 86400) + 'd' + (Math.floor(s / 3600) % 24 ? (Math.floor(s / 3600) % 24) + 'h' : '');
  },
  /* An API time (ISO string, or seconds / milliseconds since 1970) as "12s ago". */
  since(t) {
    let ms = typeof t === 'string' ? Date.parse(t) : typeof t === 'number' ? (t > 1e11 ? t : t * 1000) : NaN;
    if (!Number.isFinite(ms)) return '-';
    return fmt.age(Math.max(0, (Date.now() - ms) / 1000)) + ' ago';
  },
  when(t) {
    const ms = typeof t === 'string' ? Date.parse(t) : typeof t === 'number' ? (t > 1e11 ? t : t * 1000) : NaN;
    return Number.isFinite(ms) ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '-';
  },
};
const get = (o, path, dflt) => {
  for (const k of path.split('.')) { if (o == null || typeof o !== 'object') return dflt; o = o[k]; }
  return o === undefined ? dflt : o;
};

/* ---------- the API ---------- */
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

const api = {
  auth: sessionStorage.getItem('ferry.auth'),
  hasFerry: true, /* false after /api/ferry answered 404 (RabbitMQ): not asked again */

  async req(method, path, body) {
    const headers = { Authorization: 'Basic ' + this.auth };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      /* credentials 'omit': the Authorization header is ours; without it a 401 (which carries
       * WWW-Authenticate, as RabbitMQ's does) would make the browser open its own login dialog. */
      r = await fetch('api/' + path, { method, headers, cache: 'no-store', credentials: 'omit', body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, 'cannot reach the broker');
    }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!r.ok) {
      const why = data && (data.reason || data.error) ? [data.error, data.reason].filter((v, i, a) => v && a.indexOf(v) === i).join(': ') : r.statusText;
      throw new ApiError(r.status, `${r.status} ${why}`);
    }
    return data;
  },
  get(path) { return this.req('GET', path); },
  /* A Ferry-only endpoint: null on a broker without it. */
  async ferry(path, method = 'GET', body) {
    if (!this.hasFerry) return null;
    try {
      return await this.req(method, 'ferry/' + path, body);
    } catch (e) {
      if (e.status === 404 && method === 'GET' && path === 'queues') { this.hasFerry = false; return null; }
      throw e;
    }
  },
};

/* ---------- history: an hour of samples, kept in the page (and sessionStorage) ---------- */
const history = {
  queues: new Map(), /* "vhost\u0001name" -> [[t, messages], ...] */
  rates: [],         /* [t, publish, deliver, ack] */
  load() {
    try {
      const h = JSON.parse(sessionStorage.getItem('ferry.history') || 'null');
      if (h) { this.queues = new Map(h.queues); this.rates = h.rates; }
    } catch (e) { /* a bad saved history is just dropped */ }
  },
  save() {
    try {
      sessionStorage.setItem('ferry.history', JSON.stringify({ queues: [...this.queues].slice(0, 200), rates: this.rates }));
    } catch (e) { /* storage full: keep it in the page only */ }
  },
  record(overview, queues) {
    const now = Date.now(), cut = now - HOUR;
    const trim = arr => { while (arr.length && arr[0][0] < cut) arr.shift(); };
    this.rates.push([now, get(overview, 'message_stats.publish_details.rate', 0), get(overview, 'message_stats.deliver_get_details.rate', 0), get(overview, 'message_stats.ack_details.rate', 0)]);
    trim(this.rates);
    const seen = new Set();
    for (const q of queues) {
      const key = q.vhost + '\u0001' + q.name;
      seen.add(key);
      if (typeof q.messages !== 'number') continue;
      let arr = this.queues.get(key);
      if (!arr) this.queues.set(key, (arr = []));
      arr.push([now, q.messages]);
      trim(arr);
    }
    for (const key of [...this.queues.keys()]) if (!seen.has(key)) this.queues.delete(key);
    if (!this._saved || now - this._saved > 10e3) { this.save(); this._saved = now; }
  },
};

/* ---------- state shared by the pages ---------- */
const state = { overview: null, nodes: null, queues: [], alerts: null, error: null, updated: 0 };
let timer = null, polling = false, current = null;
/* Bumped on every route change: an async refresh that finishes after the user moved on must
 * not write into the page that replaced its own (its elements are gone). */
let generation = 0;
const stale = g => g !== generation;

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const [overview, nodes, queues, ferryQueues, alerts] = await Promise.all([
      api.get('overview'), api.get('nodes'), api.get('queues'),
      api.ferry('queues').catch(() => null),
      api.hasFerry ? api.ferry('alerts').catch(() => null) : null,
    ]);
    if (Array.isArray(ferryQueues)) {
      const by = new Map(ferryQueues.map(f => [f.vhost + '\u0001' + f.name, f]));
      for (const q of queues) {
        const f = by.get(q.vhost + '\u0001' + q.name);
        if (f) for (const k of ['oldest_message_age_seconds', 'dead_lettered', 'dead_lettered_total', 'retries', 'delayed_pending'])
          if (!(k in q)) q[k] = f[k];
      }
    }
    Object.assign(state, { overview, nodes, queues, alerts: Array.isArray(alerts) ? alerts : null, error: null, updated: Date.now() });
    history.record(overview, queues);
    showBanner(null);
  } catch (e) {
    state.error = e;
    if (e.status === 401) { logout('Your session was refused (401): log in again.'); return; }
    showBanner(`Cannot refresh: ${e.message}`);
  } finally {
    polling = false;
  }
  const firing = (state.alerts || []).filter(a => a.state === 'firing').length;
  const badge = $('#nav-firing');
  badge.hidden = !firing;
  badge.textContent = firing;
  $('#updated').textContent = state.updated ? 'updated ' + new Date(state.updated).toLocaleTimeString('en-GB') : '';
  if (current && current.refresh) {
    const g = generation;
    try { await current.refresh(); } catch (e) { if (!stale(g)) showBanner(e.message); }
  }
}

function schedule() {
  clearInterval(timer);
  const ms = Number($('#refresh').value);
  sessionStorage.setItem('ferry.refresh', String(ms));
  if (ms > 0) timer = setInterval(poll, ms);
}

function showBanner(text) {
  const b = $('#banner');
  b.hidden = !text;
  b.textContent = text || '';
}

/* A note under a form: green when it worked, red with the broker's reason when not. */
function note(el, ok, text) {
  if (!el) return; /* the page changed while the request was on its way */
  el.className = 'note ' + (ok ? 'ok' : 'bad');
  el.textContent = text;
}

/* A button that asks for a second click before doing something that cannot be undone. */
function armed(button, action) {
  button.addEventListener('click', async () => {
    if (!button.classList.contains('armed')) {
      button.dataset.label = button.textContent;
      button.classList.add('armed');
      button.textContent = 'Click again to confirm';
      setTimeout(() => { button.classList.remove('armed'); button.textContent = button.dataset.label; }, 4000);
      return;
    }
    button.classList.remove('armed');
    button.textContent = button.dataset.label;
    await action();
  });
}

/* ---------- pages ---------- */
const statCard = (k, v, sub = '', bad = false, extra = '') =>
  `<div class="card stat${bad ? ' bad' : ''}" data-stat="${esc(k)}"><div class="k">${esc(k)}</div><div class="v">${v}</div><div class="sub">${sub}</div>${extra}</div>`;

function legend(series) {
  return series.map(s => `<span><i style="background:${s.color}"></i>${esc(s.label)}</span>`).join('');
}

const pages = {};

pages.overview = {
  nav: 'overview',
  render(root) {
    root.innerHTML = `<h1>Overview</h1>
      <div class="cards" id="ov-cards"></div>
      <div class="card"><h2>Message rates (per second, up to the last hour)</h2><canvas class="chart" id="ov-chart"></canvas><div class="legend" id="ov-legend"></div></div>
      <div class="card"><h2>Node</h2><dl class="props" id="ov-node"></dl></div>`;
  },
  refresh() {
    const o = state.overview, n = (state.nodes || [])[0] || {};
    if (!o) return;
    const memAlarm = !!n.mem_alarm, diskAlarm = !!n.disk_free_alarm;
    const memPct = n.mem_limit ? Math.min(100, (100 * n.mem_used) / n.mem_limit) : 0;
    const diskPct = n.disk_free_limit && n.disk_free ? Math.min(100, (100 * n.disk_free_limit) / n.disk_free) : 0;
    const firing = (state.alerts || []).filter(a => a.state === 'firing');
    const alarms = [memAlarm && 'memory', diskAlarm && 'disk'].filter(Boolean);
    $('#ov-cards').innerHTML = [
      statCard('Messages', fmt.num(get(o, 'queue_totals.messages')), `ready ${fmt.num(get(o, 'queue_totals.messages_ready'))} · unacked ${fmt.num(get(o, 'queue_totals.messages_unacknowledged'))}`),
      statCard('Publish /s', fmt.rate(get(o, 'message_stats.publish_details.rate', 0)), `deliver ${fmt.rate(get(o, 'message_stats.deliver_get_details.rate', 0))} · ack ${fmt.rate(get(o, 'message_stats.ack_details.rate', 0))}`),
      statCard('Connections', fmt.num(get(o, 'object_totals.connections')), `channels ${fmt.num(get(o, 'object_totals.channels'))} · consumers ${fmt.num(get(o, 'object_totals.consumers'))}`),
      statCard('Queues', fmt.num(get(o, 'object_totals.queues')), `exchanges ${fmt.num(get(o, 'object_totals.exchanges'))}`),
      statCard('Memory', fmt.bytes(n.mem_used), `limit ${fmt.bytes(n.mem_limit)}`, memAlarm, `<div class="bar${memAlarm ? ' bad' : ''}"><span style="width:${memPct.toFixed(1)}%"></span></div>`),
      statCard('Disk free', fmt.bytes(n.disk_free), `limit ${fmt.bytes(n.disk_free_limit)}`, diskAlarm, `<div class="bar${diskAlarm ? ' bad' : ''}"><span style="width:${diskPct.toFixed(1)}%"></span></div>`),
      statCard('Alarms', alarms.length ? esc(alarms.join(', ')) : 'none', alarms.length ? 'publishers are blocked' : 'publishers flow freely', alarms.length > 0),
      statCard('Alerts firing', state.alerts ? String(firing.length) : '-', state.alerts ? (firing.length ? firing.map(a => esc(a.name)).join(', ') : `of ${state.alerts.length} defined`) : 'no alerts API', firing.length > 0),
    ].join('');
    const series = [
      { label: 'publish', color: FerryChart.palette[0], points: history.rates.map(r => [r[0], r[1]]) },
      { label: 'deliver', color: FerryChart.palette[1], points: history.rates.map(r => [r[0], r[2]]) },
      { label: 'ack', color: FerryChart.palette[2], points: history.rates.map(r => [r[0], r[3]]) },
    ];
    FerryChart.draw($('#ov-chart'), series);
    $('#ov-legend').innerHTML = legend(series);
    $('#ov-node').innerHTML = [
      ['node', o.node || n.name], ['broker', `${o.product_name || ''} ${o.product_version || o.rabbitmq_version || ''}`],
      ['uptime', fmt.age((n.uptime || 0) / 1000)], ['file descriptors', `${fmt.num(n.fd_used)} of ${fmt.num(n.fd_total)}`],
      ['listeners', (o.listeners || []).map(l => `${l.protocol} ${l.ip_address}:${l.port}`).join(', ') || '-'],
    ].map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('');
  },
};

const queueCols = [
  ['name', 'name', q => `<a href="#/queue/${enc(q.vhost)}/${enc(q.name)}">${esc(q.name)}</a>`],
  ['vhost', 'vhost', q => esc(q.vhost)],
  ['type', 'type', q => esc(q.type || 'classic')],
  ['messages', 'messages', q => fmt.num(q.messages), true],
  ['ready', 'messages_ready', q => fmt.num(q.messages_ready), true],
  ['unacked', 'messages_unacknowledged', q => fmt.num(q.messages_unacknowledged), true],
  ['consumers', 'consumers', q => fmt.num(q.consumers), true],
  ['oldest', 'oldest_message_age_seconds', q => fmt.age(q.oldest_message_age_seconds), true],
  ['in/s', 'message_stats.publish_details.rate', q => fmt.rate(get(q, 'message_stats.publish_details.rate', 0)), true],
  ['out/s', 'message_stats.deliver_get_details.rate', q => fmt.rate(get(q, 'message_stats.deliver_get_details.rate', 0)), true],
  ['ack/s', 'message_stats.ack_details.rate', q => fmt.rate(get(q, 'message_stats.ack_details.rate', 0)), true],
];

pages.queues = {
  nav: 'queues',
  sort: { field: 'name', desc: false },
  render(root) {
    root.innerHTML = `<h1>Queues</h1>
      <div class="card"><h2>Depth over time, up to the last hour (the 5 deepest queues)</h2><canvas class="chart" id="q-chart"></canvas><div class="legend" id="q-legend"></div></div>
      <div class="card">
        <form class="inline" onsubmit="return false"><label>Filter <input id="q-filter" placeholder="name contains…" value="${esc(sessionStorage.getItem('ferry.qfilter') || '')}"></label></form>
        <table id="q-table"><thead><tr>${queueCols.map(([h, f, , num]) => `<th class="sortable${num ? ' num' : ''}" data-field="${f}">${esc(h)}</th>`).join('')}</tr></thead><tbody></tbody></table>
      </div>`;
    $('#q-filter').addEventListener('input', e => { sessionStorage.setItem('ferry.qfilter', e.target.value); this.refresh(); });
    root.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => {
      const f = th.dataset.field;
      this.sort = { field: f, desc: this.sort.field === f ? !this.sort.desc : f !== 'name' && f !== 'vhost' && f !== 'type' };
      this.refresh();
    }));
  },
  refresh() {
    const filter = ($('#q-filter').value || '').toLowerCase();
    const { field, desc } = this.sort;
    const qs = state.queues.filter(q => q.name.toLowerCase().includes(filter)).sort((a, b) => {
      const x = get(a, field), y = get(b, field);
      const r = typeof x === 'number' || typeof y === 'number' ? (x ?? -1) - (y ?? -1) : String(x ?? '').localeCompare(String(y ?? ''));
      return (desc ? -r : r) || a.name.localeCompare(b.name);
    });
    document.querySelectorAll('#q-table th').forEach(th => {
      th.classList.toggle('sorted', th.dataset.field === field);
      th.classList.toggle('asc', th.dataset.field === field && !desc);
    });
    $('#q-table tbody').innerHTML = qs.length
      ? qs.map(q => `<tr data-vhost="${esc(q.vhost)}" data-queue="${esc(q.name)}">${queueCols.map(([h, f, cell, num]) => `<td class="${num ? 'num ' : ''}c-${esc(h.replace('/', '-'))}">${cell(q)}</td>`).join('')}</tr>`).join('')
      : `<tr><td colspan="${queueCols.length}" class="empty">no queues${filter ? ' match' : ''}</td></tr>`;
    const top = [...state.queues].sort((a, b) => (b.messages || 0) - (a.messages || 0)).slice(0, 5);
    const series = top.map((q, i) => ({ label: q.name, color: FerryChart.palette[i], points: history.queues.get(q.vhost + '\u0001' + q.name) || [] }));
    FerryChart.draw($('#q-chart'), series);
    $('#q-legend').innerHTML = legend(series);
  },
};

function messageHtml(m, i) {
  const deaths = get(m, 'properties.headers.x-death', null) || (m.x_death ? [m.x_death] : []);
  const props = m.properties && Object.keys(m.properties).length ? JSON.stringify(m.properties) : '';
  return `<div class="msg" data-index="${i}">
    <div class="meta">#${i + 1} · exchange ${esc(m.exchange || '(AMQP default)')} · routing key <b>${esc(m.routing_key)}</b> · ${m.redelivered ? 'redelivered' : 'first delivery'} · ${fmt.num(m.payload_bytes)} bytes${m.payload_encoding === 'base64' ? ' (base64)' : ''}</div>
    ${(Array.isArray(deaths) ? deaths : []).map(d => `<div class="death">dead-lettered: <b>${esc(d.reason)}</b> from queue <b>${esc(d.queue)}</b> at ${esc(fmt.when(d.time))}${d.count ? ` (${esc(d.count)}×)` : ''}</div>`).join('')}
    ${props ? `<div class="meta mono">${esc(props)}</div>` : ''}
    <pre>${esc(m.payload)}</pre></div>`;
}

pages.queue = {
  nav: 'queues',
  render(root, [vhost, name]) {
    this.vhost = vhost;
    this.name = name;
    const path = `queues/${enc(vhost)}/${enc(name)}`;
    this.path = path;
    root.innerHTML = `<h1>Queue ${esc(name)} <span class="muted">in vhost ${esc(vhost)}</span></h1>
      <div class="cards" id="qp-cards"></div>
      <div class="grid2">
        <div class="card"><h2>Depth over time (up to the last hour)</h2><canvas class="chart" id="qp-chart"></canvas></div>
        <div class="card"><h2>Details</h2><dl class="props" id="qp-props"></dl></div>
      </div>
      <div class="grid2">
        <div class="card"><h2>Bindings</h2><table id="qp-bindings"><thead><tr><th>from exchange</th><th>routing key</th><th>arguments</th></tr></thead><tbody></tbody></table></div>
        <div class="card"><h2>Consumers</h2><table id="qp-consumers"><thead><tr><th>tag</th><th>channel</th><th>ack</th><th class="num">prefetch</th><th>active</th></tr></thead><tbody></tbody></table></div>
      </div>
      <div class="grid2">
        <div class="card"><h2>Get messages</h2>
          <form class="inline" id="qp-get">
            <label>Count <input name="count" type="number" min="1" max="1000" value="1" style="width:80px"></label>
            <label>Mode <select name="ackmode"><option value="ack_requeue_true">requeue (peek)</option><option value="ack_requeue_false">ack (remove)</option></select></label>
            <label>Encoding <select name="encoding"><option value="auto">auto</option><option value="base64">base64</option></select></label>
            <button class="primary" type="submit">Get messages</button>
          </form>
          <div id="qp-get-note"></div><div id="qp-messages"></div>
        </div>
        <div class="card"><h2>Publish a message</h2>
          <form id="qp-publish" style="display:flex;flex-direction:column;gap:8px">
            <label>Payload <textarea name="payload" required></textarea></label>
            <div class="inline" style="display:flex;gap:10px;align-items:flex-end">
              <label>Routing key <input name="routing_key" value="${esc(name)}"></label>
              <label>Delivery <select name="delivery_mode"><option value="2">persistent</option><option value="1">transient</option></select></label>
              <label>Content type <input name="content_type" placeholder="text/plain"></label>
              <button class="primary" type="submit">Publish</button>
            </div>
          </form>
          <div id="qp-publish-note"></div>
          <h2 style="margin-top:18px">Purge</h2>
          <div class="actions"><button class="danger" id="qp-purge">Purge all ready messages</button></div>
          <div id="qp-purge-note"></div>
        </div>
      </div>`;
    $('#qp-get').addEventListener('submit', async e => {
      e.preventDefault();
      const f = new FormData(e.target);
      try {
        const msgs = await api.req('POST', `${path}/get`, { count: Number(f.get('count')), ackmode: f.get('ackmode'), encoding: f.get('encoding'), truncate: 50000 });
        note($('#qp-get-note'), true, msgs.length ? `${msgs.length} message(s)` : 'the queue is empty');
        const box = $('#qp-messages');
        if (box) box.innerHTML = msgs.map(messageHtml).join('');
        poll();
      } catch (err) { note($('#qp-get-note'), false, err.message); }
    });
    $('#qp-publish').addEventListener('submit', async e => {
      e.preventDefault();
      const f = new FormData(e.target);
      const properties = { delivery_mode: Number(f.get('delivery_mode')) };
      if (f.get('content_type')) properties.content_type = f.get('content_type');
      try {
        const r = await api.req('POST', `exchanges/${enc(vhost)}/amq.default/publish`, { properties, routing_key: f.get('routing_key'), payload: f.get('payload'), payload_encoding: 'string' });
        note($('#qp-publish-note'), r && r.routed, r && r.routed ? 'published (routed)' : 'published, but routed to no queue');
        poll();
      } catch (err) { note($('#qp-publish-note'), false, err.message); }
    });
    armed($('#qp-purge'), async () => {
      try {
        await api.req('DELETE', `${path}/contents`);
        note($('#qp-purge-note'), true, 'purged');
        poll();
      } catch (err) { note($('#qp-purge-note'), false, err.message); }
    });
  },
  async refresh() {
    const g = generation;
    let q, bindings, consumers, extra;
    try {
      [q, bindings, extra] = await Promise.all([api.get(this.path), api.get(`${this.path}/bindings`), api.ferry(this.path).catch(() => null)]);
    } catch (e) {
      if (stale(g)) return;
      $('#qp-cards').innerHTML = `<div class="card stat bad"><div class="k">queue</div><div class="v">${e.status === 404 ? 'not found' : 'error'}</div><div class="sub">${esc(e.message)}</div></div>`;
      return;
    }
    if (extra) for (const k of ['oldest_message_age_seconds', 'dead_lettered', 'dead_lettered_total', 'retries', 'delayed_pending']) if (!(k in q)) q[k] = extra[k];
    consumers = Array.isArray(q.consumer_details) ? q.consumer_details : null;
    if (!consumers) {
      try { consumers = (await api.get(`consumers/${enc(this.vhost)}`)).filter(c => get(c, 'queue.name') === this.name); } catch (e) { consumers = []; }
    }
    if (stale(g)) return;
    $('#qp-cards').innerHTML = [
      statCard('Messages', fmt.num(q.messages), `ready ${fmt.num(q.messages_ready)} · unacked ${fmt.num(q.messages_unacknowledged)}`),
      statCard('Consumers', fmt.num(q.consumers), q.consumers === 0 && q.messages > 0 ? 'nobody is consuming' : '', q.consumers === 0 && q.messages > 0),
      statCard('Oldest message', fmt.age(q.oldest_message_age_seconds), 'age of the head of the queue'),
      statCard('Rates /s', `${fmt.rate(get(q, 'message_stats.publish_details.rate', 0))} in`, `${fmt.rate(get(q, 'message_stats.deliver_get_details.rate', 0))} out · ${fmt.rate(get(q, 'message_stats.ack_details.rate', 0))} ack`),
      statCard('Dead-lettered', q.dead_lettered_total === undefined ? '-' : fmt.num(q.dead_lettered_total), q.dead_lettered ? Object.entries(q.dead_lettered).filter(([, n]) => n).map(([k, n]) => `${esc(k)} ${fmt.num(n)}`).join(' · ') : ''),
    ].join('');
    $('#qp-props').innerHTML = [
      ['type', q.type || 'classic'], ['durable', String(q.durable)], ['auto delete', String(q.auto_delete)], ['exclusive', String(q.exclusive)],
      ['state', q.state || '-'], ['arguments', JSON.stringify(q.arguments || {})], ['policy', q.policy || '-'],
      ['retries', q.retries ?? '-'], ['delayed pending', q.delayed_pending ?? '-'], ['idle since', q.idle_since || '-'],
    ].map(([k, v]) => `<dt>${esc(k)}</dt><dd class="${k === 'arguments' ? 'mono' : ''}">${esc(v)}</dd>`).join('');
    const key = this.vhost + '\u0001' + this.name;
    FerryChart.draw($('#qp-chart'), [{ label: this.name, color: FerryChart.palette[0], points: history.queues.get(key) || [] }]);
    $('#qp-bindings tbody').innerHTML = bindings.length
      ? bindings.map(b => `<tr><td>${esc(b.source || '(AMQP default)')}</td><td>${esc(b.routing_key)}</td><td class="mono">${esc(JSON.stringify(b.arguments || {}))}</td></tr>`).join('')
      : '<tr><td colspan="3" class="empty">no bindings</td></tr>';
    $('#qp-consumers tbody').innerHTML = consumers.length
      ? consumers.map(c => `<tr><td>${esc(c.consumer_tag)}</td><td>${esc(get(c, 'channel_details.name', '-'))}</td><td>${c.ack_required ? 'manual' : 'auto'}</td><td class="num">${fmt.num(c.prefetch_count)}</td><td>${c.active === false ? 'no' : 'yes'}</td></tr>`).join('')
      : '<tr><td colspan="5" class="empty">no consumers</td></tr>';
  },
};

/* The dead-letter queues: where each queue's dead-letter exchange (argument or policy) routes. */
async function deadLetterQueues() {
  const bindings = await api.get('bindings');
  const byKey = new Map(state.queues.map(q => [q.vhost + '\u0001' + q.name, q]));
  const rows = new Map();
  const add = (vhost, dlq, src) => {
    const q = byKey.get(vhost + '\u0001' + dlq);
    if (!q) return;
    let r = rows.get(vhost + '\u0001' + dlq);
    if (!r) rows.set(vhost + '\u0001' + dlq, (r = { vhost, queue: dlq, q, sources: [], reasons: {} }));
    r.sources.push(src.name);
    for (const [k, n] of Object.entries(src.dead_lettered || {})) r.reasons[k] = (r.reasons[k] || 0) + n;
  };
  for (const q of state.queues) {
    const args = q.arguments || {}, pol = q.effective_policy_definition || {};
    const x = args['x-dead-letter-exchange'] ?? pol['dead-letter-exchange'];
    const rk = args['x-dead-letter-routing-key'] ?? pol['dead-letter-routing-key'];
    if (typeof x !== 'string') continue;
    if (x === '') { if (rk) add(q.vhost, rk, q); continue; }
    for (const b of bindings) if (b.source === x && b.vhost === q.vhost && b.destination_type === 'queue') add(q.vhost, b.destination, q);
  }
  return [...rows.values()];
}

pages.deadLetters = {
  nav: 'dead-letters',
  render(root) {
    root.innerHTML = `<h1>Dead letters</h1>
      <div class="card"><p class="muted" style="margin-top:0">Queues that receive dead letters (rejected, expired, dropped by a length limit, past a delivery limit), found from each queue's dead-letter exchange. Redrive moves messages back to the queue they died in.</p>
        <table id="dl-table"><thead><tr><th>queue</th><th>vhost</th><th class="num">messages</th><th>from queues</th><th>dead-lettered by reason</th><th>actions</th></tr></thead><tbody></tbody></table>
        <div id="dl-note"></div>
      </div>
      <div class="card" id="dl-peek-card" hidden><h2 id="dl-peek-title"></h2><div id="dl-peek"></div></div>`;
    this.shown = '';
  },
  async refresh() {
    const g = generation;
    const rows = await deadLetterQueues();
    if (stale(g)) return;
    const sig = JSON.stringify(rows.map(r => [r.vhost, r.queue, r.q.messages, r.sources, r.reasons]));
    if (sig === this.shown) return; /* keep the buttons (and an armed purge) while nothing changed */
    this.shown = sig;
    const tbody = $('#dl-table tbody');
    if (!rows.length) {
      tbody.innerHTML = '<tr><td colspan="6" class="empty">no dead-letter queues: no queue has a dead-letter exchange that routes to a queue</td></tr>';
      return;
    }
    tbody.innerHTML = rows.map(r => `<tr data-vhost="${esc(r.vhost)}" data-queue="${esc(r.queue)}">
      <td><a href="#/queue/${enc(r.vhost)}/${enc(r.queue)}">${esc(r.queue)}</a></td><td>${esc(r.vhost)}</td>
      <td class="num c-messages">${fmt.num(r.q.messages)}</td><td>${esc(r.sources.join(', '))}</td>
      <td>${Object.entries(r.reasons).filter(([, n]) => n).map(([k, n]) => `<span class="badge warn">${esc(k)} ${fmt.num(n)}</span>`).join(' ') || (api.hasFerry ? 'none' : '-')}</td>
      <td><div class="actions"><button data-act="peek">Peek</button><button class="primary" data-act="redrive">Redrive all</button><button class="danger" data-act="purge">Purge</button></div></td></tr>`).join('');
    tbody.querySelectorAll('tr[data-queue]').forEach(tr => {
      const { vhost, queue } = tr.dataset;
      const path = `dead-letters/${enc(vhost)}/${enc(queue)}`;
      tr.querySelector('[data-act=peek]').addEventListener('click', () => this.peek(vhost, queue));
      tr.querySelector('[data-act=redrive]').addEventListener('click', async () => {
        try {
          const r = await api.ferry(`${path}/redrive`, 'POST', {});
          note($('#dl-note'), true, `redrove ${r && typeof r.redriven === 'number' ? r.redriven : 'the'} message(s) from ${queue}`);
          this.shown = '';
          await poll();
        } catch (e) { note($('#dl-note'), false, e.message); }
      });
      armed(tr.querySelector('[data-act=purge]'), async () => {
        try {
          const r = await api.ferry(path, 'DELETE');
          note($('#dl-note'), true, `purged ${r && typeof r.purged === 'number' ? r.purged : 'the'} dead letter(s) of ${queue}`);
          this.shown = '';
          await poll();
        } catch (e) { note($('#dl-note'), false, e.message); }
      });
    });
  },
  async peek(vhost, queue) {
    const g = generation;
    $('#dl-peek-card').hidden = false;
    $('#dl-peek-title').textContent = `Dead letters in ${queue}`;
    try {
      const r = await api.ferry(`dead-letters/${enc(vhost)}/${enc(queue)}?count=20`);
      if (stale(g)) return;
      const items = r ? r.items || [] : [];
      $('#dl-peek').innerHTML = (r ? `<p class="muted">${fmt.num(items.length)} of ${fmt.num(r.messages)} shown</p>` : '<p class="muted">this broker has no dead-letter API</p>') + items.map(messageHtml).join('');
    } catch (e) { if (!stale(g)) $('#dl-peek').innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  },
};

pages.alerts = {
  nav: 'alerts',
  render(root) {
    root.innerHTML = `<h1>Alerts</h1>
      <div class="card"><table id="al-table"><thead><tr><th>name</th><th>state</th><th class="num">value</th><th>rule</th><th>since</th><th>webhook</th><th></th></tr></thead><tbody></tbody></table><div id="al-note"></div></div>
      <div class="card"><h2>Define an alert</h2>
        <form class="inline" id="al-form">
          <label>Name <input name="name" required placeholder="orders-backlog"></label>
          <label>Vhost <input name="vhost" value="/" required style="width:80px"></label>
          <label>Queue (regex) <input name="queue" required placeholder="^orders$"></label>
          <label>Metric <select name="metric">
            <option>messages</option><option>messages_unacknowledged</option><option>oldest_message_age_seconds</option><option>consumers</option><option>dead_letters</option></select></label>
          <label>Op <select name="op"><option>&gt;</option><option>&lt;</option></select></label>
          <label>Threshold <input name="threshold" type="number" step="any" required style="width:100px"></label>
          <label>For (seconds) <input name="for_seconds" type="number" min="0" step="any" value="0" style="width:90px"></label>
          <label>Webhook (optional) <input name="webhook" type="url" placeholder="http://…"></label>
          <button class="primary" type="submit">Save alert</button>
        </form>
        <div id="al-form-note"></div>
      </div>`;
    $('#al-form').addEventListener('submit', async e => {
      e.preventDefault();
      const f = new FormData(e.target);
      const body = { vhost: f.get('vhost'), queue: f.get('queue'), metric: f.get('metric'), op: f.get('op'), threshold: Number(f.get('threshold')), for_seconds: Number(f.get('for_seconds') || 0) };
      if (f.get('webhook')) body.webhook = f.get('webhook');
      try {
        await api.ferry(`alerts/${enc(f.get('name'))}`, 'PUT', body);
        note($('#al-form-note'), true, `alert ${f.get('name')} saved`);
        this.shown = '';
        await poll();
      } catch (err) { note($('#al-form-note'), false, err.message); }
    });
    this.shown = '';
  },
  refresh() {
    const tbody = $('#al-table tbody');
    if (!state.alerts) {
      tbody.innerHTML = '<tr><td colspan="7" class="empty">this broker has no alerts API (Ferry\'s /api/ferry/alerts)</td></tr>';
      return;
    }
    const sig = JSON.stringify(state.alerts) + Math.floor(Date.now() / 1000);
    if (sig === this.shown) return;
    this.shown = sig;
    tbody.innerHTML = state.alerts.length ? state.alerts.map(a => `<tr data-alert="${esc(a.name)}" class="${a.state === 'firing' ? 'firing' : ''}">
      <td><b>${esc(a.name)}</b></td>
      <td><span class="badge state state-${a.state === 'firing' ? 'firing' : 'ok'}">${a.state === 'firing' ? 'FIRING' : esc(a.state || '?')}</span></td>
      <td class="num">${typeof a.value === 'number' ? esc(Math.round(a.value * 100) / 100) : '-'}${a.value_queue ? ` <span class="muted">(${esc(a.value_queue)})</span>` : ''}</td>
      <td class="mono">${esc(a.vhost !== '/' ? a.vhost + ' ' : '')}${esc(a.queue)} ${esc(a.metric)} ${esc(a.op)} ${esc(a.threshold)} for ${esc(fmt.age(a.for_seconds || 0))}</td>
      <td>${esc(fmt.since(a.since))}</td><td>${esc(a.webhook || '-')}</td>
      <td><button class="danger" data-act="delete">Delete</button></td></tr>`).join('')
      : '<tr><td colspan="7" class="empty">no alerts defined</td></tr>';
    tbody.querySelectorAll('tr[data-alert]').forEach(tr => armed(tr.querySelector('[data-act=delete]'), async () => {
      try {
        await api.ferry(`alerts/${enc(tr.dataset.alert)}`, 'DELETE');
        note($('#al-note'), true, `alert ${tr.dataset.alert} deleted`);
        this.shown = '';
        await poll();
      } catch (e) { note($('#al-note'), false, e.message); }
    }));
  },
};

/* ---------- routing ---------- */
function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  let page = pages.overview, args = [];
  if (parts[0] === 'queues') page = pages.queues;
  else if (parts[0] === 'queue' && parts.length >= 3) { page = pages.queue; args = [parts[1], parts.slice(2).join('/')]; }
  else if (parts[0] === 'dead-letters') page = pages.deadLetters;
  else if (parts[0] === 'alerts') page = pages.alerts;
  current = page;
  generation++;
  document.querySelectorAll('nav a').forEach(a => a.classList.toggle('active', a.dataset.nav === page.nav));
  page.render($('#page'), args);
  if (state.updated) page.refresh && Promise.resolve(page.refresh()).catch(e => showBanner(e.message));
}

/* ---------- login ---------- */
function logout(message) {
  clearInterval(timer);
  sessionStorage.removeItem('ferry.auth');
  api.auth = null;
  $('#app').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#login-user').focus();
}

async function start() {
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#who').textContent = sessionStorage.getItem('ferry.user') || '';
  $('#refresh').value = sessionStorage.getItem('ferry.refresh') || '2000';
  history.load();
  route();
  await poll();
  schedule();
}

$('#login-form').addEventListener('submit', async e => {
  e.preventDefault();
  const user = $('#login-user').value, pass = $('#login-pass').value;
  /* btoa takes Latin-1: encode UTF-8 first so any user name works. */
  api.auth = btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${pass}`)));
  try {
    await api.get('overview');
  } catch (err) {
    $('#login-error').textContent = err.status === 401 ? 'Login failed: wrong user name or password, or the user may not use the management API.' : err.message;
    api.auth = null;
    return;
  }
  sessionStorage.setItem('ferry.auth', api.auth);
  sessionStorage.setItem('ferry.user', user);
  start();
});
$('#logout').addEventListener('click', () => logout());
$('#refresh').addEventListener('change', schedule);
window.addEventListener('hashchange', route);
window.addEventListener('resize', () => current && current.refresh && state.updated && current.refresh());

if (api.auth) start(); else logout();
