/**
 * Everything the demo page changes, each through the REST API. A write's result is not put in the
 * store: it comes back over the socket like anyone else's. Meanwhile the page shows the write's own
 * progress ("Saving…", "Saved", or the REST API's reason for refusing it) next to what it changed.
 */
import { RestError, request } from "./rest.js";
import { dismiss, notice, withPending, writeSettled, writeState } from "./state.js";

const SAVED_SHOWN_MS = 4000; // how long "Saved" stays before it fades
const SAVE = ["Saving…", "Saved", "Not saved"];

/** The page's writes, bound to its store: what board.js calls on a click or a submit. */
export function createWrites(store) {
  let lastToken = 0;
  const live = (model, id) => store.getState().live[model]?.[id];
  const page = () => store.getState().page;
  const nameOf = (id) => {
    const user = page().users[id];
    return user ? user.display_name || user.username : "them";
  };

  /**
   * Send one write and show its progress on `target`'s status line: `texts` are what to say while it
   * runs, once it succeeded, and when it failed (followed by the REST API's reason, then the optional
   * fourth text, advice). Resolves with the reply (true for none), or null when it failed.
   */
  async function track({ key, target, changes = null, base = null, texts }, send) {
    const [pending, done, failed, advice] = texts;
    const token = ++lastToken;
    store.dispatch(writeState({ key, target, token, state: "saving", text: pending, changes, base }));
    try {
      const reply = await send();
      store.dispatch(writeState({ key, target, token, state: "saved", text: done }));
      setTimeout(() => store.dispatch(writeSettled(key, token)), SAVED_SHOWN_MS);
      return reply ?? true;
    } catch (error) {
      if (!(error instanceof RestError)) console.error(error); // a bug of the page, not a refusal
      const reason = error instanceof RestError ? error.message : "something went wrong (see the console).";
      const text = [`${failed}.`, capitalize(reason), advice].filter(Boolean).join(" ");
      store.dispatch(writeState({ key, target, token, state: "failed", text }));
      return null;
    }
  }

  /** Change one field of a task: title, done, assignee or private. */
  async function saveTask(id, field, value) {
    const stored = live("api.task", id);
    if (!stored) return;
    const key = `task ${id} ${field}`;
    const previous = page().writes[key];
    // Nothing to send when the field already says so (pending writes included); a refusal shown for
    // it is moot then.
    if (withPending(stored, [previous])[field] === value) {
      if (previous?.state === "failed") forget(key, `task ${id}`);
      return;
    }
    // A refused title stays in its field to be fixed: say how to drop it instead.
    const texts = field === "title" ? [...SAVE, "Press Escape to put back the saved title."] : SAVE;
    const task = await track(
      { key, target: `task ${id}`, changes: { [field]: value }, base: stored, texts },
      () => request("PATCH", `/api/tasks/${id}/`, { [field]: value }),
    );
    if (task) explainIfHidden(task);
  }

  /**
   * A member who makes a task private without being its assignee (or unassigns themself from a
   * private one) no longer sees it: say so, rather than let it vanish unexplained.
   */
  function explainIfHidden(task) {
    const me = page().me;
    const project = live("api.project", task.project);
    if (!me || !project || !task.private || task.assignee === me.id || project.owner === me.id) return;
    const text = `“${task.title}” is private now: only its assignee and the owner of ${project.name} see it.`;
    store.dispatch(notice(text));
  }

  /** Clear what the status line says of a write (a refusal the user dropped). */
  function forget(key, target) {
    store.dispatch(writeState({ key, target, token: ++lastToken, state: "settled", text: "", changes: null }));
  }

  function deleteTask(id) {
    const stored = live("api.task", id);
    if (!stored) return null;
    return track(
      {
        key: `task ${id} delete`,
        target: `task ${id}`,
        changes: { delete: true }, // hides the row until the push removes it
        base: stored,
        texts: ["Deleting…", "Deleted", "Not deleted"],
      },
      () => request("DELETE", `/api/tasks/${id}/`),
    );
  }

  function createTask(projectId, title) {
    const key = `new-task ${projectId}`;
    return track({ key, target: key, texts: ["Adding…", "Added", "Not added"] }, () =>
      request("POST", "/api/tasks/", { project: projectId, title }),
    );
  }

  function createProject(name) {
    const texts = ["Creating…", "Created", "Not created"];
    return track({ key: "new-project", target: "new-project", texts }, () =>
      request("POST", "/api/projects/", { name }),
    );
  }

  /** Only the owner may change a project's members: the page offers it to them alone. */
  function setMembers(projectId, change, texts) {
    const key = `members ${projectId}`;
    const stored = live("api.project", projectId);
    if (!stored) return null;
    const members = change(withPending(stored, [page().writes[key]]).members);
    return track({ key, target: key, changes: { members }, base: stored, texts }, () =>
      request("PATCH", `/api/projects/${projectId}/`, { members }),
    );
  }

  function addMember(projectId, userId) {
    const name = nameOf(userId);
    return setMembers(projectId, (members) => [...new Set([...members, userId])], [
      `Adding ${name}…`,
      `Added ${name}`,
      `${name} not added`,
    ]);
  }

  function removeMember(projectId, userId) {
    const name = nameOf(userId);
    return setMembers(projectId, (members) => members.filter((id) => id !== userId), [
      `Removing ${name}…`,
      `Removed ${name}`,
      `${name} not removed`,
    ]);
  }

  return {
    saveTask,
    // Escape in a title field: drop a refused title; the field shows the saved one again.
    discardTitle: (id) => forget(`task ${id} title`, `task ${id}`),
    deleteTask,
    createTask,
    createProject,
    addMember,
    removeMember,
    dismiss: (id) => store.dispatch(dismiss(id)),
  };
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
