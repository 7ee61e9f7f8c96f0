/**
 * Redux reducers for what the drf-live client dispatches (see docs/client.md).
 *
 * The live reducer's state is `{[model]: {[id]: object}}`, model being the lower-case label the server
 * sends ("api.task"). The list reducer's is `{[model]: {[listKey]: list}}`: the ids of each listed page
 * of a collection, in order, and its count. Neither mutates, and both return the same state object for
 * anything they ignore.
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
    if (isReply(action)) {
      // CREATED has no meta.id: the object's own id keys it.
      if (type === "RETRIEVED" || type === "CREATED" || type === "UPDATED") return put(state, model, single);
      if (type === "LISTED") return put(state, model, snapshotItems(payload).map(byId));
      if (type === "DESTROYED") return removeWhere(state, model, hasId(id));
      // A custom action's reply has the shape its application gives it, even named UPDATE_SOMETHING.
      return state;
    }
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

/**
 * A reducer keeping, for each listed collection, the ids of its pages in order and its count: page 1
 * from SUBSCRIBED (which starts the list afresh), any page from LISTED. The collection's events keep them live: a member that enters
 * (CREATE_*) is counted, and added at the end of the last page if that page is held; one that leaves
 * (DELETE_*) is taken off its page. Pages are not re-balanced: list one again for that. A RESYNC of a
 * collection drops the model's lists (the live reducer dropped their objects), so list them again.
 */
export function createListReducer({ models } = {}) {
  const kept = models ? new Set(models.map((model) => model.toLowerCase())) : null;

  return function listReducer(state = {}, action) {
    const target = targetOf(action);
    if (target === null || target.filter === null || (kept !== null && !kept.has(target.model))) return state;
    const { model, id, filter } = target;
    const { type, payload } = action;

    if (type === RESYNC) return dropLists(state, model, () => true);
    if (type === "UNSUBSCRIBED") {
      if (action.meta.reason !== "revoked") return state; // the lists stay, no longer live
      return dropLists(state, model, (list) => sameFilter(list.filter, filter));
    }
    // A snapshot starts the collection's list afresh: pages held from before it missed events.
    if (type === "SUBSCRIBED") return setPage(state, model, filter, null, 1, payload, true);
    if (isReply(action)) {
      if (type !== "LISTED") return state;
      const { page = 1, query = null } = action.meta;
      return setPage(state, model, filter, isObject(query) ? query : null, page, payload);
    }
    const member = id ?? payload?.id;
    if (member === undefined || member === null) return state;
    if (type.startsWith("CREATE_")) return enter(state, model, filter, member);
    if (type.startsWith("DELETE_")) return leave(state, model, filter, member);
    return state;
  };
}

/**
 * The objects of one listed page, in order, as an array that stays the same while they do (safe in
 * useSelector); undefined while that page has not been listed (or was dropped by a RESYNC): list it.
 * Objects no longer held (deleted, revoked) are left out. Takes both reducers' states.
 */
export function selectList(liveState, listState, model, { filter = {}, page = 1, query = null } = {}) {
  const label = model.toLowerCase();
  const ids = listState[label]?.[listKey(filter, query)]?.pages[page];
  if (!ids) return undefined;
  const objects = liveState[label] ?? NO_OBJECTS;
  let byObjects = pageCache.get(ids);
  if (!byObjects) {
    byObjects = new WeakMap();
    pageCache.set(ids, byObjects);
  }
  let list = byObjects.get(objects);
  if (!list) {
    list = ids.map((id) => objects[id]).filter((object) => object !== undefined);
    byObjects.set(objects, list);
  }
  return list;
}

/** How many members a listed collection has (the REST `count`, kept live); undefined when unknown. */
export function selectCount(listState, model, { filter = {}, query = null } = {}) {
  return listState[model.toLowerCase()]?.[listKey(filter, query)]?.count ?? undefined;
}

/** A reducer holding the client's connection state: "connecting", "open", "reconnecting" or "closed". */
export function createConnectionReducer() {
  return function connectionReducer(state = "connecting", action) {
    return action.type === CONNECTION ? action.payload.state : state;
  };
}

const NONE = Object.freeze([]);
const NO_OBJECTS = Object.freeze({});
// Keyed by the per-model object, which is replaced on every change, so a cached list is never stale.
const listCache = new WeakMap();
// Page ids array -> per-model object -> the page's objects; both keys are replaced on every change.
const pageCache = new WeakMap();

/** `{model, id?, filter?}` of a drf-live action, or null for any other action. */
function targetOf(action) {
  if (!isObject(action) || typeof action.type !== "string" || action.error) return null;
  const where = action.type === RESYNC ? action.payload : action.meta;
  if (!isObject(where) || typeof where.model !== "string") return null;
  return { model: where.model.toLowerCase(), id: where.id, filter: isObject(where.filter) ? where.filter : null };
}

/** A reply to a request (it echoes request_id), as opposed to an event. */
function isReply(action) {
  return action.meta.request_id !== undefined && action.meta.request_id !== null;
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

// --- lists ----------------------------------------------------------------------------------------

/**
 * A list's key within its model: the filter, and the query parameters when there are any (a search is
 * another list), as canonical JSON.
 */
function listKey(filter, query) {
  const key = canonicalJson(filter);
  return query && Object.keys(query).length > 0 ? `${key} ${canonicalJson(query)}` : key;
}

/**
 * Set one page from a list payload: a plain array is the whole collection (page 1, the last), a page
 * `{count, next, previous, results}` is page `page`, the last when `next` is null.
 */
function setPage(state, model, filter, query, page, payload, fresh = false) {
  const paginated = !Array.isArray(payload);
  if (paginated && !(isObject(payload) && Array.isArray(payload.results))) return state; // recovered: no payload
  const ids = snapshotItems(payload)
    .map((object) => object?.id)
    .filter((id) => id !== undefined && id !== null);
  const key = listKey(filter, query);
  const old = fresh ? undefined : state[model]?.[key];
  let list;
  if (!paginated) list = { filter, query, count: ids.length, last: 1, pages: { 1: ids } };
  else {
    let last = old?.last ?? null;
    if (payload.next === null) last = page;
    else if (last !== null && last <= page) last = null; // the collection grew past what we held as last
    let pages = { ...old?.pages, [page]: ids };
    // Pages past the last one are gone from the collection.
    if (last !== null) pages = Object.fromEntries(Object.entries(pages).filter(([n]) => Number(n) <= last));
    const count = typeof payload.count === "number" ? payload.count : null; // CursorPagination has none
    list = { filter, query, count, last, pages };
  }
  return { ...state, [model]: { ...state[model], [key]: list } };
}

/** A member entered the collection (its event stream says so): counted, and added to the held last page. */
function enter(state, model, filter, id) {
  const key = listKey(filter, null);
  const list = state[model]?.[key];
  if (!list || Object.values(list.pages).some((ids) => ids.includes(id))) return state;
  const count = typeof list.count === "number" ? list.count + 1 : list.count;
  const last = list.last !== null ? list.pages[list.last] : undefined;
  const pages = last ? { ...list.pages, [list.last]: [...last, id] } : list.pages;
  return { ...state, [model]: { ...state[model], [key]: { ...list, count, pages } } };
}

/**
 * A member left the collection: off the page that holds it, in the collection's list and in its
 * searches. The collection's count goes down even when no held page had it; a search's only if one did.
 */
function leave(state, model, filter, id) {
  const lists = state[model];
  if (!lists) return state;
  let changed = false;
  const next = {};
  for (const [key, list] of Object.entries(lists)) {
    next[key] = list;
    if (!sameFilter(list.filter, filter)) continue;
    const held = Object.values(list.pages).some((ids) => ids.includes(id));
    if (!held && list.query !== null) continue;
    // Only the page that held it changes, so selectList keeps the other pages' arrays.
    const pages = held
      ? Object.fromEntries(
          Object.entries(list.pages).map(([n, ids]) => [
            n,
            ids.includes(id) ? ids.filter((other) => other !== id) : ids,
          ]),
        )
      : list.pages;
    const count = typeof list.count === "number" ? Math.max(0, list.count - 1) : list.count;
    next[key] = { ...list, count, pages };
    changed = true;
  }
  return changed ? { ...state, [model]: next } : state;
}

function dropLists(state, model, predicate) {
  const lists = state[model];
  if (!lists) return state;
  const kept = Object.entries(lists).filter(([, list]) => !predicate(list));
  if (kept.length === Object.keys(lists).length) return state;
  return { ...state, [model]: Object.fromEntries(kept) };
}

function sameFilter(a, b) {
  return canonicalJson(a) === canonicalJson(b);
}

function canonicalJson(value) {
  return JSON.stringify(value, (_key, v) =>
    isObject(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}
