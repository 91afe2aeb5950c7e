// The console's and the ops pages' browser scenarios, in headless
// Chromium (the system's, driven by playwright-core). Run by the ledger's
// end-to-end tests (ledger/cli/tests/it/browser.rs), which start the
// servers, the ledger and the fake Razorpay, pass their addresses and
// tokens in the environment, and check the ledger afterwards:
//
//   node console.mjs <scenario>
//
// Scenarios: payments, history, ops. Each exits non-zero, naming the step,
// on the first thing that is not as a customer or operator would expect.
// Screenshots of every page, at 1280 px and 375 px, go to $SCREENSHOTS.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('LEDGER_URL');
const shots = env('SCREENSHOTS');
mkdirSync(shots, { recursive: true });
const WAIT_MS = 20000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-quic',
  ],
});

const widths = { desktop: { width: 1280, height: 860 }, phone: { width: 375, height: 760 } };

async function newPage(width = 'desktop') {
  const context = await browser.newContext({ viewport: widths[width] });
  const page = await context.newPage();
  page.on('pageerror', (e) => {
    console.error(`page error on ${page.url()}: ${e.message}`);
    process.exitCode = 1;
  });
  return page;
}

/// Both widths of the page at `url` (as the given session's cookies see it).
/// At each, nothing is wider than the screen: a wide table scrolls inside
/// its card, the page itself never sideways.
async function screenshot(page, name) {
  for (const [width, size] of Object.entries(widths)) {
    await page.setViewportSize(size);
    await page.screenshot({ path: `${shots}/${name}-${width}.png`, fullPage: true });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= size.width, `${name} at ${width} width is ${wide} px wide, wider than the screen's ${size.width}`);
  }
  await page.setViewportSize(widths.desktop);
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()).trim();
}

async function signIn(page, area, token) {
  await page.goto(`${base}/${area}/sign-in`);
  await page.fill('#token', token);
  await page.click('#sign-in button[type=submit]');
  await page.waitForLoadState('load');
}

const step = async (name, fn) => {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.error(`FAIL ${name}: ${e.stack || e}`);
    await browser.close();
    process.exit(1);
  }
};

// --- payments ------------------------------------------------------------------

const checkout = (page) => page.frameLocator('iframe.razorpay-checkout-frame');

/// Pays in the fake Checkout's page by `method`.
async function pay(page, method, { fail = false } = {}) {
  const f = checkout(page);
  await f.locator('#amount').waitFor({ timeout: WAIT_MS });
  assert.equal((await f.locator('#amount').textContent()).trim(), '₹2,078.00');
  switch (method) {
    case 'upi':
      await f.locator('#vpa').fill(fail ? 'failure@razorpay' : 'success@razorpay');
      await f.locator('#pay-upi').click();
      break;
    case 'upi-qr': {
      await f.locator('#show-qr').click();
      const img = f.locator('#qr-img');
      await img.waitFor();
      await page.waitForTimeout(50);
      const loaded = await img.evaluate((el) => el.complete && el.naturalWidth > 0);
      assert.ok(loaded, 'the UPI QR code is drawn');
      await f.locator('#pay-qr').click();
      break;
    }
    case 'card':
      await f.locator('[data-method=card]').click();
      await f.locator('#card-number').fill(fail ? '4000 0000 0000 0002' : '4111 1111 1111 1111');
      await f.locator('#card-expiry').fill('12/30');
      await f.locator('#card-cvv').fill('123');
      await f.locator('#pay-card').click();
      await f.locator('#otp').fill('123456');
      await f.locator('#submit-otp').click();
      break;
    case 'netbanking':
      await f.locator('[data-method=netbanking]').click();
      await f.locator('#bank').selectOption('ICIC');
      await f.locator('#go-bank').click();
      await f.locator(fail ? '#bank-failure' : '#bank-success').click();
      break;
    case 'wallet':
      await f.locator('[data-method=wallet]').click();
      await f.locator('#wallet').selectOption('phonepe');
      await f.locator('#pay-wallet').click();
      break;
    default:
      throw new Error(`no method ${method}`);
  }
}

/// Opens the dialog and asks for USD 25.00 (for `bucket`): the INR amount
/// shown as the quote says.
async function askFor25(page, bucket = 'general') {
  await page.click('#top-up');
  await page.locator('#add-credits[open]').waitFor();
  assert.ok(await page.locator('#retry').isHidden(), 'no "Try again" in a new dialog');
  assert.ok(await page.locator('#quote').isHidden(), 'no quote before an amount');
  // Checked as typed: too many decimals, then too much, then right.
  await page.fill('#amount', '25.001');
  await page.locator('#amount-error:not([hidden])').waitFor();
  await page.fill('#amount', '99999999');
  await page.locator('#amount-error:not([hidden])').waitFor();
  await page.fill('#amount', '25.00');
  await page.locator('#quote-inr', { hasText: '₹2,078.00' }).waitFor({ timeout: WAIT_MS });
  assert.equal(await text(page, '#quote-credits'), '25');
  assert.ok(await page.locator('#amount-error').isHidden(), 'no error for 25.00');
  await page.fill('#phone', '+919876543210');
  await page.selectOption('#bucket', bucket);
}

const methodNames = { upi: 'UPI', 'upi-qr': 'UPI', card: 'Card', netbanking: 'Netbanking', wallet: 'Wallet' };

/// The confirmation reached "Credits added"; the history's newest row is
/// this payment.
async function confirmed(page, method, account) {
  await page.waitForURL(/\/topups\//, { timeout: WAIT_MS });
  await page.locator('#topup-status[data-status=credited]').waitFor({ timeout: WAIT_MS });
  assert.equal(await text(page, '#topup-status h1'), 'Credits added');
  const txn = await text(page, '#transaction-id');
  assert.match(txn, /^pay_/);
  assert.equal(await text(page, '#amount-usd'), '$25.00');
  assert.equal(await text(page, '#amount-inr'), '₹2,078.00');
  assert.equal(await text(page, '#method'), methodNames[method]);
  assert.match(await text(page, '#new-balance'), /credits in all/);
  await page.goto(`${base}/console/accounts/${account}/history`);
  const row = page.locator('#history tbody tr').first();
  assert.equal((await row.locator('td.reference').textContent()).trim(), txn);
  assert.equal((await row.locator('td.kind').textContent()).trim(), 'Credits added');
  assert.equal((await row.locator('td.delta').textContent()).trim(), '+25');
  return txn;
}

async function payments() {
  const account = env('ACCOUNT');
  const page = await newPage();
  await step('sign in with the console token', async () => {
    await signIn(page, 'console', env('CONSOLE_TOKEN'));
    await page.waitForURL(`${base}/console/accounts/${account}`);
    assert.equal(await text(page, '#my-credits'), '0');
    await screenshot(page, 'billing-empty');
  });
  const plan = [
    ['upi', 'general'],
    ['upi-qr', 'general'],
    ['card', 'sms'],
    ['netbanking', 'email'],
    ['wallet', 'general'],
  ];
  let total = 0;
  for (const [method, bucket] of plan) {
    await step(`top up USD 25.00 by ${method} into ${bucket}`, async () => {
      await page.goto(`${base}/console/accounts/${account}`);
      await askFor25(page, bucket);
      if (method === 'upi') await screenshot(page, 'add-credits-dialog');
      await page.click('#pay');
      if (method === 'card') {
        await checkout(page).locator('#amount').waitFor();
        await screenshot(page, 'checkout');
      }
      await pay(page, method);
      if (method === 'upi') {
        await page.waitForURL(/\/topups\//, { timeout: WAIT_MS });
        await page.locator('#topup-status[data-status=credited]').waitFor({ timeout: WAIT_MS });
        await screenshot(page, 'confirmation');
      }
      await confirmed(page, method, account);
      total += 25;
      await page.goto(`${base}/console/accounts/${account}`);
      assert.equal(await text(page, '#my-credits'), String(total));
    });
  }
  await step('per-service credits count the bucket and general', async () => {
    const sms = page.locator('article.service[data-service=sms]');
    assert.match(await sms.locator('h2').textContent(), /Credits for SMS Services/);
    assert.equal((await sms.locator('dd.bucket').textContent()).trim(), '25');
    assert.equal((await sms.locator('.spendable').textContent()).trim(), '100');
    const email = page.locator('article.service[data-service=email]');
    assert.match(await email.locator('h2').textContent(), /Credits for Email Services/);
    assert.equal((await email.locator('.spendable').textContent()).trim(), '100');
    await screenshot(page, 'billing');
  });
  await step('a dismissed window, then a failed payment, then a retry: credited once', async () => {
    await askFor25(page);
    await page.click('#pay');
    await checkout(page).locator('#close').click();
    await page.locator('#retry:not([hidden])').waitFor();
    assert.match(await text(page, '#pay-status'), /closed/);
    await page.click('#retry');
    await pay(page, 'upi', { fail: true });
    await page.locator('#retry:not([hidden])').waitFor();
    assert.match(await text(page, '#pay-status'), /Payment failed/);
    await screenshot(page, 'payment-failed');
    await page.click('#retry');
    await pay(page, 'netbanking');
    await confirmed(page, 'netbanking', account);
    total += 25;
  });
  await step('the confirmation follows a top-up the webhook credits, without a reload', async () => {
    const fake = env('FAKE_URL');
    const mode = (m) => page.request.post(`${fake}/_fake/webhooks/mode`, { data: m });
    // The success handler's call is lost and the webhook is slow: the
    // page must wait for the webhook and show it when it lands.
    await mode({ delay_ms: 2500 });
    await page.route('**/topups/*/checkout', (route) => route.abort());
    await page.goto(`${base}/console/accounts/${account}`);
    await askFor25(page);
    await page.click('#pay');
    await pay(page, 'card');
    await page.waitForURL(/\/topups\/[^/]+$/, { timeout: WAIT_MS });
    const pending = await page.locator('#topup-status').getAttribute('data-status');
    assert.notEqual(pending, 'credited', 'credited before the webhook could have landed');
    await page.evaluate(() => { window.stillThisPage = true; });
    await screenshot(page, 'confirmation-pending');
    await page.locator('#topup-status[data-status=credited]').waitFor({ timeout: WAIT_MS });
    assert.ok(await page.evaluate(() => window.stillThisPage === true), 'the page reloaded');
    assert.equal(await text(page, '#topup-status h1'), 'Credits added');
    assert.match(await text(page, '#transaction-id'), /^pay_/);
    await page.unroute('**/topups/*/checkout');
    await mode({});
    total += 25;
  });
  await step('a double click on "Add Credits" makes one top-up', async () => {
    await page.goto(`${base}/console/accounts/${account}`);
    await askFor25(page);
    await page.dblclick('#pay');
    await pay(page, 'wallet');
    await confirmed(page, 'wallet', account);
    total += 25;
    await page.goto(`${base}/console/accounts/${account}`);
    assert.equal(await text(page, '#my-credits'), String(total));
  });
  console.log(JSON.stringify({ total }));
}

// --- history -------------------------------------------------------------------

async function history() {
  const account = env('ACCOUNT');
  const expected = JSON.parse(env('EXPECTED'));
  const page = await newPage();
  const url = `${base}/console/accounts/${account}/history`;
  const rows = () => page.locator('#history tbody tr');
  const seqs = async () =>
    (await rows().evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.seq))));
  await step('sign in', async () => {
    await signIn(page, 'console', env('CONSOLE_TOKEN'));
    await page.waitForURL(`${base}/console/accounts/${account}`);
    await screenshot(page, 'billing-with-usage');
  });
  await step('low-balance alerts: set, shown with their state, removed', async () => {
    const save = async (scope, threshold) => {
      await page.selectOption('#alert-scope', scope);
      await page.fill('#alert-threshold', threshold);
      await Promise.all([page.waitForURL(/#alerts$/), page.click('#save-alert')]);
    };
    await page.goto(`${base}/console/accounts/${account}`);
    await save('total', '1000');
    const row = (scope) => page.locator(`#alert-list tr[data-scope=${scope}]`);
    assert.equal(await row('total').locator('.state').innerText(), 'Below');
    assert.equal(await row('total').locator('.threshold').innerText(), '1,000');
    await save('sms', '10');
    assert.equal(await row('sms').locator('.state').innerText(), 'Above');
    await screenshot(page, 'billing-alerts');
    await save('total', '');
    assert.equal(await row('total').count(), 0, 'the total alert is removed');
    assert.equal(await row('sms').count(), 1);
  });
  await step('pages: newest first, every row once', async () => {
    await page.goto(url);
    await screenshot(page, 'history');
    const seen = [];
    for (;;) {
      const s = await seqs();
      assert.ok(s.length > 0 && s.length <= expected.page_size, `a page of ${s.length}`);
      seen.push(...s);
      const next = page.locator('#next-page');
      if ((await next.count()) === 0) break;
      await next.click();
      await page.waitForLoadState('load');
    }
    assert.equal(seen.length, expected.all);
    for (let i = 1; i < seen.length; i += 1) assert.ok(seen[i] <= seen[i - 1], 'newest first');
  });
  await step('filter by service', async () => {
    await page.goto(url);
    await page.selectOption('select[name=service]', 'sms');
    await page.click('#history-filters button[type=submit]');
    await page.waitForURL(/service=sms/);
    let n = 0;
    for (;;) {
      const services = await rows().evaluateAll((trs) => trs.map((tr) => tr.children[2].textContent));
      assert.ok(services.every((s) => s === 'sms'), `services ${services}`);
      n += services.length;
      const next = page.locator('#next-page');
      if ((await next.count()) === 0) break;
      await next.click();
      await page.waitForLoadState('load');
    }
    assert.equal(n, expected.sms);
  });
  await step('filter by kind and service', async () => {
    await page.goto(`${url}?service=email&kind=credits_consumed`);
    const kinds = await rows().evaluateAll((trs) => trs.map((tr) => tr.querySelector('.kind').textContent));
    assert.ok(kinds.every((k) => k === 'Used'));
    assert.equal(kinds.length, Math.min(expected.email_consumed, expected.page_size));
    await page.goto(`${url}?kind=credits_granted`);
    assert.equal(await rows().count(), expected.granted);
    await screenshot(page, 'history-filtered');
  });
  await step('filter by date range', async () => {
    const today = expected.today;
    await page.goto(`${url}?from=${today}&to=${today}`);
    assert.equal(await rows().count(), Math.min(expected.all, expected.page_size));
    await page.goto(`${url}?from=${expected.tomorrow}`);
    assert.equal(await rows().count(), 0);
    assert.match(await text(page, 'p.empty'), /No movements match/);
    await page.goto(`${url}?to=${expected.yesterday}`);
    assert.equal(await rows().count(), 0);
  });
  await step('the CSV holds exactly the filtered rows', async () => {
    await page.goto(`${url}?service=sms`);
    const download = page.waitForEvent('download');
    await page.click('a[download]');
    const file = await download;
    const path = await file.path();
    const { readFileSync } = await import('node:fs');
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    assert.equal(lines[0].split(',')[0], 'occurred_at');
    assert.equal(lines.length - 1, expected.sms);
    assert.ok(lines.slice(1).every((l) => l.split(',')[2] === 'sms'));
  });
  await step("another account's pages are refused (403)", async () => {
    const r = await page.goto(`${base}/console/accounts/${env('OTHER_ACCOUNT')}`);
    assert.equal(r.status(), 403);
    assert.match(await text(page, 'h1'), /Not allowed/);
    await screenshot(page, 'forbidden');
    const h = await page.goto(`${base}/console/accounts/${env('OTHER_ACCOUNT')}/history`);
    assert.equal(h.status(), 403);
    const quote = await page.request.get(`${base}/console/accounts/${env('OTHER_ACCOUNT')}/quote?amount_usd=25.00`);
    assert.equal(quote.status(), 403);
  });
  await step('a top-up without the page\'s CSRF nonce is refused', async () => {
    const r = await page.request.post(`${base}/console/accounts/${account}/topups`, {
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': 'no-csrf' },
      data: { amount_usd: '25.00', phone: '+919876543210' },
    });
    assert.equal(r.status(), 403);
  });
  await step('sign out ends the session', async () => {
    await page.goto(`${base}/console/accounts/${account}`);
    await page.click('form.sign-out button');
    await page.waitForURL(`${base}/console/sign-in`);
    await screenshot(page, 'sign-in');
    await page.goto(`${base}/console/accounts/${account}`);
    await page.waitForURL(`${base}/console/sign-in`);
  });
  await step('a signed-in link signs in', async () => {
    const fresh = await newPage('phone');
    await fresh.goto(`${base}/console/sign-in#token=${encodeURIComponent(env('CONSOLE_TOKEN'))}`);
    await fresh.waitForURL(`${base}/console/accounts/${account}`);
    assert.ok(!fresh.url().includes('token'), 'the token left the address bar');
  });
}

// --- ops -------------------------------------------------------------------------

async function ops() {
  const stuck = env('STUCK_TOPUP');
  const page = await newPage();
  await step('a console token may not use the ops pages', async () => {
    await page.goto(`${base}/ops/sign-in`);
    await page.fill('#token', env('CONSOLE_TOKEN'));
    await page.click('#sign-in button[type=submit]');
    assert.match(await text(page, 'p.error'), /may not use these pages/);
  });
  await step('the dashboard: projectors, top-ups, usage, outcomes', async () => {
    await signIn(page, 'ops', env('OPS_TOKEN'));
    await page.waitForURL(`${base}/ops/`);
    assert.ok((await page.locator('#projectors tbody tr').count()) >= 2, 'projectors listed');
    assert.ok((await page.locator('#usage-chart rect.bar').count()) > 0, 'usage drawn');
    assert.ok((await page.locator('#topup-chart rect').count()) > 0, 'top-ups drawn');
    assert.match(await text(page, '#refusal-rate'), /Refusal rate: \d+\.\d%/);
    await screenshot(page, 'ops');
  });
  await step('a stuck top-up is listed and "reconcile now" completes it', async () => {
    const row = page.locator(`#stuck tr[data-topup="${stuck}"]`);
    assert.equal((await row.locator('td.status').textContent()).trim(), 'awaiting_payment');
    await row.locator('button').click();
    await page.waitForURL(/\/ops\/(#topups)?$/);
    // The read model follows the log within moments.
    const deadline = Date.now() + WAIT_MS;
    while ((await page.locator(`#stuck tr[data-topup="${stuck}"]`).count()) > 0) {
      assert.ok(Date.now() < deadline, 'the reconciled top-up is still listed as stuck');
      await page.waitForTimeout(200);
      await page.reload();
    }
  });
  await step('balance alerts of any account: looked up, set, listed', async () => {
    const account = env('ALERT_ACCOUNT');
    await Promise.all([page.waitForURL(`${base}/ops/alerts`), page.click('a[href="/ops/alerts"]')]);
    await page.fill('#account', 'not an account!');
    await Promise.all([page.waitForURL(/account=/), page.click('#look-up')]);
    assert.match(await text(page, '#alert-lookup p.error'), /not an account id/);
    await page.fill('#account', 'nobody-here');
    await Promise.all([page.waitForURL(/account=nobody-here/), page.click('#look-up')]);
    assert.match(await text(page, '#alerts #no-account'), /There is no account nobody-here/);
    assert.equal(await page.locator('#alert-form').count(), 0, 'no form for an account that does not exist');
    await page.fill('#account', account);
    await Promise.all([page.waitForURL(/account=/), page.click('#look-up')]);
    assert.equal(await page.locator('#alerts #no-alerts').count(), 1, 'no alert yet');
    await page.selectOption('#alert-scope', 'sms');
    await page.fill('#alert-threshold', '5');
    await Promise.all([page.waitForURL(/#alerts$/), page.click('#save-alert')]);
    const row = page.locator('#alert-list tr[data-scope=sms]');
    assert.equal(await row.locator('.threshold').innerText(), '5');
    assert.equal(await row.locator('.state').innerText(), 'Above');
    assert.equal(await page.getAttribute('#alerts', 'data-account'), account);
    await screenshot(page, 'ops-alerts');
  });
}

const scenarios = { payments, history, ops };
const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`usage: node console.mjs ${Object.keys(scenarios).join('|')}`);
  process.exit(2);
}
await scenarios[name]();
await browser.close();
