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
