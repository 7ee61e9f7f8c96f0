// Tests of notifications/static/notifications/reducer.js, in a real Redux store.
import assert from "node:assert/strict";
import { test } from "node:test";
import { combineReducers, legacy_createStore as createStore } from "redux";

import { connect } from "../../notifications/static/notifications/client.js";
import {
  createConnectionReducer,
  createLiveReducer,
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
