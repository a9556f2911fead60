// Browser test of the run page's log panel: real headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core), a real worker,
// PostgreSQL and RabbitMQ, a database, queue and project of its own.
//
//   SCHEDULER_BIN=target/debug/scheduler node --test tests/e2e/logs.test.mjs
//
// A module prints a line every 300 ms for about six seconds, each with the
// time it was written; the page shows them while the step runs, and the
// test measures the delay from the module writing a line to the line being
// in the page (p50 and max, printed and written to
// screenshots/log-latency.json). Screenshots in tests/e2e/screenshots/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.join(here, "screenshots");
const DB_BASE = process.env.TEST_DATABASE_BASE ?? "postgres://postgres@127.0.0.1:5432";
const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672/%2f";
const id = randomUUID().replaceAll("-", "").slice(-16);
const dbName = `logs_e2e_${id}`;
const queue = `e2e-logs-${id}`;
const project = fs.mkdtempSync(path.join(os.tmpdir(), "scheduler-e2e-logs-"));

const children = [];
let browser;
let page;
let base;

// Setup lines enough to overflow the panel, markup and a terminal escape
// that must stay text, then a line every 300 ms (every third on stderr),
// each stamped with the epoch milliseconds it was written at.
const TICKER = `#!/bin/sh
i=1
while [ $i -le 40 ]; do echo "setup line $i"; i=$((i+1)); done
printf 'markup <script>window.__xss = 1</script> and \\033[31mred\\033[0m\\n'
i=1
while [ $i -le 20 ]; do
  t=$(date +%s%3N)
  if [ $((i % 3)) -eq 0 ]; then echo "warn $i at=$t" >&2; else echo "tick $i at=$t"; fi
  i=$((i+1))
  sleep 0.3
done
echo "done"
`;

function writeProject() {
  fs.mkdirSync(path.join(project, "bin"));
  fs.mkdirSync(path.join(project, "etl_sequences"));
  fs.writeFileSync(path.join(project, "bin", "ticker.sh"), TICKER, { mode: 0o755 });
  fs.writeFileSync(path.join(project, "modules.json"), JSON.stringify({ ticker: { cmd: "./bin/ticker.sh" } }));
  fs.writeFileSync(path.join(project, "etl_sequences", "ticking.json"), JSON.stringify([{ module_name: "ticker" }]));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function start(cmd, args, name) {
  const log = fs.openSync(path.join(project, `${name}.log`), "w");
  const child = spawn(cmd, args, {
    cwd: project,
    env: {
      ...process.env,
      DATABASE_URL: `${DB_BASE}/${dbName}`,
      AMQP_URL,
      SCHEDULER_QUEUE: queue,
      SCHEDULER_PROJECT: project,
      SCHEDULER_QUEUE_EXPIRES_MS: "600000",
      RUST_LOG: process.env.RUST_LOG ?? "info",
    },
    stdio: ["ignore", log, log],
  });
  children.push({ child, name });
  return child;
}

function logs() {
  return children
    .map(({ name }) => `--- ${name}.log\n${fs.readFileSync(path.join(project, `${name}.log`), "utf8").slice(-4000)}`)
    .join("\n");
}

async function until(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${logs()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function api(p) {
  return (await fetch(base + p)).json();
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  writeProject();
  const port = await freePort();
  const bind = `127.0.0.1:${port}`;
  base = `http://${bind}`;
  if (!process.env.SCHEDULER_BIN) throw new Error("set SCHEDULER_BIN (the scheduler binary, e.g. target/debug/scheduler)");
  start(process.env.SCHEDULER_BIN, ["worker"], "worker");
  start(process.env.SCHEDULER_BIN, ["ui", "--bind", bind], "ui");
  await until("the UI to answer /healthz", async () => (await fetch(`${base}/healthz`)).ok);
  await until("a live worker", async () => (await api("/api/v1/workers")).some((w) => w.alive));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  // Notes when each chunk of log reaches the page, before any page script
  // runs (an init script is the browser's own, not subject to the page's CSP).
  await context.addInitScript(() => {
    // Every status each log panel said, in order.
    window.__statuses = {};
    new MutationObserver(() => {
      for (const p of document.querySelectorAll(".log-panel")) {
        const t = p.querySelector(".log-status")?.textContent;
        const said = (window.__statuses[p.id] ||= []);
        if (t && said[said.length - 1] !== t) said.push(t);
      }
    }).observe(document, { childList: true, subtree: true, characterData: true });
    window.__arrivals = [];
    new MutationObserver((records) => {
      const seen = Date.now();
      for (const r of records) {
        for (const n of r.addedNodes) {
          if (n.nodeType !== 1 || !n.classList.contains("chunk")) continue;
          for (const m of n.textContent.matchAll(/(tick|warn) (\d+) at=(\d+)/g)) {
            window.__arrivals.push({ line: `${m[1]} ${m[2]}`, at: Number(m[3]), seen });
          }
        }
      }
    }).observe(document, { childList: true, subtree: true });
  });
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("dialog", async (d) => {
    throw new Error(`unexpected ${d.type()} dialog: ${d.message()}`);
  });
});

after(async () => {
  await browser?.close();
  for (const { child } of children) child.kill("SIGTERM");
  await Promise.all(
    children.map(
      ({ child }) =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const t = setTimeout(() => {
            child.kill("SIGKILL");
            resolve();
          }, 15_000);
          child.once("exit", () => {
            clearTimeout(t);
            resolve();
          });
        }),
    ),
  );
  try {
    execFileSync("psql", [DB_BASE + "/postgres", "-qc", `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`], { stdio: "ignore" });
  } catch {
    // best effort: a leftover test database is harmless
  }
  fs.rmSync(project, { recursive: true, force: true });
});

test("a running step's log streams into its page live, told apart by stream, and stays text", async () => {
  const res = await fetch(`${base}/api/v1/sequences/ticking/start`, { method: "POST", headers: { "X-Requested-By": "e2e" } });
  assert.equal(res.status, 201, await res.clone().text());
  const run = (await res.json()).id;
  await until("the step to run", async () => (await api(`/api/v1/runs/${run}`)).executions?.some((e) => e.state === "running"));
  await page.goto(`${base}/runs/${run}`);
  const panel = page.locator("#log-0-1");
  const pre = panel.locator("pre.log");
  await panel.locator(".log-status.live").waitFor();
  const liveFrom = await page.evaluate(() => Date.now());

  // At least two lines written after the page was following arrive while
  // the step still runs.
  await until("two lines written while the page followed", async () =>
    (await page.evaluate((t) => window.__arrivals.filter((a) => a.at >= t).length, liveFrom)) >= 2,
  10_000);
  const detail = await api(`/api/v1/runs/${run}`);
  assert.equal(detail.state, "running");
  assert.equal(detail.executions[0].state, "running", "lines arrived only once the step had ended");

  // It follows the end...
  await pre.locator(".o", { hasText: /tick \d+ at=/ }).first().waitFor();
  const atEnd = () => pre.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 8);
  await until("the log to be scrolled to its end", atEnd, 5_000);
  await shot("log-live");
  await panel.screenshot({ path: path.join(shots, "log-panel-live.png") });

  // ...unless the reader scrolls up, even just after a live refresh of the
  // run's body moved the panel out and back (a CI run once lost the reader's
  // scroll to such a refresh); "↓ follow" brings it back.
  await page.evaluate(
    () =>
      new Promise((resolve) => {
        document.addEventListener("htmx:afterSwap", () => requestAnimationFrame(() => resolve()), { once: true });
        window.htmx.trigger(document.body, "run-changed");
      }),
  );
  await pre.evaluate((el) => (el.scrollTop = 0));
  await panel.locator(".log-follow").waitFor();
  const count = await pre.locator(".chunk").count();
  await until("a new line while scrolled up", async () => (await pre.locator(".chunk").count()) > count, 5_000);
  assert.equal(await pre.evaluate((el) => el.scrollTop), 0, "a new line pulled the reader down");
  await panel.locator(".log-follow").click();
  await until("the log back at its end", atEnd, 5_000);
  assert.equal(await panel.locator(".log-follow").isHidden(), true);

  // stdout and stderr told apart: stderr lines carry their own class (tinted
  // and marked), and the filter shows one stream.
  const warn = pre.locator(".e", { hasText: "warn 3 at=" });
  await warn.waitFor();
  const tint = await warn.evaluate((el) => getComputedStyle(el).backgroundColor);
  const plain = await pre.locator(".o", { hasText: "tick 1 at=" }).evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.notEqual(tint, plain, "stderr looks like stdout");
  await panel.getByRole("button", { name: "stderr" }).click();
  assert.equal(await pre.locator(".o", { hasText: "tick 1 at=" }).isHidden(), true);
  assert.equal(await warn.isVisible(), true);
  await panel.getByRole("button", { name: "both" }).click();

  // Markup and terminal escapes are text.
  await pre.getByText("markup <script>window.__xss = 1</script> and \\x1b[31mred\\x1b[0m").waitFor();
  assert.equal(await pre.locator(".ctl", { hasText: "\\x1b" }).count(), 2, "the escapes are not marked as escapes");
  assert.equal(await pre.locator("script").count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined, "a log line ran as script");

  // The step ends: the stream says the log is complete.
  await page.locator("#run-state.s-succeeded").waitFor({ timeout: 30_000 });
  await panel.locator(".log-status", { hasText: "complete" }).waitFor();
  await pre.locator(".o", { hasText: "done" }).waitFor();
  await shot("log-complete");
  await panel.screenshot({ path: path.join(shots, "log-panel-complete.png") });

  const arrivals = await page.evaluate(() => window.__arrivals);
  const live = arrivals.filter((a) => a.at >= liveFrom);
  const delays = live.map((a) => a.seen - a.at).sort((x, y) => x - y);
  const p50 = quantile(delays, 0.5);
  const max = delays[delays.length - 1];
  const figures = { lines: delays.length, p50_ms: p50, max_ms: max, delays_ms: delays };
  fs.writeFileSync(path.join(shots, "log-latency.json"), JSON.stringify(figures, null, 2));
  console.log(`log line to page: ${delays.length} lines, p50 ${p50} ms, max ${max} ms`);
  assert.ok(delays.length >= 10, `only ${delays.length} lines measured`);
  assert.ok(max < 1000, `a line took ${max} ms to reach the page`);
  // Every line once, in order.
  const ticks = arrivals.map((a) => a.line);
  assert.deepEqual(ticks, Array.from({ length: 20 }, (_, k) => `${(k + 1) % 3 === 0 ? "warn" : "tick"} ${k + 1}`));

  // A finished step's log is shown on demand; the download is the raw log.
  await page.reload();
  const closed = page.locator("#log-0-1");
  assert.equal(await closed.locator(".log-view").isHidden(), true);
  await closed.getByRole("button", { name: "Show log" }).click();
  await closed.locator("pre.log .e", { hasText: "warn 18 at=" }).waitFor();
  await closed.locator(".log-status", { hasText: "complete" }).waitFor();
  const href = await page.locator(".log-download").first().getAttribute("href");
  const dl = await fetch(base + href);
  assert.equal(dl.headers.get("content-disposition"), `attachment; filename="${run}-step1-attempt1.log"`);
  const raw = Buffer.from(await dl.arrayBuffer());
  assert.ok(raw.includes(Buffer.from("and \x1b[31mred\x1b[0m\n")), "the download holds the raw bytes");
  const said = await page.evaluate(() => window.__statuses["log-0-1"]);
  assert.deepEqual(said, ["loading…", "complete"], "a finished attempt's log is never said to be live");

  // An attempt that ended without its log's total (its worker died before
  // writing the last of it): read to the end, said to have ended, never
  // "live", then incomplete.
  psql(`UPDATE executions SET state = 'abandoned', log_bytes = NULL, log_omitted = NULL WHERE run_id = '${run}'`);
  await page.reload();
  const lost = page.locator("#log-0-1");
  await lost.getByRole("button", { name: "Show log" }).click();
  await lost.locator(".log-status", { hasText: "incomplete" }).waitFor();
  const told = await page.evaluate(() => window.__statuses["log-0-1"]);
  assert.ok(!told.includes("live"), `an ended attempt said live: ${told}`);
  assert.ok(told.some((t) => t.startsWith("ended; reading the rest of its log")), `${told}`);
  await panel.screenshot({ path: path.join(shots, "log-panel-incomplete.png") });
});

function psql(sql) {
  execFileSync("psql", [`${DB_BASE}/${dbName}`, "-v", "ON_ERROR_STOP=1", "-qc", sql]);
}

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}
