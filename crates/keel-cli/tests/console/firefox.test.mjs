// The console in Firefox (Debian's firefox-esr, driven over WebDriver BiDi by puppeteer-core:
// Playwright drives only its own Firefox build). A smaller check than console.test.mjs: the
// page shows the cluster, a write through the key box lands, and it fits a phone's width.
// Run by crates/keel-cli/tests/console.rs with KEEL_NODES, KEEL_SCREENSHOTS and KEEL_FIREFOX.

import puppeteer from 'puppeteer-core';
import { mkdirSync } from 'node:fs';

const nodes = Object.fromEntries(
  process.env.KEEL_NODES.split(',').map((pair) => pair.split('=')).map(([id, addr]) => [Number(id), addr]),
);
const shots = process.env.KEEL_SCREENSHOTS;
mkdirSync(shots, { recursive: true });
const step = (name) => console.log(`-- firefox: ${name}`);

const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: process.env.KEEL_FIREFOX || '/usr/bin/firefox-esr',
  headless: true,
  // No updates, telemetry or other traffic to the outside (the machines have no network).
  extraPrefsFirefox: {
    'app.update.enabled': false,
    'datareporting.policy.dataSubmissionEnabled': false,
    'network.captive-portal-service.enabled': false,
  },
});
let page;
try {
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const [id, addr] = Object.entries(nodes)[0];
  step(`open the console on node ${id}`);
  await page.goto(`http://${addr}/ui/`);
  await page.waitForFunction(() => {
    const cards = [...document.querySelectorAll('#members .member')];
    return cards.length === 3 && cards.filter((c) => c.dataset.role === 'leader').length === 1;
  }, { timeout: 30000 });

  step('write through the key box, read it back through the HTTP API');
  await page.type('#kv-key', 'firefox/greeting');
  await page.type('#kv-value', 'hello from firefox');
  await page.click('#kv-put');
  await page.waitForFunction(() => /index/i.test(document.querySelector('#kv-result').textContent), { timeout: 15000 });
  const read = await (await fetch(`http://${addr}/v1/kv/firefox/greeting`)).text();
  if (read !== 'hello from firefox') throw new Error(`the API reads ${JSON.stringify(read)}`);
  await page.waitForFunction(() => document.body.dataset.connected === 'true', { timeout: 15000 });
  await page.screenshot({ path: `${shots}/10-firefox.png`, fullPage: true });

  step('phone width');
  await page.setViewport({ width: 390, height: 844 });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) throw new Error(`the page is ${overflow} px wider than a phone's screen`);
  await page.screenshot({ path: `${shots}/11-firefox-phone.png`, fullPage: true });
  console.log('all firefox checks passed');
} catch (error) {
  if (page) await page.screenshot({ path: `${shots}/failure-firefox.png`, fullPage: true }).catch(() => {});
  console.error(error.stack || String(error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
