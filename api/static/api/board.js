/**
 * The demo page's task board, rendered from the Redux store alone: one card per project (its open
 * task count, its people, its tasks, a form to add one) and the notices above them.
 *
 * Every control a task has is named after the task ("Done: Write the landing page"), so a screen
 * reader, and a test, can tell one row's checkbox from another's.
 */
import { selectObjects } from "drf-live/reducer.js";
import { el, setAttr, setOptions, setText, syncChildren } from "./dom.js";
import { latestWrite, withPending } from "./state.js";

const CONNECTION_LABELS = {
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting…",
  closed: "closed: sign in again",
};
const TASK_FIELDS = ["title", "done", "assignee", "private", "delete"];
const PRIVATE_HINT = "A private task is seen only by its assignee and the project's owner.";

/**
 * Build the board inside `parts.board` and return `render(state)`. `actions` are the page's writes
 * (demo.js): the board calls them, and shows what comes back through the store.
 */
export function createBoard(parts, actions) {
  const loading = el("p", { class: "card hint" }, "Loading your projects…");
  const projects = el("div", { class: "projects" });
  const empty = el(
    "p",
    { class: "card empty", hidden: "" },
    "You are not in any project. Create one below, or ask the owner of a project to add you.",
  );
  const newProject = newProjectForm(actions);
  parts.board.replaceChildren(loading, projects, empty, newProject.form);
  const partsOf = new WeakMap(); // a card or row element -> its parts (controls to update)

  return function render({ live, connection, page }) {
    setText(parts.badge, CONNECTION_LABELS[connection] ?? connection);
    parts.badge.dataset.state = connection;
    renderNotices(parts.notices, page.notices, actions);

    const tasks = selectObjects(live, "api.task");
    const view = { ...page, name: (id) => personName(page.users, id) };
    const shown = [...selectObjects(live, "api.project")].sort((a, b) => a.name.localeCompare(b.name));
    syncChildren(
      projects,
      shown,
      (project) => project.id,
      (project) => projectCard(project, actions, partsOf),
      (card, project) => {
        const itsTasks = tasks.filter((task) => task.project === project.id);
        updateProjectCard(partsOf.get(card), project, itsTasks, view, partsOf);
      },
    );
    loading.hidden = page.loaded;
    empty.hidden = !page.loaded || shown.length > 0;
    setStatus(newProject.status, latestWrite(page.writes, "new-project"));
  };
}

// --- notices -------------------------------------------------------------------------------------

function renderNotices(container, notices, actions) {
  syncChildren(
    container,
    notices,
    (notice) => notice.id,
    (notice) =>
      el(
        "p",
        { class: `notice ${notice.tone}` },
        el("span", {}, notice.text),
        el(
          "button",
          { type: "button", "aria-label": "Dismiss this notice", onclick: () => actions.dismiss(notice.id) },
          "Dismiss",
        ),
      ),
    () => {},
  );
}

// --- a project -----------------------------------------------------------------------------------

function projectCard(project, actions, partsOf) {
  const id = project.id;
  const r = { id, actions };
  r.heading = el("h2", { id: `project-${id}` });
  r.count = el("p", { class: "open-count" });
  r.people = el("p", { class: "people" });

  // Members, for the owner: only the owner may change them (the REST API refuses anyone else).
  r.memberList = el("ul", { class: "members" });
  r.noMembers = el("p", { class: "hint" }, "No members yet.");
  r.candidate = el("select", { id: `add-member-${id}` });
  r.addButton = el("button", { type: "submit" }, "Add");
  r.memberStatus = el("p", { class: "status", "aria-live": "polite" });
  r.manage = el(
    "div",
    { class: "manage" },
    el("h3", {}, "Members"),
    r.memberList,
    r.noMembers,
    el(
      "form",
      { class: "add-member", onsubmit: (event) => submitMember(event, r) },
      el("label", { for: r.candidate.id }, "Add a member"),
      r.candidate,
      r.addButton,
    ),
    el("p", { class: "hint" }, "You can add the people you already share a project with."),
    r.memberStatus,
  );

  r.tasks = el("ul", { class: "tasks" });
  r.noTasks = el("p", { class: "hint empty" }, "No tasks yet. Add the first one below.");
  r.newTitle = el("input", {
    type: "text",
    id: `new-task-${id}`,
    autocomplete: "off",
    placeholder: "What needs doing?",
  });
  r.addTask = el("button", { type: "submit" }, "Add task");
  r.taskStatus = el("p", { class: "status", "aria-live": "polite" });
  const newTask = el(
    "form",
    { class: "new-task", onsubmit: (event) => submitTask(event, r) },
    el("label", { for: r.newTitle.id }, "New task"),
    r.newTitle,
    r.addTask,
  );

  const card = el(
    "section",
    { class: "card project", "aria-labelledby": r.heading.id },
    el("div", { class: "project-head" }, r.heading, r.count),
    r.people,
    r.manage,
    r.tasks,
    r.noTasks,
    newTask,
    r.taskStatus,
  );
  partsOf.set(card, r);
  return card;
}

function updateProjectCard(r, storedProject, tasks, view, partsOf) {
  const project = withPending(storedProject, [view.writes[`members ${storedProject.id}`]]);
  const mine = view.me !== null && project.owner === view.me.id;
  const name = project.name;
  setText(r.heading, name);
  setText(r.count, openTasksText(project, tasks, mine));
  // Each project has these controls: their names say which project they act on.
  setAttr(r.candidate, "aria-label", `Add a member to ${name}`);
  setAttr(r.addButton, "aria-label", `Add member to ${name}`);
  setAttr(r.newTitle, "aria-label", `New task in ${name}`);
  setAttr(r.addTask, "aria-label", `Add task to ${name}`);
  setAttr(r.tasks, "aria-label", `Tasks of ${name}`);

  const you = (id) => (view.me && id === view.me.id ? " (you)" : "");
  const members = sortByName(project.members, view);
  if (mine) setText(r.people, "You own this project.");
  else {
    const list = members.map((id) => view.name(id) + you(id)).join(", ") || "none";
    setText(r.people, `Owner: ${view.name(project.owner)}${you(project.owner)}. Members: ${list}.`);
  }
  r.manage.hidden = !mine;
  if (mine) updateMembers(r, project, members, view);

  const visible = tasks
    .map((task) => withPending(task, TASK_FIELDS.map((field) => view.writes[`task ${task.id} ${field}`])))
    .filter((task) => !task.delete);
  const focusLost = syncChildren(
    r.tasks,
    visible,
    (task) => task.id,
    (task) => taskRow(task, r.actions, partsOf),
    (row, task) => updateTaskRow(partsOf.get(row), task, project, view),
  );
  // The task being worked on was deleted (here or elsewhere): keep the keyboard in this project.
  if (focusLost) r.newTitle.focus();
  r.noTasks.hidden = visible.length > 0;
  setStatus(r.taskStatus, latestWrite(view.writes, `new-task ${project.id}`));
}

/** "2 open tasks"; for a member, also how many of them are private ones they cannot see. */
function openTasksText(project, tasks, mine) {
  const open = project.open_tasks;
  if (typeof open !== "number") return "";
  let text = open === 0 ? "No open tasks" : `${open} open task${open === 1 ? "" : "s"}`;
  // The count is the project's (annotated by the server); the list is what this user may see.
  const unseen = open - tasks.filter((task) => !task.done).length;
  if (!mine && unseen > 0) text += ` (${unseen} private, not shown to you)`;
  return text;
}

function updateMembers(r, project, members, view) {
  const focusLost = syncChildren(
    r.memberList,
    members,
    (id) => id,
    (id) =>
      el(
        "li",
        {},
        el("span", {}),
        " ",
        el("button", { type: "button", onclick: () => r.actions.removeMember(r.id, id) }, "Remove"),
      ),
    (li, id) => {
      setText(li.firstChild, view.name(id));
      setAttr(li.lastChild, "aria-label", `Remove ${view.name(id)} from ${project.name}`);
    },
  );
  r.noMembers.hidden = members.length > 0;
  const candidates = sortByName(
    Object.keys(view.users).filter((id) => id !== project.owner && !project.members.includes(id)),
    view,
  );
  const chosen = candidates.includes(r.candidate.value) ? r.candidate.value : "";
  setOptions(
    r.candidate,
    [
      { value: "", label: candidates.length > 0 ? "Choose a person" : "No one else to add", disabled: true },
      ...candidates.map((id) => ({ value: id, label: view.name(id) })),
    ],
    chosen,
  );
  r.candidate.disabled = r.addButton.disabled = candidates.length === 0;
  // A member was removed with their own Remove button: the picker, where they can be added back, is next.
  if (focusLost) r.candidate.focus();
  setStatus(r.memberStatus, latestWrite(view.writes, `members ${project.id}`));
}

function submitMember(event, r) {
  event.preventDefault();
  if (r.candidate.value) r.actions.addMember(r.id, r.candidate.value);
  else r.candidate.focus();
}

async function submitTask(event, r) {
  event.preventDefault();
  const title = r.newTitle.value;
  const created = await r.actions.createTask(r.id, title);
  // Clear the field for the next task, unless the user already typed something else in it.
  if (created && r.newTitle.value === title) r.newTitle.value = "";
}

// --- a task --------------------------------------------------------------------------------------

function taskRow(task, actions, partsOf) {
  const id = task.id;
  const r = { savedTitle: task.title };
  r.done = el("input", { type: "checkbox", onchange: () => actions.saveTask(id, "done", r.done.checked) });
  r.title = el("input", {
    type: "text",
    class: "title",
    "aria-describedby": `task-status-${id}`,
    onchange: () => actions.saveTask(id, "title", r.title.value),
    onkeydown: (event) => {
      if (event.key === "Enter") r.title.blur(); // saves, through the change event
      if (event.key === "Escape") {
        r.title.value = r.savedTitle;
        actions.discardTitle(id);
      }
    },
  });
  r.assignee = el("select", {
    class: "assignee",
    onchange: () => actions.saveTask(id, "assignee", r.assignee.value || null), // "" is Unassigned
  });
  r.private = el("input", {
    type: "checkbox",
    onchange: () => actions.saveTask(id, "private", r.private.checked),
  });
  r.delete = el("button", { type: "button", class: "delete", onclick: () => actions.deleteTask(id) }, "Delete");
  r.status = el("span", { class: "status", id: `task-status-${id}`, "aria-live": "polite" });
  const row = el(
    "li",
    { class: "task" },
    r.done,
    r.title,
    r.assignee,
    el("label", { class: "private", title: PRIVATE_HINT }, r.private, " Private"),
    r.delete,
    r.status,
  );
  r.row = row;
  partsOf.set(row, r);
  return row;
}

function updateTaskRow(r, task, project, view) {
  const name = task.title;
  const titleWrite = view.writes[`task ${task.id} title`];
  // A refused title stays in the field, marked invalid, for the user to fix (or Escape to drop).
  const keepDraft = titleWrite?.state === "failed";
  r.savedTitle = task.title;
  if (document.activeElement !== r.title && !keepDraft && r.title.value !== task.title) r.title.value = task.title;
  setAttr(r.title, "aria-label", `Title: ${name}`);
  setAttr(r.title, "aria-invalid", keepDraft ? "true" : null);
  r.done.checked = task.done;
  setAttr(r.done, "aria-label", `Done: ${name}`);
  setOptions(r.assignee, assigneeOptions(project, task.assignee, view), task.assignee ?? "");
  setAttr(r.assignee, "aria-label", `Assignee: ${name}`);
  r.private.checked = task.private;
  setAttr(r.private, "aria-label", `Private: ${name}`);
  setAttr(r.delete, "aria-label", `Delete ${name}`);
  r.delete.disabled = view.writes[`task ${task.id} delete`]?.state === "saving";
  r.row.classList.toggle("done", task.done);
  r.row.classList.toggle("is-private", task.private);
  setStatus(r.status, latestWrite(view.writes, `task ${task.id}`));
}

/** Unassigned, the owner and the members, and the current assignee even if no longer a member. */
function assigneeOptions(project, assignee, view) {
  const people = new Set([project.owner, ...project.members]);
  if (assignee) people.add(assignee);
  return [
    { value: "", label: "Unassigned" },
    ...sortByName([...people], view).map((id) => ({ value: id, label: view.name(id) })),
  ];
}

// --- shared --------------------------------------------------------------------------------------

function newProjectForm(actions) {
  const input = el("input", { type: "text", id: "new-project", autocomplete: "off", placeholder: "e.g. Garden" });
  const status = el("p", { class: "status", "aria-live": "polite" });
  const form = el(
    "form",
    {
      class: "card new-project",
      onsubmit: async (event) => {
        event.preventDefault();
        const name = input.value;
        if ((await actions.createProject(name)) && input.value === name) input.value = "";
      },
    },
    el("label", { for: input.id }, "New project"),
    input,
    el("button", { type: "submit" }, "Create project"),
    status,
  );
  return { form, status };
}

/** A write's status line: "Saving…", "Saved", or why it was refused. */
function setStatus(node, write) {
  setText(node, write?.text ?? "");
  node.dataset.state = write?.state ?? "";
}

function personName(users, id) {
  const user = users[id];
  if (!user) return "Someone else"; // not (yet) among the users the REST API shows this user
  return user.display_name || user.username;
}

function sortByName(ids, view) {
  return [...ids].sort((a, b) => view.name(a).localeCompare(view.name(b)));
}
