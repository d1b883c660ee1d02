// The dashboard in a real browser: headless Debian Chromium driven by
// playwright-core (no browser download). Loads the page, waits for data,
// and checks that the chart has 16 bars, with a non-zero height for every
// state that has households and none for the others; that the readings table
// fills; that the page refreshes without reloading; that no request left the
// host; and that nothing failed in the console. Saves a screenshot.
//
//   node web/tests/browser.mjs URL SCREENSHOT_PATH [--expect-empty | --expect-down]
//
// With --expect-empty the page must instead show "no data yet" and no chart;
// with --expect-down (the cloud's cache refuses every call) it must say it
// cannot load data, with the API's reason, and keep polling.
// Exits 0 when every check passes, 1 with the failures listed otherwise.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/** How long the page may take to show data. */
const DATA_WAIT_MS = 30_000;
/** Long enough for at least one refresh (the page polls every 5 s). */
const REFRESH_WAIT_MS = 12_000;
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const [url, screenshotPath, ...flags] = process.argv.slice(2);
if (!url || !screenshotPath) {
  console.error('usage: node web/tests/browser.mjs URL SCREENSHOT_PATH [--expect-empty | --expect-down]');
  process.exit(2);
}
const expectEmpty = flags.includes('--expect-empty');
const expectDown = flags.includes('--expect-down');
const origin = new URL(url).origin;
const failures = [];

function check(condition, message) {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${message}`);
  if (!condition) {
    failures.push(message);
  }
}

/** Reads the chart's bars as drawn: label, value and pixel height per state. */
async function bars(page) {
  return page.evaluate(() => {
    const chart = window.edgemeter && window.edgemeter.chart;
    if (!chart) {
      return null;
    }
    const meta = chart.getDatasetMeta(0);
    return meta.data.map((bar, index) => ({
      label: chart.data.labels[index],
      value: chart.data.datasets[0].data[index],
      height: Math.abs(bar.getProps(['height'], true).height),
    }));
  });
}

async function checkData(page) {
  await page.waitForFunction(
    () => window.edgemeter && window.edgemeter.chart && document.querySelectorAll('#tuples tbody tr').length > 0,
    null,
    { timeout: DATA_WAIT_MS },
  );
  const states = await (await fetch(new URL('/api/states', origin))).json();
  const drawn = await bars(page);
  check(drawn.length === 16, `the chart has 16 bars (has ${drawn.length})`);
  check(
    JSON.stringify(drawn.map((bar) => bar.label)) === JSON.stringify(states.map((row) => row.state)),
    'the bars are labelled with the 16 states in the API\'s order',
  );
  for (const [index, row] of states.entries()) {
    const bar = drawn[index];
    if (row.households > 0) {
      check(bar.height > 0, `${row.state}: ${row.households} households, bar ${bar.height.toFixed(1)} px high`);
    } else {
      check(bar.height === 0, `${row.state}: no households, no bar (${bar.height} px)`);
    }
  }
  const costBars = await page.evaluate(() => window.edgemeter.chart.getDatasetMeta(1).data.length);
  check(costBars === 16, `the cost dataset beside it has 16 bars (has ${costBars})`);
  const rows = await page.locator('#tuples tbody tr').count();
  check(rows > 0, `the readings table has ${rows} rows`);
  const firstRow = await page.locator('#tuples tbody tr').first().innerText();
  check(/ W\b/.test(firstRow), `table rows show watts: "${firstRow.replace(/\s+/g, ' ')}"`);
  const edges = await page.locator('#edges .edge').count();
  check(edges > 0, `the edge panel shows ${edges} edges`);
  // Edges of this version report their backlog in their heartbeats.
  const backlogs = await page.locator('#edges .edge dd').allTextContents();
  check(
    backlogs.some((text) => /readings \(|none: every reading acknowledged/.test(text)),
    `an edge panel shows a reported backlog: ${JSON.stringify(backlogs)}`,
  );
  check(await page.locator('#chart-empty').isHidden(), 'the "no data yet" note is hidden');
}

async function checkEmpty(page) {
  await page.waitForFunction(() => window.edgemeter && window.edgemeter.refreshes > 0, null, { timeout: DATA_WAIT_MS });
  check(await page.locator('#chart-empty').isVisible(), 'the page says "no data yet"');
  const text = await page.locator('#chart-empty').innerText();
  check(/no data yet/i.test(text), `the note reads "${text}"`);
  check(await page.locator('#chart-box').isHidden(), 'no empty chart is drawn');
  check(await page.evaluate(() => window.edgemeter.chart === null), 'no chart was created');
}

async function checkDown(page) {
  await page.waitForFunction(() => window.edgemeter && window.edgemeter.refreshes > 0, null, { timeout: DATA_WAIT_MS });
  const status = await page.locator('#status').innerText();
  check(/cannot load data/i.test(status), `the status line says so: "${status}"`);
  const reason = (await (await fetch(new URL('/api/states', origin))).json()).reason;
  check(status.includes(reason), `and gives the API's reason ("${reason}")`);
  check(await page.locator('#status').evaluate((node) => node.classList.contains('error')), 'the status line is marked as an error');
  check(await page.evaluate(() => window.edgemeter.chart === null), 'no chart was drawn from no data');
  const note = await page.locator('#chart-empty').innerText();
  check(!/no data yet/i.test(note) && /unavailable/i.test(note), `the chart's place says unavailable, not "no data yet": "${note}"`);
}

/** A 503 answer is logged by Chromium as a failed resource; expected when down. */
function expected(problem) {
  return expectDown && /status of 503/.test(problem);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
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
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const requests = [];
    const problems = [];
    page.on('request', (request) => requests.push(request.url()));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') {
        problems.push(`console ${message.type()}: ${message.text()}`);
      }
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));
    let navigations = 0;
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) {
        navigations += 1;
      }
    });

    const response = await page.goto(url, { waitUntil: 'load' });
    check(response && response.ok(), `the page loads (${response && response.status()})`);
    if (expectDown) {
      await checkDown(page);
    } else if (expectEmpty) {
      await checkEmpty(page);
    } else {
      await checkData(page);
    }

    const before = await page.evaluate(() => window.edgemeter.refreshes);
    await page.waitForFunction((count) => window.edgemeter.refreshes > count, before, { timeout: REFRESH_WAIT_MS });
    check(navigations === 1, `the data refreshed without reloading the page (${navigations} navigation)`);
    const statesCalls = requests.filter((address) => new URL(address).pathname === '/api/states').length;
    check(statesCalls >= 2, `/api/states was polled ${statesCalls} times`);

    const outside = requests.filter((address) => {
      const parsed = new URL(address);
      return parsed.protocol !== 'data:' && parsed.origin !== origin;
    });
    check(outside.length === 0, `no request left ${origin} (${requests.length} requests${outside.length ? `; outside: ${outside.join(', ')}` : ''})`);
    const unexpected = problems.filter((problem) => !expected(problem));
    check(unexpected.length === 0, `no console errors, page errors or failed requests${unexpected.length ? `: ${unexpected.join('; ')}` : ''}`);

    mkdirSync(dirname(screenshotPath), { recursive: true });
    await page.screenshot({ path: screenshotPath, fullPage: true });
    console.log(`screenshot: ${screenshotPath}`);
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (error) {
  failures.push(`the test could not finish: ${error.message}`);
  console.log(`FAIL ${error.stack || error.message}`);
}
if (failures.length > 0) {
  console.log(`\n${failures.length} check(s) failed`);
  process.exit(1);
}
console.log('\nall checks passed');
