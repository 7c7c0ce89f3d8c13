// Browser tests of keel's web console, in headless Chromium driven by Playwright. Run by
// crates/keel-cli/tests/console.rs, which starts three `keel serve` processes and passes:
//   KEEL_NODES        id=host:port,... (client addresses)
//   KEEL_PIDS         id=pid,...
//   KEEL_SCREENSHOTS  the directory for screenshots
//   KEEL_SPARE        host:port,host:port: a peer and a client address nobody uses (for adding a member)
// Each step waits for its condition with a deadline, and saves a screenshot.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const nodes = Object.fromEntries(
  process.env.KEEL_NODES.split(',').map((pair) => pair.split('=')).map(([id, addr]) => [Number(id), addr]),
);
const pids = Object.fromEntries(
  process.env.KEEL_PIDS.split(',').map((pair) => pair.split('=')).map(([id, pid]) => [Number(id), Number(pid)]),
);
const shots = process.env.KEEL_SCREENSHOTS;
const [sparePeer, spareClient] = process.env.KEEL_SPARE.split(',');
mkdirSync(shots, { recursive: true });

const step = (name) => console.log(`-- ${name}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, limitMs, probe) {
  const deadline = Date.now() + limitMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${limitMs} ms waiting for ${what} (last: ${last})`);
    await sleep(100);
  }
}

async function statusOf(addr) {
  const answer = await fetch(`http://${addr}/v1/status`);
  return answer.json();
}

async function leaderNow() {
  for (const addr of Object.values(nodes)) {
    try {
      const status = await statusOf(addr);
      if (status.role === 'leader') return status;
    } catch {}
  }
  return null;
}

const browser = await chromium.launch({
  executablePath: process.env.KEEL_CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') console.log(`[page] ${message.text()}`);
  });
  page.on('pageerror', (error) => console.log(`[page error] ${error.message}`));

  const leader = await until('a leader', 30000, leaderNow);
  const viewer = Number(Object.keys(nodes).find((id) => Number(id) !== leader.node_id));
  step(`open the console on node ${viewer} (node ${leader.node_id} leads)`);
  await page.goto(`http://${nodes[viewer]}/ui/`);

  step('three members and one leader are shown');
  await page.waitForFunction(() => {
    const cards = [...document.querySelectorAll('#members .member')];
    return cards.length === 3 && cards.filter((c) => c.dataset.role === 'leader').length === 1;
  }, null, { timeout: 20000 });
  const shownLeader = await page.$eval('#members .member[data-role="leader"]', (card) => Number(card.dataset.id));
  if (shownLeader !== leader.node_id) throw new Error(`the page shows node ${shownLeader} as leader, not ${leader.node_id}`);
  await page.waitForFunction(() => /lose 1 more voter/i.test(document.querySelector('#tolerance').textContent), null, { timeout: 10000 });
  // Served by a follower: it shows every member's client address, the other follower's too.
  await until('every member\'s client address on the page', 10000, async () => {
    const shown = await page.$$eval('#members .member', (cards) =>
      cards.map((card) => [Number(card.dataset.id), card.querySelector('.member-client').textContent.trim()]));
    return shown.length === 3 && shown.every(([id, addr]) => addr === nodes[id]) ? shown : null;
  });
  await page.screenshot({ path: `${shots}/01-cluster.png`, fullPage: true });

  step('write through the key box, read it back through the HTTP API');
  await page.fill('#kv-key', 'console/greeting');
  await page.fill('#kv-value', 'hello from the console');
  await page.click('#kv-put');
  await page.waitForFunction(() => /index/i.test(document.querySelector('#kv-result').textContent), null, { timeout: 15000 });
  const read = await (await fetch(`http://${nodes[leader.node_id]}/v1/kv/console/greeting`)).text();
  if (read !== 'hello from the console') throw new Error(`the API reads ${JSON.stringify(read)}`);
  await page.fill('#kv-prefix', 'console/');
  await page.click('#kv-list-btn');
  await page.waitForSelector('#kv-list .kv-item[data-key="console/greeting"]', { timeout: 10000 });
  await page.screenshot({ path: `${shots}/02-keys.png`, fullPage: true });

  step('a short load shows in the throughput chart');
  const loadUntil = Date.now() + 4000;
  let written = 0;
  while (Date.now() < loadUntil) {
    await Promise.all(Array.from({ length: 8 }, (_, i) =>
      fetch(`http://${nodes[leader.node_id]}/v1/kv/load/${i}`, { method: 'PUT', body: String(written) })));
    written += 8;
  }
  await page.waitForFunction(() => Number(document.querySelector('#chart-writes').dataset.nonzero || 0) > 0, null, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/03-load.png`, fullPage: true });

  step('add a learner and remove it from the page');
  await page.fill('#act-add-id', '9');
  await page.fill('#act-add-peer', sparePeer);
  await page.fill('#act-add-client', spareClient);
  await page.click('#act-add');
  await page.waitForSelector('#confirm:not([hidden])', { timeout: 5000 });
  await page.click('#confirm-yes');
  await page.waitForSelector('#members .member[data-id="9"]', { timeout: 20000 });
  await page.waitForFunction(() => !/working/i.test(document.querySelector('#act-result').textContent), null, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/04-member-added.png`, fullPage: true });
  await page.click('#members .member[data-id="9"] button[data-action="remove"]');
  await page.waitForSelector('#confirm:not([hidden])', { timeout: 5000 });
  await page.click('#confirm-yes');
  await page.waitForFunction(() => !document.querySelector('#members .member[data-id="9"]'), null, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/05-member-removed.png`, fullPage: true });

  const third = Number(Object.keys(nodes).find((id) => Number(id) !== viewer && Number(id) !== leader.node_id));
  step(`hand leadership to node ${third} from its card`);
  await page.click(`#members .member[data-id="${third}"] button[data-action="transfer"]`);
  await page.waitForSelector('#confirm:not([hidden])', { timeout: 5000 });
  await page.click('#confirm-yes');
  await page.waitForFunction((id) => document.body.dataset.leader === String(id), third, { timeout: 20000 });
  const moved = await until(`node ${third} to lead`, 20000, async () => {
    const now = await leaderNow();
    return now && now.node_id === third ? now : null;
  });
  await page.screenshot({ path: `${shots}/06-leader-moved.png`, fullPage: true });

  step(`kill the leader (node ${third}); the page shows the new one and the election, without a reload`);
  await page.evaluate(() => { window.keelTestMarker = 'same page'; });
  process.kill(pids[third], 'SIGKILL');
  const newLeader = await page.waitForFunction((old) => {
    const now = document.body.dataset.leader;
    return now && Number(now) !== old ? Number(now) : false;
  }, third, { timeout: 30000 });
  const newId = await newLeader.jsonValue();
  await page.waitForFunction(([id, term]) =>
    [...document.querySelectorAll('#timeline .event[data-kind="leader"]')]
      .some((e) => Number(e.dataset.term) > term && e.textContent.includes(`node ${id}`)),
  [newId, moved.term], { timeout: 20000 });
  await page.waitForFunction((term) =>
    [...document.querySelectorAll('#timeline .event[data-kind="election"]')]
      .some((e) => Number(e.dataset.term) > term),
  moved.term, { timeout: 20000 });
  const marker = await page.evaluate(() => window.keelTestMarker);
  if (marker !== 'same page') throw new Error('the page reloaded');
  await page.waitForFunction((old) =>
    document.querySelector(`#members .member[data-id="${old}"]`)?.dataset.role === 'unreachable',
  third, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/07-new-leader.png`, fullPage: true });

  const survivor = Number(Object.keys(nodes).find((id) => Number(id) !== viewer && Number(id) !== third));
  step(`kill node ${viewer}, which served the page: it moves to node ${survivor} and says so`);
  process.kill(pids[viewer], 'SIGKILL');
  await page.waitForFunction((addr) => location.host === addr, nodes[survivor], { timeout: 30000 });
  await page.waitForFunction((old) =>
    new RegExp(`node ${old} stopped answering`, 'i').test(document.querySelector('#notice').textContent),
  viewer, { timeout: 20000 });
  await page.waitForSelector(`#members .member[data-id="${survivor}"]`, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/08-moved-to-another-node.png`, fullPage: true });

  step('phone width');
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) throw new Error(`the page is ${overflow} px wider than a phone's screen`);
  await page.screenshot({ path: `${shots}/09-phone.png`, fullPage: true });
  console.log('all console checks passed');
} catch (error) {
  if (page) {
    await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
    const shown = await page.evaluate(() => ({
      notice: document.querySelector('#notice')?.textContent,
      action: document.querySelector('#act-result')?.textContent,
      leader: document.body.dataset.leader,
      url: location.href,
    })).catch(() => null);
    console.error(`the page showed: ${JSON.stringify(shown)}`);
  }
  console.error(error.stack || String(error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
