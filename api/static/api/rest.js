/**
 * The REST API as the demo page uses it: JSON over fetch, authenticated by the session cookie, with
 * Django's CSRF token on writes. Every failure becomes a `RestError` whose message a person can read.
 */

/** A refused or failed request; `message` is what the page shows, never a stack trace. */
export class RestError extends Error {}

/** `method` `url` with an optional JSON body: the parsed reply (null when it has none). */
export async function request(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new RestError("the server could not be reached. Is it running?");
  }
  const data = await response.json().catch(() => null); // 204, or an HTML error page
  if (!response.ok) throw new RestError(describeRefusal(response, data));
  return data;
}

/**
 * Every item of a REST list, following `next` through its pages: a list endpoint answers a plain
 * array, or a page `{count, next, previous, results}` once it paginates.
 */
export async function getAll(url) {
  const items = [];
  let next = url;
  for (let pages = 0; next && pages < 100; pages += 1) {
    const page = await request("GET", next);
    if (Array.isArray(page)) return items.concat(page);
    items.push(...listItems(page));
    next = page?.next ?? null;
  }
  return items;
}

/** The items of a list payload (a REST list, or a collection's SUBSCRIBED): an array or a page. */
export function listItems(payload) {
  if (Array.isArray(payload)) return payload;
  return Array.isArray(payload?.results) ? payload.results : [];
}

/**
 * DRF's error body as a sentence: `{"detail": "..."}` as it is, field errors as
 * "Title: Ensure this field has no more than 200 characters.", anything else by its status.
 */
function describeRefusal(response, data) {
  if (typeof data?.detail === "string") return data.detail;
  if (data && typeof data === "object") {
    const parts = Object.entries(data).flatMap(([field, messages]) => {
      const text = [messages].flat(Infinity).filter((m) => typeof m === "string").join(" ");
      if (!text) return [];
      return field === "non_field_errors" ? [text] : [`${fieldLabel(field)}: ${text}`];
    });
    if (parts.length > 0) return parts.join(" ");
  }
  if (response.status === 403) return "you are not allowed to do that (has your session ended? Reload the page).";
  return `the server answered ${response.status} ${response.statusText}`.trim() + ".";
}

function fieldLabel(field) {
  const words = field.replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function csrfToken() {
  return document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/)?.[1] ?? "";
}
