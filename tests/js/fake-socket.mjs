/**
 * Test doubles for the client: a scripted WebSocket the test drives frame by frame, and a manual clock.
 */

/** A WebSocket class whose instances record what the client sends; `sockets` lists them in order. */
export function fakeWebSocket() {
  const sockets = [];

  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0; // CONNECTING
      this.sent = [];
      this.closeCode = null; // set when the client closes the socket
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }

    send(data) {
      // Stricter than a browser, which drops frames sent while closing: a send on a socket that is
      // not open is a client bug the tests should see.
      if (this.readyState !== 1) throw new Error(`send() on a socket in readyState ${this.readyState}: ${data}`);
      this.sent.push(JSON.parse(data));
    }

    close(code = 1000) {
      if (this.readyState === 3) return;
      this.closeCode = code;
      this.readyState = 3;
    }

    // --- what the test (playing the server and the network) does ---

    open() {
      this.readyState = 1;
      this.onopen?.({ type: "open" });
    }

    /** Deliver a frame: an object is sent as JSON, a string as it is. */
    receive(frame) {
      this.onmessage?.({ type: "message", data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }

    serverClose(code) {
      this.readyState = 3;
      this.onclose?.({ type: "close", code, reason: "", wasClean: true });
    }

    /** The network failed: a browser fires "error", then "close" with 1006. */
    fail() {
      this.readyState = 3;
      this.onerror?.({ type: "error" });
      this.onclose?.({ type: "close", code: 1006, reason: "", wasClean: false });
    }

    /** The frames sent since the last call. */
    takeSent() {
      return this.sent.splice(0);
    }
  }

  return { WebSocket: FakeWebSocket, sockets };
}

/** setTimeout/clearTimeout that only fire when the test calls advance(ms). */
export function manualClock() {
  let now = 0;
  let nextId = 1;
  const timers = new Map(); // id -> {fn, at, ms}

  return {
    setTimeout: (fn, ms) => {
      const id = nextId++;
      timers.set(id, { fn, at: now + ms, ms });
      return id;
    },
    clearTimeout: (id) => {
      timers.delete(id);
    },
    /** The delays (ms, as scheduled) of the timers that have not fired. */
    pendingDelays: () => [...timers.values()].map((timer) => timer.ms),
    /** Move time forward, firing due timers in order (including timers they schedule). */
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, timer]) => timer.at <= until).sort(([, a], [, b]) => a.at - b.at);
        if (due.length === 0) break;
        const [id, timer] = due[0];
        timers.delete(id);
        now = timer.at;
        timer.fn();
      }
      now = until;
    },
  };
}
