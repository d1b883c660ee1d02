// The EdgeMeter dashboard's script: polls the cloud's API every few seconds
// and redraws in place, without reloading. No framework, no jQuery, and no
// URL outside this host. Data is written with textContent, never as HTML.
'use strict';

/** How often the page asks for new data. */
const REFRESH_INTERVAL_MS = 5000;
/** A call that takes longer counts as failed; the next poll tries again. */
const FETCH_TIMEOUT_MS = 4000;
/** Rows in the latest-readings table. */
const TUPLES_SHOWN_MAX = 25;

const ENERGY_COLOUR = '#2563eb';
const COST_COLOUR = '#d97706';

/** What each placeholder says once the API has answered with nothing. */
const EMPTY_TEXT = {
  'chart-empty': 'No data yet. The chart appears when the first readings arrive.',
  'edges-empty': 'No edge has reported yet.',
  'tuples-empty': 'No data yet.',
};
/** What the placeholders say while the API has never answered. */
const UNAVAILABLE_TEXT = 'Unavailable until the API answers (see the status line above).';

/** Exposed for the browser test: the chart, refreshes run, whether data ever loaded. */
const dashboard = { chart: null, refreshes: 0, loaded: false, lastError: null };
window.edgemeter = dashboard;

const whole = new Intl.NumberFormat('en-GB', { maximumFractionDigits: 0 });
const tenth = new Intl.NumberFormat('en-GB', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const cents = new Intl.NumberFormat('en-GB', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const clock = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateClock = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });

function byId(id) {
  return document.getElementById(id);
}

/** Fetches JSON from this host; an error answer's `reason` becomes the message. */
async function fetchJson(path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(path, { signal: controller.signal, headers: { Accept: 'application/json' } });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error(body && body.reason ? body.reason : `HTTP ${response.status}`);
    }
    return body;
  } catch (error) {
    if (error.name === 'AbortError') {
      throw new Error(`no answer within ${FETCH_TIMEOUT_MS / 1000} s`);
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** "12 s ago" for recent times, the date and time for older ones. */
function ago(ms) {
  if (ms === null || ms === undefined) {
    return 'never';
  }
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) {
    return `${seconds} s ago`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ago`;
  }
  return dateClock.format(new Date(ms));
}

function when(ms) {
  if (ms === null || ms === undefined) {
    return '—';
  }
  const date = new Date(ms);
  const today = new Date().toDateString() === date.toDateString();
  return today ? clock.format(date) : dateClock.format(date);
}

/** Shows or hides a placeholder, with its "nothing yet" text. */
function placeholder(id, visible) {
  const note = byId(id);
  note.hidden = !visible;
  note.textContent = EMPTY_TEXT[id];
}

function setStatus(text, failed) {
  const status = byId('status');
  status.textContent = text;
  status.classList.toggle('error', failed);
}

function renderSummary(states, edges) {
  const households = states.reduce((sum, row) => sum + row.households, 0);
  const tuples = states.reduce((sum, row) => sum + row.tuples, 0);
  const withData = states.filter((row) => row.tuples > 0).length;
  const connected = edges.filter((edge) => edge.connected).length;
  byId('total-households').textContent = whole.format(households);
  byId('total-tuples').textContent = whole.format(tuples);
  byId('total-states').textContent = `${withData} of ${states.length}`;
  byId('total-edges').textContent = `${connected} of ${edges.length}`;
}

/** The price is cost per kWh for any state with data (the API applies one price). */
function priceOf(states) {
  const row = states.find((candidate) => candidate.annual_kwh > 0);
  return row ? row.annual_cost_eur / row.annual_kwh : null;
}

function chartOptions() {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: 'index', intersect: false },
    plugins: {
      legend: { position: 'top' },
      tooltip: {
        callbacks: {
          label: (item) => item.datasetIndex === 0
            ? ` Consumption: ${whole.format(item.raw)} kWh per year`
            : ` Cost: ${cents.format(item.raw)} € per year`,
          afterBody: (items) => {
            const row = dashboard.rows[items[0].dataIndex];
            return [
              `Average power: ${tenth.format(row.avg_power_w)} W`,
              `Households: ${whole.format(row.households)} · readings: ${whole.format(row.tuples)}`,
            ];
          },
        },
      },
    },
    scales: {
      x: { ticks: { autoSkip: false, maxRotation: 50, minRotation: 30 } },
      energy: {
        type: 'linear',
        position: 'left',
        beginAtZero: true,
        title: { display: true, text: 'Consumption (kWh per year)', color: ENERGY_COLOUR },
        ticks: { callback: (value) => whole.format(value) },
      },
      cost: {
        type: 'linear',
        position: 'right',
        beginAtZero: true,
        grid: { drawOnChartArea: false },
        title: { display: true, text: 'Cost (€ per year)', color: COST_COLOUR },
        ticks: { callback: (value) => `${whole.format(value)} €` },
      },
    },
  };
}

function renderChart(states) {
  dashboard.rows = states;
  const empty = states.every((row) => row.tuples === 0);
  const missing = typeof window.Chart === 'undefined';
  placeholder('chart-empty', empty);
  byId('chart-missing').hidden = empty || !missing;
  byId('chart-box').hidden = empty || missing;
  const price = priceOf(states);
  byId('price').textContent = price === null ? 'the configured price' : `${cents.format(price)} €/kWh`;
  if (empty || missing) {
    return;
  }
  const labels = states.map((row) => row.state);
  const energy = states.map((row) => row.annual_kwh);
  const cost = states.map((row) => row.annual_cost_eur);
  if (dashboard.chart === null) {
    dashboard.chart = new window.Chart(byId('states-chart'), {
      type: 'bar',
      data: {
        labels,
        datasets: [
          { label: 'Consumption (kWh per year)', data: energy, yAxisID: 'energy', backgroundColor: ENERGY_COLOUR },
          { label: 'Cost (€ per year)', data: cost, yAxisID: 'cost', backgroundColor: COST_COLOUR },
        ],
      },
      options: chartOptions(),
    });
    return;
  }
  dashboard.chart.data.labels = labels;
  dashboard.chart.data.datasets[0].data = energy;
  dashboard.chart.data.datasets[1].data = cost;
  dashboard.chart.update('none');
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) {
    td.className = className;
  }
  return td;
}

function renderTuples(tuples) {
  const table = byId('tuples');
  placeholder('tuples-empty', tuples.length === 0);
  table.hidden = tuples.length === 0;
  const rows = tuples.map((tuple) => {
    const tr = document.createElement('tr');
    const household = cell(tuple.household_id.length > 14 ? `${tuple.household_id.slice(0, 12)}…` : tuple.household_id);
    household.title = tuple.household_id;
    tr.append(
      cell(when(tuple.received_ms)),
      cell(tuple.edge_id),
      household,
      cell(when(tuple.window_start_ms)),
      cell(`${tenth.format(tuple.average_power_w)} W`, 'number'),
      cell(whole.format(tuple.samples), 'number'),
      cell(tuple.postal_code),
      cell(tuple.state),
    );
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
}

/** What an edge still holds for the cloud, as its last heartbeat reported it. */
function backlogText(edge) {
  if (edge.backlog_tuples === null || edge.backlog_tuples === undefined) {
    // Edges older than the backlog heartbeat, or a cloud that has not heard one yet.
    return 'not reported';
  }
  if (edge.backlog_tuples === 0) {
    return 'none: every reading acknowledged';
  }
  return `${whole.format(edge.backlog_tuples)} readings (${whole.format(edge.queued_tuples)} queued, ${whole.format(edge.sent_tuples)} sent)`;
}

/** How long the oldest unacknowledged reading had waited at the last heartbeat. */
function oldestText(edge) {
  const ms = edge.oldest_unacked_age_ms;
  if (ms === null || ms === undefined) {
    return 'not reported';
  }
  if (!edge.backlog_tuples) {
    return 'nothing waiting';
  }
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) {
    return `${seconds} s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min`;
  }
  return `${tenth.format(seconds / 3600)} h`;
}

function edgePanel(edge) {
  const panel = document.createElement('article');
  panel.className = 'edge';
  const head = document.createElement('div');
  head.className = 'edge-head';
  const name = document.createElement('span');
  name.className = 'edge-name';
  name.textContent = edge.edge_id;
  const badge = document.createElement('span');
  badge.className = edge.connected ? 'badge up' : 'badge down';
  badge.textContent = edge.connected ? 'connected' : 'not connected';
  head.append(name, badge);
  const facts = document.createElement('dl');
  for (const [term, value] of [
    ['Last heartbeat', ago(edge.last_heartbeat_ms)],
    ['Readings stored', whole.format(edge.tuples)],
    ['Last reading', ago(edge.last_tuple_ms)],
    ['Backlog', backlogText(edge)],
    ['Oldest waiting', oldestText(edge)],
  ]) {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    facts.append(dt, dd);
  }
  panel.append(head, facts);
  return panel;
}

function renderEdges(edges) {
  placeholder('edges-empty', edges.length === 0);
  byId('edges').replaceChildren(...edges.map(edgePanel));
}

/** One poll: all three calls, then redraw; the next poll is scheduled either way. */
async function refresh() {
  try {
    const [states, tuples, edges] = await Promise.all([
      fetchJson('/api/states'),
      fetchJson(`/api/tuples?limit=${TUPLES_SHOWN_MAX}`),
      fetchJson('/api/edges'),
    ]);
    renderSummary(states, edges);
    renderChart(states);
    renderTuples(tuples);
    renderEdges(edges);
    dashboard.loaded = true;
    dashboard.lastError = null;
    setStatus(`Updated ${clock.format(new Date())} · refreshes every ${REFRESH_INTERVAL_MS / 1000} s`, false);
  } catch (error) {
    dashboard.lastError = error.message;
    if (!dashboard.loaded) {
      // Nothing was ever shown: say so rather than "no data yet", which
      // would claim the cloud holds nothing. After a first load, the last
      // data stays on screen under the red status line.
      for (const id of Object.keys(EMPTY_TEXT)) {
        byId(id).hidden = false;
        byId(id).textContent = UNAVAILABLE_TEXT;
      }
    }
    setStatus(`Cannot load data: ${error.message}. Retrying every ${REFRESH_INTERVAL_MS / 1000} s.`, true);
  } finally {
    dashboard.refreshes += 1;
    setTimeout(refresh, REFRESH_INTERVAL_MS);
  }
}

refresh();
