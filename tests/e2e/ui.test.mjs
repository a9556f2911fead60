// Browser tests of the monitoring UI, as an operator uses it: real headless
// Chromium (Debian's /usr/bin/chromium, driven by playwright-core), a real
// worker, PostgreSQL and RabbitMQ. Each run gets its own database, queue and
// project directory.
//
//   SCHEDULER_BIN=target/debug/scheduler node --test tests/e2e/ui.test.mjs
//     spawns `scheduler worker` and `scheduler ui --bind 127.0.0.1:<port>`.
//
// Screenshots of every page land in tests/e2e/screenshots/.

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
const dbName = `ui_e2e_${id}`;
const queue = `e2e-${id}`;
const nobody = `e2e-${id}-nobody`;
const project = fs.mkdtempSync(path.join(os.tmpdir(), "scheduler-e2e-"));

const children = [];
let browser;
let page;
let base;

function writeProject() {
  const bin = path.join(project, "bin");
  fs.mkdirSync(bin);
  fs.mkdirSync(path.join(project, "etl_sequences"));
  const modules = {
    // Output with markup in it: the pages must show it as text.
    // It writes its --output (the output contract fails a step that does not).
    ok: "#!/bin/sh\necho 'extracted 42 rows <script>window.__xss = 1</script>'\necho \"args: $*\"\n" +
      "while [ $# -gt 0 ]; do if [ \"$1\" = --output ]; then mkdir -p \"$(dirname \"$2\")\"; echo rows > \"$2\"; fi; shift; done\n",
    boom: "#!/bin/sh\necho 'loading...'\necho 'boom: disk full <b>on /data</b>' >&2\nexit 3\n",
    nap: "#!/bin/sh\necho 'sleeping 30 s'\nsleep 30\n",
  };
  const table = {};
  for (const [name, body] of Object.entries(modules)) {
    const file = path.join(bin, `${name}.sh`);
    fs.writeFileSync(file, body, { mode: 0o755 });
    table[name] = { cmd: `./bin/${name}.sh` };
  }
  fs.writeFileSync(path.join(project, "modules.json"), JSON.stringify(table));
  const sequences = {
    quick: [
      { module_name: "ok", input: "in/<raw>.csv", output: "out/clean.csv" },
      { module_name: "ok", input: "out/clean.csv" },
    ],
    failing: [{ module_name: "ok" }, { module_name: "boom" }, { module_name: "ok" }],
    slow: [{ module_name: "nap" }],
    // One run at a time: a second one waits for the slot, or is skipped.
    serial: { queue, max_concurrent: 1, on_conflict: "queue", steps: [{ module_name: "nap" }] },
    exclusive: { max_concurrent: 1, on_conflict: "skip", steps: [{ module_name: "nap" }] },
    // Its second step goes to a queue no worker serves.
    routed: [{ module_name: "ok" }, { module_name: "ok", queue: nobody }],
  };
  for (const [name, steps] of Object.entries(sequences)) {
    fs.writeFileSync(path.join(project, "etl_sequences", `${name}.json`), JSON.stringify(steps));
  }
  // No beat runs here: the schedules page shows them, and the slots the
  // test records by hand.
  const schedules = {
    hourly_sync: { sequence: "quick", cron: "0 * * * *", timezone: "Europe/Madrid", description: "S3 to <Elasticsearch>, every hour" },
    limits: { sequence: "quick", cron: "*/2 * * * *", catchup: "none" },
    nightly_scan: {
      sequence: "slow",
      cron: "30 2 * * *",
      timezone: "America/New_York",
      catchup: "all",
      jitter_secs: 30,
      description: "yesterday's traffic, in order",
    },
    legacy_export: { sequence: "failing", cron: "@weekly", enabled: false },
  };
  fs.writeFileSync(path.join(project, "schedules.json"), JSON.stringify(schedules, null, 2));
}

// Records slots in the ledger, as a beat would: [schedule, Date, fate, run id | null, note | null].
function recordSlots(rows) {
  const q = (v) => (v === null ? "NULL" : `'${String(v).replaceAll("'", "''")}'`);
  const values = rows
    .map(([s, at, fate, run, note]) => `(${q(s)}, ${q(at.toISOString())}, ${q(fate)}, ${q(run)}::uuid, ${q(note)})`)
    .join(",\n");
  execFileSync("psql", [`${DB_BASE}/${dbName}`, "-v", "ON_ERROR_STOP=1", "-qc",
    `INSERT INTO schedule_slots (schedule, slot_at, fate, run_id, note) VALUES ${values}`]);
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
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Starts a run through the JSON API; returns its id.
async function startRun(sequence) {
  const res = await fetch(`${base}/api/v1/sequences/${sequence}/start`, {
    method: "POST",
    headers: { "X-Requested-By": "e2e" },
  });
  const body = await res.text();
  assert.equal(res.status, 201, body);
  return JSON.parse(body).id;
}

async function cancelRun(runId) {
  await fetch(`${base}/api/v1/runs/${runId}/cancel`, { method: "POST", headers: { "X-Requested-By": "e2e" } });
}

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  writeProject();
  const port = await freePort();
  const bind = `127.0.0.1:${port}`;
  base = `http://${bind}`;
  if (process.env.SCHEDULER_BIN) {
    start(process.env.SCHEDULER_BIN, ["worker"], "worker");
    start(process.env.SCHEDULER_BIN, ["ui", "--bind", bind], "ui");
  } else {
    throw new Error("set SCHEDULER_BIN (the scheduler binary, e.g. target/debug/scheduler)");
  }
  await until("the UI to answer /healthz", async () => (await fetch(`${base}/healthz`)).ok);
  await until("a live worker", async () => {
    const workers = await (await fetch(`${base}/api/v1/workers`)).json();
    return workers.some((w) => w.alive);
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  // Only the cancel button asks for confirmation; anything else (an alert
  // from injected markup) is a failure.
  page.on("dialog", async (d) => {
    if (d.type() === "confirm") await d.accept();
    else throw new Error(`unexpected ${d.type()} dialog: ${d.message()}`);
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
    execFileSync("psql", [DB_BASE + "/postgres", "-qc", `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`], {
      stdio: "ignore",
    });
  } catch {
    // best effort: a leftover test database is harmless
  }
  fs.rmSync(project, { recursive: true, force: true });
});

test("the runs page starts a run and shows it succeed without a reload", async () => {
  await page.goto(base + "/");
  await page.getByRole("heading", { name: "Runs" }).waitFor();
  await page.locator(".empty").waitFor();
  await shot("runs-empty");
  // Marks this document: a full reload would lose it.
  await page.evaluate(() => (window.__sameDocument = true));
  await page.selectOption("#start-sequence", "quick");
  await page.getByRole("button", { name: "Start run" }).click();
  await page.locator("#flash .flash-ok").getByText("Started quick").waitFor();
  const row = page.locator("#runs-table tbody tr", { hasText: "quick" }).first();
  await row.locator(".badge.s-succeeded").waitFor();
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page reloaded");
  await shot("runs");
});

test("a failed run shows its error, and a retry adds an attempt", async () => {
  await page.goto(base + "/sequences");
  await page.locator("#seq-failing").waitFor();
  await shot("sequences");
  await page.locator("#seq-failing").getByRole("button", { name: "Start" }).click();
  await page.waitForURL(/\/runs\/[0-9a-f-]{36}$/);
  await page.locator("#run-state.s-failed").waitFor();
  const banner = page.locator(".banner-error");
  await banner.getByText("boom: disk full <b>on /data</b>").waitFor();
  assert.equal(await banner.locator("b").count(), 0, "module output was rendered as markup");
  await shot("run-failed");

  await page.getByRole("button", { name: /Retry from step 2/ }).click();
  await page.locator("#flash .flash-ok").getByText("Retrying").waitFor();
  const step2 = page.locator(".step").nth(1);
  await step2.locator('[data-attempt="2"] .badge.s-failed').waitFor();
  await page.locator("#run-state.s-failed").waitFor();
  assert.equal(await step2.locator("[data-attempt]").count(), 2);
  await shot("run-retried");
});

test("module output and arguments are shown as text, never as markup", async () => {
  await page.goto(base + "/?sequence=quick");
  await page.locator("#runs-table a.run-link").first().click();
  await page.locator("#run-state.s-succeeded").waitFor();
  await page.locator(".step").first().locator("summary", { hasText: "stdout" }).click();
  await page.getByText("extracted 42 rows <script>window.__xss = 1</script>").first().waitFor();
  await page.getByText("--input 'in/<raw>.csv'").first().waitFor();
  assert.equal(await page.evaluate(() => window.__xss), undefined, "injected script ran");
  await shot("run-succeeded");
});

test("a long run can be canceled from its page", async () => {
  await page.goto(base + "/");
  await page.selectOption("#start-sequence", "slow");
  await page.getByRole("button", { name: "Start run" }).click();
  await page.locator("#flash .flash-ok a").click();
  await page.locator("#run-state.s-running").waitFor();
  await page.locator('.attempt .badge.s-running').waitFor();
  await shot("run-running");
  await page.getByRole("button", { name: /Cancel run/ }).click();
  await page.locator("#run-state.s-canceled").waitFor();
  await page.locator(".banner-warn").waitFor();
  // The worker notices at its next heartbeat and kills the module.
  await page.locator(".attempt .badge.s-running").waitFor({ state: "detached", timeout: 40_000 });
  await shot("run-canceled");
});

test("runs waiting for a slot or skipped say why, and a waiting run is canceled from its page", async () => {
  const holder = await startRun("serial");
  const waiting = await startRun("serial");
  const busy = await startRun("exclusive");
  const skipped = await startRun("exclusive");
  await page.goto(base + "/");
  const waitingRow = page.locator(`#runs-table tr[data-run="${waiting}"]`);
  await waitingRow.locator(".badge.s-waiting").waitFor();
  await waitingRow.locator(".note", { hasText: "waiting for a slot (max_concurrent 1: run" }).waitFor();
  const skippedRow = page.locator(`#runs-table tr[data-run="${skipped}"]`);
  await skippedRow.locator(".badge.s-skipped").waitFor();
  await skippedRow.locator(".note", { hasText: "on_conflict skip" }).waitFor();
  // The note links the run holding the slot.
  assert.equal(await skippedRow.locator(`.note a[href="/runs/${busy}"]`).count(), 1);
  await shot("runs-waiting-skipped");

  await page.goto(`${base}/runs/${skipped}`);
  await page.locator("#run-state.s-skipped").waitFor();
  await page.locator(".run-note", { hasText: "skipped: run" }).waitFor();
  await page.locator(".banner-muted").waitFor();
  assert.equal(await page.getByRole("button", { name: /Cancel run/ }).count(), 0);
  await shot("run-skipped");

  await page.goto(`${base}/runs/${waiting}`);
  await page.locator("#run-state.s-waiting").waitFor();
  await page.locator(".run-note", { hasText: "waiting for a slot" }).waitFor();
  await shot("run-waiting");
  await page.getByRole("button", { name: /Cancel run/ }).click();
  await page.locator("#run-state.s-canceled").waitFor();
  await page.locator(".banner-warn", { hasText: "Canceled by an operator" }).waitFor();
  for (const run of [holder, busy]) await cancelRun(run);
});

test("a step routed to a queue nobody serves waits, and the workers page says so", async () => {
  const run = await startRun("routed");
  await page.goto(`${base}/runs/${run}`);
  // The page re-reads itself while the run is live.
  await page.locator(".no-worker-line", { hasText: `Step 2 waits on queue ${nobody}` }).waitFor();
  await page.locator(".step").nth(1).locator(".chip", { hasText: `queue ${nobody}` }).waitFor();
  await shot("run-no-worker");
  await page.goto(base + "/workers");
  const row = page.locator(`tr[data-queue="${nobody}"]`);
  await row.locator(".badge.s-no-worker", { hasText: "no worker" }).waitFor();
  assert.equal(await page.locator(`tr[data-queue="${queue}"] .badge.s-no-worker`).count(), 0);
  await shot("workers-no-worker");
});

test("the workers page shows the live worker and the queue", async () => {
  await page.goto(base + "/workers");
  await page.locator(".badge.s-w-alive").first().waitFor();
  await page.locator("td.mono", { hasText: queue }).first().waitFor();
  await shot("workers");
  await page.goto(base + "/");
  await shot("runs-final");
});

test("the schedules page shows each schedule and its slots, and pauses and resumes one", async () => {
  const run = await startRun("quick");
  const held = await startRun("quick");
  const two = 2 * 60_000;
  const last = Math.floor(Date.now() / two) * two;
  const rows = [];
  for (let k = 29; k >= 0; k--) {
    const at = new Date(last - k * two);
    if (k >= 22 && k <= 25) rows.push(["limits", at, "missed", null, "no scheduler ran (catchup none)"]);
    else if (k === 12) rows.push(["limits", at, "skipped", null, `the previous run ${held} still held the slot`]);
    else if (k >= 6 && k <= 8) rows.push(["limits", at, "paused", null, null]);
    else rows.push(["limits", at, "started", run, null]);
  }
  const hour = 3600_000;
  const lastHour = Math.floor(Date.now() / hour) * hour;
  rows.push(["hourly_sync", new Date(lastHour - 3 * hour), "backfilled", run, null]);
  rows.push(["hourly_sync", new Date(lastHour - 2 * hour), "coalesced", null, "caught up by the slot of an hour later"]);
  rows.push(["hourly_sync", new Date(lastHour - hour), "started", run, null]);
  rows.push(["hourly_sync", new Date(lastHour), "started", held, null]);
  recordSlots(rows);

  await page.goto(base + "/schedules");
  const limits = page.locator("#schedule-limits");
  await limits.locator(".next-fires li").nth(4).waitFor();
  assert.equal(await limits.locator(".next-fires li").count(), 5);
  assert.match(await limits.locator(".cron-words").innerText(), /\S/);
  assert.equal(await limits.locator(".slot-cell").count(), 30);
  assert.equal(await limits.locator(".slot-cell.f-missed").count(), 4);
  assert.equal(await limits.locator(`a.slot-cell.f-started[href="/runs/${run}"]`).count(), 22);
  assert.match(await limits.locator(".slot-cell.f-skipped").getAttribute("title"), /skipped · the previous run/);
  await page.locator("#schedule-hourly_sync .schedule-desc", { hasText: "S3 to <Elasticsearch>" }).waitFor();
  await page.locator("#schedule-legacy_export", { hasText: "Disabled in schedules.json" }).waitFor();
  await shot("schedules");

  await limits.locator("input[name=note]").fill("upstream maintenance until 18:00");
  await limits.getByRole("button", { name: /Pause/ }).click();
  await page.locator("#schedule-limits .pause-line", { hasText: "upstream maintenance until 18:00" }).waitFor();
  assert.match(await page.locator("#schedule-limits .pause-line").innerText(), /Paused by ui/);
  await shot("schedules-paused");
  const api = await (await fetch(`${base}/api/v1/schedules`)).json();
  const paused = api.schedules.find((s) => s.name === "limits");
  assert.equal(paused.paused, true);
  assert.equal(paused.state.paused_by, "ui");

  await page.locator("#schedule-limits").getByRole("button", { name: /Resume/ }).click();
  await page.locator("#schedule-limits .pause-form").waitFor();
  assert.equal(await page.locator("#schedule-limits .pause-line").count(), 0);
  // The cells link to their runs.
  await page.locator(`#schedule-limits a.slot-cell[href="/runs/${run}"]`).first().click();
  await page.waitForURL(`${base}/runs/${run}`);
  for (const r of [run, held]) await cancelRun(r);
});
