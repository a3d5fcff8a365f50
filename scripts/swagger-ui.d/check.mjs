// Drives Swagger UI in a real headless Chromium (Debian's /usr/bin/chromium,
// via playwright-core: no browser is downloaded) against a running
// subsidy-service, and fails on the first thing that does not work as a person
// would expect.
//
//   node check.mjs <base-url> <artifacts-dir>
//
// Environment: CHROMIUM (default /usr/bin/chromium), SWAGGER_UI_KEY (default
// local-platform-key), SWAGGER_UI_TIMEOUT_MS (default 30000).
//
// Every request the page makes is recorded; any request whose host is not
// loopback is aborted and fails the check. The browser is also started with a
// host-resolver rule that makes every name but 127.0.0.1 unresolvable, so an
// external fetch could not succeed even if it slipped past the router.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CHROMIUM_ARGS, LOOPBACK, holdToLoopback } from './browser.mjs';

const [base, artifacts] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error('usage: node check.mjs <base-url> <artifacts-dir>');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const KEY = process.env.SWAGGER_UI_KEY || 'local-platform-key';
const TIMEOUT = Number(process.env.SWAGGER_UI_TIMEOUT_MS || 30000);
const url = `${base}/swagger-ui/`;
mkdirSync(artifacts, { recursive: true });

const verified = [];
const ok = (msg) => {
  verified.push(msg);
  console.log(`  ok  ${msg}`);
};
class CheckError extends Error {}
const fail = (msg) => {
  throw new CheckError(msg);
};

const requests = []; // every request the page made
const blocked = []; // requests to a non-loopback host (aborted)
const consoleErrors = [];

const browser = await chromium.launch({
  executablePath,
  headless: true,
  chromiumSandbox: false, // as root: --no-sandbox
  args: [
    ...CHROMIUM_ARGS,
    // Every socket the browser opens, read afterwards by netlog.mjs.
    `--log-net-log=${join(artifacts, 'browser-netlog.json')}`,
  ],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  await holdToLoopback(context, blocked);
  context.on('request', (r) => requests.push(r));
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));

  // 1. The page loads and renders the document.
  const resp = await page.goto(url, { waitUntil: 'load' });
  if (!resp || resp.status() !== 200) fail(`GET ${url} answered ${resp && resp.status()}`);
  await page.locator('.swagger-ui .info .title').waitFor().catch(() =>
    fail('Swagger UI rendered no API title: the bundle or /openapi.json did not load'));
  const title = (await page.locator('.swagger-ui .info .title').innerText()).trim();
  if (!title.startsWith('subsidy-service')) fail(`API title is "${title}", expected subsidy-service`);
  ok(`page ${url} loaded; API title "${title.split('\n')[0]}" rendered`);
  await page.locator('.opblock').first().waitFor();
  const err = page.locator('.swagger-ui .errors-wrapper');
  if (await err.count()) fail(`Swagger UI shows errors: ${(await err.innerText()).slice(0, 500)}`);

  // 2. The operations render, with method and path.
  const op = (method, path) =>
    page.locator(`.opblock.opblock-${method}`, {
      has: page.locator(`.opblock-summary-path[data-path="${path}"]`),
    });
  const expected = [
    ['post', '/v1/claims'],
    ['get', '/v1/claims'],
    ['post', '/v1/claims/batch'],
    ['post', '/v1/evaluations'],
    ['get', '/v1/reason-codes'],
    ['get', '/v1/claims/{claim_id}'],
    ['post', '/v1/claims/{claim_id}/revocation'],
    ['get', '/v1/policies'],
    ['get', '/healthz'],
  ];
  for (const [m, p] of expected) {
    if ((await op(m, p).count()) !== 1) fail(`operation ${m.toUpperCase()} ${p} is not rendered`);
  }
  const total = await page.locator('.opblock').count();
  ok(`${total} operations rendered, including ${expected.map(([m, p]) => `${m.toUpperCase()} ${p}`).join(', ')}`);

  // 3. The Authorize button.
  const authorize = page.locator('.scheme-container button.btn.authorize');
  await authorize.waitFor().catch(() => fail('no "Authorize" button rendered'));
  if ((await authorize.innerText()).trim() !== 'Authorize') fail(`Authorize button reads "${await authorize.innerText()}"`);
  ok('"Authorize" button rendered (unlocked)');
  await page.screenshot({ path: join(artifacts, '1-operations.png'), fullPage: false });

  // Expands an operation, presses "Try it out" and "Execute", and returns
  // {status, body, request} for the request the page sent.
  const tryItOut = async (method, path, expectStatus) => {
    const block = op(method, path);
    if (!(await block.evaluate((el) => el.classList.contains('is-open')))) {
      await block.locator('.opblock-summary').first().click();
    }
    const tryBtn = block.locator('button.try-out__btn');
    if ((await tryBtn.innerText()).trim() === 'Try it out') await tryBtn.click();
    const wanted = (r) =>
      r.method() === method.toUpperCase() && new URL(r.url()).pathname === path && new URL(r.url()).origin === base;
    const [request] = await Promise.all([
      page.waitForRequest(wanted),
      block.locator('button.execute').click(),
    ]);
    const response = await request.response();
    if (!response) {
      const why = request.failure() ? request.failure().errorText : 'no response';
      fail(`${method.toUpperCase()} ${path} sent from Swagger UI got no response (${why})` +
        (/REFUSED/.test(why) ? ': the server is no longer listening' : ''));
    }
    // What the page shows for the response.
    const shown = block.locator('.live-responses-table .response .response-col_status').first();
    await shown.waitFor();
    const shownStatus = (await shown.innerText()).trim();
    const body = await block.locator('.live-responses-table .response-col_description .microlight, .live-responses-table .response-col_description pre').first().innerText();
    const curl = await block.locator('.curl-command, .curl').first().innerText().catch(() => '');
    if (response.status() !== expectStatus || shownStatus !== String(expectStatus)) {
      fail(`Try it out ${method.toUpperCase()} ${path}: expected ${expectStatus}, server answered ${response.status()}, page shows ${shownStatus}: ${body.slice(0, 300)}`);
    }
    return { status: response.status(), body, curl, headers: await request.allHeaders() };
  };

  // 4. Before authorizing, a protected operation is refused: the UI sends no key.
  const before = await tryItOut('get', '/v1/claims', 401);
  if (before.headers['authorization']) fail(`GET /v1/claims sent Authorization before authorizing: ${before.headers['authorization']}`);
  if (!before.body.includes('UNAUTHENTICATED')) fail(`401 body lacks UNAUTHENTICATED: ${before.body.slice(0, 300)}`);
  ok('before authorizing, Try it out GET /v1/claims sends no Authorization header and the page shows 401 UNAUTHENTICATED');

  // 5. Authorize with the demo platform key.
  await authorize.click();
  const modal = page.locator('.dialog-ux .modal-ux');
  await modal.waitFor().catch(() => fail('pressing Authorize opened no dialog'));
  const scheme = modal.locator('.auth-container', { hasText: 'bearer' });
  if (!(await scheme.count())) fail(`Authorize dialog has no "bearer" scheme: ${(await modal.innerText()).slice(0, 300)}`);
  await scheme.locator('input').first().fill(KEY);
  await scheme.locator('button.modal-btn.authorize').click();
  await scheme.locator('button.modal-btn.auth.btn-done, button:has-text("Logout")').first().waitFor();
  if (!(await scheme.locator('button', { hasText: 'Logout' }).count())) fail('after Authorize the dialog shows no Logout: the key was not accepted');
  await page.screenshot({ path: join(artifacts, '2-authorized.png') });
  await modal.locator('button.btn-done, button:has-text("Close")').first().click();
  await modal.waitFor({ state: 'detached' });
  if (!(await authorize.evaluate((el) => el.classList.contains('locked')))) fail('Authorize button is not shown locked after authorizing');
  ok(`Authorize dialog: bearer scheme, entered ${KEY}, Authorize → Logout shown; button now locked`);

  // 6. The public catalogue works from Try it out.
  const codes = await tryItOut('get', '/v1/reason-codes', 200);
  let parsed;
  try {
    parsed = JSON.parse(codes.body);
  } catch {
    fail(`GET /v1/reason-codes body shown is not JSON: ${codes.body.slice(0, 300)}`);
  }
  if (!Array.isArray(parsed) || !parsed.length || !parsed.every((c) => c.code && c.severity)) {
    fail(`GET /v1/reason-codes body is not the catalogue: ${codes.body.slice(0, 300)}`);
  }
  ok(`Try it out GET /v1/reason-codes → 200, page shows ${parsed.length} reason codes (first ${parsed[0].code})`);

  // 7. The protected operation now goes through with the Bearer key.
  const after = await tryItOut('get', '/v1/claims', 200);
  if (after.headers['authorization'] !== `Bearer ${KEY}`) {
    fail(`GET /v1/claims sent Authorization "${after.headers['authorization']}", expected "Bearer ${KEY}"`);
  }
  if (!after.curl.includes(`Authorization: Bearer ${KEY}`)) fail(`curl shown lacks the Bearer header: ${after.curl.slice(0, 300)}`);
  let claims;
  try {
    claims = JSON.parse(after.body);
  } catch {
    fail(`GET /v1/claims body shown is not JSON: ${after.body.slice(0, 300)}`);
  }
  if (!Array.isArray(claims.claims)) fail(`GET /v1/claims body has no claims array: ${after.body.slice(0, 300)}`);
  ok(`after authorizing, Try it out GET /v1/claims sends "Authorization: Bearer ${KEY}" (also in the curl shown) → 200 ${JSON.stringify(claims).slice(0, 60)}`);
  await op('get', '/v1/claims').scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(artifacts, '3-try-it-out.png') });

  // 8. Nothing left loopback.
  if (blocked.length) fail(`the page tried to reach non-loopback hosts: ${[...new Set(blocked)].join(', ')}`);
  const hosts = new Set(requests.map((r) => new URL(r.url()).host).filter(Boolean));
  for (const h of hosts) if (!LOOPBACK.has(h.replace(/:\d+$/, ''))) fail(`request to non-loopback host ${h}`);
  ok(`all ${requests.length} page requests went to ${[...hosts].join(', ')} only; none was blocked`);
  if (consoleErrors.length) {
    // A 401 shown by Try it out logs "Failed to load resource": expected.
    const unexpected = consoleErrors.filter((e) => !/status of 401/.test(e));
    if (unexpected.length) fail(`browser console errors: ${unexpected.join(' | ').slice(0, 600)}`);
  }
  ok('no browser console errors besides the expected 401');
} catch (e) {
  if (page) await page.screenshot({ path: join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`FAIL (browser): ${e instanceof CheckError ? e.message : e.stack || e}`);
  console.error(`  screenshot of the failure: ${artifacts}/failure.png`);
  await browser.close();
  process.exit(1);
}
await browser.close();
