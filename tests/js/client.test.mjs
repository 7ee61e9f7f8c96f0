// Tests of notifications/static/notifications/client.js, driven through a scripted socket and clock.
// The requests answered by the viewset (retrieve, list, request) are tested in requests.test.mjs.
import assert from "node:assert/strict";
import { test } from "node:test";

import { connect } from "../../notifications/static/notifications/client.js";
import { connection, isPending, openWithoutToken, reconnect, setup } from "./harness.mjs";

const TASK = { id: "Xk3", title: "A", done: false, project: "P1", assignee: null };
const T9 = { id: "T9", title: "B", done: false, project: "P1", assignee: null };

const subscribedTask = (requestId, seq, extra = {}) => ({
  type: "SUBSCRIBED",
  payload: TASK,
  meta: { request_id: requestId, model: "api.task", id: "Xk3", seq, epoch: "r7f2", ...extra },
});

const subscribedProject = (requestId, seq, epoch = "r7f2", extra = {}) => ({
  type: "SUBSCRIBED",
  payload: [TASK],
  meta: { request_id: requestId, model: "api.task", filter: { project: "P1" }, seq, epoch, ...extra },
});

const updateTask = (seq, title = `v${seq}`) => ({
  type: "UPDATE_TASK",
  payload: { ...TASK, title },
  meta: { model: "api.task", id: "Xk3", seq, changed: ["title"] },
});

const createInProject = (seq, task = T9) => ({
  type: "CREATE_TASK",
  payload: task,
  meta: { model: "api.task", id: task.id, filter: { project: "P1" }, seq },
});

const subscribeTask = (requestId, extra = {}) => ({
  action: "subscribe",
  model: "api.task",
  id: "Xk3",
  ...extra,
  request_id: requestId,
});

/** Subscribe to task Xk3 on an open connection and apply its snapshot at seq 41. */
function subscribedToTask(t) {
  const sub = t.client.subscribe("api.task", "Xk3");
  const [request] = t.socket().takeSent();
  t.socket().receive(subscribedTask(request.request_id, 41));
  assert.deepEqual(t.takeActions(), [subscribedTask(request.request_id, 41)]);
  return sub;
}

test("every request carries a new request_id and replies are matched by meta.request_id", async () => {
  const t = setup();
  const task = t.client.subscribe("api.task", "Xk3");
  const project = t.client.subscribe("api.task", { project: "P1" });
  assert.deepEqual(t.socket().sent, [], "nothing is sent before the socket opens");

  openWithoutToken(t);
  const pong = t.client.ping();
  assert.deepEqual(t.socket().takeSent(), [
    subscribeTask(1),
    { action: "subscribe", model: "api.task", filter: { project: "P1" }, request_id: 2 },
    { action: "ping", request_id: 3 },
  ]);

  t.socket().receive({ type: "PONG", payload: null, meta: { request_id: 3 } });
  assert.equal(await pong, undefined);
  t.socket().receive(subscribedProject(2, 9));
  assert.deepEqual(await project.ready, [TASK]);
  assert.ok(await isPending(task.ready), "the other request is still waiting for its own reply");
  t.socket().receive({ ...subscribedTask(99, 1) }); // nobody asked for 99
  t.socket().receive(subscribedTask(1, 41));
  assert.deepEqual(await task.ready, TASK);

  assert.deepEqual(t.takeActions(), [subscribedProject(2, 9), subscribedTask(1, 41)], "PONG is internal");
  assert.deepEqual(t.socket().sent, []);
});

test("an ERROR reply rejects the request, is dispatched, and ends the subscription", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = t.client.subscribe("api.task", "nope");
  const ends = [];
  sub.onEnd((end) => ends.push(end));
  const error = {
    type: "ERROR",
    error: true,
    payload: { code: "not_found", detail: "No such object." },
    meta: { request_id: 1 },
  };
  t.socket().receive(error);

  await assert.rejects(sub.ready, { code: "not_found", detail: "No such object." });
  assert.deepEqual(t.takeActions(), [error]);
  assert.equal(ends.length, 1);
  assert.equal(ends[0].reason, "error");
  assert.equal(ends[0].error.code, "not_found");

  t.socket().takeSent();
  reconnect(t);
  assert.deepEqual(t.socket().sent, [], "a failed subscription is not retried");
});

test("a request without a reply rejects with code 'timeout', and its late reply is ignored", async () => {
  const t = setup({ requestTimeout: 2000 });
  openWithoutToken(t);
  const sub = t.client.subscribe("api.task", "Xk3");
  const pong = t.client.ping();
  t.clock.advance(1999);
  assert.ok(await isPending(sub.ready));
  assert.ok(await isPending(pong));

  t.clock.advance(1);
  await assert.rejects(sub.ready, { code: "timeout" });
  await assert.rejects(pong, { code: "timeout" });
  assert.equal(t.client.state, "open", "a timeout does not reconnect");

  t.socket().receive(subscribedTask(1, 41));
  t.socket().receive(updateTask(42));
  t.socket().receive({ type: "PONG", payload: null, meta: { request_id: 2 } });
  assert.deepEqual(t.takeActions(), []);
  assert.equal(t.sockets.length, 1);
});

test("with a token, the client authenticates before it subscribes, on every connection", () => {
  const t = setup({ token: "k1" });
  t.client.subscribe("api.task", "Xk3");
  t.socket().open();
  assert.deepEqual(t.socket().takeSent(), [{ action: "authenticate", token: "k1", request_id: 1 }]);
  assert.equal(t.client.state, "connecting", "not open until AUTHENTICATED");
  assert.deepEqual(t.takeActions(), []);

  t.socket().receive({ type: "AUTHENTICATED", payload: { user: "U1" }, meta: { request_id: 1 } });
  assert.equal(t.client.state, "open");
  assert.deepEqual(t.takeActions(), [connection("open")], "AUTHENTICATED is internal");
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(2)]);

  t.socket().fail();
  t.clock.advance(375);
  t.socket().open();
  assert.deepEqual(t.socket().takeSent(), [{ action: "authenticate", token: "k1", request_id: 3 }]);
  t.socket().receive({ type: "AUTHENTICATED", payload: { user: "U1" }, meta: { request_id: 3 } });
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(4)]);
});

test("a refused token closes the client for good", async () => {
  const t = setup({ token: "bad" });
  const sub = t.client.subscribe("api.task", "Xk3");
  t.socket().open();
  t.socket().takeSent();
  const refusal = {
    type: "ERROR",
    error: true,
    payload: { code: "not_authenticated", detail: "Bad token." },
    meta: { request_id: 1 },
  };
  t.socket().receive(refusal);

  assert.equal(t.client.state, "closed");
  assert.deepEqual(t.takeActions(), [refusal, connection("closed")]);
  assert.equal(t.socket().closeCode, 1000);
  await assert.rejects(sub.ready, { code: "not_authenticated" });
  assert.deepEqual(t.clock.pendingDelays(), []);
  assert.deepEqual(t.socket().sent, []);
});

test("an unanswered authenticate drops the socket and reconnects", () => {
  const t = setup({ token: "k1" });
  t.socket().open();
  t.clock.advance(10000);
  assert.equal(t.sockets[0].closeCode, 1000);
  assert.equal(t.client.state, "reconnecting");
  assert.deepEqual(t.clock.pendingDelays(), [375]);
});

test("reconnects with exponential backoff and jitter, bounded by max, reset by a successful open", () => {
  let random = 0.5;
  const t = setup({ backoff: { initial: 100, max: 1000, factor: 2, jitter: 0.5 }, random: () => random });
  const delays = [];
  for (let attempt = 0; attempt < 6; attempt++) {
    t.socket().fail();
    [delays[attempt]] = t.clock.pendingDelays();
    const before = t.sockets.length;
    t.clock.advance(delays[attempt] - 1);
    assert.equal(t.sockets.length, before, "no reconnect before the delay");
    t.clock.advance(1);
    assert.equal(t.sockets.length, before + 1);
  }
  // min(max, initial * factor ** attempt) * (1 - jitter * random())
  assert.deepEqual(delays, [75, 150, 300, 600, 750, 750]);
  assert.deepEqual(t.takeActions(), [connection("reconnecting")], "one state change, not one per attempt");

  t.socket().open();
  assert.equal(t.client.state, "open");
  random = 0;
  t.socket().serverClose(4031);
  assert.deepEqual(t.clock.pendingDelays(), [100], "the exponent starts again after an open");
  random = 1;
  t.clock.advance(100);
  t.socket().serverClose(1011);
  assert.deepEqual(t.clock.pendingDelays(), [100], "jitter takes up to half off: 200 * (1 - 0.5)");
});

test("after a reconnect every live subscription is resubscribed with since and epoch", async () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToTask(t);
  t.socket().receive(updateTask(42));
  assert.deepEqual(t.takeActions(), [updateTask(42)]);
  const pong = t.client.ping();
  assert.deepEqual(t.socket().takeSent(), [{ action: "ping", request_id: 2 }]);

  reconnect(t, 4030);
  assert.deepEqual(t.socket().takeSent(), [
    subscribeTask(3, { since: 42, epoch: "r7f2" }),
    { action: "ping", request_id: 4 },
  ]);
  assert.ok(await isPending(pong), "a request cut off by the close is asked again, not rejected");
  t.socket().receive({ type: "PONG", payload: null, meta: { request_id: 4 } });
  await pong;
});

test("a subscribe cut off by a close is sent again after the reconnect, not rejected", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = t.client.subscribe("api.task", "Xk3");
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(1)]);
  reconnect(t);
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(2)], "no since: there was no snapshot yet");
  assert.ok(await isPending(sub.ready));
  t.socket().receive(subscribedTask(2, 41));
  assert.deepEqual(await sub.ready, TASK);
  assert.deepEqual(t.takeActions(), [subscribedTask(2, 41)]);
});

test("recovered:true keeps local state; the replayed events are applied in order, duplicates dropped", () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToTask(t);
  reconnect(t);
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(2, { since: 41, epoch: "r7f2" })]);

  t.socket().receive({
    type: "SUBSCRIBED",
    payload: null,
    meta: { request_id: 2, model: "api.task", id: "Xk3", seq: 41, epoch: "r7f2", recovered: true },
  });
  assert.deepEqual(t.takeActions(), [], "a recovered SUBSCRIBED carries no snapshot to dispatch");
  for (const seq of [42, 43, 43, 41, 44]) t.socket().receive(updateTask(seq));
  assert.deepEqual(t.takeActions(), [updateTask(42), updateTask(43), updateTask(44)]);
  assert.deepEqual(t.socket().sent, []);
});

test("recovered:false dispatches RESYNC, then the fresh snapshot, whose seq and epoch take over", () => {
  const t = setup();
  openWithoutToken(t);
  t.client.subscribe("api.task", { project: "P1" });
  t.socket().takeSent();
  t.socket().receive(subscribedProject(1, 9));
  t.socket().receive(createInProject(10));
  t.takeActions();
  reconnect(t);
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", filter: { project: "P1" }, since: 10, epoch: "r7f2", request_id: 2 },
  ]);

  const fresh = subscribedProject(2, 3, "z9", { recovered: false });
  t.socket().receive(fresh);
  assert.deepEqual(t.takeActions(), [
    {
      type: "DRF_LIVE/RESYNC",
      payload: { model: "api.task", filter: { project: "P1" } },
      meta: { reason: "reconnect" },
    },
    fresh,
  ]);
  t.socket().receive(createInProject(3)); // already in the snapshot
  t.socket().receive(createInProject(4));
  assert.deepEqual(t.takeActions(), [createInProject(4)]);

  reconnect(t);
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", filter: { project: "P1" }, since: 4, epoch: "z9", request_id: 3 },
  ]);
});

test("an event already applied is dropped", () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToTask(t);
  for (const seq of [41, 42, 42, 40]) t.socket().receive(updateTask(seq));
  assert.deepEqual(t.takeActions(), [updateTask(42)]);
  assert.deepEqual(t.socket().sent, []);
});

test("a gap resubscribes once with since; events buffered meanwhile are applied after the replay", () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToTask(t);
  t.socket().receive(updateTask(44));
  t.socket().receive(updateTask(45));
  t.socket().receive(updateTask(47));
  assert.deepEqual(t.takeActions(), [], "nothing is applied past a gap");
  assert.deepEqual(
    t.socket().takeSent(),
    [subscribeTask(2, { since: 41, epoch: "r7f2" })],
    "one resubscribe in flight",
  );

  t.socket().receive({
    type: "SUBSCRIBED",
    payload: null,
    meta: { request_id: 2, model: "api.task", id: "Xk3", seq: 41, epoch: "r7f2", recovered: true },
  });
  assert.deepEqual(t.takeActions(), []);
  t.socket().receive(updateTask(42));
  t.socket().receive(updateTask(43));
  assert.deepEqual(t.takeActions(), [updateTask(42), updateTask(43), updateTask(44), updateTask(45)]);
  t.socket().receive(updateTask(44)); // the replay goes on past what was buffered
  t.socket().receive(updateTask(45));
  t.socket().receive(updateTask(46));
  assert.deepEqual(t.takeActions(), [updateTask(46), updateTask(47)]);
  assert.deepEqual(t.socket().sent, []);
});

test("meta.prev names the event this one follows on from: skipped seqs are no gap", () => {
  const t = setup();
  openWithoutToken(t);
  t.client.subscribe("api.task", { project: "P1" });
  t.socket().takeSent();
  t.socket().receive(subscribedProject(1, 9));
  t.takeActions();

  // Seqs 10 and 11 were about members this user may not see: the server skipped them.
  const skipped = { ...createInProject(12), meta: { ...createInProject(12).meta, prev: 9 } };
  t.socket().receive(skipped);
  t.socket().receive(createInProject(13));
  assert.deepEqual(t.takeActions(), [skipped, createInProject(13)]);
  assert.deepEqual(t.socket().sent, [], "no resubscribe: nothing was missed");

  // A prev later than what the client holds is a real gap.
  const past = { ...createInProject(20), meta: { ...createInProject(20).meta, prev: 15 } };
  t.socket().receive(past);
  assert.deepEqual(t.takeActions(), []);
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", filter: { project: "P1" }, since: 13, epoch: "r7f2", request_id: 2 },
  ]);
  t.socket().receive(subscribedProject(2, 13, "r7f2", { recovered: true }));
  const replayed = { ...createInProject(15), meta: { ...createInProject(15).meta, prev: 13 } };
  t.socket().receive(replayed);
  assert.deepEqual(t.takeActions(), [replayed, past], "the buffered event follows the replayed one");
});

test("a gap answered by a fresh snapshot: RESYNC, snapshot, then the buffered events that follow it", () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToTask(t);
  t.socket().receive(updateTask(44));
  t.socket().receive(updateTask(46));
  t.socket().receive(updateTask(45));
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(2, { since: 41, epoch: "r7f2" })]);

  const fresh = subscribedTask(2, 45, { recovered: false });
  t.socket().receive(fresh);
  assert.deepEqual(t.takeActions(), [
    { type: "DRF_LIVE/RESYNC", payload: { model: "api.task", id: "Xk3" }, meta: { reason: "gap" } },
    fresh,
    updateTask(46),
  ]);
  assert.deepEqual(t.socket().sent, []);
});

test("a fresh snapshot with leftover buffered events past it resubscribes from the snapshot", () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToTask(t);
  t.socket().receive(updateTask(44));
  t.socket().receive(updateTask(47));
  t.socket().takeSent();
  t.socket().receive(subscribedTask(2, 45, { recovered: false }));
  assert.deepEqual(
    t.takeActions().map((action) => action.type),
    ["DRF_LIVE/RESYNC", "SUBSCRIBED"],
  );
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(3, { since: 45, epoch: "r7f2" })]);
});

test("buffered events are dropped when the snapshot comes from a new epoch", () => {
  const t = setup();
  openWithoutToken(t);
  subscribedToTask(t);
  t.socket().receive(updateTask(44));
  t.socket().receive(updateTask(3)); // its seq belongs to the old history, whatever the number says
  t.socket().takeSent();
  t.socket().receive(subscribedTask(2, 2, { recovered: false, epoch: "n3w" }));
  assert.deepEqual(
    t.takeActions().map((action) => action.type),
    ["DRF_LIVE/RESYNC", "SUBSCRIBED"],
  );
  assert.deepEqual(t.socket().sent, []);
  t.socket().receive(updateTask(3));
  assert.deepEqual(t.takeActions(), [updateTask(3)]);
});

test("a resubscribe without reply is asked again, keeping the snapshot", () => {
  const t = setup({ requestTimeout: 2000 });
  openWithoutToken(t);
  const sub = subscribedToTask(t);
  const ends = [];
  sub.onEnd((end) => ends.push(end));
  t.socket().receive(updateTask(43));
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(2, { since: 41, epoch: "r7f2" })]);
  t.clock.advance(2000);
  assert.deepEqual(t.socket().takeSent(), [subscribeTask(3, { since: 41, epoch: "r7f2" })]);
  assert.deepEqual(ends, []);
  t.socket().receive({
    type: "SUBSCRIBED",
    payload: null,
    meta: { request_id: 3, model: "api.task", id: "Xk3", seq: 41, epoch: "r7f2", recovered: true },
  });
  t.socket().receive(updateTask(42));
  assert.deepEqual(t.takeActions(), [updateTask(42), updateTask(43)]);
});

test("close code 4001 closes the client for good", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = t.client.subscribe("api.task", "Xk3");
  const pong = t.client.ping();
  t.socket().serverClose(4001);

  assert.equal(t.client.state, "closed");
  assert.deepEqual(t.takeActions(), [connection("closed")]);
  await assert.rejects(sub.ready, { code: "not_authenticated" });
  await assert.rejects(pong, { code: "not_authenticated" });
  assert.deepEqual(t.clock.pendingDelays(), []);
  t.clock.advance(60000);
  assert.equal(t.sockets.length, 1);
  assert.throws(() => t.client.subscribe("api.task", "Xk3"), /closed client/);
});

test("a revoked subscription is dispatched, ends, and is not resubscribed", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = subscribedToTask(t);
  const ends = [];
  sub.onEnd((end) => ends.push(end));
  t.client.subscribe("api.task", { project: "P1" });
  t.socket().takeSent();
  t.socket().receive(subscribedProject(2, 9));
  t.takeActions();

  const revoked = { type: "UNSUBSCRIBED", payload: null, meta: { model: "api.task", id: "Xk3", reason: "revoked" } };
  t.socket().receive(revoked);
  assert.deepEqual(t.takeActions(), [revoked]);
  assert.deepEqual(ends, [{ reason: "revoked" }]);
  assert.deepEqual(await sub.ready, TASK, "ready stays resolved");
  t.socket().receive(updateTask(42));
  assert.deepEqual(t.takeActions(), []);

  reconnect(t);
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", filter: { project: "P1" }, since: 9, epoch: "r7f2", request_id: 3 },
  ]);
  await sub.unsubscribe();
  assert.deepEqual(t.socket().sent, [], "nothing to unsubscribe from");
});

test("a held target answered not_found on resubscribe ends as revoked, so reducers drop it", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = subscribedToTask(t);
  const ends = [];
  sub.onEnd((end) => ends.push(end));

  reconnect(t);
  const [resubscribe] = t.socket().takeSent();
  assert.equal(resubscribe.since, 41);
  const notFound = {
    type: "ERROR",
    error: true,
    payload: { code: "not_found", detail: "No such object." },
    meta: { request_id: resubscribe.request_id },
  };
  t.socket().receive(notFound);

  const revoked = { type: "UNSUBSCRIBED", payload: null, meta: { model: "api.task", id: "Xk3", reason: "revoked" } };
  assert.deepEqual(t.takeActions(), [notFound, revoked]);
  assert.deepEqual(ends, [{ reason: "revoked" }]);
  reconnect(t);
  assert.deepEqual(t.socket().takeSent(), [], "not resubscribed again");
});

test("unsubscribe() resolves on UNSUBSCRIBED and stops resubscribing", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = subscribedToTask(t);
  const done = sub.unsubscribe();
  assert.deepEqual(t.socket().takeSent(), [{ action: "unsubscribe", model: "api.task", id: "Xk3", request_id: 2 }]);
  assert.ok(await isPending(done));
  t.socket().receive(updateTask(42)); // sent before the server saw the unsubscribe
  const reply = { type: "UNSUBSCRIBED", payload: null, meta: { request_id: 2, model: "api.task", id: "Xk3" } };
  t.socket().receive(reply);
  assert.equal(await done, undefined);
  assert.deepEqual(t.takeActions(), [reply]);

  reconnect(t);
  assert.deepEqual(t.socket().sent, []);
});

test("unsubscribing before the connection opens sends nothing at all", async () => {
  const t = setup();
  const sub = t.client.subscribe("api.task", "Xk3");
  await sub.unsubscribe();
  await assert.rejects(sub.ready, { code: "unsubscribed" });
  openWithoutToken(t);
  assert.deepEqual(t.socket().sent, []);
});

test("subscriptions to one target share it: the server is unsubscribed when the last one goes", async () => {
  const t = setup();
  openWithoutToken(t);
  const first = subscribedToTask(t);
  const second = t.client.subscribe("api.task", "Xk3");
  assert.deepEqual(t.socket().sent, []);
  assert.deepEqual(await second.ready, TASK);

  await first.unsubscribe();
  assert.deepEqual(t.socket().sent, []);
  t.socket().receive(updateTask(42));
  assert.deepEqual(t.takeActions(), [updateTask(42)]);
  second.unsubscribe();
  assert.deepEqual(t.socket().takeSent(), [{ action: "unsubscribe", model: "api.task", id: "Xk3", request_id: 2 }]);
});

test("model labels are matched in lower case and filters whatever their key order", () => {
  const t = setup();
  openWithoutToken(t);
  t.client.subscribe("api.Task", { b: "2", a: "1" });
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", filter: { b: "2", a: "1" }, request_id: 1 },
  ]);
  t.socket().receive({
    type: "SUBSCRIBED",
    payload: [],
    meta: { request_id: 1, model: "api.task", filter: { a: "1", b: "2" }, seq: 0, epoch: "e" },
  });
  const created = {
    type: "CREATE_TASK",
    payload: T9,
    meta: { model: "api.task", id: "T9", filter: { a: "1", b: "2" }, seq: 1 },
  };
  t.socket().receive(created);
  t.socket().receive({ ...created, meta: { ...created.meta, filter: { a: "1" }, seq: 2 } }); // another collection
  assert.deepEqual(t.takeActions().slice(1), [created]);
});

test("subscribe(model) and subscribe(model, {}) are one target, the unfiltered collection: no id, no filter", () => {
  const t = setup();
  openWithoutToken(t);
  const all = t.client.subscribe("api.Task");
  t.client.subscribe("api.task", {});
  assert.deepEqual(t.socket().takeSent(), [{ action: "subscribe", model: "api.task", request_id: 1 }]);
  const page = { count: 51, next: "http://testserver/api/tasks/?page=2", previous: null, results: [TASK] };
  const subscribed = {
    type: "SUBSCRIBED",
    payload: page,
    meta: { request_id: 1, model: "api.task", filter: {}, seq: 3, epoch: "e1" },
  };
  t.socket().receive(subscribed);
  const created = { ...createInProject(4), meta: { ...createInProject(4).meta, filter: {} } };
  t.socket().receive(created);
  t.socket().receive(createInProject(5)); // the project's collection: not subscribed
  assert.deepEqual(t.takeActions(), [subscribed, created]);

  reconnect(t);
  assert.deepEqual(t.socket().takeSent(), [
    { action: "subscribe", model: "api.task", since: 4, epoch: "e1", request_id: 2 },
  ]);
  t.socket().receive({ ...subscribed, meta: { ...subscribed.meta, request_id: 2, epoch: "e2", recovered: false } });
  assert.deepEqual(t.takeActions()[0], {
    type: "DRF_LIVE/RESYNC",
    payload: { model: "api.task", filter: {} },
    meta: { reason: "reconnect" },
  });
  assert.throws(() => t.client.subscribe("api.task", null), /or nothing for every object of the model/);
  all.unsubscribe();
  assert.deepEqual(t.socket().sent, [], "another handle still holds it");
});

test("an unfiltered subscription unsubscribes with neither id nor filter, and a revocation ends it", () => {
  const t = setup();
  openWithoutToken(t);
  const sub = t.client.subscribe("api.task");
  t.socket().receive({
    type: "SUBSCRIBED",
    payload: [],
    meta: { request_id: 1, model: "api.task", filter: {}, seq: 0 },
  });
  sub.unsubscribe();
  assert.deepEqual(t.socket().takeSent().at(-1), { action: "unsubscribe", model: "api.task", request_id: 2 });

  const again = t.client.subscribe("api.task");
  const ends = [];
  again.onEnd((end) => ends.push(end));
  t.socket().takeSent();
  t.socket().receive({
    type: "SUBSCRIBED",
    payload: [],
    meta: { request_id: 3, model: "api.task", filter: {}, seq: 0 },
  });
  const revoked = { type: "UNSUBSCRIBED", payload: null, meta: { model: "api.task", filter: {}, reason: "revoked" } };
  t.socket().receive(revoked);
  assert.deepEqual(ends, [{ reason: "revoked" }]);
  assert.deepEqual(t.takeActions().at(-1), revoked);
});

test("malformed server frames are ignored without throwing", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = t.client.subscribe("api.task", "Xk3");
  t.socket().takeSent();
  for (const junk of ["not json", "[1, 2]", "null", "42", '"text"', '{"type": 5}', '{"payload": {}}', "{}"]) {
    t.socket().receive(junk);
  }
  t.socket().onmessage({ data: new ArrayBuffer(4) }); // a binary frame
  t.socket().receive({ type: "SUBSCRIBED", payload: TASK, meta: "nope" });
  t.socket().receive({ type: "UPDATE_TASK", payload: TASK, meta: { model: "api.task", id: "Xk3" } }); // no seq
  assert.deepEqual(t.takeActions(), []);
  assert.deepEqual(t.socket().sent, []);

  t.socket().receive(subscribedTask(1, 41));
  assert.deepEqual(await sub.ready, TASK, "the client still works");
});

test("close() closes the socket with 1000 and for good", async () => {
  const t = setup();
  openWithoutToken(t);
  const sub = t.client.subscribe("api.task", "Xk3");
  const pong = t.client.ping();
  t.client.close();

  assert.equal(t.client.state, "closed");
  assert.equal(t.socket().closeCode, 1000);
  assert.deepEqual(t.takeActions(), [connection("closed")]);
  await assert.rejects(sub.ready, { code: "closed" });
  await assert.rejects(pong, { code: "closed" });
  assert.deepEqual(t.clock.pendingDelays(), []);
  t.client.close();
  assert.deepEqual(t.takeActions(), [], "closing twice changes nothing");
});

test("onState reports each state change and can be unsubscribed", () => {
  const t = setup();
  const states = [];
  const stop = t.client.onState((state) => states.push(state));
  assert.equal(t.client.state, "connecting");
  t.socket().open();
  t.socket().fail();
  stop();
  t.client.close();
  assert.deepEqual(states, ["open", "reconnecting"]);
});

test("connect() says what to do where there is no WebSocket", () => {
  assert.throws(() => connect("ws://x/", { WebSocket: null }), /pass connect\(url, \{WebSocket\}\)/);
});

test("promises abandoned by unsubscribe() or close() raise no unhandled rejection", async () => {
  const t = setup();
  t.client.subscribe("api.task", "Xk3").unsubscribe();
  openWithoutToken(t);
  t.client.subscribe("api.task", "Xk3");
  t.client.ping();
  t.client.close();
  await new Promise((resolve) => setImmediate(resolve)); // node:test fails a test whose rejection goes unhandled
});
