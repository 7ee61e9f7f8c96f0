/**
 * Redux reducers for what the drf-live client dispatches (see docs/client.md).
 *
 * The live reducer's state is `{[model]: {[id]: object}}`, model being the lower-case label the server
 * sends ("api.task"). It never mutates, and returns the same state object for anything it ignores.
 */
import { CONNECTION, RESYNC } from "./client.js";

/** A reducer keeping every object the server sends; `models` limits it to those labels. */
export function createLiveReducer({ models } = {}) {
  const kept = models ? new Set(models.map((model) => model.toLowerCase())) : null;

  return function liveReducer(state = {}, action) {
    const target = targetOf(action);
    if (target === null || (kept !== null && !kept.has(target.model))) return state;
    const { model, id, filter } = target;
    const { type, payload } = action;
    // One object is keyed by meta.id, the hashid the server routed it by.
    const single = isObject(payload) ? [[id ?? payload.id, payload]] : [];

    if (type === RESYNC) {
      // The fresh snapshot that follows re-adds the members that still belong.
      return filter ? removeWhere(state, model, matches(filter)) : state;
    }
    if (type === "UNSUBSCRIBED") {
      if (action.meta.reason !== "revoked") return state;
      return removeWhere(state, model, filter ? matches(filter) : hasId(id));
    }
    if (type === "SUBSCRIBED") return put(state, model, filter ? snapshotItems(payload).map(byId) : single);
    // Event types are UPDATE_<MODEL>, CREATE_<MODEL> and DELETE_<MODEL> unless a registration renames them.
    if (type.startsWith("CREATE_") || type.startsWith("UPDATE_")) return put(state, model, single);
    if (type.startsWith("DELETE_")) return removeWhere(state, model, hasId(id ?? payload?.id));
    return state;
  };
}

/** Every kept object of `model`, as an array that stays the same while they do (safe in useSelector). */
export function selectObjects(state, model) {
  const objects = state[model.toLowerCase()];
  if (!objects) return NONE;
  let list = listCache.get(objects);
  if (!list) {
    list = Object.values(objects);
    listCache.set(objects, list);
  }
  return list;
}

/** The kept object of `model` with this hashid, or undefined. */
export function selectObject(state, model, id) {
  return state[model.toLowerCase()]?.[id];
}

/** A reducer holding the client's connection state: "connecting", "open", "reconnecting" or "closed". */
export function createConnectionReducer() {
  return function connectionReducer(state = "connecting", action) {
    return action.type === CONNECTION ? action.payload.state : state;
  };
}

const NONE = Object.freeze([]);
// Keyed by the per-model object, which is replaced on every change, so a cached list is never stale.
const listCache = new WeakMap();

/** `{model, id?, filter?}` of a drf-live action, or null for any other action. */
function targetOf(action) {
  if (!isObject(action) || typeof action.type !== "string" || action.error) return null;
  const where = action.type === RESYNC ? action.payload : action.meta;
  if (!isObject(where) || typeof where.model !== "string") return null;
  return { model: where.model.toLowerCase(), id: where.id, filter: isObject(where.filter) ? where.filter : null };
}

/** A collection snapshot is the REST API's list shape: a plain list, or a page with `results`. */
function snapshotItems(payload) {
  if (Array.isArray(payload)) return payload;
  return isObject(payload) && Array.isArray(payload.results) ? payload.results : [];
}

/** Whether an object belongs to the collection `filter` names; a list field (many-to-many) contains the id. */
function matches(filter) {
  return (object) =>
    Object.entries(filter).every(([field, value]) =>
      Array.isArray(object?.[field]) ? object[field].includes(value) : object?.[field] === value,
    );
}

const byId = (object) => [object?.id, object];
const hasId = (wanted) => (_object, id) => id === wanted;

function put(state, model, entries) {
  const valid = entries.filter(([id]) => id !== undefined && id !== null);
  if (valid.length === 0) return state;
  return { ...state, [model]: { ...state[model], ...Object.fromEntries(valid) } };
}

function removeWhere(state, model, predicate) {
  const objects = state[model];
  if (!objects) return state;
  const kept = Object.entries(objects).filter(([id, object]) => !predicate(object, id));
  if (kept.length === Object.keys(objects).length) return state;
  return { ...state, [model]: Object.fromEntries(kept) };
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
