// Private query API client: bearer token from sessionStorage, JSON in and out.

const TOKEN_KEY = "streamfold.apiToken";

export const auth = {
  get() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
  },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage unavailable */ }
  },
};

/** A 4xx/5xx answer: `status`, and `code`/`message`/`field` from the JSON error body. */
export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `request failed (HTTP ${status})`;
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = (body && body.code) || "error";
    this.field = body && body.field;
  }
}

/** Listeners called when the API rejects the token (HTTP 401). */
const unauthorizedListeners = new Set();
export function onUnauthorized(fn) { unauthorizedListeners.add(fn); }

function apiUrl(path, params) {
  // Relative to the page, so the dashboard works under an API Gateway stage path too.
  const url = new URL(`api/${path}`, document.baseURI);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    url.searchParams.set(key, String(value));
  }
  return url;
}

/** GET `api/<path>` with query `params`; resolves to the decoded JSON body. */
export async function get(path, params, { token = auth.get(), signal } = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, params), {
      headers: { Accept: "application/json", Authorization: `Bearer ${token || ""}` },
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, { code: "network", message: "Cannot reach the streamfold API. Check your connection and retry." });
  }
  let body = null;
  const text = await response.text();
  if (text) {
    try { body = JSON.parse(text); } catch { body = null; }
  }
  if (response.status === 401) {
    const error = new ApiError(401, body || { code: "unauthorized", message: "The API token was not accepted." });
    for (const fn of unauthorizedListeners) fn(error);
    throw error;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  if (body === null) throw new ApiError(response.status, { code: "bad_response", message: "The API returned an unreadable response." });
  return body;
}

const enc = encodeURIComponent;

export const api = {
  accounts: (params, opts) => get("accounts", params, opts),
  account: (id, opts) => get(`accounts/${enc(id)}`, null, opts),
  users: (id, params, opts) => get(`accounts/${enc(id)}/users`, params, opts),
  timeline: (id, params, opts) => get(`accounts/${enc(id)}/timeline`, params, opts),
  usage: (id, days, opts) => get(`accounts/${enc(id)}/usage`, { days }, opts),
  score: (id, opts) => get(`accounts/${enc(id)}/score`, null, opts),
  search: (q, limit, opts) => get("search", { q, limit }, opts),
  status: (opts) => get("status", null, opts),
};
