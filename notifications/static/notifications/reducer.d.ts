// Type declarations for reducer.js: Redux reducers for what the drf-live client dispatches.
import type { ConnectionState, LiveAction } from "./client.js";

/** `state[model][id]`: model is the lower-case label ("api.task"), id the object's hashid. */
export type LiveState = Record<string, Record<string, any>>;

export interface LiveReducerOptions {
  /** Keep only these model labels (any case); default: every model. */
  models?: string[];
}

/** A reducer keeping every object the server sends; it returns the same state for actions it ignores. */
export declare function createLiveReducer(
  options?: LiveReducerOptions,
): (state: LiveState | undefined, action: LiveAction | { type: string }) => LiveState;

/** Every kept object of `model`, as an array that stays the same while they do. */
export declare function selectObjects<T = any>(state: LiveState, model: string): readonly T[];

/** The kept object of `model` with this hashid, or undefined. */
export declare function selectObject<T = any>(state: LiveState, model: string, id: string): T | undefined;

/** A reducer holding the client's connection state. */
export declare function createConnectionReducer(): (
  state: ConnectionState | undefined,
  action: LiveAction | { type: string },
) => ConnectionState;

/** One listed collection: the ids of each page held, in the server's order, and its count. */
export interface ListEntry {
  filter: Record<string, string>;
  /** The list's query parameters (a search is a list of its own), or null. */
  query: Record<string, string> | null;
  /** The REST `count`, kept live by the collection's events; null when the paginator gives none. */
  count: number | null;
  /** The number of the page known to be the last (its `next` was null), or null. */
  last: number | null;
  pages: Record<number, string[]>;
}

/** `state[model][listKey]`: model is the lower-case label; listKey the filter (and query) as canonical JSON. */
export type ListState = Record<string, Record<string, ListEntry>>;

/** Which list, and which page of it: `filter` defaults to `{}` (the unfiltered collection), `page` to 1. */
export interface ListSelection {
  filter?: Record<string, string>;
  page?: number;
  query?: Record<string, string> | null;
}

/** A reducer keeping the pages of collections (SUBSCRIBED, LISTED) and following their events. */
export declare function createListReducer(
  options?: LiveReducerOptions,
): (state: ListState | undefined, action: LiveAction | { type: string }) => ListState;

/** The objects of one listed page, in order, stable while unchanged; undefined when the page is not held. */
export declare function selectList<T = any>(
  liveState: LiveState,
  listState: ListState,
  model: string,
  selection?: ListSelection,
): readonly T[] | undefined;

/** The count of a listed collection, kept live; undefined when unknown. */
export declare function selectCount(
  listState: ListState,
  model: string,
  selection?: Omit<ListSelection, "page">,
): number | undefined;
