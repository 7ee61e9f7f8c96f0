/**
 * The demo page (api/templates/api/demo.html): the signed-in user's projects and their tasks, live.
 *
 * Reads come over the drf-live socket into a Redux store; writes go through the REST API, and come
 * back over the socket like anyone else's. The DOM is rendered from the store alone.
 */
import { combineReducers, legacy_createStore as createStore } from "redux";
import { connect } from "drf-live/client.js";
import { createConnectionReducer, createLiveReducer, selectObjects } from "drf-live/reducer.js";

// --- state ------------------------------------------------------------------------------------------

const NOTICE = "DEMO/NOTICE";

/** What the page itself knows beyond the live objects: whether the project list loaded, and a notice. */
function pageReducer(state = { loaded: false, notice: null }, action) {
  if (action.type !== NOTICE) return state;
  return { loaded: action.payload.loaded ?? state.loaded, notice: action.payload.notice ?? null };
}

const store = createStore(
  combineReducers({
    live: createLiveReducer({ models: ["api.project", "api.task"] }),
    connection: createConnectionReducer(),
    page: pageReducer,
  }),
);

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
client.onState((state) => log.push({ dir: "state", state }));
client.onAction(store.dispatch);
Object.assign(window, { __drfLiveLog: log, __drfLiveStore: store });

// --- REST --------------------------------------------------------------------------------------------

async function api(method, path, body) {
  const csrf = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/)?.[1] ?? "";
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

async function saveTask(id, changes) {
  try {
    await api("PATCH", `/api/tasks/${id}/`, changes); // the socket brings the result back
    if (store.getState().page.notice) store.dispatch({ type: NOTICE, payload: { notice: null } });
  } catch (error) {
    store.dispatch({ type: NOTICE, payload: { notice: `Not saved: ${error.message}` } });
  }
}

async function start() {
  try {
    const data = await api("GET", "/api/projects/");
    for (const project of Array.isArray(data) ? data : data.results) {
      client.subscribe("api.project", project.id);
      client.subscribe("api.task", { project: project.id });
    }
    store.dispatch({ type: NOTICE, payload: { loaded: true } });
  } catch (error) {
    store.dispatch({ type: NOTICE, payload: { notice: `Could not load your projects: ${error.message}` } });
  }
}

// --- rendering ---------------------------------------------------------------------------------------

const LABELS = { connecting: "connecting…", open: "live", reconnecting: "reconnecting…", closed: "closed: sign in again" };
const root = document.getElementById("projects");
const indicator = document.getElementById("connection");
const sections = new Map(); // project id -> its <section>; rows are found by data-task-id inside it

function render() {
  const { live, connection, page } = store.getState();
  indicator.dataset.state = connection;
  indicator.textContent = LABELS[connection];

  const projects = [...selectObjects(live, "api.project")].sort((a, b) => a.name.localeCompare(b.name));
  const tasks = selectObjects(live, "api.task");
  renderNotice(page);
  for (const [id, section] of sections) {
    if (!projects.some((project) => project.id === id)) {
      section.remove();
      sections.delete(id);
    }
  }
  projects.forEach((project, index) => {
    const section = sections.get(project.id) ?? projectSection(project);
    placeAt(root, section, index + 1); // after the notice
    section.querySelector("h2").textContent = project.name;
    const list = section.querySelector("ul");
    const mine = tasks.filter((task) => task.project === project.id);
    for (const row of [...list.children]) if (!mine.some((task) => task.id === row.dataset.taskId)) row.remove();
    mine.forEach((task, i) => renderTask(list, task, i));
    section.querySelector(".empty").hidden = mine.length > 0;
  });
}

function renderNotice(page) {
  let notice = root.querySelector(".notice");
  if (!notice) {
    notice = root.insertBefore(document.createElement("p"), root.firstChild);
    notice.className = "notice";
  }
  notice.textContent = page.notice ?? (page.loaded ? "" : "Loading projects…");
  notice.hidden = !notice.textContent;
}

function projectSection(project) {
  const section = document.createElement("section");
  section.className = "card project";
  section.dataset.projectId = project.id;
  section.innerHTML = `<h2></h2><ul class="tasks"></ul><p class="empty hint">No tasks.</p>`;
  sections.set(project.id, section);
  return section;
}

function renderTask(list, task, index) {
  let row = list.querySelector(`[data-task-id="${task.id}"]`);
  if (!row) {
    row = document.createElement("li");
    row.dataset.taskId = task.id;
    row.innerHTML = `<input type="checkbox" name="done" aria-label="done"><input type="text" name="title" aria-label="title">`;
    const [done, title] = row.querySelectorAll("input");
    done.addEventListener("change", () => saveTask(task.id, { done: done.checked }));
    title.addEventListener("keydown", (event) => event.key === "Enter" && title.blur());
    title.addEventListener("change", () => saveTask(task.id, { title: title.value }));
  }
  placeAt(list, row, index);
  const [done, title] = row.querySelectorAll("input");
  done.checked = task.done;
  row.classList.toggle("done", task.done);
  // Never overwrite what the user is typing; the field catches up when it loses focus.
  if (document.activeElement !== title && title.value !== task.title) title.value = task.title;
}

/** Put `node` at `index` among `parent`'s children, moving it only if needed (a move drops focus). */
function placeAt(parent, node, index) {
  if (parent.children[index] !== node) parent.insertBefore(node, parent.children[index] ?? null);
}

store.subscribe(render);
render();
start();
