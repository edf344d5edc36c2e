// Thin client for the StreamSpace JSON API. Authentication rides on the httpOnly
// `streamspace_token` cookie (credentials: "same-origin"); the token is never stored in JS.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** The words of an error body (`{"detail": "a sentence", ...}`, the API's one error shape). */
export function errorMessage(status, body) {
  const detail = body && typeof body === "object" ? body.detail : undefined;
  if (typeof detail === "string" && detail) return detail;
  // Not the API's answer (a proxy's error page, say).
  return `The request failed (HTTP ${status}).`;
}

/** The `cursor` of a `Link: <…?cursor=…>; rel="next"` header, or null on the last page. */
export function nextCursor(link) {
  const match = /<([^>]*)>;\s*rel="next"/.exec(link || "");
  return match ? new URL(match[1], location.href).searchParams.get("cursor") : null;
}

/** The answer's JSON; `withLink`: `{items, next}`, `next` the cursor of the next page (or null). */
async function request(method, path, body, { withLink = false } = {}) {
  const { data, next } = await send(method, `/api/v1${path}`, body);
  if (!withLink) return data;
  return { items: data, next: next ? new URL(next, location.href).searchParams.get("cursor") : null };
}

/** `{data, next}`: the answer's JSON, and the URL of the next page its `Link` names (or null). */
async function send(method, url, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch {
    throw new ApiError(0, "Cannot reach the StreamSpace server. Check your connection.");
  }
  const text = resp.status === 204 ? "" : await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) throw new ApiError(resp.status, errorMessage(resp.status, data));
  return { data, next: nextLink(resp.headers.get("Link")) };
}

/** The `rel="next"` URL of a `Link` header (RFC 8288), or null. */
export function nextLink(header) {
  for (const part of (header || "").split(",")) {
    const m = part.match(/^\s*<([^>]*)>\s*;(.*)$/);
    if (m && /(^|;)\s*rel="?next"?\s*(;|$)/.test(m[2])) return m[1];
  }
  return null;
}

/**
 * The first `count` rows of a paged list, following its `next` links: `{items, more}`, `more`
 * true when the list goes on (the page shows a "Load more" button then).
 */
async function rows(path, count = 5000) {
  const items = [];
  const sep = path.includes("?") ? "&" : "?";
  let url = `/api/v1${path}${sep}limit=${Math.min(Math.max(count, 1), 500)}`;
  while (url && items.length < count) {
    const { data, next } = await send("GET", url);
    items.push(...data);
    url = next;
  }
  return { items: items.slice(0, count), more: Boolean(url) || items.length > count };
}

/** Every row of a list (the catalog, the agents): all its pages. */
async function all(path) {
  return (await rows(path)).items;
}

const userPath = (name, action = "") =>
  `/users/${encodeURIComponent(name)}${action ? `/${action}` : ""}`;

const sessionPath = (id, action = "") =>
  `/sessions/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;

export const api = {
  me: () => request("GET", "/auth/me"),
  login: (username, password) => request("POST", "/auth/login", { username, password }),
  logout: () => request("POST", "/auth/logout"),
  templates: () => all("/templates"),
  /** `{items, more}`: the newest `count` sessions (an administrator's: everybody's). */
  sessions: (count) => rows("/sessions", count),
  /** `{items, more}`: the newest `count` of the user's own sessions. */
  mySessions: (count) => rows("/sessions?mine=true", count),
  launch: (template) => request("POST", "/sessions", { template }),
  stop: (id) => request("DELETE", sessionPath(id)),
  hibernate: (id) => request("POST", sessionPath(id, "hibernate")),
  wake: (id) => request("POST", sessionPath(id, "wake")),
  session: (id) => request("GET", sessionPath(id)),
  /** The owner is still there: the idle timeout starts again. */
  keep: (id) => request("POST", sessionPath(id, "keep")),
  events: (id) => request("GET", sessionPath(id, "events")),
  /** A one-time token for the VNC WebSocket: `{token, expires_in, url}`. */
  connect: (id) => request("POST", sessionPath(id, "connect")),
  agents: () => all("/agents"),
  approveAgent: (id) => request("POST", `/agents/${encodeURIComponent(id)}/approve`),
  revokeAgent: (id) => request("POST", `/agents/${encodeURIComponent(id)}/revoke`),
  changePassword: (current_password, new_password) =>
    request("POST", "/auth/password", { current_password, new_password }),
  apiTokens: () => request("GET", "/auth/tokens"),
  createApiToken: (name, expires_in_days) => request("POST", "/auth/tokens", { name, expires_in_days }),
  revokeApiToken: (id) => request("DELETE", `/auth/tokens/${encodeURIComponent(id)}`),
  /** A page of users: `{items, next}` (`next`: the cursor of the next page, or null). */
  users: ({ q = "", cursor = null, limit = 20 } = {}) => {
    const params = new URLSearchParams({ limit: String(limit) });
    if (q) params.set("q", q);
    if (cursor) params.set("cursor", cursor);
    return request("GET", `/users?${params}`, undefined, { withLink: true });
  },
  createUser: (body) => request("POST", "/users", body),
  setRole: (name, role) => request("POST", userPath(name, "role"), { role }),
  disableUser: (name) => request("POST", userPath(name, "disable")),
  enableUser: (name) => request("POST", userPath(name, "enable")),
  resetPassword: (name, password) =>
    request("POST", userPath(name, "reset-password"), password ? { password } : {}),
  deleteUser: (name) => request("DELETE", userPath(name)),
  quota: () => request("GET", "/me/quota"),
  groups: () => all("/groups"),
  createGroup: (group) => request("POST", "/groups", group),
  updateGroup: (name, changes) => request("PATCH", `/groups/${encodeURIComponent(name)}`, changes),
  deleteGroup: (name) => request("DELETE", `/groups/${encodeURIComponent(name)}`),
  addMember: (name, username) =>
    request("PUT", `/groups/${encodeURIComponent(name)}/members/${encodeURIComponent(username)}`),
  removeMember: (name, username) =>
    request("DELETE", `/groups/${encodeURIComponent(name)}/members/${encodeURIComponent(username)}`),
  commands: (sessionId) => all(`/commands?session_id=${encodeURIComponent(sessionId)}`),
  /** `{items, more}`: the newest `count` audit events matching `filters` (names: the API's). */
  audit: (filters, count) => {
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    return rows(`/audit${query.size ? `?${query}` : ""}`, count);
  },
};

/**
 * The WebSocket URL of a session's VNC tunnel from a `connect` answer: an absolute ws(s)://
 * URL is used as given; a path (or nothing) is resolved against this page's origin, with
 * wss:// when the page came over https.
 */
export function vncSocketUrl(sessionId, grant) {
  let raw = grant && typeof grant.url === "string" ? grant.url : "";
  if (!raw) {
    raw = `/api/v1${sessionPath(sessionId, "vnc")}?token=${encodeURIComponent(grant.token)}`;
  }
  const url = new URL(raw, location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (grant.token && !url.searchParams.has("token")) url.searchParams.set("token", grant.token);
  return url.href;
}
