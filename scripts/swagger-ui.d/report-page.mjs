// Drives the report page (/reports/) in a real headless Chromium (Debian's
// /usr/bin/chromium, via playwright-core: no browser is downloaded) against a
// running subsidy-service that holds a few granted claims.
//
//   node report-page.mjs <base-url> <artifacts-dir> [screenshot.png]
//
// Checks, in order: the page loads with no report shown; a wrong key shows
// the service's problem and still no report; the auditor's key shows the
// chosen county and year with a bar per department and per kind and the
// figures the JSON report holds; "Download CSV" saves the CSV form. Every
// request must go to loopback (others are aborted and fail the check); the
// page must log no console error.

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHROMIUM_ARGS, holdToLoopback } from './browser.mjs';

const [base, artifacts, shot] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error('usage: node report-page.mjs <base-url> <artifacts-dir> [screenshot.png]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const KEY = process.env.REPORT_KEY || 'local-auditor-key';
const COUNTY = process.env.REPORT_COUNTY || 'wuyi';
const YEAR = process.env.REPORT_YEAR || '2020';
mkdirSync(artifacts, { recursive: true });

const ok = (msg) => console.log(`  ok  ${msg}`);
const fail = (msg) => {
  throw new Error(msg);
};
const blocked = [];
const consoleErrors = [];

const browser = await chromium.launch({
  executablePath,
  headless: true,
  chromiumSandbox: false,
  args: CHROMIUM_ARGS,
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 1500 }, acceptDownloads: true });
  await holdToLoopback(context, blocked);
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  const resp = await page.goto(`${base}/reports/`, { waitUntil: 'networkidle' });
  if (!resp || resp.status() !== 200) fail(`GET /reports/ answered ${resp && resp.status()}`);
  const csp = resp.headers()['content-security-policy'] || '';
  if (!csp.includes("default-src 'none'") || !csp.includes("script-src 'self'")) fail(`no restrictive Content-Security-Policy: ${csp}`);
  if (await page.isVisible('#report')) fail('a report is shown before any key was given');
  const counties = await page.$$eval('#county option', (os) => os.map((o) => o.value));
  if (!counties.includes('wuyi') || !counties.includes('changxing')) fail(`counties offered: ${counties}`);
  ok(`page loads with no report shown; counties from /v1/policies: ${counties.join(', ')}; CSP ${csp.split(';')[0]}`);

  await page.fill('#key', 'not-a-key');
  await page.selectOption('#county', COUNTY);
  await page.selectOption('#year', YEAR);
  await page.click('#show');
  await page.waitForSelector('#message.error');
  const refused = await page.textContent('#message');
  if (await page.isVisible('#report')) fail('a report is shown for a wrong key');
  ok(`a wrong key shows the service's problem and no report: "${refused.trim()}"`);
  // The browser logs the 401 it was just given; later errors are the page's.
  consoleErrors.length = 0;

  await page.fill('#key', KEY);
  await page.click('#show');
  await page.waitForSelector('#report', { state: 'visible' });
  const json = await (
    await fetch(`${base}/v1/reports/${COUNTY}/${YEAR}`, { headers: { Authorization: `Bearer ${KEY}` } })
  ).json();
  const departments = await page.$$('#departments tbody tr');
  const kinds = await page.$$('#kinds tbody tr');
  if (departments.length !== json.by_department.length) fail(`${departments.length} department rows, want ${json.by_department.length}`);
  if (kinds.length !== json.by_kind.length) fail(`${kinds.length} kind rows, want ${json.by_kind.length}`);
  const shownGranted = (await page.textContent('#granted')).replace(/[^0-9]/g, '');
  if (shownGranted !== String(json.granted)) fail(`granted shown ${shownGranted}, report says ${json.granted}`);
  if ((await page.textContent('#amount')).trim() !== json.amount) fail('the amount shown differs from the report');
  const widths = await page.$$eval('#departments .fill', (fs) => fs.map((f) => parseFloat(f.style.width)));
  const filled = widths.filter((w) => w > 0).length;
  const withGrants = json.by_department.filter((d) => d.granted > 0).length;
  if (filled !== withGrants) fail(`${filled} department bars filled, ${withGrants} departments have grants`);
  ok(`${COUNTY} ${YEAR}: ${json.granted} granted against plan ${json.plan_total}, ${departments.length} department rows (${filled} bars filled), ${kinds.length} kind rows, figures equal to the JSON report`);

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv')]);
  const saved = join(artifacts, download.suggestedFilename());
  await download.saveAs(saved);
  const csv = readFileSync(saved, 'utf8');
  if (!csv.startsWith('\ufeffcounty,year,section,code,name_zh,clause,granted,amount,plan')) fail(`the CSV starts ${JSON.stringify(csv.slice(0, 60))}`);
  const rows = csv.trim().split('\n').length;
  if (rows !== 2 + json.by_kind.length + json.by_department.length) fail(`the CSV has ${rows} lines`);
  ok(`Download CSV saved ${download.suggestedFilename()} (${rows} lines, with the byte-order mark)`);

  const file = shot || join(artifacts, 'report-page.png');
  await page.screenshot({ path: file, fullPage: true });
  ok(`screenshot ${file}`);
  if (blocked.length) fail(`requests to non-loopback hosts: ${blocked.join(', ')}`);
  if (consoleErrors.length) fail(`console errors: ${consoleErrors.join(' | ')}`);
  ok('every request went to loopback; no console error');
} catch (e) {
  if (page) await page.screenshot({ path: join(artifacts, 'report-page-failure.png'), fullPage: true }).catch(() => {});
  console.error(`FAIL: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
