/**
 * The inspector (`/drf-live/inspector/`) in a real Chromium, against a real uvicorn and redis-server.
 *
 * A staff user, root, made for this suite (the demo users are not staff) and a member of alice's
 * Website, so that the viewsets show it Website's tasks, uses the page the way a person would:
 * elements are found by role, label and text. It reads the registry, subscribes to a task while alice
 * renames it through the REST API, unsubscribes, sends a ping and a malformed frame by hand, and
 * watches its subscriptions revoked when alice takes it out of Website. bob, who
 * is not staff, and an anonymous visitor get 404; so does root from a server with DEBUG off and
 * INSPECTOR_ENABLED unset. Logs and screenshots go to test-output/browser-inspector/.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { after, before, it } from "node:test";
import { describeInBrowser, freePort, launchChromium, ROOT, sleep, Stack, stop, until, WAIT } from "./helpers.mjs";

const OUTPUT = path.join(ROOT, "test-output", "browser-inspector");
const INSPECTOR = "/drf-live/inspector/";
const STAFF = { username: "root", password: "inspector-password" };
const LANDING = "Write the landing page"; // a task of Website in the demo data
const RENAMED = "Write the landing page, inspected";

await describeInBrowser("the inspector", inspectorTests);

function inspectorTests() {
  const stack = new Stack(OUTPUT);
  let base, browser, page, aliceToken, taskId;

  before(async () => {
    rmSync(OUTPUT, { recursive: true, force: true });
    await stack.start();
    await stack.manage(
      "shell",
      "-c",
      "from api.models import Project, User; " +
        `root = User.objects.create_user(${JSON.stringify(STAFF.username)}, password=${JSON.stringify(STAFF.password)}, is_staff=True, display_name="Root"); ` +
        'Project.objects.get(name="Website").members.add(root)',
    );
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await stack.startServer(port);
    browser = await launchChromium();

    aliceToken = (await rest("POST", "/api/auth/token/", { body: { username: "alice", password: "demo-password" } })).token;
    const tasks = await rest("GET", "/api/tasks/", { token: aliceToken });
    taskId = tasks.results.find((task) => task.title === LANDING).id;

    page = await newPage();
    await signIn(page, STAFF.username, STAFF.password, INSPECTOR);
    await until(async () => (await page.getByRole("status").textContent()) === "open", "the connection is open");
  }, { timeout: 60_000 });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(OUTPUT, "inspector.png"), fullPage: true }).catch(() => {});
    await browser?.close().catch(() => {});
    await stack.close();
    if (page) {
      assert.deepEqual(page.errors, [], "uncaught errors on the inspector");
      assert.deepEqual(page.consoleErrors, [], "errors in the inspector's console");
    }
  });

  it("shows a staff user the registry: each model's events, filters, audiences and actions", { timeout: 20_000 }, async () => {
    const registry = page.getByRole("table");
    const headers = await registry.getByRole("columnheader").allTextContents();
    assert.deepEqual(headers, [
      "Model", "Event types", "Filter fields", "Audiences", "Socket actions", "Custom actions", "Unfiltered collection",
      "Tracked fields", "Access fields",
    ]);
    assert.deepEqual(await cellsOf(registry, "api.task"), [
      "CREATE_TASK, UPDATE_TASK, DELETE_TASK", "project", "all", "retrieve, list", "none", "allowed",
      "project, title, done, assignee, private", "project, assignee",
    ]);
    assert.deepEqual((await cellsOf(registry, "api.user")).slice(0, 3), ["CREATE_USER, UPDATE_USER, DELETE_USER", "none", "self, others"]);
    assert.equal((await cellsOf(registry, "api.project"))[0], "CREATE_PROJECT, UPDATE_PROJECT, DELETE_PROJECT");
    await registry.getByRole("rowheader", { name: "api.task api.views.TaskViewSet" }).waitFor();

    // The form offers the same models, and the chosen model's filter fields.
    const model = page.getByRole("combobox", { name: "Model" });
    assert.deepEqual(await model.evaluate((select) => [...select.options].map((option) => option.label)), ["api.project", "api.task", "api.user"]);
    await model.selectOption("api.task");
    await page.getByRole("textbox", { name: "Filter: project" }).waitFor();
    await model.selectOption("api.user");
    assert.equal(await page.getByRole("textbox", { name: /^Filter:/ }).count(), 0);
  });

  it("subscribes to a task with one click, and shows alice's REST write as UPDATE_TASK", { timeout: 20_000 }, async () => {
    await page.getByRole("combobox", { name: "Model" }).selectOption("api.task");
    // "List objects" asks the viewset, and offers the ids it shows root.
    await page.getByRole("button", { name: "List objects" }).click();
    await page.getByText("Listed 2 of 2; their ids are offered in the Id field.").waitFor();
    const offered = await page.getByRole("combobox", { name: "Id" }).evaluate((input) => [...input.list.options].map((option) => option.value));
    assert.ok(offered.includes(taskId), `${taskId} not in ${offered}`);

    await page.getByRole("combobox", { name: "Id" }).fill(taskId);
    await page.getByRole("button", { name: "Subscribe", exact: true }).click();
    await page.getByText(`Subscribed to api.task ${taskId}.`).waitFor();
    const subscription = page.getByRole("list", { name: "Subscriptions" }).getByRole("listitem");
    await subscription.filter({ hasText: "subscribed" }).filter({ hasText: `api.task ${taskId}` }).waitFor();
    const snapshot = frame("received SUBSCRIBED", `"id": "${taskId}"`);
    await snapshot.getByText(`"title": "${LANDING}"`).waitFor();

    await rest("PATCH", `/api/tasks/${taskId}/`, { token: aliceToken, body: { title: RENAMED } });
    const update = frame("received UPDATE_TASK", `"title": "${RENAMED}"`);
    await update.waitFor({ timeout: WAIT });
    assert.match(await update.textContent(), /"changed": \[\s*"title"\s*\]/);
    // Newest last: the update comes after the snapshot.
    const entries = await frames().allTextContents();
    assert.ok(
      entries.findIndex((text) => text.includes("UPDATE_TASK")) > entries.findIndex((text) => text.includes("SUBSCRIBED")),
      "the update is listed after the snapshot",
    );
  });

  it("unsubscribes with one click, from the keyboard: later writes show nothing", { timeout: 20_000 }, async () => {
    const button = page.getByRole("button", { name: `Unsubscribe from api.task ${taskId}` });
    await button.focus();
    await page.keyboard.press("Enter");
    await page.getByText(`Unsubscribed from api.task ${taskId}.`).waitFor();
    await frame("received UNSUBSCRIBED", `"id": "${taskId}"`).waitFor();
    await page.getByText("None yet.").waitFor();
    // The focus went somewhere a keyboard can go on from, not to the page's body.
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Subscribe");

    const updates = await frames().filter({ hasText: "received UPDATE_TASK" }).count();
    await rest("PATCH", `/api/tasks/${taskId}/`, { token: aliceToken, body: { title: LANDING } });
    await sleep(500);
    assert.equal(await frames().filter({ hasText: "received UPDATE_TASK" }).count(), updates);
  });

  it("sends a raw ping and shows its PONG, with the request_id", { timeout: 20_000 }, async () => {
    await page.getByRole("textbox", { name: "Frame" }).fill('{"action": "ping", "request_id": "browser-ping"}');
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await frame("sent ping", '"request_id": "browser-ping"').waitFor();
    await frame("received PONG", '"request_id": "browser-ping"').waitFor();
  });

  it("sends a malformed frame (Ctrl+Enter) and shows its ERROR; the socket stays open", { timeout: 20_000 }, async () => {
    const box = page.getByRole("textbox", { name: "Frame" });
    await box.fill('{"action": "ping"');
    await box.press("Control+Enter");
    await frame("sent not JSON", '{"action": "ping"').waitFor();
    await frame("received ERROR parse_error", '"code": "parse_error"').waitFor();

    // A frame the server can read but not take: named by its fields.
    await box.fill('{"action": "subscribe", "model": "api.task", "id": 7, "request_id": "bad-id"}');
    await box.press("Control+Enter");
    const invalid = frame("received ERROR invalid", '"request_id": "bad-id"');
    await invalid.waitFor();
    assert.match(await invalid.textContent(), /"fields": \[\s*"id"\s*\]/);
    assert.equal(await page.getByRole("status").textContent(), "open");

    // The example buttons fill in a frame for the form's target.
    await page.getByRole("button", { name: "Retrieve example" }).click();
    const example = JSON.parse(await box.inputValue());
    assert.deepEqual({ ...example, request_id: undefined }, { action: "retrieve", model: "api.task", id: taskId, request_id: undefined });
    await page.keyboard.press("Control+Enter"); // the focus is in the box
    await frame("received RETRIEVED", `"request_id": "${example.request_id}"`).waitFor();
  });

  it("shows a revocation: alice takes root out of Website, both its subscriptions end", { timeout: 20_000 }, async () => {
    const website = (await rest("GET", `/api/tasks/${taskId}/`, { token: aliceToken })).project;
    const model = page.getByRole("combobox", { name: "Model" });
    await model.selectOption("api.task");
    await page.getByRole("combobox", { name: "Id" }).fill(taskId);
    await page.getByRole("button", { name: "Subscribe", exact: true }).click();
    await page.getByText(`Subscribed to api.task ${taskId}.`).waitFor();
    // The project's tasks: a collection, by its filter field.
    await page.getByRole("combobox", { name: "Id" }).fill("");
    await page.getByRole("textbox", { name: "Filter: project" }).fill(website);
    await page.getByRole("button", { name: "Subscribe", exact: true }).click();
    await page.getByText(`Subscribed to api.task where project=${website}.`).waitFor();
    await frame("received SUBSCRIBED", `"project": "${website}"`).getByText('"count": 2').waitFor();
    const subscriptions = page.getByRole("list", { name: "Subscriptions" }).getByRole("listitem");
    assert.equal(await subscriptions.count(), 2);

    const project = await rest("GET", `/api/projects/${website}/`, { token: aliceToken });
    const members = project.members.filter((id) => id !== project.owner);
    const root = (await rest("GET", "/api/users/", { token: aliceToken })).results.find((user) => user.username === STAFF.username).id;
    await rest("PATCH", `/api/projects/${website}/`, { token: aliceToken, body: { members: members.filter((id) => id !== root) } });

    await frame("received UNSUBSCRIBED", '"reason": "revoked"', `"id": "${taskId}"`).waitFor();
    await frame("received UNSUBSCRIBED", '"reason": "revoked"', `"project": "${website}"`).waitFor();
    await until(async () => (await subscriptions.count()) === 0, "both subscriptions leave the list");
    await page.getByText("None yet.").waitFor();
  });

  it("is 404 for a user who is not staff, and for an anonymous visitor", { timeout: 20_000 }, async () => {
    const bob = await newPage();
    try {
      await signIn(bob, "bob", "demo-password", "/api/users/me/");
      const response = await bob.goto(`${base}${INSPECTOR}`);
      assert.equal(response.status(), 404);
      assert.equal(await bob.getByRole("heading", { name: "Registry" }).count(), 0);
    } finally {
      await bob.context().close();
    }
    const anonymous = await newPage();
    try {
      assert.equal((await anonymous.goto(`${base}${INSPECTOR}`)).status(), 404);
    } finally {
      await anonymous.context().close();
    }
  });

  it("is 404 for staff too on a server with DEBUG off and INSPECTOR_ENABLED unset", { timeout: 30_000 }, async () => {
    const port = await freePort();
    const server = await stack.startServer(port, { env: { DEBUG: "0" }, name: "server-no-debug" });
    try {
      // The same database and SECRET_KEY, and cookies do not care about ports: root is signed in there.
      const me = await page.request.get(`http://127.0.0.1:${port}/api/users/me/`);
      assert.equal(me.status(), 200);
      assert.equal((await me.json()).username, STAFF.username);
      const other = await page.context().newPage();
      try {
        assert.equal((await other.goto(`http://127.0.0.1:${port}${INSPECTOR}`)).status(), 404);
      } finally {
        await other.close();
      }
    } finally {
      await stop(server);
    }
  });

  // --- helpers -------------------------------------------------------------------------------------

  async function newPage() {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(WAIT);
    const created = await context.newPage();
    Object.assign(created, { errors: [], consoleErrors: [] });
    created.on("pageerror", (error) => created.errors.push(String(error)));
    created.on("console", (message) => {
      // A 404 (the point of some tests) is logged by Chromium itself.
      if (message.type() === "error" && !/^Failed to load resource/.test(message.text())) created.consoleErrors.push(message.text());
    });
    return created;
  }

  /** Sign in with DRF's login form, landing on `next`. */
  async function signIn(target, username, password, next) {
    await target.goto(`${base}/api-auth/login/?next=${encodeURIComponent(next)}`);
    await target.getByLabel("Username").fill(username);
    await target.getByLabel("Password").fill(password);
    await Promise.all([target.waitForURL(`${base}${next}`), target.getByRole("button", { name: "Log in" }).click()]);
  }

  /** A JSON request to the REST API, as a client other than the page (alice, by token). */
  async function rest(method, url, { token, body } = {}) {
    const headers = { "Content-Type": "application/json", ...(token ? { Authorization: `Token ${token}` } : {}) };
    const response = await fetch(`${base}${url}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
    assert.ok(response.ok, `${method} ${url}: ${response.status} ${await response.clone().text()}`);
    return response.json();
  }

  function frames() {
    return page.getByRole("list", { name: "Frames" }).getByRole("listitem");
  }

  /** The last log entry whose head says `head` (e.g. "received PONG") and whose text holds each of `texts`. */
  function frame(head, ...texts) {
    let entries = frames().filter({ has: page.getByText(head, { exact: false }) });
    for (const text of texts) entries = entries.filter({ hasText: text });
    return entries.last();
  }
}

/** The cells of a registry row, after its header (the model's label and viewset). */
async function cellsOf(table, label) {
  const header = table.page().getByRole("rowheader", { name: new RegExp(`^${label.replace(".", "\\.")} `) });
  const row = table.getByRole("row").filter({ has: header });
  return (await row.getByRole("cell").allTextContents()).map((text) => text.replace(/\s+/g, " ").trim());
}
