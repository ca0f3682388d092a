// The catalog: plain DOM code over the portal API (the same routes as the README's curl lines),
// authenticated by the HttpOnly session cookie that POST /ui/session sets. Every value from the
// API goes into the page as text (textContent), never as markup.
'use strict';

const BROKER = document.querySelector('meta[name="busway-broker"]').content;
const view = document.getElementById('view');
const statusBox = document.getElementById('status');

/** An element with attributes (on* and properties by name) and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k in node && k !== 'list') node[k] = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function say(message, isError = false) {
  statusBox.textContent = message;
  statusBox.className = isError ? 'error' : '';
}

/** A portal call; an error answer throws with the API's message and details. */
async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) {
    const error = json && json.error;
    const details = error && error.details && error.details.length
      ? ': ' + error.details.map((d) => `${d.field} ${d.message}`).join('; ') : '';
    const e = new Error(error ? `${error.message}${details}` : `${method} ${path} answered ${response.status}`);
    e.status = response.status;
    throw e;
  }
  return json;
}

/** The items of a paged list (`field` of each page), following `next_token` up to `max`;
 * `more` when the list goes on. */
async function pages(path, field, max = 1000) {
  const items = [];
  let token = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', `${path}${sep}limit=100${token ? '&next_token=' + encodeURIComponent(token) : ''}`);
    items.push(...page[field]);
    token = page.next_token;
  } while (token && items.length < max);
  return { items, more: Boolean(token) };
}

/** Says that a list was cut at its first `count` items. */
function cut(more, count) {
  return more ? el('p', { className: 'note' }, `Only the first ${count} are shown.`) : null;
}

/** The page's heading, focused so a screen reader announces the new view. */
function heading(text) {
  document.title = `${text} · busway catalog`;
  return el('h2', { tabIndex: -1, id: 'view-title' }, text);
}

function show(...nodes) {
  view.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
  const h = document.getElementById('view-title');
  if (h) h.focus();
}

function table(caption, columns, rows) {
  return el('table', {},
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col' }, c)))),
    el('tbody', {}, rows.length
      ? rows.map((cells) => el('tr', {}, cells.map((c) => el('td', {}, c))))
      : el('tr', {}, el('td', { colSpan: columns.length }, 'None yet.'))));
}

function field(label, input, hint) {
  const id = input.id;
  return [el('label', { htmlFor: id }, label), input, hint ? el('p', { className: 'hint', id: `${id}-hint` }, hint) : null];
}

function select(id, options, value) {
  return el('select', { id, name: id }, options.map((o) => el('option', { value: o, selected: o === value }, o)));
}

function dl(pairs) {
  return el('dl', {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

/** Object keys sorted at every level, so two schemas compare by content. */
function stable(v) {
  if (Array.isArray(v)) return v.map(stable);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, stable(v[k])]));
  return v;
}

const pretty = (v) => JSON.stringify(stable(v), null, 2);

/** A line diff (longest common subsequence): [sign, line] with sign ' ', '-' or '+'. */
function diffLines(a, b) {
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push([' ', a[i]]); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(['-', a[i++]]);
    else out.push(['+', b[j++]]);
  }
  while (i < n) out.push(['-', a[i++]]);
  while (j < m) out.push(['+', b[j++]]);
  return out;
}

function diffView(from, to) {
  const lines = diffLines(pretty(from).split('\n'), pretty(to).split('\n'));
  const added = lines.filter(([s]) => s === '+').length;
  const removed = lines.filter(([s]) => s === '-').length;
  return [
    el('p', {}, `${added} line(s) added, ${removed} removed.`),
    el('pre', { className: 'diff', tabIndex: 0, 'aria-label': 'Schema diff' },
      lines.map(([sign, line]) => el('span', { className: sign === '+' ? 'add' : sign === '-' ? 'del' : '' }, `${sign} ${line}`))),
  ];
}

const versionsOf = (e) => (e.versions || []).map((v) => (typeof v === 'object' ? v.version : v));

// ---- views ----

async function eventsView() {
  const { items: events, more } = await pages('/events', 'event_types');
  const rows = events.map((e) => [
    el('a', { href: `#/events/${encodeURIComponent(e.event_type)}` }, e.event_type),
    e.application, e.team || '', versionsOf(e).join(', '), e.description || '',
  ]);
  const form = el('form', { className: 'panel', id: 'register-form' },
    el('h3', {}, 'Register an event type'),
    ...field('Application', el('input', { id: 'application', type: 'text', required: true })),
    ...field('Event type', el('input', { id: 'event_type', type: 'text', required: true, 'aria-describedby': 'event_type-hint' }),
      'Lower case letters, digits and _; it becomes the path /{event_type}/{version} of the broker.'),
    ...field('Description', el('input', { id: 'description', type: 'text', required: true })),
    ...field('Producer connection', select('connection_type', ['HTTPS', 'SQS'], 'HTTPS')),
    ...field('Data schema (JSON Schema draft-04)', el('textarea', { id: 'data', required: true, 'aria-describedby': 'data-hint' },
      '{"type": "object", "properties": {}}'), 'The schema of the events\' data; busway wraps it in the envelope.'),
    el('button', { type: 'submit' }, 'Register'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    let data;
    try { data = JSON.parse(value('data')); } catch (e) { say(`The data schema is not JSON: ${e.message}`, true); return; }
    try {
      const created = await api('POST', '/events', {
        application: value('application'), event_type: value('event_type'), description: value('description'),
        connection_type: value('connection_type'), data,
      });
      say(`Registered ${value('event_type')} version 1; deployment ${created.deployment_id}.`);
      go(`#/events/${encodeURIComponent(value('event_type'))}`);
    } catch (e) { say(e.message, true); }
  });
  show(heading('Event types'), table('Registered event types', ['Event type', 'Owner application', 'Team', 'Versions', 'Description'], rows),
    cut(more, events.length), form);
}

async function eventView(name) {
  const e = await api('GET', `/events/${encodeURIComponent(name)}`);
  const versions = versionsOf(e);
  const schemas = {};
  await Promise.all(versions.map(async (v) => {
    schemas[v] = await api('GET', `/events/${encodeURIComponent(name)}/versions/${v}`);
  }));
  const schemaOf = (v) => schemas[v].schema;
  const deleted = new Set((e.versions || []).filter((info) => info.state === 'DELETED').map((info) => info.version));
  const live = versions.filter((v) => !deleted.has(v));
  const versionBlocks = (e.versions || []).map((info) => { const v = info.version; return el('section', { className: 'panel', 'aria-labelledby': `v${v}` },
    el('h3', { id: `v${v}` }, `Version ${v}${deleted.has(v) ? ' (deleted)' : ''}`),
    dl([
      ['Producer endpoint', deleted.has(v) ? 'none: the version is deleted' : el('code', {}, `POST ${BROKER}/${name}/${v}`)],
      ['State', info.state],
      ['Provisioning', provisioning(info.provisioning, name)],
      ['Description', info.description],
      ['Created', info.created_at],
    ]),
    el('details', {}, el('summary', {}, `Schema of version ${v}`), el('pre', { tabIndex: 0 }, pretty(schemaOf(v))))); });

  const diffOut = el('div', { id: 'diff-out', 'aria-live': 'polite' });
  const diffForm = el('form', { className: 'panel', id: 'diff-form' },
    el('h3', {}, 'Compare versions'),
    ...field('From version', select('diff-from', versions.map(String), String(versions[0]))),
    ...field('To version', select('diff-to', versions.map(String), String(versions[versions.length - 1]))),
    el('button', { type: 'submit' }, 'Show diff'), diffOut);
  diffForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const from = diffForm.querySelector('#diff-from').value, to = diffForm.querySelector('#diff-to').value;
    diffOut.replaceChildren(el('h4', {}, `Version ${from} → version ${to}`), ...diffView(schemaOf(from), schemaOf(to)));
  });

  const versionForm = el('form', { className: 'panel', id: 'version-form' },
    el('h3', {}, 'Add a version'),
    ...field('Description', el('input', { id: 'version-description', type: 'text', required: true })),
    ...field('Data schema (JSON Schema draft-04)', el('textarea', { id: 'version-data', required: true }, pretty(dataOf(schemaOf(versions[versions.length - 1]))))),
    el('button', { type: 'submit' }, 'Add version'));
  versionForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let data;
    try { data = JSON.parse(versionForm.querySelector('#version-data').value); } catch (err) { say(`The data schema is not JSON: ${err.message}`, true); return; }
    try {
      const created = await api('PUT', `/events/${encodeURIComponent(name)}`, { description: versionForm.querySelector('#version-description').value, data });
      say(`Added version ${created.version ?? ''} of ${name}; deployment ${created.deployment_id}.`);
      await eventView(name);
    } catch (err) { say(err.message, true); }
  });

  const subscribeForm = el('form', { className: 'panel', id: 'subscribe-form' },
    el('h3', {}, 'Subscribe'),
    ...field('Version', select('sub-version', live.map(String), String(live[live.length - 1]))),
    ...field('Target unit', el('input', { id: 'target_unit', type: 'text', required: true })),
    ...field('Connection type', select('sub-connection_type', ['HTTPS', 'LAMBDA', 'SQS'], 'HTTPS')),
    ...field('Connection string', el('input', { id: 'connection_string', type: 'text', required: true, 'aria-describedby': 'connection_string-hint' }),
      'An https:// URL, a Lambda function ARN or an SQS queue ARN.'),
    el('button', { type: 'submit' }, 'Subscribe'));
  subscribeForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = (id) => subscribeForm.querySelector(`#${id}`).value.trim();
    try {
      const created = await api('POST', '/subscriptions', {
        event_type: name, version: value('sub-version'), target_unit: value('target_unit'),
        connection_type: value('sub-connection_type'), connection_string: value('connection_string'),
      });
      say(`Subscribed ${value('target_unit')}: subscription ${created.id}` + (created.secret ? `; its signing secret, shown once: ${created.secret}` : '.'));
      go(`#/subscriptions/${encodeURIComponent(created.id)}`);
    } catch (err) { say(err.message, true); }
  });

  show(heading(`Event type ${name}`),
    dl([['Owner application', e.application], ['Team', e.team], ['Description', e.description], ['Versions', versions.join(', ')]]),
    el('p', {}, el('a', { href: `#/subscriptions?event_type=${encodeURIComponent(name)}` }, `Subscriptions of ${name}`), ' · ',
      el('a', { href: `#/deployments?event_type=${encodeURIComponent(name)}` }, `Deployments of ${name}`)),
    ...versionBlocks, diffForm, versionForm, subscribeForm);
}

/** A version's or subscription's provisioning: its status, linked to its deployments. */
function provisioning(p, eventType) {
  if (!p) return null;
  const text = `${p.status}${p.live ? '' : ' (not live)'}`;
  return eventType
    ? el('a', { href: `#/deployments?event_type=${encodeURIComponent(eventType)}` }, text)
    : text;
}

/** The producer's `data` schema inside a stored envelope, or the schema itself. */
function dataOf(schema) {
  return (schema && schema.properties && schema.properties.data) || schema || {};
}

async function subscriptionsView(params) {
  const query = params.get('event_type') ? `?event_type=${encodeURIComponent(params.get('event_type'))}` : '';
  const { items: subscriptions, more } = await pages(`/subscriptions${query}`, 'subscriptions');
  const units = [...new Set(subscriptions.map((s) => s.target_unit))].sort();
  const sections = units.map((unit) => el('section', { 'aria-labelledby': `unit-${unit}` },
    el('h3', { id: `unit-${unit}` }, `Target unit ${unit}`),
    table(`Subscriptions of ${unit}`, ['Subscription', 'Event type', 'Version', 'Connection type', 'Connection', 'Provisioning'],
      subscriptions.filter((s) => s.target_unit === unit).map((s) => [
        el('a', { href: `#/subscriptions/${encodeURIComponent(s.id)}` }, s.id),
        s.event_type, String(s.version), s.connection_type, s.connection_string || '',
        s.provisioning ? s.provisioning.status : '',
      ]))));
  show(heading(params.get('event_type') ? `Subscriptions of ${params.get('event_type')}` : 'Subscriptions'),
    sections.length ? el('div', {}, sections) : el('p', {}, 'No subscriptions yet.'), cut(more, subscriptions.length));
}

async function subscriptionView(id) {
  const s = await api('GET', `/subscriptions/${encodeURIComponent(id)}`);
  const d = s.delivery || {};
  const lag = d.lag || {};
  let letters = [];
  let lettersNote = null;
  try {
    const found = await pages(`/subscriptions/${encodeURIComponent(id)}/dead-letters`, 'dead_letters');
    letters = found.items;
    lettersNote = cut(found.more, letters.length);
  } catch (e) { lettersNote = el('p', {}, `Dead letters: ${e.message}`); }
  const redrive = el('button', { type: 'button', id: 'redrive', disabled: letters.length === 0 }, 'Redrive dead letters');
  redrive.addEventListener('click', async () => {
    try {
      const r = await api('POST', `/subscriptions/${encodeURIComponent(id)}/dead-letters/redrive`, {});
      say(`Redriving ${r.redriving} dead letter(s) of ${id}.`);
      await subscriptionView(id);
    } catch (e) { say(e.message, true); }
  });
  const refresh = el('button', { type: 'button', className: 'secondary', id: 'refresh' }, 'Refresh');
  refresh.addEventListener('click', () => subscriptionView(id).catch((e) => say(e.message, true)));
  show(heading(`Subscription ${id}`),
    dl([
      ['Event type', el('a', { href: `#/events/${encodeURIComponent(s.event_type)}` }, s.event_type)],
      ['Version', String(s.version)], ['Target unit', s.target_unit], ['Connection type', s.connection_type],
      ['Connection', s.connection_string], ['Team', s.team], ['State', s.state], ['Delivery state', s.delivery_state],
      ['Provisioning', provisioning(s.provisioning, s.event_type)],
      ['Retry policy', s.retry_policy ? `${s.retry_policy.maximum_retry_attempts} retries within ${s.retry_policy.maximum_event_age_seconds} s` : null],
    ]),
    el('section', { className: 'panel', 'aria-labelledby': 'health' },
      el('h3', { id: 'health' }, 'Delivery health'),
      d.delivered === undefined ? el('p', {}, 'This host keeps no delivery counts for the subscription.') : dl([
        ['Delivered', String(d.delivered)], ['Retries', String(d.retries)], ['Dead-lettered', String(d.dead_lettered)],
        ['Lag (events)', lag.events === undefined ? 'unknown' : String(lag.events)],
        ['Lag (seconds)', lag.seconds === undefined ? 'unknown' : String(lag.seconds)],
        ['Waiting for a retry', d.pending_retries === undefined ? 'unknown' : String(d.pending_retries)],
        ['Last delivered', d.last_delivered_at || 'never'],
        ['Last error', d.last_error ? el('span', { className: 'bad' }, d.last_error) : 'none'],
        ['Last error at', d.last_error_at],
      ]),
      refresh),
    el('section', { className: 'panel', 'aria-labelledby': 'letters' },
      el('h3', { id: 'letters' }, 'Dead letters'),
      lettersNote,
      table(`${letters.length} dead letter(s)`, ['Event id', 'Attempts', 'Failed at', 'Error'],
        letters.map((l) => [eventIdOf(l.event) || String(l.id), String(l.attempts), l.failed_at, l.error])),
      redrive));
}

/** The `event_id` the producer was answered (and the log lines name) of a delivered event. */
function eventIdOf(event) {
  const metadata = event && event.detail && event.detail.metadata;
  return (metadata && metadata.event_id) || (event && event.id);
}

async function deploymentsView(params) {
  const query = params.get('event_type') ? `?event_type=${encodeURIComponent(params.get('event_type'))}` : '';
  const { items: deployments, more } = await pages(`/deployments${query}`, 'deployments', 500);
  const items = deployments.map((dep) => el('li', {},
    el('details', {},
      el('summary', {}, `${dep.kind} ${dep.action || ''} of ${dep.event_type || '?'}${dep.version ? ' v' + dep.version : ''}`
        + `${dep.subscription_id ? ' (subscription ' + dep.subscription_id + ')' : ''}: `,
        el('span', { className: dep.status }, dep.status)),
      dl([['Deployment', dep.id], ['Attempt', String(dep.attempt ?? 1)], ['Document', `${dep.bucket}/${dep.key}`],
        ['Error', dep.error], ['Cause', dep.cause]]),
      el('h4', {}, 'Status timeline'),
      el('ol', { className: 'timeline' }, (dep.history || []).map((h) => el('li', {}, el('span', { className: h.status }, h.status), ` at ${h.at}`))),
      dep.build ? [
        el('h4', {}, `Build ${dep.build.id}${dep.build.status ? ' (' + dep.build.status + ')' : ''}`),
        table('Build phases', ['Phase', 'Status', 'Seconds', 'Message'], (dep.build.phases || []).map((p) =>
          [p.name, p.status || '', p.duration_seconds === null || p.duration_seconds === undefined ? '' : String(p.duration_seconds), p.message || ''])),
      ] : el('p', {}, 'No build ran yet.'))));
  show(heading(params.get('event_type') ? `Deployments of ${params.get('event_type')}` : 'Deployments'),
    items.length ? el('ul', { className: 'deployments' }, items) : el('p', {}, 'No deployments yet.'),
    cut(more, deployments.length));
}

// ---- routing and sign-in ----

/** Set while a form moves to the view that shows its result, whose message stays. */
let keepStatus = false;

function go(hash) {
  keepStatus = true;
  location.hash = hash;
}

async function route() {
  const hash = location.hash.replace(/^#\/?/, '') || 'events';
  const [path, search] = hash.split('?');
  const params = new URLSearchParams(search || '');
  const [section, id] = path.split('/').map(decodeURIComponent);
  try {
    if (section === 'events' && id) await eventView(id);
    else if (section === 'subscriptions' && id) await subscriptionView(id);
    else if (section === 'subscriptions') await subscriptionsView(params);
    else if (section === 'deployments') await deploymentsView(params);
    else await eventsView();
  } catch (e) {
    if (e.status === 401) signedOut();
    else say(e.message, true);
  }
}

function signedOut() {
  document.getElementById('nav').hidden = true;
  document.getElementById('sign-out').hidden = true;
  document.getElementById('who').hidden = true;
  view.replaceChildren();
  const form = document.getElementById('sign-in');
  form.hidden = false;
  document.getElementById('key').focus();
}

async function start() {
  let me;
  try {
    me = await api('GET', '/ui/session');
  } catch (e) {
    if (e.status === 401) { signedOut(); return; }
    say(e.message, true);
    return;
  }
  document.getElementById('sign-in').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('sign-out').hidden = false;
  const who = document.getElementById('who');
  who.hidden = false;
  who.textContent = `Signed in: ${me.role} of ${me.team}${me.application ? ' (' + me.application + ')' : ''}`;
  await route();
}

document.getElementById('sign-in').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = document.getElementById('key');
  try {
    await api('POST', '/ui/session', { key: input.value.trim() });
    input.value = '';
    say('Signed in.');
    await start();
  } catch (e) {
    say(e.status === 401 ? 'That key is unknown, revoked or expired.' : e.message, true);
  }
});

document.getElementById('sign-out').addEventListener('click', async () => {
  await api('DELETE', '/ui/session').catch(() => {});
  say('Signed out.');
  signedOut();
});

window.addEventListener('hashchange', () => {
  if (!keepStatus) say('');
  keepStatus = false;
  route();
});
start();
