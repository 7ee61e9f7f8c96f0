/**
 * What the demo page knows beyond the live objects (which drf-live's reducer keeps): who is signed
 * in, the people they can see, notices, and the state of each write the page sent.
 */

const ME = "DEMO/ME";
const USERS = "DEMO/USERS";
const LOADED = "DEMO/LOADED";
const NOTICE = "DEMO/NOTICE";
const DISMISS = "DEMO/DISMISS";
const WRITE = "DEMO/WRITE";
const WRITE_SETTLED = "DEMO/WRITE_SETTLED";

const initial = { me: null, users: {}, loaded: false, notices: [], writes: {} };

export function pageReducer(state = initial, action) {
  const { payload } = action;
  switch (action.type) {
    case ME:
      return { ...state, me: payload };
    case USERS: {
      // Merged, not replaced: someone removed from this user's projects keeps their name on the tasks
      // still assigned to them, and the owner who removed them can add them back.
      const loaded = Object.fromEntries(payload.map((user) => [user.id, user]));
      return { ...state, users: { ...state.users, ...loaded } };
    }
    case LOADED:
      return { ...state, loaded: true };
    case NOTICE:
      return { ...state, notices: [...state.notices, payload] };
    case DISMISS:
      return { ...state, notices: state.notices.filter((notice) => notice.id !== payload.id) };
    case WRITE: {
      const previous = state.writes[payload.key];
      if (previous && previous.token > payload.token) return state; // a later write of the same field won
      return { ...state, writes: { ...state.writes, [payload.key]: { ...previous, ...payload } } };
    }
    case WRITE_SETTLED: {
      // "Saved" fades; the entry stays, as its changes still show until the push arrives.
      const previous = state.writes[payload.key];
      if (!previous || previous.token !== payload.token || previous.state !== "saved") return state;
      return { ...state, writes: { ...state.writes, [payload.key]: { ...previous, state: "settled", text: "" } } };
    }
    default:
      return state;
  }
}

export const setMe = (user) => ({ type: ME, payload: user });
export const setUsers = (users) => ({ type: USERS, payload: users });
export const projectsLoaded = () => ({ type: LOADED });
export const dismiss = (id) => ({ type: DISMISS, payload: { id } });

let nextNotice = 1;
/** A notice at the top of the page until dismissed; `tone` is "info" or "error". */
export const notice = (text, tone = "info") => ({ type: NOTICE, payload: { id: nextNotice++, text, tone } });

/**
 * One write's progress. `key` names what it changes ("task <id> title"), `target` the thing whose
 * status line shows it ("task <id>"); `state` is "saving", "saved", "settled" or "failed"; `changes`
 * are shown over `base` (the object as it was) until a push replaces that object in the store.
 */
export const writeState = (payload) => ({ type: WRITE, payload });
export const writeSettled = (key, token) => ({ type: WRITE_SETTLED, payload: { key, token } });

/** The latest write shown on `target`'s status line, or undefined. */
export function latestWrite(writes, target) {
  let latest;
  for (const write of Object.values(writes)) {
    if (write.target === target && (!latest || write.token > latest.token)) latest = write;
  }
  return latest;
}

/**
 * `object` as the page shows it: with the changes of these writes (to it) still on their way back
 * over the socket. A write's changes apply while it is in flight, and after it succeeded until the
 * store holds a newer object than the one it was made on; a failed write shows the object as it is.
 */
export function withPending(object, writes) {
  let shown = object;
  for (const write of writes) {
    if (!object || !write?.changes || write.state === "failed") continue;
    if (write.state !== "saving" && object !== write.base) continue;
    shown = { ...shown, ...write.changes };
  }
  return shown;
}
