/**
 * What the browser suites share: the check for what they need, the servers they start (a real
 * redis-server, the demo data in a SQLite file of their own, uvicorn as `make run` serves), and waits.
 *
 * Needs /usr/bin/chromium (`apt-get install chromium`, or CHROMIUM_PATH), redis-server, .venv and
 * `npm ci`. Without them a suite is skipped, unless DRF_LIVE_REQUIRE_BROWSER=1 (CI), where it fails.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const PYTHON = path.join(ROOT, ".venv", "bin", "python");
export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
export const WAIT = 10_000; // the bound of every wait for something a page should show
const REQUIRED = process.env.DRF_LIVE_REQUIRE_BROWSER === "1";

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

/** `describe(name, tests)`, skipped when something it needs is missing (a failure in CI). */
export async function describeInBrowser(name, tests) {
  const missing = await whatIsMissing();
  if (missing && REQUIRED) {
    it(`has what the browser tests need for ${name} (DRF_LIVE_REQUIRE_BROWSER=1)`, () => assert.fail(missing));
  } else {
    describe(name, { skip: missing ? `skipped: ${missing}` : false }, tests);
  }
}

export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/**
 * The servers of one suite, logging to `output`: a redis-server, a SQLite database in a temporary
 * folder with the demo data loaded, and as many uvicorns on it as the suite starts. `close()` stops
 * every process it started and removes the folder; so does the runner's exit.
 */
export class Stack {
  constructor(output) {
    this.output = output;
    this.processes = new Set();
    this.tmp = null;
    this.env = null;
    // Should the runner be interrupted, take the servers down with it.
    process.once("exit", () => this.processes.forEach((child) => child.kill("SIGKILL")));
  }

  /** redis-server, then a migrated database with the demo data. */
  async start() {
    mkdirSync(this.output, { recursive: true });
    this.tmp = mkdtempSync(path.join(os.tmpdir(), "drf-live-browser-"));
    const redisPort = await freePort();
    this.spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.tmp], "redis");
    await waitForPort(redisPort);
    const { DRF_LIVE: _ignored, ...inherited } = process.env; // the suites' settings are their own
    this.env = {
      ...inherited,
      DJANGO_SETTINGS_MODULE: "project.settings",
      DATABASE_URL: `sqlite:///${path.join(this.tmp, "db.sqlite3")}`,
      REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
      DEBUG: "1",
      PYTHONUNBUFFERED: "1",
    };
    await this.manage("migrate", "--noinput");
    await this.manage("load_demo", "--quiet");
  }

  spawn(command, args, name, env = this.env ?? process.env) {
    const log = openSync(path.join(this.output, `${name}.log`), "a");
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ["ignore", log, log] });
    child.exited = new Promise((resolve) => child.once("exit", resolve));
    this.processes.add(child);
    child.exited.then(() => this.processes.delete(child));
    return child;
  }

  /** uvicorn on `port`, as `make run` serves (a deadline for request headers, WebSocket pings); `env` is added. */
  async startServer(port, { env = {}, name = "server" } = {}) {
    const child = this.spawn(
      PYTHON,
      ["-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1", "--port", String(port), "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
        "--http", "notifications.handshake:HttpProtocol", "--timeout-keep-alive", "5", "--ws-ping-interval", "20", "--ws-ping-timeout", "20"],
      name,
      { ...this.env, ...env },
    );
    await waitForPort(port, child, 30_000, path.join(this.output, `${name}.log`));
    return child;
  }

  async manage(...args) {
    const { stdout } = await promisify(execFile)(PYTHON, ["manage.py", ...args], { cwd: ROOT, env: this.env, timeout: 60_000 });
    return stdout;
  }

  async close() {
    await Promise.all([...this.processes].map(stop));
    if (this.tmp !== null) rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** Poll `check` until it returns something truthy (returned), or fail saying `what` was not seen. */
export async function until(check, what, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await sleep(50);
  }
  assert.fail(`not seen within ${timeout} ms: ${what} (last: ${last})`);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on("error", reject);
  });
}

export async function waitForPort(port, child = null, timeout = 30_000, log = "its log") {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}: see ${log}`);
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (open) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on port ${port} after ${timeout} ms`);
}

/** SIGTERM, then SIGKILL after 10 s. */
export async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await child.exited;
  clearTimeout(timer);
}
