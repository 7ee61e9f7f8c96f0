// Tests of notifications/static/notifications/reducer.js, in a real Redux store.
import assert from "node:assert/strict";
import { test } from "node:test";
import { combineReducers, legacy_createStore as createStore } from "redux";

import { connect } from "../../notifications/static/notifications/client.js";
import {
  createConnectionReducer,
  createListReducer,
  createLiveReducer,
  selectCount,
  selectList,
  selectObject,
  selectObjects,
} from "../../notifications/static/notifications/reducer.js";
import { fakeWebSocket, manualClock } from "./fake-socket.mjs";

const A = { id: "A1", title: "A", done: false, project: "P1", assignee: null };
const B = { id: "B2", title: "B", done: true, project: "P1", assignee: "U1" };
const C = { id: "C3", title: "C", done: false, project: "P2", assignee: null };
const PROJECT = { id: "P1", name: "Docs", owner: "U1", members: ["U1", "U2"] };

function liveStore(options) {
  const store = createStore(
    combineReducers({ live: createLiveReducer(options), connection: createConnectionReducer() }),
  );
  return { store, live: () => store.getState().live };
}

/** Freeze deeply, so that any mutation by the reducer throws. */
function deepFreeze(value) {
  if (typeof value === "object" && value !== null) {
    Object.values(value).forEach(deepFreeze);
    Object.freeze(value);
  }
  return value;
}

const subscribedObject = (object, model = "api.task") => ({
  type: "SUBSCRIBED",
  payload: object,
  meta: { request_id: 1, model, id: object.id, seq: 1, epoch: "e" },
});
const subscribedProject = (objects, project = "P1") => ({
  type: "SUBSCRIBED",
  payload: objects,
  meta: { request_id: 2, model: "api.task", filter: { project }, seq: 5, epoch: "e" },
});
const event = (type, object, extra = {}) => ({
  type,
  payload: object,
  meta: { model: "api.task", id: object.id, seq: 2, ...extra },
});

test("SUBSCRIBED sets the object, or each object of a collection", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedObject(A));
  assert.deepEqual(live(), { "api.task": { A1: A } });
  store.dispatch(subscribedProject([B, { ...A, title: "A2" }]));
  assert.deepEqual(live(), { "api.task": { A1: { ...A, title: "A2" }, B2: B } });
});

test("a paginated collection snapshot sets its results", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedProject({ count: 2, next: null, previous: null, results: [A, B] }));
  assert.deepEqual(live(), { "api.task": { A1: A, B2: B } });
});

test("CREATE_* and UPDATE_* set the payload by meta.id; DELETE_* removes it", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedProject([A]));
  store.dispatch(event("CREATE_TASK", B, { filter: { project: "P1" } }));
  store.dispatch(event("UPDATE_TASK", { ...A, done: true }, { changed: ["done"] }));
  assert.deepEqual(live(), { "api.task": { A1: { ...A, done: true }, B2: B } });
  store.dispatch(event("DELETE_TASK", { id: "A1" }));
  assert.deepEqual(live(), { "api.task": { B2: B } });
});

test("the state is never mutated", () => {
  const reducer = createLiveReducer();
  const before = deepFreeze({ "api.task": { A1: A, B2: B, C3: C }, "api.project": { P1: PROJECT } });
  for (const action of [
    subscribedObject({ ...A, title: "new" }),
    subscribedProject([C], "P2"),
    event("UPDATE_TASK", { ...B, done: false }),
    event("DELETE_TASK", { id: "C3" }),
    { type: "UNSUBSCRIBED", payload: null, meta: { model: "api.task", filter: { project: "P1" }, reason: "revoked" } },
    { type: "DRF_LIVE/RESYNC", payload: { model: "api.task", filter: { project: "P1" } }, meta: { reason: "gap" } },
  ]) {
    const after = reducer(before, action);
    assert.notEqual(after, before);
    assert.equal(after["api.project"], before["api.project"], "other models are shared, not copied");
  }
});

test("a revoked object subscription removes that object", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedProject([A, B]));
  store.dispatch({ type: "UNSUBSCRIBED", payload: null, meta: { model: "api.task", id: "A1", reason: "revoked" } });
  assert.deepEqual(live(), { "api.task": { B2: B } });
});

test("a revoked collection removes the objects its filter matches", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedProject([A, B]));
  store.dispatch(subscribedProject([C], "P2"));
  store.dispatch(subscribedObject(PROJECT, "api.project"));
  store.dispatch({
    type: "UNSUBSCRIBED",
    payload: null,
    meta: { model: "api.task", filter: { project: "P1" }, reason: "revoked" },
  });
  assert.deepEqual(live(), { "api.task": { C3: C }, "api.project": { P1: PROJECT } });
});

test("a filter on a many-to-many field matches the objects whose list holds the id", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedObject(PROJECT, "api.project"));
  store.dispatch({
    type: "UNSUBSCRIBED",
    payload: null,
    meta: { model: "api.project", filter: { members: "U2" }, reason: "revoked" },
  });
  assert.deepEqual(live(), { "api.project": {} });
});

test("RESYNC of a collection drops its members before the fresh snapshot re-adds the current ones", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedProject([A, B]));
  store.dispatch(subscribedProject([C], "P2"));
  store.dispatch({
    type: "DRF_LIVE/RESYNC",
    payload: { model: "api.task", filter: { project: "P1" } },
    meta: { reason: "reconnect" },
  });
  assert.deepEqual(live(), { "api.task": { C3: C } });
  store.dispatch(subscribedProject([B]));
  assert.deepEqual(live(), { "api.task": { B2: B, C3: C } }, "A left the project while the client was away");
});

test("actions that change nothing return the same state object", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedProject([A]));
  const before = live();
  for (const action of [
    { type: "SOMETHING_ELSE" },
    { type: "UPDATE_TASK" }, // no meta
    { type: "DRF_LIVE/CONNECTION", payload: { state: "open" } },
    { type: "ERROR", error: true, payload: { code: "not_found", detail: "No such object." }, meta: { request_id: 3 } },
    { type: "UNSUBSCRIBED", payload: null, meta: { request_id: 4, model: "api.task", id: "A1" } },
    { type: "DRF_LIVE/RESYNC", payload: { model: "api.task", id: "A1" }, meta: { reason: "gap" } },
    {
      type: "SUBSCRIBED",
      payload: null,
      meta: { request_id: 5, model: "api.task", id: "A1", seq: 3, recovered: true },
    },
    event("DELETE_TASK", { id: "nope" }),
    { type: "UNSUBSCRIBED", payload: null, meta: { model: "api.task", filter: { project: "P9" }, reason: "revoked" } },
  ]) {
    store.dispatch(action);
    assert.equal(live(), before, JSON.stringify(action));
  }
});

test("the models option keeps only the listed labels, in any case", () => {
  const { store, live } = liveStore({ models: ["api.Project"] });
  store.dispatch(subscribedObject(A));
  assert.deepEqual(live(), {});
  store.dispatch(subscribedObject(PROJECT, "api.project"));
  assert.deepEqual(live(), { "api.project": { P1: PROJECT } });
});

test("selectors read objects; selectObjects keeps its array while nothing changes", () => {
  const { store, live } = liveStore();
  assert.deepEqual(selectObjects(live(), "api.task"), []);
  store.dispatch(subscribedProject([A, B]));
  const tasks = selectObjects(live(), "api.Task");
  assert.deepEqual(tasks, [A, B]);
  store.dispatch({ type: "SOMETHING_ELSE" });
  assert.equal(selectObjects(live(), "api.task"), tasks);
  store.dispatch(event("UPDATE_TASK", { ...A, done: true }));
  assert.deepEqual(selectObjects(live(), "api.task"), [{ ...A, done: true }, B]);
  assert.deepEqual(selectObject(live(), "api.task", "B2"), B);
  assert.equal(selectObject(live(), "api.task", "nope"), undefined);
  assert.equal(selectObject(live(), "api.user", "U1"), undefined);
});

test("the connection reducer follows DRF_LIVE/CONNECTION", () => {
  const reducer = createConnectionReducer();
  const initial = reducer(undefined, { type: "@@INIT" });
  assert.equal(initial, "connecting");
  assert.equal(reducer(initial, { type: "DRF_LIVE/CONNECTION", payload: { state: "open" } }), "open");
  assert.equal(reducer("open", { type: "SOMETHING_ELSE" }), "open");
});

test("client.onAction(store.dispatch) keeps the store in step with the server", () => {
  const { WebSocket, sockets } = fakeWebSocket();
  const clock = manualClock();
  const client = connect("ws://testserver/ws/notifications/", {
    WebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
  });
  const { store, live } = liveStore();
  client.onAction(store.dispatch);
  client.subscribe("api.task", { project: "P1" });
  sockets[0].open();
  assert.equal(store.getState().connection, "open");

  const movedIn = { ...C, project: "P1" };
  sockets[0].receive({
    ...subscribedProject([A, B]),
    meta: { request_id: 1, model: "api.task", filter: { project: "P1" }, seq: 5, epoch: "e" },
  });
  sockets[0].receive(event("CREATE_TASK", movedIn, { filter: { project: "P1" }, seq: 6 }));
  sockets[0].receive(event("DELETE_TASK", { id: "A1" }, { filter: { project: "P1" }, seq: 7 }));
  assert.deepEqual(live(), { "api.task": { B2: B, C3: movedIn } });

  sockets[0].fail();
  assert.equal(store.getState().connection, "reconnecting");
  clock.advance(500);
  sockets[1].open();
  sockets[1].receive({
    ...subscribedProject([{ ...B, done: false }]),
    meta: { request_id: 2, model: "api.task", filter: { project: "P1" }, seq: 2, epoch: "new", recovered: false },
  });
  assert.deepEqual(
    live(),
    { "api.task": { B2: { ...B, done: false } } },
    "C left the project while the client was away: RESYNC dropped it",
  );
  client.close();
  assert.equal(store.getState().connection, "closed");
});

// --- replies to requests, and the list reducer ------------------------------------------------------

const D = { id: "D4", title: "D", done: false, project: "P1", assignee: null };
const E = { id: "E5", title: "E", done: false, project: "P1", assignee: null };

function listStore() {
  const store = createStore(combineReducers({ live: createLiveReducer(), lists: createListReducer() }));
  const state = () => store.getState();
  return {
    store,
    live: () => state().live,
    lists: () => state().lists,
    page: (options) => selectList(state().live, state().lists, "api.task", options),
    count: (options) => selectCount(state().lists, "api.task", options),
  };
}

const page = (results, { count = 5, next = null, previous = null } = {}) => ({ count, next, previous, results });
const P1 = { project: "P1" };
const reply = (type, payload, meta) => ({ type, payload, meta: { request_id: 7, model: "api.task", ...meta } });
const listedPage = (results, number, extra = {}, filter = P1) =>
  reply("LISTED", page(results, extra), { filter, page: number });
const inP1 = (type, object, seq) => event(type, object, { filter: P1, seq });

test("RETRIEVED, CREATED and UPDATED set the object, LISTED each result, DESTROYED removes it", () => {
  const { store, live } = liveStore();
  store.dispatch(reply("RETRIEVED", A, { id: "A1" }));
  store.dispatch(reply("LISTED", page([B, C]), { filter: {}, page: 2 }));
  store.dispatch(reply("CREATED", D, {})); // a create's meta names no id
  store.dispatch(reply("UPDATED", { ...A, done: true }, { id: "A1" }));
  assert.deepEqual(live(), { "api.task": { A1: { ...A, done: true }, B2: B, C3: C, D4: D } });
  store.dispatch(reply("DESTROYED", null, { id: "B2" }));
  store.dispatch(reply("LISTED", [E], { filter: P1 }));
  assert.deepEqual(live(), { "api.task": { A1: { ...A, done: true }, C3: C, D4: D, E5: E } });
});

test("replies to custom actions are left alone, whatever their type", () => {
  const { store, live } = liveStore();
  store.dispatch(subscribedProject([A]));
  const before = live();
  for (const action of [
    reply("UPDATE_TITLE", { title: "x" }, { id: "A1" }),
    reply("DELETE_ATTACHMENTS", { deleted: 2 }, { id: "A1" }),
    reply("PROJECT_ARCHIVED", null, { filter: {} }),
    {
      type: "ERROR",
      error: true,
      payload: { code: "invalid", detail: "", fields: ["title"] },
      meta: { request_id: 8 },
    },
  ]) {
    store.dispatch(action);
    assert.equal(live(), before, action.type);
  }
});

test("the list reducer keeps the ids of each page in order and the count; selectList returns the objects", () => {
  const t = listStore();
  assert.equal(t.page({ filter: P1 }), undefined, "not listed yet");
  t.store.dispatch(subscribedProject(page([A, B], { next: "?page=2" })));
  t.store.dispatch(listedPage([D, C], 2, { previous: "?page=1" }));
  assert.deepEqual(t.page({ filter: P1 }), [A, B], "page 1 is the subscription's snapshot");
  assert.deepEqual(t.page({ filter: P1, page: 2 }), [D, C], "in the server's order");
  assert.equal(t.count({ filter: P1 }), 5);
  assert.equal(t.page({ filter: P1, page: 3 }), undefined);
  assert.equal(t.page(), undefined, "the unfiltered collection is another list");
  assert.deepEqual(t.lists(), {
    "api.task": {
      '{"project":"P1"}': { filter: P1, query: null, count: 5, last: 2, pages: { 1: ["A1", "B2"], 2: ["D4", "C3"] } },
    },
  });
});

test("collection events keep the pages live: an entering member is counted and ends the last page", () => {
  const t = listStore();
  t.store.dispatch(subscribedProject(page([A, B], { next: "?page=2" })));
  t.store.dispatch(inP1("CREATE_TASK", D, 6));
  assert.equal(t.count({ filter: P1 }), 6);
  assert.deepEqual(t.page({ filter: P1 }), [A, B], "the last page is not held: only counted");

  t.store.dispatch(listedPage([C, D], 2, { count: 6 }));
  t.store.dispatch(inP1("CREATE_TASK", E, 7));
  t.store.dispatch(inP1("CREATE_TASK", E, 8)); // already there: nothing changes
  t.store.dispatch(inP1("UPDATE_TASK", { ...A, title: "A2" }, 9));
  assert.deepEqual(t.page({ filter: P1, page: 2 }), [C, D, E]);
  assert.deepEqual(t.page({ filter: P1 }), [{ ...A, title: "A2" }, B]);
  assert.equal(t.count({ filter: P1 }), 7);

  t.store.dispatch(inP1("DELETE_TASK", { id: "B2" }, 10));
  assert.deepEqual(t.page({ filter: P1 }), [{ ...A, title: "A2" }], "pages are not re-balanced");
  assert.equal(t.count({ filter: P1 }), 6);
  t.store.dispatch(event("CREATE_TASK", B, { filter: { project: "P2" }, seq: 3 })); // another collection
  assert.equal(t.count({ filter: P1 }), 6);
});

test("a plain-array collection is one page, the last; a member that leaves an unheld page still counts", () => {
  const t = listStore();
  t.store.dispatch(subscribedProject([A, B]));
  t.store.dispatch(inP1("CREATE_TASK", D, 6));
  assert.deepEqual(t.page({ filter: P1 }), [A, B, D]);
  assert.equal(t.count({ filter: P1 }), 3);

  t.store.dispatch(subscribedProject(page([A], { count: 3, next: "?page=2" })));
  t.store.dispatch(inP1("DELETE_TASK", { id: "D4" }, 7)); // on page 2, which is not held
  assert.equal(t.count({ filter: P1 }), 2);
  assert.deepEqual(t.page({ filter: P1 }), [A]);
});

test("the last page: one whose next is null; pages past it are gone, and a growing collection has none", () => {
  const t = listStore();
  t.store.dispatch(listedPage([A], 1, { next: "?page=2" }));
  t.store.dispatch(listedPage([B], 2, { next: "?page=3" }));
  t.store.dispatch(listedPage([C], 3));
  assert.equal(t.lists()["api.task"]['{"project":"P1"}'].last, 3);
  t.store.dispatch(listedPage([B, C], 2, { count: 4 })); // the collection shrank: page 2 is the last now
  assert.equal(t.page({ filter: P1, page: 3 }), undefined);
  assert.equal(t.lists()["api.task"]['{"project":"P1"}'].last, 2);
  t.store.dispatch(listedPage([B, C], 2, { count: 9, next: "?page=3" })); // and grew
  assert.equal(t.lists()["api.task"]['{"project":"P1"}'].last, null);
  t.store.dispatch(inP1("CREATE_TASK", D, 6));
  assert.deepEqual(t.page({ filter: P1, page: 2 }), [B, C], "no page is known to be the last");
  assert.equal(t.count({ filter: P1 }), 10);
});

test("a collection's SUBSCRIBED starts its list afresh; a plain unsubscribe keeps the lists", () => {
  const t = listStore();
  t.store.dispatch(subscribedProject(page([A], { next: "?page=2" })));
  t.store.dispatch(listedPage([B], 2, { next: "?page=3" }));
  t.store.dispatch({ type: "UNSUBSCRIBED", payload: null, meta: { request_id: 3, model: "api.task", filter: P1 } });
  assert.deepEqual(t.page({ filter: P1, page: 2 }), [B], "kept, no longer live");
  t.store.dispatch(subscribedProject(page([A, C], { count: 2 })));
  assert.equal(t.page({ filter: P1, page: 2 }), undefined, "it missed the events in between");
  assert.deepEqual(t.page({ filter: P1 }), [A, C]);
  assert.equal(t.count({ filter: P1 }), 2);
});

test("a search is a list of its own: members that enter are not added, those that leave are taken off", () => {
  const t = listStore();
  const search = { filter: P1, query: { search: "a" } };
  t.store.dispatch(subscribedProject(page([A, B])));
  t.store.dispatch({
    ...listedPage([A, D], 1, { count: 2 }),
    meta: { ...listedPage([], 1).meta, query: search.query },
  });
  assert.deepEqual(t.page(search), [A, D]);
  assert.deepEqual(t.page({ filter: P1 }), [A, B]);
  t.store.dispatch(inP1("CREATE_TASK", E, 6));
  assert.deepEqual(t.page(search), [A, D]);
  assert.equal(t.count(search), 2);
  t.store.dispatch(inP1("DELETE_TASK", { id: "D4" }, 7));
  assert.deepEqual(t.page(search), [A]);
  assert.equal(t.count(search), 1);
  t.store.dispatch(inP1("DELETE_TASK", { id: "B2" }, 8));
  assert.equal(t.count(search), 1, "a member the search did not hold leaves its count alone");
  assert.equal(t.count({ filter: P1 }), 4);
});

test("RESYNC drops the model's lists; a revoked collection drops its own lists", () => {
  const t = listStore();
  t.store.dispatch(subscribedProject(page([A, B], { next: "?page=2" })));
  t.store.dispatch(listedPage([D], 2));
  t.store.dispatch(reply("LISTED", [A, B, C, D], { filter: {} }));
  t.store.dispatch(listedPage([C], 1, {}, { project: "P2" }));
  t.store.dispatch({ type: "DRF_LIVE/RESYNC", payload: { model: "api.task", id: "A1" }, meta: { reason: "gap" } });
  assert.deepEqual(t.page({ filter: P1, page: 2 }), [D], "an object's RESYNC drops nothing");

  t.store.dispatch({
    type: "UNSUBSCRIBED",
    payload: null,
    meta: { model: "api.task", filter: { project: "P2" }, reason: "revoked" },
  });
  assert.equal(t.page({ filter: { project: "P2" } }), undefined);
  assert.deepEqual(t.page({ filter: P1 }), [A, B]);

  t.store.dispatch({
    type: "DRF_LIVE/RESYNC",
    payload: { model: "api.task", filter: P1 },
    meta: { reason: "reconnect" },
  });
  assert.deepEqual(t.lists(), { "api.task": {} }, "their objects were dropped: every list must be listed again");
  t.store.dispatch(subscribedProject(page([B], { count: 1 })));
  assert.deepEqual(t.page({ filter: P1 }), [B]);
});

test("the unfiltered collection is the list of filter {}; its RESYNC drops every object of the model", () => {
  const t = listStore();
  const all = { type: "SUBSCRIBED", payload: [A, C], meta: { request_id: 1, model: "api.task", filter: {}, seq: 1 } };
  t.store.dispatch(all);
  t.store.dispatch(event("CREATE_TASK", D, { filter: {}, seq: 2 }));
  assert.deepEqual(t.page(), [A, C, D]);
  assert.deepEqual(t.page({ filter: {} }), [A, C, D]);
  t.store.dispatch({ type: "DRF_LIVE/RESYNC", payload: { model: "api.task", filter: {} }, meta: { reason: "gap" } });
  assert.deepEqual(t.live(), { "api.task": {} });
  assert.equal(t.page(), undefined);
});

test("selectList keeps its array while neither the page nor its objects change, and skips objects gone", () => {
  const t = listStore();
  t.store.dispatch(subscribedProject(page([A, B], { next: "?page=2" })));
  t.store.dispatch(listedPage([C, D], 2));
  const first = t.page({ filter: P1 });
  const second = t.page({ filter: P1, page: 2 });
  t.store.dispatch({ type: "SOMETHING_ELSE" });
  assert.equal(t.page({ filter: P1 }), first);
  t.store.dispatch(inP1("DELETE_TASK", { id: "D4" }, 6));
  assert.equal(t.page({ filter: P1 }).length, 2);
  assert.deepEqual(t.page({ filter: P1, page: 2 }), [C]);
  assert.notEqual(t.page({ filter: P1, page: 2 }), second);
  t.store.dispatch(event("DELETE_TASK", { id: "A1" }, { seq: 3 })); // the object's own stream: deleted
  assert.deepEqual(t.page({ filter: P1 }), [B], "an object no longer held is left out");
  assert.equal(selectList({}, {}, "api.Task"), undefined);
  assert.equal(selectCount({}, "api.task"), undefined);
});

test("the list reducer never mutates, and returns the same state for what it ignores", () => {
  const reducer = createListReducer();
  const lists = { '{"project":"P1"}': { filter: P1, query: null, count: 2, last: 1, pages: { 1: ["A1", "B2"] } } };
  const before = deepFreeze({ "api.task": lists, "api.project": {} });
  for (const action of [
    subscribedProject([C]),
    listedPage([C], 2),
    inP1("CREATE_TASK", C, 6),
    inP1("DELETE_TASK", { id: "A1" }, 7),
    { type: "DRF_LIVE/RESYNC", payload: { model: "api.task", filter: P1 }, meta: { reason: "gap" } },
  ]) {
    const after = reducer(before, action);
    assert.notEqual(after, before);
    assert.equal(after["api.project"], before["api.project"]);
  }
  for (const action of [
    { type: "SOMETHING_ELSE" },
    subscribedObject(A),
    event("UPDATE_TASK", A),
    inP1("UPDATE_TASK", A, 6),
    inP1("CREATE_TASK", A, 6), // already held
    reply("RETRIEVED", A, { id: "A1" }),
    reply("DESTROYED", null, { id: "A1" }),
    { ...subscribedProject(null), meta: { ...subscribedProject(null).meta, recovered: true } },
    { type: "UNSUBSCRIBED", payload: null, meta: { request_id: 4, model: "api.task", filter: P1 } },
    { type: "ERROR", error: true, payload: { code: "not_found", detail: "" }, meta: { request_id: 3 } },
  ]) {
    assert.equal(reducer(before, action), before, JSON.stringify(action));
  }
  assert.deepEqual(createListReducer({ models: ["api.Project"] })({}, subscribedProject([A])), {});
});

test("a paginated live collection in a Redux store: page 1 subscribed, page 2 listed at its seq, events after", async () => {
  const { WebSocket, sockets } = fakeWebSocket();
  const clock = manualClock();
  const client = connect("ws://testserver/ws/notifications/", {
    WebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
  });
  const t = listStore();
  client.onAction(t.store.dispatch);
  client.subscribe("api.task", P1);
  sockets[0].open();
  sockets[0].receive({
    type: "SUBSCRIBED",
    payload: page([A, B], { count: 4, next: "?page=2" }),
    meta: { request_id: 1, model: "api.task", filter: P1, seq: 5, epoch: "e" },
  });
  sockets[0].receive(inP1("CREATE_TASK", D, 6)); // before the page was asked for: counted only
  const listing = client.list("api.task", { filter: P1, page: 2 });
  sockets[0].receive(inP1("UPDATE_TASK", { ...A, done: true }, 7)); // in the page's past
  sockets[0].receive({
    type: "LISTED",
    payload: page([C, D], { count: 5 }),
    meta: { request_id: 2, model: "api.task", filter: P1, page: 2, seq: 7, epoch: "e" },
  });
  sockets[0].receive(inP1("CREATE_TASK", E, 8)); // after it: applied to it
  sockets[0].receive(inP1("DELETE_TASK", { id: "C3" }, 9));
  await listing;

  assert.deepEqual(t.page({ filter: P1 }), [{ ...A, done: true }, B]);
  assert.deepEqual(t.page({ filter: P1, page: 2 }), [D, E]);
  assert.equal(t.count({ filter: P1 }), 5);
  client.close();
});
