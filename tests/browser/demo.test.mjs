/**
 * The demo page (`/`) in a real Chromium, against a real uvicorn and a real redis-server.
 *
 * Two users watch project "Website" in two browser contexts: an edit on one page shows on the other
 * without a reload; and a write made while the server is down is recovered from Redis history when the
 * page reconnects (`recovered: true`, then the missed event); and when alice removes bob from the project,
 * it disappears from bob's page (revoked), not from hers. Screenshots go to test-output/browser/.
 *
 * Needs /usr/bin/chromium (`apt-get install chromium`), redis-server, .venv and `npm ci`. Without them
 * the suite is skipped, unless DRF_LIVE_REQUIRE_BROWSER=1 (CI), where it fails.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const OUTPUT = path.join(ROOT, "test-output", "browser");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const PYTHON = path.join(ROOT, ".venv", "bin", "python");
const REQUIRED = process.env.DRF_LIVE_REQUIRE_BROWSER === "1";
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const WAIT = 10_000; // the bound of every wait for something the page should show

const TASK = "Choose a colour scheme"; // in project "Website", which alice owns and bob is a member of
const EDITED = "Choose a colour scheme (edited by alice)";
const OFFLINE = "Choose a colour scheme (written while the server was down)";

function onPath(name) {
  return (process.env.PATH ?? "").split(path.delimiter).some((dir) => existsSync(path.join(dir, name)));
}

async function whatIsMissing() {
  if (!existsSync(CHROMIUM)) return `Chromium is not installed at ${CHROMIUM}: apt-get install chromium`;
  if (!onPath("redis-server")) return "redis-server is not on PATH: apt-get install redis-server";
  if (!existsSync(PYTHON)) return "there is no .venv: run `make install` (or `make test`)";
  if (!existsSync(path.join(ROOT, "node_modules", "redux", "dist"))) return "redux is not installed: run `npm ci`";
  try {
    await import("playwright-core");
  } catch {
    return "playwright-core is not installed: run `npm ci`";
  }
  return null;
}

const missing = await whatIsMissing();

if (missing && REQUIRED) {
  it("has what the browser tests need (DRF_LIVE_REQUIRE_BROWSER=1)", () => assert.fail(missing));
} else {
  describe("the demo page", { skip: missing ? `skipped: ${missing}` : false }, demoPageTests);
}

function demoPageTests() {
  const processes = new Set();
  const tmp = mkdtempSync(path.join(os.tmpdir(), "drf-live-browser-"));
  let env, port, server, browser, alice, bob;

  before(async () => {
    rmSync(OUTPUT, { recursive: true, force: true });
    mkdirSync(OUTPUT, { recursive: true });
    const redisPort = await freePort();
    start("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp], "redis");
    await waitForPort(redisPort);
    env = {
      ...process.env,
      DJANGO_SETTINGS_MODULE: "project.settings",
      DATABASE_URL: `sqlite:///${path.join(tmp, "db.sqlite3")}`,
      REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
      DEBUG: "1",
      PYTHONUNBUFFERED: "1",
    };
    await manage("migrate", "--noinput");
    await manage("load_demo", "--quiet");
    port = await freePort();
    server = await startServer();

    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
    [alice, bob] = await Promise.all([signIn("alice"), signIn("bob")]);
  }, { timeout: 60_000 });

  after(async () => {
    const pages = [alice, bob].filter(Boolean);
    for (const page of pages) await screenshot(page);
    await browser?.close().catch(() => {});
    await Promise.all([...processes].map(stop));
    rmSync(tmp, { recursive: true, force: true });
    for (const page of pages) assert.deepEqual(page.errors, [], `uncaught errors on ${page.user}'s page`);
  });
  // Should the runner be interrupted, take the servers down with it.
  process.once("exit", () => processes.forEach((child) => child.kill("SIGKILL")));

  it("shows alice's edit on bob's page without a reload", { timeout: 30_000 }, async () => {
    const id = await taskId(bob, TASK);
    await title(alice, id).fill(EDITED);
    await title(alice, id).press("Enter");
    await waitForTitle(bob, id, EDITED);
    await alice.locator(`[data-task-id="${id}"] input[name="done"]`).check();
    await bob.waitForSelector(`[data-task-id="${id}"] input[name="done"]:checked`, { timeout: WAIT });
    assert.equal(await bob.evaluate(() => window.__notReloaded), true);
  });

  it("recovers a write made while the server was down, from Redis history", { timeout: 60_000 }, async (t) => {
    const id = await taskId(bob, EDITED);
    const marks = await Promise.all([alice, bob].map((page) => page.evaluate(() => window.__drfLiveLog.length)));

    await stop(server);
    await Promise.all([alice, bob].map((page) => waitForState(page, "reconnecting")));
    await manage("shell", "-c", `from api.models import Task; t = Task.objects.get(title=${JSON.stringify(EDITED)}); t.title = ${JSON.stringify(OFFLINE)}; t.save()`);
    server = await startServer();

    const observed = {};
    for (const [i, page] of [alice, bob].entries()) {
      await waitForState(page, "open");
      await waitForTitle(page, id, OFFLINE);
      assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page was reloaded");
      const log = await page.evaluate((mark) => window.__drfLiveLog.slice(mark), marks[i]);
      const states = log.filter((entry) => entry.dir === "state").map((entry) => entry.state);
      assert.deepEqual(states, ["reconnecting", "open"]);

      // The collection of the task's project: resubscribed with since + epoch, recovered, then the missed event.
      const project = (await page.evaluate((taskId) => window.__drfLiveStore.getState().live["api.task"][taskId], id)).project;
      const resubscribe = log.find((e) => e.dir === "out" && e.action === "subscribe" && e.filter?.project === project);
      assert.ok(resubscribe, "no resubscribe of the task collection");
      assert.equal(typeof resubscribe.since, "number");
      assert.equal(typeof resubscribe.epoch, "string");
      const reply = log.find((e) => e.dir === "in" && e.meta?.request_id === resubscribe.request_id);
      assert.equal(reply.type, "SUBSCRIBED");
      assert.equal(reply.meta.recovered, true, `not recovered: ${JSON.stringify(reply.meta)}`);
      assert.equal(reply.meta.seq, resubscribe.since);
      const replayed = log.filter((e) => e.dir === "in" && e.meta?.filter?.project === project && e.meta.seq > resubscribe.since);
      assert.deepEqual(replayed.map((e) => [e.type, e.meta.id, e.meta.seq]), [["UPDATE_TASK", id, resubscribe.since + 1]]);
      const recoveredTargets = log.filter((e) => e.dir === "in" && e.type === "SUBSCRIBED").map((e) => e.meta.recovered);
      observed[page.user] = {
        states,
        resubscribed: log.filter((e) => e.dir === "out" && e.action === "subscribe").length,
        recovered: recoveredTargets,
        since: resubscribe.since,
        epoch: resubscribe.epoch,
        missed: replayed.length,
        replayed: replayed.map((e) => `${e.type} ${e.meta.id} seq ${e.meta.seq} changed ${e.meta.changed}`),
        applied: await title(page, id).inputValue(),
      };
    }
    writeFileSync(path.join(OUTPUT, "reconnect.json"), JSON.stringify(observed, null, 2));
    for (const [user, o] of Object.entries(observed)) {
      t.diagnostic(
        `${user}: states ${o.states.join(" -> ")}; ${o.resubscribed} resubscribes, recovered ${JSON.stringify(o.recovered)}; ` +
          `collection since ${o.since}: missed ${o.missed}, replayed [${o.replayed.join("; ")}], applied title "${o.applied}"`,
      );
    }
  });

  it("removes project Website and its tasks from bob's page when alice removes him from it", { timeout: 30_000 }, async (t) => {
    const website = await projectId(bob, "Website");
    await bob.waitForSelector(`[data-project-id="${website}"] h2:text-is("Website")`, { timeout: WAIT });
    const tasks = await tasksOf(bob, website);
    assert.ok(tasks.length >= 2, `bob's page shows ${tasks.length} Website tasks`);
    for (const id of tasks) assert.equal(await bob.locator(`[data-project-id="${website}"] [data-task-id="${id}"]`).count(), 1);
    await bob.evaluate(() => (window.__removalMarker = "still here"));
    const mark = await bob.evaluate(() => window.__drfLiveLog.length);

    // As alice, through the REST API with her token: the write that takes bob's access away.
    const base = `http://127.0.0.1:${port}`;
    const { token } = await json("POST", `${base}/api/auth/token/`, { username: "alice", password: "demo-password" });
    const patched = await json("PATCH", `${base}/api/projects/${website}/`, { members: [] }, token);
    assert.deepEqual(patched.members, []);

    // bob: the section and every task row go, without a reload, and the store forgets them.
    await bob.waitForFunction((p) => !document.querySelector(`[data-project-id="${p}"]`), website, { timeout: WAIT });
    for (const id of tasks) assert.equal(await bob.locator(`[data-task-id="${id}"]`).count(), 0, `task ${id} still shown`);
    assert.equal(await bob.locator('[data-project-id] h2:text-is("Website")').count(), 0);
    assert.equal(await bob.evaluate(() => window.__removalMarker), "still here", "bob's page was reloaded");
    assert.equal(await bob.evaluate(() => window.__notReloaded), true);
    const live = await bob.evaluate(() => window.__drfLiveStore.getState().live);
    assert.equal(live["api.project"]?.[website], undefined);
    assert.deepEqual(Object.values(live["api.task"] ?? {}).filter((task) => task.project === website), []);
    const log = await bob.evaluate((m) => window.__drfLiveLog.slice(m), mark);
    const revoked = log
      .filter((e) => e.dir === "in" && e.type === "UNSUBSCRIBED")
      .map((e) => `${e.meta.model} ${e.meta.filter ? `filter project ${e.meta.filter.project}` : `id ${e.meta.id}`} ${e.meta.reason}`)
      .sort();
    assert.deepEqual(revoked, [`api.project id ${website} revoked`, `api.task filter project ${website} revoked`]);
    await screenshot(bob, "bob-removed");

    // alice still owns it: the project and its tasks stay on her page.
    await alice.waitForFunction((p) => window.__drfLiveStore.getState().live["api.project"]?.[p]?.members?.length === 0, website, { timeout: WAIT });
    await alice.waitForSelector(`[data-project-id="${website}"] h2:text-is("Website")`, { timeout: WAIT });
    for (const id of tasks) assert.equal(await alice.locator(`[data-project-id="${website}"] [data-task-id="${id}"]`).count(), 1);
    assert.equal(await alice.evaluate(() => window.__notReloaded), true);

    t.diagnostic(
      `bob: Website ${website} and ${tasks.length} tasks removed without a reload; frames after the PATCH: ` +
        `${log.filter((e) => e.dir === "in").map((e) => e.type).join(", ")}; revoked [${revoked.join("; ")}]; ` +
        `alice still shows Website with ${tasks.length} tasks`,
    );
  });

  it("logs out with the page's form, back to the sign-in form", { timeout: 30_000 }, async () => {
    const carol = await signIn("carol");
    await carol.waitForSelector('[data-project-id] h2:text-is("Mobile app")', { timeout: WAIT });
    await Promise.all([carol.waitForURL(`http://127.0.0.1:${port}/`), carol.click('form.logout button[type="submit"]')]);
    await carol.waitForSelector("#sign-in", { timeout: WAIT });
    assert.equal(await carol.locator("#connection").count(), 0);
    await screenshot(carol, "signed-out");
    assert.deepEqual(carol.errors, []);
  });

  // --- helpers -------------------------------------------------------------------------------------

  function start(command, args, name) {
    const log = openSync(path.join(OUTPUT, `${name}.log`), "a");
    const child = spawn(command, args, { cwd: ROOT, env: env ?? process.env, stdio: ["ignore", log, log] });
    child.exited = new Promise((resolve) => child.once("exit", resolve));
    processes.add(child);
    child.exited.then(() => processes.delete(child));
    return child;
  }

  async function startServer() {
    const child = start(
      PYTHON,
      // As `make run` serves it (a deadline for request headers, WebSocket pings).
      ["-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1", "--port", String(port), "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
        "--http", "notifications.handshake:HttpProtocol", "--timeout-keep-alive", "5", "--ws-ping-interval", "20", "--ws-ping-timeout", "20"],
      "server",
    );
    await waitForPort(port, child);
    return child;
  }

  async function manage(...args) {
    await promisify(execFile)(PYTHON, ["manage.py", ...args], { cwd: ROOT, env, timeout: 60_000 });
  }

  async function signIn(user) {
    const context = await browser.newContext({ viewport: { width: 960, height: 540 } });
    const page = await context.newPage();
    Object.assign(page, { user, errors: [] });
    page.on("pageerror", (error) => page.errors.push(String(error)));
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.selectOption('#sign-in select[name="username"]', user);
    await Promise.all([page.waitForURL(`http://127.0.0.1:${port}/`), page.click('#sign-in button[type="submit"]')]);
    await waitForState(page, "open");
    await page.waitForSelector("[data-project-id] [data-task-id]", { timeout: WAIT });
    await page.evaluate(() => (window.__notReloaded = true));
    return page;
  }
}

async function json(method, url, body, token = null) {
  const headers = { Accept: "application/json", "Content-Type": "application/json" };
  if (token) headers.Authorization = `Token ${token}`;
  const response = await fetch(url, { method, headers, body: JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  assert.ok(response.ok, `${method} ${url}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

async function projectId(page, name) {
  const handle = await page.waitForFunction(
    (n) => Object.values(window.__drfLiveStore.getState().live["api.project"] ?? {}).find((project) => project.name === n)?.id,
    name,
    { timeout: WAIT },
  );
  return handle.jsonValue();
}

function tasksOf(page, project) {
  return page.evaluate(
    (p) => Object.values(window.__drfLiveStore.getState().live["api.task"] ?? {}).filter((task) => task.project === p).map((task) => task.id),
    project,
  );
}

async function screenshot(page, name = page.user) {
  await page.screenshot({ path: path.join(OUTPUT, `${name}.png`), fullPage: true }).catch(() => {});
}

function title(page, id) {
  return page.locator(`[data-task-id="${id}"] input[name="title"]`);
}

async function taskId(page, wanted) {
  const handle = await page.waitForFunction(
    (t) => Object.values(window.__drfLiveStore.getState().live["api.task"] ?? {}).find((task) => task.title === t)?.id,
    wanted,
    { timeout: WAIT },
  );
  return handle.jsonValue();
}

async function waitForTitle(page, id, text) {
  await page.waitForFunction(
    ([i, t]) => document.querySelector(`[data-task-id="${i}"] input[name="title"]`)?.value === t,
    [id, text],
    { timeout: WAIT },
  );
}

async function waitForState(page, state) {
  // The client's backoff is capped at 5 s on this page, so a restarted server is found within WAIT.
  await page.waitForSelector(`#connection[data-state="${state}"]`, { timeout: WAIT });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on("error", reject);
  });
}

async function waitForPort(port, child = null, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}: see ${OUTPUT}/server.log`);
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`nothing listens on port ${port} after ${timeout} ms`);
}

/** SIGTERM, then SIGKILL after 10 s: every process the suite started ends with it. */
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await child.exited;
  clearTimeout(timer);
}
