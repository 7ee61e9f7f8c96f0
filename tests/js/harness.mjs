/**
 * A client wired to the scripted socket and manual clock of fake-socket.mjs, and the steps the client
 * tests share: open, reconnect, wait for a promise to stay pending.
 */
import assert from "node:assert/strict";

import { connect } from "../../notifications/static/notifications/client.js";
import { fakeWebSocket, manualClock } from "./fake-socket.mjs";

export function setup(options = {}) {
  const { WebSocket, sockets } = fakeWebSocket();
  const clock = manualClock();
  const client = connect("ws://testserver/ws/notifications/", {
    WebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    ...options,
  });
  const actions = [];
  client.onAction((action) => actions.push(action));
  return {
    client,
    clock,
    sockets,
    socket: () => sockets.at(-1),
    /** The actions dispatched since the last call. */
    takeActions: () => actions.splice(0),
  };
}

export const connection = (state) => ({ type: "DRF_LIVE/CONNECTION", payload: { state } });

/** Open the socket and take the CONNECTION action it causes. */
export function openWithoutToken(t) {
  t.socket().open();
  assert.deepEqual(t.takeActions(), [connection("open")]);
}

/** Lose the connection, wait out the backoff (375 ms with the defaults and random 0.5), reopen. */
export function reconnect(t, code = 1006) {
  if (code === 1006) t.socket().fail();
  else t.socket().serverClose(code);
  assert.deepEqual(t.takeActions(), [connection("reconnecting")]);
  const before = t.sockets.length;
  t.clock.advance(375);
  assert.equal(t.sockets.length, before + 1);
  t.socket().open();
  assert.deepEqual(t.takeActions(), [connection("open")]);
}

export async function isPending(promise) {
  const marker = Symbol("pending");
  return (await Promise.race([promise, marker]).catch(() => null)) === marker;
}
