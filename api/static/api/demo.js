/**
 * The demo page (api/templates/api/demo.html): a small task board for the signed-in user, live.
 *
 * Reads come over the drf-live socket into a Redux store: the project collection (every project the
 * user is in, so one they are added to appears), each project (so being removed from one is told
 * apart from its deletion), and each project's tasks. Writes go through the REST API (writes.js) and
 * come back over the socket like anyone else's. The DOM is rendered from the store alone (board.js).
 */
import { combineReducers, legacy_createStore as createStore } from "redux";
import { connect } from "drf-live/client.js";
import { createConnectionReducer, createLiveReducer, selectObjects } from "drf-live/reducer.js";
import { createBoard } from "./board.js";
import { getAll, listItems, request } from "./rest.js";
import { notice, pageReducer, projectsLoaded, setMe, setUsers } from "./state.js";
import { createWrites } from "./writes.js";

const store = createStore(
  combineReducers({
    live: createLiveReducer({ models: ["api.project", "api.task"] }),
    connection: createConnectionReducer(),
    page: pageReducer,
  }),
);
const say = (text, tone) => store.dispatch(notice(text, tone));

// --- the socket --------------------------------------------------------------------------------------

// Every frame in and out, and every connection state: read by tests/browser/, handy in devtools. The
// client handles a recovered SUBSCRIBED itself (it is no action), so the log sits on the socket.
const log = [];
class LoggedWebSocket extends WebSocket {
  constructor(url) {
    super(url);
    this.addEventListener("message", (event) => {
      const { type, meta } = JSON.parse(event.data);
      log.push({ dir: "in", type, meta });
    });
  }

  send(data) {
    log.push({ dir: "out", ...JSON.parse(data) });
    super.send(data);
  }
}

const url = new URL("/ws/notifications/", location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
// The session cookie authenticates the socket. A short backoff cap: a restarted demo server is back soon.
const client = connect(url.href, { WebSocket: LoggedWebSocket, backoff: { max: 5000 } });
client.onState((state) => {
  log.push({ dir: "state", state });
  // 4001: the session ended (signed out in another tab, say); the client does not retry that.
  if (state === "closed") {
    say("The connection closed because your session ended. Reload the page to sign in again.", "error");
  }
});
client.onAction(store.dispatch);
client.onAction(followChanges);
Object.assign(window, { __drfLiveLog: log, __drfLiveStore: store });

// --- what the page follows -----------------------------------------------------------------------------

const followed = new Map(); // project id -> its two subscriptions
const projectNames = new Map(); // project id -> its last known name, to speak of it once it is gone
store.subscribe(() => {
  for (const project of selectObjects(store.getState().live, "api.project")) {
    projectNames.set(project.id, project.name);
  }
});
const nameOf = (id) => projectNames.get(id) ?? "a project";
/** What a socket error says, for a person: the server's detail, never a stack trace. */
const reasonOf = (error) => error?.detail || error?.code || "the server did not say why";

/** Follow one project and its tasks until the server ends it (removal, deletion) or we drop it. */
function follow(id) {
  if (followed.has(id)) return;
  const project = client.subscribe("api.project", id);
  const tasks = client.subscribe("api.task", { project: id });
  followed.set(id, { project, tasks });
  // How a subscription ends is handled below, whether or not its snapshot had come.
  project.ready.catch(() => {});
  tasks.ready.catch(() => {});
  project.onEnd((end) => {
    followed.delete(id);
    // A revocation of the project comes with one of its task collection (the server re-checks every
    // subscription of a removed member), which drops its tasks from the store: leave that to it.
    if (end.reason !== "revoked") tasks.unsubscribe().catch(() => {});
    if (end.reason === "revoked") say(`You were removed from ${nameOf(id)}.`);
    else say(`Could not follow ${nameOf(id)}: ${reasonOf(end.error)}`, "error");
  });
  tasks.onEnd((end) => {
    // A revocation comes with the project's, which says it; only a failure needs saying here.
    if (end.reason === "error") say(`Could not load the tasks of ${nameOf(id)}: ${reasonOf(end.error)}`, "error");
  });
}

function unfollow(id) {
  const subscriptions = followed.get(id);
  if (!subscriptions) return;
  followed.delete(id);
  // Already ended by the server, or no longer wanted: a lost reply leaves nothing to clean up.
  subscriptions.project.unsubscribe().catch(() => {});
  subscriptions.tasks.unsubscribe().catch(() => {});
}

/**
 * Act on the frames that change what the page follows: a collection's snapshot may be the first of
 * several pages; a project that enters the project collection is followed, one deleted is dropped;
 * and the people list is loaded again whenever who shares a project with whom may have changed.
 */
function followChanges(action) {
  const meta = action.meta;
  if (action.error || !meta) return;
  const inCollection = meta.filter !== undefined; // a collection's frame; else one object's own
  if (action.type === "SUBSCRIBED" && inCollection) listRemainingPages(meta.model, meta.filter, action.payload);
  if (meta.model !== "api.project") return;
  if ((action.type === "SUBSCRIBED" || action.type === "LISTED") && inCollection) {
    // The first snapshot (or a fresh one after a reconnect that could not recover), or a later page.
    listItems(action.payload).forEach((project) => follow(project.id));
    if (action.type === "SUBSCRIBED") store.dispatch(projectsLoaded());
    refreshPeople();
  } else if (action.type === "CREATE_PROJECT" && inCollection) {
    follow(meta.id);
    refreshPeople();
    const me = store.getState().page.me;
    if (me && action.payload?.owner !== me.id) say(`You were added to ${action.payload?.name}.`);
  } else if (action.type === "DELETE_PROJECT" && !inCollection) {
    unfollow(meta.id);
    say(`${nameOf(meta.id)} was deleted.`);
  } else if (action.type === "UPDATE_PROJECT" && meta.changed?.some((f) => f === "members" || f === "owner")) {
    refreshPeople(); // who shares a project with whom changed: the assignee and member pickers follow
  }
}

/**
 * Once the REST API paginates, a collection's snapshot is its first page (`{count, next, previous,
 * results}`): list the others over the socket. A page of a subscribed collection is kept live by the
 * subscription, and the client dispatches it to the store (LISTED) like a snapshot.
 */
async function listRemainingPages(model, filter, firstPage) {
  let next = firstPage?.next ?? null;
  for (let page = 2; next && page <= 20; page += 1) {
    try {
      next = (await client.list(model, { filter, page })).payload?.next ?? null;
    } catch (error) {
      if (client.state !== "closed") say(`Could not load the rest of the list: ${reasonOf(error)}`, "error");
      return;
    }
  }
}

// --- people ------------------------------------------------------------------------------------------

let peopleLoading = null;
let peopleAgain = false;
let peopleFailed = false;

/** Load the users this user may see (GET /api/users/, every page); one load at a time, then once more. */
async function refreshPeople() {
  if (peopleLoading) {
    peopleAgain = true;
    return;
  }
  do {
    peopleAgain = false;
    peopleLoading = getAll("/api/users/");
    try {
      store.dispatch(setUsers(await peopleLoading));
      peopleFailed = false;
    } catch (error) {
      // Said once, not on every later change while the server is away.
      if (!peopleFailed) say(`Could not load the people you share projects with: ${error.message}`, "error");
      peopleFailed = true;
    } finally {
      peopleLoading = null;
    }
  } while (peopleAgain);
}

// --- start -------------------------------------------------------------------------------------------

const render = createBoard(
  {
    badge: document.getElementById("connection"),
    notices: document.getElementById("notices"),
    board: document.getElementById("board"),
  },
  createWrites(store),
);
// One render for the actions dispatched together: a snapshot that replaces what the client could not
// recover comes as RESYNC (drop the collection) then SUBSCRIBED (the fresh one) in one go, and a
// render between the two would rebuild every card, losing focus and whatever was being typed.
let renderQueued = false;
store.subscribe(() => {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    render(store.getState());
  });
});
render(store.getState());

// Every project this user is in: neither id nor filter. Its frames are handled in followChanges.
client.subscribe("api.project").ready.catch((error) => {
  // A closed client has said why already (see onState above).
  if (client.state !== "closed") say(`Could not load your projects: ${reasonOf(error)}`, "error");
});

try {
  store.dispatch(setMe(await request("GET", "/api/users/me/")));
} catch (error) {
  say(`Could not load your account: ${error.message}`, "error");
}
