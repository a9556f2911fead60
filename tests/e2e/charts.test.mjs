// Browser test of the pictures: a run's timeline and a sequence's page, in
// real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) at a desktop and a phone width, against the real
// `scheduler worker` and `scheduler ui` with a database, queue and project
// of their own.
//
//   SCHEDULER_BIN=target/debug/scheduler node --test tests/e2e/charts.test.mjs
//
// Three histories: one real run (a step that fails once and is retried
// after a delay, outputs written), 50 runs of a five-step sequence and a
// run of 1,000 steps (both written straight into the record with SQL, as a
// year of nights would leave them). Screenshots in tests/e2e/screenshots/
// (charts-*.png).

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
const dbName = `charts_e2e_${id}`;
const queue = `e2e-charts-${id}`;
const project = fs.mkdtempSync(path.join(os.tmpdir(), "scheduler-e2e-charts-"));

const DESKTOP = { width: 1360, height: 900 };
const PHONE = { width: 390, height: 844 };

const children = [];
let browser;
let desktop;
let phone;
let base;

function writeProject() {
  const bin = path.join(project, "bin");
  fs.mkdirSync(bin);
  fs.mkdirSync(path.join(project, "etl_sequences"));
  const modules = {
    extract: "#!/bin/sh\nsleep 0.6\nmkdir -p out\nprintf 'id,amount\\n1,10\\n2,32\\n' > out/raw.csv\necho 'extracted 2 rows'\n",
    // Fails its first try (no marker yet), succeeds the next.
    flaky: "#!/bin/sh\nsleep 0.3\nif [ -f .flaky-$ETL_RUN_ID ]; then echo 'second try: fine'; exit 0; fi\ntouch .flaky-$ETL_RUN_ID\necho 'the API answered 503' >&2\nexit 2\n",
    load: "#!/bin/sh\nsleep 0.8\nmkdir -p out\ncp out/raw.csv out/final.csv\necho 'loaded 2 rows'\n",
    ok: "#!/bin/sh\necho ok\n",
  };
  const table = {};
  for (const [name, body] of Object.entries(modules)) {
    fs.writeFileSync(path.join(bin, `${name}.sh`), body, { mode: 0o755 });
    table[name] = { cmd: `./bin/${name}.sh` };
  }
  fs.writeFileSync(path.join(project, "modules.json"), JSON.stringify(table));
  const sequences = {
    report: [
      { module_name: "extract", output: "out/raw.csv", input: "in/orders.csv" },
      { module_name: "flaky", retries: 1, retry_delay_secs: 2, retry_jitter_factor: 0 },
      { module_name: "load", input: "out/raw.csv", output: "out/final.csv" },
    ],
    nightly: ["extract", "ok", "flaky", "load", "ok"].map((m, i) => ({
      module_name: m,
      input: `data/nightly/in_${i}.csv`,
      output: `data/nightly/out_${i}.csv`,
    })),
    huge: Array.from({ length: 1000 }, () => ({ module_name: "ok" })),
  };
  for (const [name, steps] of Object.entries(sequences)) {
    fs.writeFileSync(path.join(project, "etl_sequences", `${name}.json`), JSON.stringify(steps, null, 2));
  }
  const schedules = {
    nightly_0230: { sequence: "nightly", cron: "30 2 * * *", timezone: "Europe/Madrid", description: "last night's orders" },
  };
  fs.writeFileSync(path.join(project, "schedules.json"), JSON.stringify(schedules, null, 2));
}

function psql(sql) {
  execFileSync("psql", [`${DB_BASE}/${dbName}`, "-v", "ON_ERROR_STOP=1", "-qc", sql]);
}

// 50 nights of `nightly`, oldest first, as a year of history leaves them:
// steps of a few seconds to a minute and a half, waits in the queue, every
// ninth night failing at step 3 after a retry, every seventh retrying step
// 3 once and succeeding; the newest still running with step 4 stalled.
// Each carries the snapshot of a real run (@REAL@), which then goes.
const FIFTY_NIGHTS = `
DO $$
DECLARE
  i int; s int; r uuid; t timestamptz; created timestamptz; dur float8; wait float8; av text[];
  fails bool; retries bool; mods text[] := ARRAY['extract', 'ok', 'flaky', 'load', 'ok'];
  base float8[] := ARRAY[22, 4, 48, 75, 9];
BEGIN
  FOR i IN 0..50 LOOP
    r := gen_random_uuid();
    created := date_trunc('day', now()) - make_interval(days => 51 - i) + interval '2 hours 30 minutes';
    -- Night 44 passed while no scheduler ran.
    IF i = 44 THEN
      INSERT INTO schedule_slots (schedule, slot_at, fate, note, recorded_at)
      VALUES ('nightly_0230', created, 'missed', 'passed while no scheduler ran; outside the catch-up policy or window',
              created + interval '9 hours');
      CONTINUE;
    END IF;
    fails := i % 9 = 4 AND i < 50;
    retries := i % 7 = 2;
    INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, failed_step, error, created_at,
                      started_at, updated_at, schedule, logical_date)
    VALUES (r, 'nightly', CASE WHEN i = 50 THEN 'running' WHEN fails THEN 'failed' ELSE 'succeeded' END, 'etl',
            'cron', (SELECT snapshot FROM runs WHERE id = '@REAL@'), 5, CASE WHEN fails THEN 2 END,
            CASE WHEN fails THEN 'step 3 (flaky) exited with code 2 after 2 attempts' END,
            created, created + interval '800 milliseconds', created, 'nightly_0230', created);
    t := created + interval '800 milliseconds';
    FOR s IN 0..4 LOOP
      EXIT WHEN i = 50 AND s = 4;
      av := ARRAY['./bin/' || mods[s + 1] || '.sh', '--input', 'data/nightly/in_' || s || '.csv',
                  '--output', 'data/nightly/out_' || s || '.csv'];
      dur := base[s + 1] * (0.75 + ((i * 37 + s * 11) % 50) / 100.0) + CASE WHEN i > 40 AND s = 3 THEN 40 ELSE 0 END;
      wait := 0.05 + ((i + s) % 4) * 0.4;
      IF s = 2 AND (fails OR retries) THEN
        INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, started_at, finished_at,
                                duration_ms, exit_code, error, peak_rss_kib, user_cpu_us, sys_cpu_us, retry)
        VALUES (r, s, 1, mods[s + 1], av, 'failed', 'etl', t, t + make_interval(secs => wait),
                t + make_interval(secs => wait + 3), 3000, 2, 'exited with code 2', 30000, 900000, 100000, 0);
        t := t + make_interval(secs => wait + 3);
        INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, due_at, started_at,
                                finished_at, duration_ms, exit_code, error, peak_rss_kib, user_cpu_us, sys_cpu_us, retry)
        VALUES (r, s, 2, mods[s + 1], av, CASE WHEN fails THEN 'failed' ELSE 'succeeded' END, 'etl', t,
                t + interval '20 seconds', t + interval '20.3 seconds',
                t + make_interval(secs => 20.3 + CASE WHEN fails THEN 3 ELSE dur END),
                (CASE WHEN fails THEN 3 ELSE dur END * 1000)::bigint, CASE WHEN fails THEN 2 ELSE 0 END,
                CASE WHEN fails THEN 'exited with code 2' END, 41000,
                CASE WHEN fails THEN 2500000 ELSE 1000000 * dur END, CASE WHEN fails THEN 300000 ELSE 200000 * dur END, 1);
        t := t + make_interval(secs => 20.3 + CASE WHEN fails THEN 3 ELSE dur END);
        EXIT WHEN fails;
      ELSE
        INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, started_at, finished_at,
                                duration_ms, exit_code, peak_rss_kib, user_cpu_us, sys_cpu_us, lease_until, stalled_at,
                                output_path, output_bytes, output_mtime, output_sha256)
        VALUES (r, s, 1, mods[s + 1], av, CASE WHEN i = 50 AND s = 3 THEN 'running' ELSE 'succeeded' END, 'etl', t,
                t + make_interval(secs => wait),
                CASE WHEN NOT (i = 50 AND s = 3) THEN t + make_interval(secs => wait + dur) END,
                CASE WHEN NOT (i = 50 AND s = 3) THEN (dur * 1000)::bigint END,
                CASE WHEN NOT (i = 50 AND s = 3) THEN 0 END,
                20000 + s * 90000 + i * 300, 800000 * dur, 100000 * dur,
                CASE WHEN i = 50 AND s = 3 THEN now() + interval '1 hour' END,
                CASE WHEN i = 50 AND s = 3 THEN now() - interval '4 minutes' END,
                -- What it wrote, once it ended (the same file every ten nights).
                CASE WHEN NOT (i = 50 AND s = 3) THEN 'data/nightly/out_' || s || '.csv' END,
                CASE WHEN NOT (i = 50 AND s = 3) THEN 1048576 * (s + 1) END,
                CASE WHEN NOT (i = 50 AND s = 3) THEN t + make_interval(secs => wait + dur) END,
                CASE WHEN NOT (i = 50 AND s = 3) THEN md5('out' || s || (i / 10)) || md5('x') END);
        t := t + make_interval(secs => wait + dur);
      END IF;
    END LOOP;
    UPDATE runs SET finished_at = CASE WHEN i = 50 THEN NULL ELSE t + interval '0.2 seconds' END,
                    updated_at = t WHERE id = r;
    INSERT INTO schedule_slots (schedule, slot_at, fate, run_id, recorded_at) VALUES ('nightly_0230', created, 'started', r, created);
  END LOOP;
  -- The newest run was created 15 minutes ago (its stalled step is its
  -- fourth); the real run that lent its snapshot goes.
  UPDATE executions e SET queued_at = now() - interval '15 minutes' + (e.queued_at - r.created_at),
                          started_at = now() - interval '15 minutes' + (e.started_at - r.created_at),
                          finished_at = now() - interval '15 minutes' + (e.finished_at - r.created_at),
                          output_mtime = now() - interval '15 minutes' + (e.output_mtime - r.created_at)
    FROM runs r WHERE r.id = e.run_id AND r.state = 'running' AND r.sequence = 'nightly';
  UPDATE runs SET created_at = now() - interval '15 minutes', started_at = now() - interval '15 minutes' + interval '800 milliseconds',
                  logical_date = date_trunc('day', now()) + interval '2 hours 30 minutes'
   WHERE sequence = 'nightly' AND state = 'running';
  DELETE FROM runs WHERE id = '@REAL@';
  INSERT INTO schedules (name) VALUES ('nightly_0230') ON CONFLICT DO NOTHING;
END $$;`;

// One run of `huge`: 1,000 steps of 50 ms to 4 s, back to back, every 97th
// retried once after a 5 s delay.
const THOUSAND_STEPS = `
DO $$
DECLARE s int; r uuid := gen_random_uuid(); t timestamptz := now() - interval '2 hours'; dur float8;
BEGIN
  INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, created_at, started_at, updated_at)
  VALUES (r, 'huge', 'succeeded', 'etl', 'ui', '{}', 1000, t, t + interval '300 milliseconds', t);
  t := t + interval '300 milliseconds';
  FOR s IN 0..999 LOOP
    dur := 0.05 + ((s * 7919) % 100) / 100.0 * CASE WHEN s % 50 = 17 THEN 4 ELSE 0.8 END;
    IF s % 97 = 40 THEN
      INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, started_at, finished_at,
                              duration_ms, exit_code, peak_rss_kib, user_cpu_us, sys_cpu_us)
      VALUES (r, s, 1, 'ok', '{}', 'failed', 'etl', t, t + interval '20 milliseconds', t + interval '520 milliseconds',
              500, 1, 9000, 300000, 20000);
      t := t + interval '520 milliseconds';
      INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, due_at, started_at, finished_at,
                              duration_ms, exit_code, peak_rss_kib, user_cpu_us, sys_cpu_us, retry)
      VALUES (r, s, 2, 'ok', '{}', 'succeeded', 'etl', t, t + interval '5 seconds', t + interval '5.02 seconds',
              t + make_interval(secs => 5.02 + dur), (dur * 1000)::bigint, 0, 9000, 300000, 20000, 1);
      t := t + make_interval(secs => 5.02 + dur);
    ELSE
      INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, started_at, finished_at,
                              duration_ms, exit_code, peak_rss_kib, user_cpu_us, sys_cpu_us)
      VALUES (r, s, 1, 'ok', '{}', 'succeeded', 'etl', t, t + interval '20 milliseconds',
              t + make_interval(secs => 0.02 + dur), (dur * 1000)::bigint, 0, 9000, 1000000 * dur, 20000);
      t := t + make_interval(secs => 0.02 + dur + 0.01);
    END IF;
  END LOOP;
  UPDATE runs SET finished_at = t, updated_at = t WHERE id = r;
END $$;`;

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
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${logs()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function startRun(sequence) {
  const res = await fetch(`${base}/api/v1/sequences/${sequence}/start`, {
    method: "POST",
    headers: { "X-Requested-By": "e2e" },
  });
  const body = await res.text();
  assert.equal(res.status, 201, body);
  return JSON.parse(body).id;
}

async function runState(runId) {
  return (await (await fetch(`${base}/api/v1/runs/${runId}`)).json()).state;
}

// The page fits its width: nothing sticks out sideways.
async function fitsWidth(page) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
}

// Every bar the server drew is visible in the browser: at least a pixel
// wide (its stroke included), inside the chart.
async function barsVisible(page, selector) {
  const bad = await page.evaluate((sel) => {
    const out = [];
    for (const r of document.querySelectorAll(sel)) {
      const b = r.getBoundingClientRect();
      const stroke = parseFloat(getComputedStyle(r).strokeWidth) || 0;
      const chart = r.ownerSVGElement.getBoundingClientRect();
      if (b.width + stroke < 1 || b.left < chart.left - 0.5 || b.right > chart.right + 0.5) out.push([b.left, b.width]);
    }
    return out;
  }, selector);
  assert.deepEqual(bad, [], `${selector}: bars not visible`);
}

// No label of the duration chart (the y-axis's, the dates under it, the
// legend's, the median's value) overlaps another, or comes so close on the
// same line (4 px) that two read as one ("3 min median 2 min 47 s").
async function labelsApart(page) {
  const clashes = await page.evaluate(() => {
    const els = [...document.querySelectorAll("#durations svg.dc-axis text, #durations .dc-when span, #durations .tl-legend > span, #durations svg.dc-chart text:not(.dc-x):not(.dc-cut)")];
    const boxes = els.map((e) => [e.textContent, e.getBoundingClientRect()]).filter(([, b]) => b.width > 0);
    const out = [];
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const [ta, a] = boxes[i];
        const [tb, b] = boxes[j];
        const near = 4;
        if (a.left < b.right + near && b.left < a.right + near && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5) out.push([ta, tb]);
      }
    return out;
  });
  assert.deepEqual(clashes, [], "labels of the duration chart overlap");
  // Inside the plot only the marks (✕, ▲): the median's value is in the
  // legend, never beside a y-axis label or over the bars.
  assert.equal(await page.locator("#durations svg.dc-chart text:not(.dc-x):not(.dc-cut)").count(), 0);
  // Every y-axis label whole, none cut by its SVG's edge (the "0" was).
  const cut = await page.evaluate(() =>
    [...document.querySelectorAll("#durations svg.dc-axis text")]
      .filter((t) => {
        const b = t.getBoundingClientRect();
        const s = t.ownerSVGElement.getBoundingClientRect();
        return b.top < s.top - 0.5 || b.bottom > s.bottom + 0.5 || b.left < s.left - 0.5 || b.right > s.right + 0.5;
      })
      .map((t) => t.textContent),
  );
  assert.deepEqual(cut, [], "y-axis labels cut by the chart's edge");
}

async function shot(page, name, locator) {
  const file = path.join(shots, `charts-${name}.png`);
  if (locator) await page.locator(locator).screenshot({ path: file });
  else await page.screenshot({ path: file, fullPage: true });
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
  await until("a live worker", async () => (await (await fetch(`${base}/api/v1/workers`)).json()).some((w) => w.alive));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  desktop = await (await browser.newContext({ viewport: DESKTOP })).newPage();
  phone = await (await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true })).newPage();
  for (const p of [desktop, phone]) {
    p.setDefaultTimeout(30_000);
    p.on("dialog", (d) => {
      throw new Error(`unexpected ${d.type()} dialog: ${d.message()}`);
    });
  }
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

test("one real run: its timeline shows the retry's delay and every step's wait and work", async () => {
  const first = await startRun("report");
  await until("the first run to succeed", async () => (await runState(first)) === "succeeded", 60_000);
  for (const [page, size] of [[desktop, "desktop"], [phone, "phone"]]) {
    await page.goto(`${base}/sequences/report`);
    await page.locator("svg.dc-chart").waitFor();
    assert.equal(await page.locator("g.dc-bar").count(), 1);
    await page.getByText("100 %").waitFor();
    await labelsApart(page);
    await fitsWidth(page);
    await shot(page, `sequence-1-${size}`);
  }
  const second = await startRun("report");
  await until("the second run to succeed", async () => (await runState(second)) === "succeeded", 60_000);

  for (const [page, size] of [[desktop, "desktop"], [phone, "phone"]]) {
    await page.goto(`${base}/runs/${second}`);
    await page.locator("#timeline svg.tl-chart").waitFor();
    // The run, three steps, and the flaky step's retry.
    assert.equal(await page.locator("#timeline g.tl-row").count(), 5);
    await page.locator("#timeline rect.tl-delay").waitFor();
    await barsVisible(page, "#timeline rect.tl-run");
    await page.getByText("unchanged since the previous successful run (same SHA-256)").first().waitFor();
    await page.getByText("input in/orders.csv did not exist when the step started").waitFor();
    await fitsWidth(page);
    await shot(page, `run-1-${size}`);
    await shot(page, `run-1-timeline-${size}`, "#timeline");
  }
  // A bar opens its step.
  await desktop.locator('#timeline a[href="#step-2"]').first().click();
  await until("the step in view", () => desktop.evaluate(() => location.hash === "#step-2"));
});

test("50 runs: the sequence page charts them, failures marked, with its figures and schedule", async () => {
  // A real run lends its snapshot (the definition as run) to the 50.
  const real = await startRun("nightly");
  await until("the real run to end", async () => ["succeeded", "failed"].includes(await runState(real)), 60_000);
  psql(FIFTY_NIGHTS.replaceAll("@REAL@", real));
  for (const [page, size] of [[desktop, "desktop"], [phone, "phone"]]) {
    await page.goto(`${base}/sequences/nightly`);
    await page.locator("svg.dc-chart").waitFor();
    assert.equal(await page.locator("g.dc-bar").count(), 50);
    assert.equal(await page.locator("text.dc-x").count(), 6, "nights 4, 13, 22, 31, 40 and 49 failed");
    await barsVisible(page, "rect.dc-r");
    await page.locator(".seq-schedule h3", { hasText: "nightly_0230" }).waitFor();
    await page.locator(".slot-cell.f-missed").waitFor();
    // The median's value is said once, in the legend, clear of the y axis.
    await page.locator("#durations .dc-median-key", { hasText: /median of the successes: \d/ }).waitFor();
    await labelsApart(page);
    await fitsWidth(page);
    await shot(page, `sequence-50-${size}`);
    await shot(page, `sequence-50-chart-${size}`, "#durations");
  }
  // A failed night that was retried, and the newest night, still running
  // with its step stalled.
  const failed = await desktop.locator("g.dc-bar").filter({ has: desktop.locator("text.dc-x") }).last()
    .locator("xpath=..").getAttribute("href");
  const running = await desktop.locator("a", { has: desktop.locator("rect.dc-r.s-running") }).getAttribute("href");
  for (const [page, size] of [[desktop, "desktop"], [phone, "phone"]]) {
    await page.goto(base + failed);
    await page.locator("#timeline rect.tl-run.s-failed").first().waitFor();
    assert.equal(await page.locator("#timeline rect.tl-delay").count(), 1);
    await fitsWidth(page);
    await shot(page, `run-50-failed-${size}`);
    await page.goto(base + running);
    await page.locator("#timeline rect.tl-stall").waitFor();
    await page.locator(".step-head .badge.s-stalled").waitFor();
    await page.locator("#timeline line.tl-now").waitFor({ state: "attached" });
    await fitsWidth(page);
    await shot(page, `run-50-running-${size}`);
  }
});

test("a run of 1,000 steps keeps a bar per attempt, and its sequence page stays short", async () => {
  psql(THOUSAND_STEPS);
  const runs = await (await fetch(`${base}/api/v1/runs?sequence=huge`)).json();
  const run = runs.runs[0].id;
  for (const [page, size] of [[desktop, "desktop"], [phone, "phone"]]) {
    const t0 = Date.now();
    await page.goto(`${base}/runs/${run}`);
    await page.locator("#timeline svg.tl-chart").waitFor();
    const loaded = Date.now() - t0;
    // 1,000 steps, 10 of them retried, and the run.
    assert.equal(await page.locator("#timeline g.tl-row").count(), 1011);
    await barsVisible(page, "#timeline rect.tl-run");
    await fitsWidth(page);
    await shot(page, `run-1000-timeline-${size}`, "#timeline");
    await page.screenshot({ path: path.join(shots, `charts-run-1000-top-${size}.png`) });
    console.log(`run page of 1,000 steps, ${size}: loaded in ${loaded} ms`);

    await page.goto(`${base}/sequences/huge`);
    await page.getByText("The 15 slowest").waitFor();
    await fitsWidth(page);
    await shot(page, `sequence-1000-${size}`);
  }
});
