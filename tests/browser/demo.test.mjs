/**
 * The demo page (`/`) in a real Chromium, against a real uvicorn and a real redis-server.
 *
 * alice (owner of "Website"), bob (a member of it) and carol (not yet) use the page side by side, in
 * three browser contexts, the way a person would: elements are found by their role, label and text,
 * never by an id or a class. Each test goes on from where the one before left the data:
 * create a task, rename and tick it, be refused, delete it, add carol, assign, make a task private,
 * restart the server (reloading the demo data, as `make run` does), lose the server's history, remove
 * bob, create a project, fail to load the page's scripts, log out. Screenshots go to test-output/browser/ (docs/demo.png is
 * alice's board from here).
 *
 * Protocol-level facts a person cannot see (a reconnect was `recovered`, a removal was a revocation)
 * are read from the page's frame log, window.__drfLiveLog.
 *
 * Needs /usr/bin/chromium (`apt-get install chromium`), redis-server, .venv and `npm ci`. Without them
 * the suite is skipped, unless DRF_LIVE_REQUIRE_BROWSER=1 (CI), where it fails.
 */
import assert from "node:assert/strict";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, it } from "node:test";
import { describeInBrowser, freePort, launchChromium, ROOT, sleep, Stack, stop, until, WAIT } from "./helpers.mjs";

const OUTPUT = path.join(ROOT, "test-output", "browser");

// The demo data (api/management/commands/load_demo.py), and what the tests make of it.
const LANDING = "Write the landing page";
const COLOURS = "Choose a colour scheme";
const CARDS = "Order business cards";
const CARDS_RENAMED = "Order 500 business cards";
const OFFLINE = "Write the landing page (written while the server was down)";

await describeInBrowser("the demo page", demoPageTests);

function demoPageTests() {
  const stack = new Stack(OUTPUT);
  let port, server, browser, alice, bob, carol;

  before(async () => {
    rmSync(OUTPUT, { recursive: true, force: true });
    mkdirSync(OUTPUT, { recursive: true });
    await stack.start();
    port = await freePort();
    server = await startServer();

    browser = await launchChromium();
    [alice, bob, carol] = await Promise.all([signIn("alice"), signIn("bob"), signIn("carol")]);
  }, { timeout: 60_000 });

  after(async () => {
    const pages = [alice, bob, carol].filter(Boolean);
    for (const page of pages) await screenshot(page, `${page.user}-last`);
    await browser?.close().catch(() => {});
    await stack.close();
    for (const page of pages) {
      assert.deepEqual(page.errors, [], `uncaught errors on ${page.user}'s page`);
      assert.deepEqual(page.consoleErrors, [], `errors in ${page.user}'s console`);
    }
  });

  it("shows each user their own projects, a live connection badge and controls named after each task", { timeout: 30_000 }, async () => {
    for (const page of [alice, bob, carol]) {
      assert.equal(await page.getByRole("status").count(), 1, "one status: the connection badge");
      assert.equal(await page.getByRole("status").textContent(), "live");
    }
    // alice owns Website (bob is a member) and is a member of carol's Mobile app.
    const website = project(alice, "Website");
    await website.getByText("2 open tasks", { exact: true }).waitFor();
    await website.getByText("You own this project.").waitFor();
    await website.getByRole("button", { name: "Remove Bob Example from Website" }).waitFor();
    assert.equal(await website.getByRole("textbox", { name: `Title: ${LANDING}`, exact: true }).inputValue(), LANDING);
    for (const control of [
      website.getByRole("checkbox", { name: `Done: ${LANDING}`, exact: true }),
      website.getByRole("combobox", { name: `Assignee: ${LANDING}`, exact: true }),
      website.getByRole("checkbox", { name: `Private: ${LANDING}`, exact: true }),
      website.getByRole("button", { name: `Delete ${LANDING}`, exact: true }),
      website.getByRole("checkbox", { name: `Done: ${COLOURS}`, exact: true }),
    ]) {
      await control.waitFor();
    }
    await project(alice, "Mobile app").getByText("Owner: Carol Example. Members: Alice Example (you).").waitFor();

    // bob sees Website as a member: its people, but no member controls, and not Mobile app.
    await project(bob, "Website").getByText("Owner: Alice Example. Members: Bob Example (you).").waitFor();
    await task(bob, LANDING).waitFor();
    assert.equal(await project(bob, "Website").getByRole("button", { name: /^Remove/ }).count(), 0);
    assert.equal(await bob.getByRole("combobox", { name: /Add a member/ }).count(), 0);
    assert.equal(await project(bob, "Mobile app").count(), 0);

    // carol owns Mobile app and is not in Website.
    await project(carol, "Mobile app").getByText("1 open task", { exact: true }).waitFor();
    assert.equal(await project(carol, "Website").count(), 0);
  });

  it("creates a task on alice's page: it appears on bob's, and both open counts go up", { timeout: 30_000 }, async () => {
    const website = project(alice, "Website");
    await website.getByLabel("New task in Website").fill(CARDS);
    await website.getByRole("button", { name: "Add task to Website" }).click();
    await website.getByText("Added", { exact: true }).waitFor();
    await until(async () => (await website.getByLabel("New task in Website").inputValue()) === "", "the new-task field is cleared");

    await task(bob, CARDS).waitFor({ timeout: WAIT });
    await task(alice, CARDS).waitFor({ timeout: WAIT });
    for (const page of [alice, bob]) await project(page, "Website").getByText("3 open tasks", { exact: true }).waitFor();
  });

  it("renames and ticks a task on bob's page: Saving…, then Saved, and alice's page follows", { timeout: 30_000 }, async () => {
    // Hold bob's writes back a little, so that "Saving…" is there to be seen.
    const slow = (url) => url.pathname.startsWith("/api/tasks/");
    await bob.route(slow, async (route) => {
      await sleep(600);
      await route.continue().catch(() => {});
    });
    try {
      const title = bob.getByRole("textbox", { name: `Title: ${CARDS}`, exact: true });
      await title.fill(CARDS_RENAMED);
      await title.press("Enter");
      await task(bob, CARDS_RENAMED).getByText("Saving…").waitFor();
      await task(bob, CARDS_RENAMED).getByText("Saved", { exact: true }).waitFor();
      await until(
        async () => (await alice.getByRole("textbox", { name: `Title: ${CARDS_RENAMED}`, exact: true }).inputValue()) === CARDS_RENAMED,
        "alice's page shows bob's new title",
      );
      assert.equal(await task(alice, CARDS).count(), 0);

      await bob.getByRole("checkbox", { name: `Done: ${CARDS_RENAMED}`, exact: true }).check();
      await task(bob, CARDS_RENAMED).getByText("Saving…").waitFor();
      await task(bob, CARDS_RENAMED).getByText("Saved", { exact: true }).waitFor();
    } finally {
      await bob.unroute(slow);
    }
    await until(() => alice.getByRole("checkbox", { name: `Done: ${CARDS_RENAMED}`, exact: true }).isChecked(), "alice sees it ticked");
    for (const page of [alice, bob]) await project(page, "Website").getByText("2 open tasks", { exact: true }).waitFor();

    // alice reopens it: bob's box clears and the counts go back up.
    await alice.getByRole("checkbox", { name: `Done: ${CARDS_RENAMED}`, exact: true }).uncheck();
    await task(alice, CARDS_RENAMED).getByText("Saved", { exact: true }).waitFor();
    await until(async () => !(await bob.getByRole("checkbox", { name: `Done: ${CARDS_RENAMED}`, exact: true }).isChecked()), "bob sees it reopened");
    for (const page of [alice, bob]) await project(page, "Website").getByText("3 open tasks", { exact: true }).waitFor();
  });

  it("shows the REST API's reason when a write is refused, and leaves the other pages alone", { timeout: 30_000 }, async () => {
    const long = "x".repeat(201); // the serializer's max_length is 200
    const title = bob.getByRole("textbox", { name: `Title: ${CARDS_RENAMED}`, exact: true });
    await title.fill(long);
    await title.press("Enter");
    await task(bob, CARDS_RENAMED).getByText("Not saved. Title: Ensure this field has no more than 200 characters. Press Escape to put back the saved title.").waitFor();
    // The refused title stays for bob to fix, marked invalid; alice's page never sees it.
    assert.equal(await title.inputValue(), long);
    assert.equal(await title.getAttribute("aria-invalid"), "true");
    await screenshot(bob, "bob-refused");
    await sleep(300);
    assert.equal(await alice.getByRole("textbox", { name: `Title: ${CARDS_RENAMED}`, exact: true }).inputValue(), CARDS_RENAMED);
    // Escape drops it.
    await title.press("Escape");
    assert.equal(await title.inputValue(), CARDS_RENAMED);
    assert.equal(await task(bob, CARDS_RENAMED).getByText(/Not saved/).count(), 0);

    // A task without a title.
    await project(bob, "Website").getByRole("button", { name: "Add task to Website" }).click();
    await project(bob, "Website").getByText("Not added. Title: This field may not be blank.").waitFor();
  });

  it("deletes a task on bob's page: it disappears from alice's, and the counts go down", { timeout: 30_000 }, async () => {
    await bob.getByRole("button", { name: `Delete ${CARDS_RENAMED}`, exact: true }).click();
    for (const page of [bob, alice]) await task(page, CARDS_RENAMED).waitFor({ state: "detached", timeout: WAIT });
    for (const page of [alice, bob]) await project(page, "Website").getByText("2 open tasks", { exact: true }).waitFor();
  });

  it("lets alice add carol to Website: the project appears on carol's page, and bob can assign to her", { timeout: 30_000 }, async () => {
    const website = project(alice, "Website");
    await website.getByRole("combobox", { name: "Add a member to Website" }).selectOption({ label: "Carol Example" });
    await website.getByRole("button", { name: "Add member to Website" }).click();
    await website.getByText("Added Carol Example").waitFor();
    await website.getByRole("button", { name: "Remove Carol Example from Website" }).waitFor();

    await carol.getByText("You were added to Website.").waitFor();
    await project(carol, "Website").getByText("Owner: Alice Example. Members: Bob Example, Carol Example (you).").waitFor();
    await task(carol, LANDING).waitFor();
    await task(carol, COLOURS).waitFor();
    await project(bob, "Website").getByText("Members: Bob Example (you), Carol Example.").waitFor();
    await until(
      async () => (await optionsOf(bob.getByRole("combobox", { name: `Assignee: ${LANDING}`, exact: true }))).includes("Carol Example"),
      "bob may assign tasks to carol",
    );
    assert.equal(await carol.evaluate(() => window.__notReloaded), true, "carol's page was reloaded");
    await screenshot(carol, "carol-added");
  });

  it("assigns tasks and makes one private: it vanishes for the members, stays for alice, and appears for its assignee", { timeout: 30_000 }, async () => {
    // Assign the landing page to bob: every page shows it.
    await alice.getByRole("combobox", { name: `Assignee: ${LANDING}`, exact: true }).selectOption({ label: "Bob Example" });
    await task(alice, LANDING).getByText("Saved", { exact: true }).waitFor();
    for (const page of [bob, carol]) {
      await until(async () => (await selected(page.getByRole("combobox", { name: `Assignee: ${LANDING}`, exact: true }))) === "Bob Example", `${page.user} sees bob assigned`);
    }

    // Make the colour scheme private: unassigned, only alice (the owner) sees it now.
    await alice.getByRole("checkbox", { name: `Private: ${COLOURS}`, exact: true }).check();
    await task(alice, COLOURS).getByText("Saved", { exact: true }).waitFor();
    for (const page of [bob, carol]) {
      await task(page, COLOURS).waitFor({ state: "detached", timeout: WAIT });
      // The project still counts it; the page says why it is not listed.
      await project(page, "Website").getByText("2 open tasks (1 private, not shown to you)").waitFor();
    }
    assert.equal(await alice.getByRole("checkbox", { name: `Private: ${COLOURS}`, exact: true }).isChecked(), true);
    await project(alice, "Website").getByText("2 open tasks", { exact: true }).waitFor();

    // Assign it to carol: it appears on her page, private, and still not on bob's.
    await alice.getByRole("combobox", { name: `Assignee: ${COLOURS}`, exact: true }).selectOption({ label: "Carol Example" });
    await task(alice, COLOURS).getByText("Saved", { exact: true }).waitFor();
    await task(carol, COLOURS).waitFor({ timeout: WAIT });
    assert.equal(await carol.getByRole("checkbox", { name: `Private: ${COLOURS}`, exact: true }).isChecked(), true);
    assert.equal(await selected(carol.getByRole("combobox", { name: `Assignee: ${COLOURS}`, exact: true })), "Carol Example");
    await project(carol, "Website").getByText("2 open tasks", { exact: true }).waitFor();
    await sleep(300);
    assert.equal(await task(bob, COLOURS).count(), 0);
    for (const page of [alice, bob, carol]) assert.equal(await page.evaluate(() => window.__notReloaded), true);
    await screenshot(alice, "alice-board");
    await screenshot(bob, "bob-board");
  });

  it("recovers a write made while the server was down, from Redis history", { timeout: 60_000 }, async (t) => {
    const id = await taskId(bob, LANDING);
    const marks = await Promise.all([alice, bob].map((page) => page.evaluate(() => window.__drfLiveLog.length)));

    await stop(server);
    for (const page of [alice, bob]) await waitForBadge(page, "reconnecting…");
    await screenshot(alice, "alice-reconnecting");
    await manage("shell", "-c", `from api.models import Task; t = Task.objects.get(title=${JSON.stringify(LANDING)}); t.title = ${JSON.stringify(OFFLINE)}; t.save()`);
    // As `make run` does before it serves: the demo data must not come back over the user's changes.
    await manage("load_demo", "--quiet");
    server = await startServer();

    const observed = {};
    for (const [i, page] of [alice, bob].entries()) {
      await waitForBadge(page, "live");
      await until(
        async () => (await page.getByRole("textbox", { name: `Title: ${OFFLINE}`, exact: true }).inputValue().catch(() => null)) === OFFLINE,
        `${page.user}'s page shows the title written while the server was down`,
      );
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
      // One event, following on from `since`: through meta.prev for bob, who was not sent the events of
      // the private task before it.
      assert.deepEqual(replayed.map((e) => [e.type, e.meta.id, e.meta.prev ?? e.meta.seq - 1]), [["UPDATE_TASK", id, resubscribe.since]]);
      const recoveredTargets = log.filter((e) => e.dir === "in" && e.type === "SUBSCRIBED").map((e) => e.meta.recovered);
      observed[page.user] = {
        states,
        resubscribed: log.filter((e) => e.dir === "out" && e.action === "subscribe").length,
        recovered: recoveredTargets,
        since: resubscribe.since,
        epoch: resubscribe.epoch,
        missed: replayed.length,
        replayed: replayed.map((e) => `${e.type} ${e.meta.id} seq ${e.meta.seq}${e.meta.prev ? ` prev ${e.meta.prev}` : ""} changed ${e.meta.changed}`),
      };
    }
    // Website still has its two tasks, renamed and private as they were: no demo task came back.
    const rows = project(alice, "Website").getByRole("list", { name: "Tasks of Website" }).getByRole("listitem");
    assert.deepEqual(await titlesOf(rows), [OFFLINE, COLOURS]);
    assert.equal(await alice.getByRole("checkbox", { name: `Private: ${COLOURS}`, exact: true }).isChecked(), true);
    assert.equal(await task(bob, LANDING).count(), 0);
    writeFileSync(path.join(OUTPUT, "reconnect.json"), JSON.stringify(observed, null, 2));
    for (const [user, o] of Object.entries(observed)) {
      t.diagnostic(
        `${user}: states ${o.states.join(" -> ")}; ${o.resubscribed} resubscribes, recovered ${JSON.stringify(o.recovered)}; ` +
          `collection since ${o.since}: missed ${o.missed}, replayed [${o.replayed.join("; ")}]`,
      );
    }
  });

  it("catches up with a fresh snapshot when the server lost its history, keeping what you were typing", { timeout: 60_000 }, async () => {
    // alice is halfway through typing a task when the server goes away.
    const field = project(alice, "Website").getByLabel("New task in Website");
    await field.fill("Half-typed task");
    await field.focus();
    const marks = await Promise.all([alice, bob].map((page) => page.evaluate(() => window.__drfLiveLog.length)));

    await stop(server);
    for (const page of [alice, bob]) await waitForBadge(page, "reconnecting…");
    // Redis loses every stream's history (as a restart without persistence does), and a task is ticked.
    await manage("shell", "-c", "import os, redis; redis.Redis.from_url(os.environ['REDIS_URL']).flushall()");
    await manage("shell", "-c", `from api.models import Task; t = Task.objects.get(title=${JSON.stringify(OFFLINE)}); t.done = True; t.save()`);
    server = await startServer();

    for (const [i, page] of [alice, bob].entries()) {
      await waitForBadge(page, "live");
      await until(() => page.getByRole("checkbox", { name: `Done: ${OFFLINE}`, exact: true }).isChecked(), `${page.user} sees the tick`);
      await project(page, "Website").getByText(page === alice ? "1 open task" : "1 open task (1 private, not shown to you)").waitFor();
      const log = await page.evaluate((mark) => window.__drfLiveLog.slice(mark), marks[i]);
      const replies = log.filter((e) => e.dir === "in" && e.type === "SUBSCRIBED").map((e) => e.meta.recovered);
      assert.ok(replies.length > 0 && replies.every((recovered) => recovered === false), `recovered: ${replies}`);
      assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page was reloaded");
    }
    // The fresh snapshots replaced the store's projects and tasks, but not the card alice is typing in.
    assert.equal(await field.inputValue(), "Half-typed task");
    assert.equal(await field.evaluate((node) => node === document.activeElement), true, "the field lost the focus");
    await field.fill("");
    await field.blur();
  });

  it("lets alice remove bob from Website: bob's page says so and drops the project, alice's keeps it", { timeout: 30_000 }, async (t) => {
    const website = await projectId(bob, "Website");
    await bob.evaluate(() => (window.__removalMarker = "still here"));
    const mark = await bob.evaluate(() => window.__drfLiveLog.length);

    await project(alice, "Website").getByRole("button", { name: "Remove Bob Example from Website" }).click();
    await project(alice, "Website").getByText("Removed Bob Example").waitFor();

    // bob: told, and the project and its tasks go, without a reload.
    await bob.getByText("You were removed from Website.").waitFor();
    await project(bob, "Website").waitFor({ state: "detached", timeout: WAIT });
    await task(bob, OFFLINE).waitFor({ state: "detached", timeout: WAIT });
    await bob.getByText("You are not in any project.").waitFor();
    assert.equal(await bob.evaluate(() => window.__removalMarker), "still here", "bob's page was reloaded");
    // It was a revocation of both the project and its task collection, not a deletion.
    const revoked = await until(async () => {
      const log = await bob.evaluate((m) => window.__drfLiveLog.slice(m), mark);
      const frames = log
        .filter((e) => e.dir === "in" && e.type === "UNSUBSCRIBED")
        .map((e) => `${e.meta.model} ${e.meta.filter ? `filter project ${e.meta.filter.project}` : `id ${e.meta.id}`} ${e.meta.reason}`)
        .sort();
      return frames.length >= 2 && frames;
    }, "bob's two subscriptions of Website are revoked");
    assert.deepEqual(revoked, [`api.project id ${website} revoked`, `api.task filter project ${website} revoked`]);
    await screenshot(bob, "bob-removed");

    // alice still owns it, carol is still in it; the landing page is still bob's task.
    for (const page of [alice, carol]) await task(page, OFFLINE).waitFor();
    await project(carol, "Website").getByText("Members: Carol Example (you).").waitFor();
    assert.equal(await project(alice, "Website").getByRole("button", { name: /^Remove Bob Example/ }).count(), 0);
    assert.equal(await selected(alice.getByRole("combobox", { name: `Assignee: ${OFFLINE}`, exact: true })), "Bob Example");
    t.diagnostic(`bob: revoked [${revoked.join("; ")}], told "You were removed from Website.", no reload`);
  });

  it("lets carol create a project: it appears with its empty states", { timeout: 30_000 }, async () => {
    await carol.getByLabel("New project").fill("Garden");
    await carol.getByRole("button", { name: "Create project" }).click();
    const garden = project(carol, "Garden");
    await garden.waitFor({ timeout: WAIT });
    await garden.getByText("You own this project.").waitFor();
    await garden.getByText("No open tasks", { exact: true }).waitFor();
    await garden.getByText("No tasks yet. Add the first one below.").waitFor();
    await garden.getByText("No members yet.").waitFor();
    assert.equal(await project(alice, "Garden").count(), 0);
  });

  it("says so, rather than stay blank or loading, when the page's scripts cannot load", { timeout: 30_000 }, async () => {
    const context = await browser.newContext();
    context.setDefaultTimeout(WAIT);
    try {
      const page = await context.newPage();
      await page.route((url) => url.pathname.endsWith("/api/board.js"), (route) => route.abort());
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.getByLabel("User").selectOption("bob");
      await Promise.all([page.waitForURL(`http://127.0.0.1:${port}/`), page.getByRole("button", { name: "Sign in" }).click()]);
      await page.getByText("The page could not load its scripts. Check that the server is running, then reload the page.").waitFor();
      assert.equal(await page.getByText("Loading your projects…").count(), 0);
    } finally {
      await context.close();
    }
  });

  it("logs out with the page's form, back to the sign-in form", { timeout: 30_000 }, async () => {
    await Promise.all([carol.waitForURL(`http://127.0.0.1:${port}/`), carol.getByRole("button", { name: "Log out" }).click()]);
    await carol.getByRole("button", { name: "Sign in" }).waitFor();
    assert.equal(await carol.getByRole("status").count(), 0);
    await screenshot(carol, "signed-out");
  });

  // --- helpers -------------------------------------------------------------------------------------

  function startServer() {
    return stack.startServer(port);
  }

  function manage(...args) {
    return stack.manage(...args);
  }

  async function signIn(user) {
    const context = await browser.newContext({ viewport: { width: 960, height: 640 } });
    context.setDefaultTimeout(WAIT);
    const page = await context.newPage();
    Object.assign(page, { user, errors: [], consoleErrors: [] });
    page.on("pageerror", (error) => page.errors.push(String(error)));
    page.on("console", (message) => {
      // A refused write (4xx) and a socket to a stopped server are logged by Chromium itself.
      const text = message.text();
      if (message.type() === "error" && !/^Failed to load resource|^WebSocket connection to/.test(text)) page.consoleErrors.push(text);
    });
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.getByLabel("User").selectOption(user);
    await Promise.all([page.waitForURL(`http://127.0.0.1:${port}/`), page.getByRole("button", { name: "Sign in" }).click()]);
    await waitForBadge(page, "live");
    await page.getByRole("region").first().waitFor({ timeout: WAIT });
    await page.evaluate(() => (window.__notReloaded = true));
    return page;
  }
}

/** A project's card: a region named after the project. */
function project(page, name) {
  return page.getByRole("region", { name, exact: true });
}

/** A task's row: the list item holding the checkbox named after the task. */
function task(page, title) {
  return page.getByRole("listitem").filter({ has: page.getByRole("checkbox", { name: `Done: ${title}`, exact: true }) });
}

async function waitForBadge(page, text) {
  // The client's backoff is capped at 5 s on this page, so a restarted server is found within WAIT.
  await until(async () => (await page.getByRole("status").textContent()) === text, `${page.user}'s badge says "${text}"`);
}

/** The label of a select's chosen option: what a person reads on it. */
function selected(select) {
  return select.evaluate((node) => node.selectedOptions[0]?.label ?? null);
}

/** The titles of task rows, as their text fields show them. */
async function titlesOf(rows) {
  const titles = [];
  for (const row of await rows.all()) titles.push(await row.getByRole("textbox").inputValue());
  return titles;
}

function optionsOf(select) {
  return select.evaluate((node) => [...node.options].map((option) => option.label));
}

async function projectId(page, name) {
  const handle = await page.waitForFunction(
    (n) => Object.values(window.__drfLiveStore.getState().live["api.project"] ?? {}).find((project) => project.name === n)?.id,
    name,
    { timeout: WAIT },
  );
  return handle.jsonValue();
}

async function taskId(page, title) {
  const handle = await page.waitForFunction(
    (t) => Object.values(window.__drfLiveStore.getState().live["api.task"] ?? {}).find((task) => task.title === t)?.id,
    title,
    { timeout: WAIT },
  );
  return handle.jsonValue();
}

async function screenshot(page, name) {
  await page.screenshot({ path: path.join(OUTPUT, `${name}.png`), fullPage: true }).catch(() => {});
}
