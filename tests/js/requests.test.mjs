// Tests of the requests of notifications/static/notifications/client.js that the server answers through
// the registered viewset: retrieve(), list() and request(), driven through a scripted socket and clock.
import assert from "node:assert/strict";
import { test } from "node:test";

import { connection, isPending, openWithoutToken, reconnect, setup } from "./harness.mjs";

const TASK = { id: "Xk3", title: "A", done: false, project: "P1", assignee: null, private: false };
const T9 = { id: "T9", title: "B", done: false, project: "P1", assignee: null, private: false };
const PAGE_2 = { count: 51, next: null, previous: "http://testserver/api/tasks/?project=P1", results: [T9] };

const retrieved = (requestId, task = TASK) => ({
  type: "RETRIEVED",
  payload: task,
  meta: { request_id: requestId, model: "api.task", id: task.id },
});

const listed = (requestId, meta = {}, payload = PAGE_2) => ({
  type: "LISTED",
  payload,
  meta: { request_id: requestId, model: "api.task", filter: { project: "P1" }, page: 2, ...meta },
});

const errorReply = (requestId, payload) => ({ type: "ERROR", error: true, payload, meta: { request_id: requestId } });

const inProject = (type, seq, task = T9, extra = {}) => ({
  type,
  payload: type === "DELETE_TASK" ? { id: task.id } : task,
  meta: { model: "api.task", id: task.id, filter: { project: "P1" }, seq, ...extra },
});

/** Subscribe to project P1's tasks on an open connection and apply the snapshot at `seq`. */
function subscribedToProject(t, seq = 9) {
  const sub = t.client.subscribe("api.task", { project: "P1" });
  const [request] = t.socket().takeSent();
  const snapshot = {
    type: "SUBSCRIBED",
    payload: { count: 51, next: "http://testserver/api/tasks/?page=2&project=P1", previous: null, results: [TASK] },
    meta: { request_id: request.request_id, model: "api.task", filter: { project: "P1" }, seq, epoch: "r7f2" },
  };
  t.socket().receive(snapshot);
  assert.deepEqual(t.takeActions(), [snapshot]);
  return sub;
}

test("retrieve() sends its frame and resolves with the RETRIEVED frame matched by request_id, dispatched", async () => {
  const t = setup();
  openWithoutToken(t);
  const first = t.client.retrieve("api.Task", "Xk3");
  const second = t.client.retrieve("api.task", "T9");
  assert.deepEqual(t.socket().takeSent(), [
    { action: "retrieve", model: "api.task", id: "Xk3", request_id: 1 },
    { action: "retrieve", model: "api.task", id: "T9", request_id: 2 },
  ]);

  t.socket().receive(retrieved(2, T9));
  assert.deepEqual(await second, retrieved(2, T9));
  assert.ok(await isPending(first), "the other request waits for its own reply");
  t.socket().receive(retrieved(99)); // nobody asked for 99
  t.socket().receive(retrieved(1));
  assert.deepEqual(await first, retrieved(1));
  assert.deepEqual(t.takeActions(), [retrieved(2, T9), retrieved(1)], "replies are dispatched, the stray one not");
  assert.throws(() => t.client.retrieve("api.task", 7), /takes the object's id as a string/);
});

test("list() sends filter, page and query only when given, and resolves with the LISTED frame", async () => {
  const t = setup();
  openWithoutToken(t);
  t.client.list("api.task");
  t.client.list("api.task", { filter: {}, query: {} });
  const page = t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  const search = t.client.list("api.task", { filter: { project: "P1" }, page: 2, query: { search: "docs" } });
  assert.deepEqual(t.socket().takeSent(), [
    { action: "list", model: "api.task", request_id: 1 },
    { action: "list", model: "api.task", request_id: 2 },
    { action: "list", model: "api.task", filter: { project: "P1" }, page: 2, request_id: 3 },
    { action: "list", model: "api.task", filter: { project: "P1" }, page: 2, query: { search: "docs" }, request_id: 4 },
  ]);

  t.socket().receive(listed(3));
  t.socket().receive(listed(4));
  assert.deepEqual(await page, listed(3));
  const withQuery = listed(4, { query: { search: "docs" } });
  assert.deepEqual(await search, withQuery, "the client adds the query the server does not echo");
  assert.deepEqual(t.takeActions(), [listed(3), withQuery]);
  const unfiltered = { type: "LISTED", payload: [TASK, T9], meta: { request_id: 1, model: "api.task", filter: {} } };
  t.socket().receive(unfiltered);
  assert.deepEqual(t.takeActions(), [unfiltered]);
  assert.throws(() => t.client.list("api.task", { filter: "P1" }), /list\(model, \{filter\}\) takes an object/);
});

test("request() sends any action with its body and resolves with the reply whose type the server chose", async () => {
  const t = setup();
  openWithoutToken(t);
  const update = t.client.request("partial_update", { model: "api.task", id: "Xk3", data: { title: "B" } });
  const create = t.client.request("create", { model: "api.task", data: { project: "P1", title: "C" } });
  const destroy = t.client.request("destroy", { model: "api.task", id: "T9" });
  const custom = t.client.request("archive", { model: "api.project", id: "P1", data: { reason: "done" } });
  assert.deepEqual(t.socket().takeSent(), [
    { action: "partial_update", model: "api.task", id: "Xk3", data: { title: "B" }, request_id: 1 },
    { action: "create", model: "api.task", data: { project: "P1", title: "C" }, request_id: 2 },
    { action: "destroy", model: "api.task", id: "T9", request_id: 3 },
    { action: "archive", model: "api.project", id: "P1", data: { reason: "done" }, request_id: 4 },
  ]);

  const replies = [
    { type: "UPDATED", payload: { ...TASK, title: "B" }, meta: { request_id: 1, model: "api.task", id: "Xk3" } },
    { type: "CREATED", payload: { ...T9, id: "N1", title: "C" }, meta: { request_id: 2, model: "api.task" } },
    { type: "DESTROYED", payload: null, meta: { request_id: 3, model: "api.task", id: "T9" } },
    { type: "PROJECT_ARCHIVED", payload: { archived: 3 }, meta: { request_id: 4, model: "api.project", id: "P1" } },
  ];
  for (const reply of [...replies].reverse()) t.socket().receive(reply);
  assert.deepEqual(await Promise.all([update, create, destroy, custom]), replies);
  assert.deepEqual(t.takeActions(), [...replies].reverse());
});

test("request() refuses the actions the client sends itself, and a body that is not an object", () => {
  const t = setup();
  assert.throws(() => t.client.request("subscribe", { model: "api.task", id: "Xk3" }), /use subscribe\(\) instead/);
  assert.throws(() => t.client.request("unsubscribe", {}), /use Subscription\.unsubscribe\(\) instead/);
  assert.throws(() => t.client.request("authenticate", { token: "k" }), /use the token option instead/);
  assert.throws(() => t.client.request("", {}), /takes the action's name/);
  assert.throws(() => t.client.request("create", [1]), /rest of the frame as an object/);
  openWithoutToken(t);
  assert.deepEqual(t.socket().sent, []);
});

test("ERROR replies reject with a typed error (code, detail, fields, errors) and are dispatched", async () => {
  const t = setup();
  openWithoutToken(t);
  const invalid = t.client.request("create", { model: "api.task", data: { title: "" } });
  const notFound = t.client.retrieve("api.task", "nope");
  const notAllowed = t.client.request("destroy", { model: "api.project", id: "P1" });
  const throttled = t.client.list("api.task", { filter: { project: "P1" } });

  const errors = [
    errorReply(1, {
      code: "invalid",
      detail: "Some fields are missing or have the wrong type.",
      fields: ["project", "title"],
      errors: { project: ["This field is required."], title: ["This field may not be blank."] },
    }),
    errorReply(2, { code: "not_found", detail: "No such object." }),
    errorReply(3, { code: "not_allowed", detail: "destroy is not enabled for api.project." }),
    errorReply(4, { code: "throttled", detail: "Too many requests." }),
  ];
  for (const error of errors) t.socket().receive(error);

  await assert.rejects(invalid, (error) => {
    assert.ok(error instanceof Error);
    assert.equal(error.code, "invalid");
    assert.equal(error.detail, "Some fields are missing or have the wrong type.");
    assert.deepEqual(error.fields, ["project", "title"]);
    assert.deepEqual(error.errors, {
      project: ["This field is required."],
      title: ["This field may not be blank."],
    });
    assert.match(error.message, /^invalid: /);
    return true;
  });
  await assert.rejects(notFound, { code: "not_found", detail: "No such object." });
  await assert.rejects(notAllowed, { code: "not_allowed", detail: "destroy is not enabled for api.project." });
  await assert.rejects(throttled, { code: "throttled" });
  const [, second] = await Promise.allSettled([invalid, notFound]);
  assert.equal(second.reason.fields, undefined, "no fields unless the server sent some");
  assert.deepEqual(t.takeActions(), errors);
  assert.equal(t.client.state, "open", "an error closes nothing");
});

test("a request rejects with code 'timeout' after its own timeout or the client's; a late reply is ignored", async () => {
  const t = setup({ requestTimeout: 2000 });
  openWithoutToken(t);
  const quick = t.client.retrieve("api.task", "Xk3", { timeout: 500 });
  const slow = t.client.request("partial_update", { model: "api.task", id: "Xk3", data: {} });
  t.clock.advance(499);
  assert.ok(await isPending(quick));
  t.clock.advance(1);
  await assert.rejects(quick, { code: "timeout", detail: 'No reply to "retrieve" within 500 ms.' });
  t.clock.advance(1499);
  assert.ok(await isPending(slow));
  t.clock.advance(1);
  await assert.rejects(slow, { code: "timeout" });

  t.socket().receive(retrieved(1));
  t.socket().receive({ type: "UPDATED", payload: TASK, meta: { request_id: 2, model: "api.task", id: "Xk3" } });
  assert.deepEqual(t.takeActions(), [], "late replies are not dispatched");
  assert.equal(t.client.state, "open", "a timeout does not reconnect");
  assert.deepEqual(t.clock.pendingDelays(), []);
});

test("a request made before the connection opens is sent when it opens, after the subscriptions", async () => {
  const t = setup({ token: "k1" });
  t.client.subscribe("api.task", "Xk3");
  const task = t.client.retrieve("api.task", "T9");
  t.socket().open();
  assert.deepEqual(t.socket().takeSent(), [{ action: "authenticate", token: "k1", request_id: 1 }]);
  t.socket().receive({ type: "AUTHENTICATED", payload: { user: "U1" }, meta: { request_id: 1 } });
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", id: "Xk3", request_id: 2 },
    { action: "retrieve", model: "api.task", id: "T9", request_id: 3 },
  ]);
  t.socket().receive(retrieved(3, T9));
  assert.deepEqual(await task, retrieved(3, T9));
});

test("the timeout counts from the call: a request still waiting for the connection gives up, unsent", async () => {
  const t = setup({ requestTimeout: 2000 });
  openWithoutToken(t);
  t.socket().fail();
  const write = t.client.request("create", { model: "api.task", data: {} });
  const read = t.client.list("api.task", { filter: { project: "P1" }, timeout: 300 });
  t.clock.advance(300);
  await assert.rejects(read, { code: "timeout" });
  assert.ok(await isPending(write));
  t.clock.advance(75); // the reconnect (375 ms)
  t.socket().open();
  assert.deepEqual(t.socket().takeSent(), [{ action: "create", model: "api.task", data: {}, request_id: 1 }]);
  t.clock.advance(1624);
  assert.ok(await isPending(write));
  t.clock.advance(1);
  await assert.rejects(write, { code: "timeout" });
});

test("reads cut off by a disconnect are sent again on the new connection", async () => {
  const t = setup();
  openWithoutToken(t);
  const task = t.client.retrieve("api.task", "Xk3");
  const page = t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  const via = t.client.request("retrieve", { model: "api.task", id: "T9" });
  t.socket().takeSent();

  reconnect(t, 4030);
  assert.deepEqual(t.socket().takeSent(), [
    { action: "retrieve", model: "api.task", id: "Xk3", request_id: 4 },
    { action: "list", model: "api.task", filter: { project: "P1" }, page: 2, request_id: 5 },
    { action: "retrieve", model: "api.task", id: "T9", request_id: 6 },
  ]);
  assert.ok(await isPending(task), "not rejected: asked again");
  t.socket().receive(retrieved(1)); // a reply on the new socket to the old request: not ours
  t.socket().receive(retrieved(4));
  t.socket().receive(listed(5));
  t.socket().receive(retrieved(6, T9));
  assert.deepEqual(await Promise.all([task, page, via]), [retrieved(4), listed(5), retrieved(6, T9)]);
  assert.deepEqual(t.takeActions(), [retrieved(4), listed(5), retrieved(6, T9)]);
});

test("writes and custom actions cut off by a disconnect reject with 'disconnected' and are not sent again", async () => {
  const t = setup();
  openWithoutToken(t);
  const update = t.client.request("update", { model: "api.task", id: "Xk3", data: TASK });
  const custom = t.client.request("archive", { model: "api.project", id: "P1" });
  t.socket().takeSent();
  t.socket().fail();
  assert.deepEqual(t.takeActions(), [connection("reconnecting")]);
  await assert.rejects(update, { code: "disconnected" });
  await assert.rejects(custom, (error) => error.code === "disconnected" && /may have run/.test(error.detail));

  const queued = t.client.request("destroy", { model: "api.task", id: "T9" }); // never sent: safe to send
  t.clock.advance(375);
  t.socket().open();
  assert.deepEqual(t.socket().takeSent(), [{ action: "destroy", model: "api.task", id: "T9", request_id: 3 }]);
  t.socket().receive({ type: "DESTROYED", payload: null, meta: { request_id: 3, model: "api.task", id: "T9" } });
  assert.equal((await queued).type, "DESTROYED");
});

test("close() rejects the requests in flight and waiting with code 'closed', without unhandled rejections", async () => {
  const t = setup();
  openWithoutToken(t);
  const inFlight = t.client.retrieve("api.task", "Xk3");
  const forgotten = t.client.request("partial_update", { model: "api.task", id: "Xk3", data: {} });
  t.socket().fail();
  const waiting = t.client.list("api.task");
  t.client.close();
  await assert.rejects(inFlight, { code: "closed" });
  await assert.rejects(waiting, { code: "closed" });
  await assert.rejects(forgotten, { code: "disconnected" });
  await assert.rejects(t.client.retrieve("api.task", "Xk3"), { code: "closed" });
  await assert.rejects(t.client.request("create", { model: "api.task" }), { code: "closed" });
  assert.deepEqual(t.clock.pendingDelays(), [], "no timer left behind");

  const other = setup();
  other.client.retrieve("api.task", "Xk3"); // nobody handles these promises
  other.client.request("create", { model: "api.task" });
  other.client.close();
  await new Promise((resolve) => setImmediate(resolve)); // node:test fails a test whose rejection goes unhandled
});

test("a LISTED of a subscribed collection is dispatched at once when the client holds its seq", async () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToProject(t, 9);
  t.socket().receive(inProject("UPDATE_TASK", 10, TASK));
  const page = t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  const [request] = t.socket().takeSent();
  const reply = listed(request.request_id, { seq: 10, epoch: "r7f2" });
  t.socket().receive(reply);
  t.socket().receive(inProject("CREATE_TASK", 11)); // events after the page follow it
  assert.deepEqual(t.takeActions(), [inProject("UPDATE_TASK", 10, TASK), reply, inProject("CREATE_TASK", 11)]);
  assert.deepEqual(await page, reply);
});

test("a LISTED whose seq is ahead of the client waits for the events up to it, then precedes the later ones", async () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToProject(t, 9);
  t.socket().receive(inProject("UPDATE_TASK", 11, TASK)); // 10 is missing: a gap
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", filter: { project: "P1" }, since: 9, epoch: "r7f2", request_id: 2 },
  ]);
  const page = t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  const [request] = t.socket().takeSent();
  const reply = listed(request.request_id, { seq: 12, epoch: "r7f2" });
  t.socket().receive(reply);
  assert.ok(await isPending(page), "held until the stream reaches seq 12");
  assert.deepEqual(t.takeActions(), []);

  t.socket().receive({
    type: "SUBSCRIBED",
    payload: null,
    meta: { request_id: 2, model: "api.task", filter: { project: "P1" }, seq: 9, epoch: "r7f2", recovered: true },
  });
  t.socket().receive(inProject("CREATE_TASK", 10));
  assert.deepEqual(t.takeActions(), [inProject("CREATE_TASK", 10), inProject("UPDATE_TASK", 11, TASK)]);
  assert.ok(await isPending(page));
  // 12 was about a member this user may not see: 13 follows on from 11, and the page (at 12) comes first.
  const next = inProject("DELETE_TASK", 13, T9, { prev: 11 });
  t.socket().receive(next);
  assert.deepEqual(t.takeActions(), [reply, next]);
  assert.deepEqual(await page, reply);
});

test("a held LISTED is dispatched right after the event with its seq", async () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToProject(t, 9);
  t.socket().receive(inProject("UPDATE_TASK", 11, TASK));
  t.socket().takeSent(); // the resubscribe, request 2
  t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  t.socket().receive(listed(3, { seq: 11, epoch: "r7f2" }));
  t.socket().receive(inProject("UPDATE_TASK", 12, TASK));
  t.socket().receive({
    type: "SUBSCRIBED",
    payload: null,
    meta: { request_id: 2, model: "api.task", filter: { project: "P1" }, seq: 9, epoch: "r7f2", recovered: true },
  });
  t.socket().receive(inProject("CREATE_TASK", 10));
  assert.deepEqual(
    t.takeActions().map((action) => `${action.type} ${action.meta.seq}`),
    ["CREATE_TASK 10", "UPDATE_TASK 11", "LISTED 11", "UPDATE_TASK 12"],
  );
});

test("a held LISTED goes before the RESYNC of a fresh snapshot that replaces its history", async () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToProject(t, 9);
  t.socket().receive(inProject("UPDATE_TASK", 11, TASK));
  t.socket().takeSent();
  const page = t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  const reply = listed(3, { seq: 12, epoch: "r7f2" });
  t.socket().receive(reply);
  const fresh = {
    type: "SUBSCRIBED",
    payload: { count: 50, next: null, previous: null, results: [TASK] },
    meta: { request_id: 2, model: "api.task", filter: { project: "P1" }, seq: 14, epoch: "n3w", recovered: false },
  };
  t.socket().receive(fresh);
  assert.deepEqual(t.takeActions(), [
    reply,
    { type: "DRF_LIVE/RESYNC", payload: { model: "api.task", filter: { project: "P1" } }, meta: { reason: "gap" } },
    fresh,
  ]);
  assert.deepEqual(await page, reply);
});

test("a LISTED is dispatched at once when its collection is not subscribed or its seq is of another history", () => {
  const t = setup();
  openWithoutToken(t);
  t.client.list("api.task", { filter: { project: "P2" } });
  t.socket().takeSent();
  const other = listed(1, { filter: { project: "P2" }, seq: 40, epoch: "r7f2" });
  t.socket().receive(other);
  assert.deepEqual(t.takeActions(), [other]);

  subscribedToProject(t, 9);
  t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  assert.equal(t.socket().takeSent()[0].request_id, 3);
  const stale = listed(3, { seq: 40, epoch: "old" });
  t.socket().receive(stale);
  assert.deepEqual(t.takeActions(), [stale]);
});

test("a held LISTED is dispatched when its subscription ends or the client closes", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = subscribedToProject(t, 9);
  t.socket().receive(inProject("UPDATE_TASK", 11, TASK));
  t.socket().takeSent();
  const page = t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  t.socket().receive(listed(3, { seq: 12, epoch: "r7f2" }));
  sub.unsubscribe();
  assert.deepEqual(t.takeActions(), [listed(3, { seq: 12, epoch: "r7f2" })]);
  assert.deepEqual(await page, listed(3, { seq: 12, epoch: "r7f2" }));
  assert.deepEqual(t.socket().takeSent().at(-1), {
    action: "unsubscribe",
    model: "api.task",
    filter: { project: "P1" },
    request_id: 4,
  });

  subscribedToProject(t, 20);
  t.socket().receive(inProject("UPDATE_TASK", 22, TASK));
  t.socket().takeSent();
  const another = t.client.list("api.task", { filter: { project: "P1" }, page: 2 });
  const [request] = t.socket().takeSent();
  t.socket().receive(listed(request.request_id, { seq: 23, epoch: "r7f2" }));
  t.client.close();
  assert.deepEqual(t.takeActions(), [listed(request.request_id, { seq: 23, epoch: "r7f2" }), connection("closed")]);
  assert.equal((await another).meta.seq, 23);
});
