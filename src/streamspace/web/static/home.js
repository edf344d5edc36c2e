// Home page (#/): the catalog of applications with Launch, and "my sessions" with live state.
import { api } from "./api.js";
import { $, announce, badge, el, poller, showError, timeEl } from "./dom.js";

const POLL_MS = 2000;
/** Rows a list shows at first, and adds per "Show more". */
export const PAGE = 100;

const ui = {
  catalog: $("catalog"),
  catalogError: $("catalog-error"),
  sessions: $("sessions"),
  sessionsEmpty: $("sessions-empty"),
  sessionsError: $("sessions-error"),
  sessionsMore: $("sessions-more"),
  quota: $("quota-usage"),
};

let ctx = null;
const displayNames = new Map();
export const nameOf = (s) => displayNames.get(s.template) || s.template;

/** Learn the templates' display names once (pages other than home need them too). */
let namesLoaded = null;
export function ensureNames() {
  namesLoaded ??= api.templates().then(
    (templates) => templates.forEach((t) => displayNames.set(t.name, t.display_name || t.name)),
    () => (namesLoaded = null), // try again next time; raw template names meanwhile
  );
  return namesLoaded;
}

const sessionsPoll = poller(refreshSessions, POLL_MS);
/** Sessions shown ("Show more" adds a page). */
let shownSessions = PAGE;
ui.sessionsMore.addEventListener("click", () => {
  shownSessions += PAGE;
  sessionsPoll.poke();
});

export const homeView = {
  name: "home",
  heading: "catalog-heading",
  show(_params, context) {
    ctx = context;
    showError(ui.catalogError, "");
    showError(ui.sessionsError, "");
    loadCatalog();
    sessionsPoll.start();
  },
  hide() {
    sessionsPoll.stop();
  },
};

// ---- catalog ---------------------------------------------------------------------------

async function loadCatalog() {
  try {
    const templates = await api.templates();
    for (const t of templates) displayNames.set(t.name, t.display_name || t.name);
    ui.catalog.replaceChildren(...templates.map(templateCard));
    if (!templates.length) ui.catalog.append(el("li", { class: "muted" }, "No applications are available."));
  } catch (err) {
    if (!ctx.authLost(err)) showError(ui.catalogError, `Could not load applications: ${err.message}`);
  }
}

function templateCard(t) {
  const title = t.display_name || t.name;
  const button = el("button", {
    type: "button",
    "aria-label": `Launch ${title}`,
    dataset: { testid: "launch-button", template: t.name },
    onclick: () => launch(t.name, title, button),
  }, "Launch");
  return el("li", { class: "card template", dataset: { testid: "template-card", template: t.name } },
    el("h3", {}, title),
    t.description ? el("p", {}, t.description) : null,
    el("p", { class: "muted small" }, t.image || t.name),
    button);
}

async function launch(name, title, button) {
  showError(ui.catalogError, "");
  button.disabled = true;
  button.textContent = "Launching…";
  try {
    await api.launch(name);
    announce(`Launching ${title}.`);
    sessionsPoll.poke();
  } catch (err) {
    if (!ctx.authLost(err)) showError(ui.catalogError, `Could not launch ${title}: ${err.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Launch";
  }
}

// ---- my sessions -----------------------------------------------------------------------

async function refreshSessions(isCurrent) {
  try {
    const [{ items, more }, quota] = await Promise.all([
      api.mySessions(shownSessions),
      api.quota().catch(() => null),
    ]);
    if (!isCurrent()) return; // an answer that arrived after leaving the page or a newer poll
    showError(ui.sessionsError, "");
    renderQuota(quota);
    renderSessions(items);
    ui.sessionsMore.hidden = !more;
  } catch (err) {
    if (!isCurrent() || ctx.authLost(err)) return;
    showError(ui.sessionsError, `Could not refresh sessions: ${err.message}`);
  }
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** "2 of 2 sessions running · 0 of 1 hibernated · at most 90 min each" (the user's quota). */
export function quotaText(q) {
  const running = q.max_running_sessions === null
    ? `${plural(q.running_sessions, "session")} running (no limit)`
    : `${q.running_sessions} of ${plural(q.max_running_sessions, "session")} running`;
  const parts = [running];
  if (q.max_hibernated_sessions !== null) {
    parts.push(`${q.hibernated_sessions} of ${q.max_hibernated_sessions} hibernated`);
  }
  if (q.max_session_minutes !== null) parts.push(`at most ${q.max_session_minutes} min each`);
  return parts.join(" · ");
}

function renderQuota(quota) {
  ui.quota.hidden = !quota;
  if (!quota) return;
  const full = quota.max_running_sessions !== null && quota.running_sessions >= quota.max_running_sessions;
  ui.quota.textContent = `Your quota: ${quotaText(quota)}`;
  ui.quota.dataset.full = String(full);
}

export const ACTIONS = {
  running: ["hibernate", "stop"],
  hibernated: ["wake", "stop"],
};
export const LABELS = { stop: "Stop", hibernate: "Hibernate", wake: "Wake" };

function renderSessions(list) {
  list.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  const existing = new Map([...ui.sessions.children].map((li) => [li.dataset.sessionId, li]));
  let prev = null;
  for (const s of list) {
    let li = existing.get(s.id);
    existing.delete(s.id);
    if (!li) li = el("li", { class: "card session", dataset: { testid: "session-row", sessionId: s.id } });
    const sig = JSON.stringify([s.state, s.vnc, s.termination_reason, s.status_message, s.active_viewers]);
    if (li.dataset.sig !== sig) {
      if (li.dataset.state && li.dataset.state !== s.state) announce(`${nameOf(s)} is now ${s.state}.`);
      li.dataset.sig = sig;
      fillSessionRow(li, s);
    }
    const want = prev ? prev.nextElementSibling : ui.sessions.firstElementChild;
    if (want !== li) ui.sessions.insertBefore(li, want);
    prev = li;
  }
  for (const li of existing.values()) li.remove();
  ui.sessionsEmpty.hidden = list.length > 0;
}

function vncAddress(vnc) {
  if (vnc.unix) return `unix:${vnc.unix}`;  // a local session's socket, on the agent's host
  const host = vnc.host.includes(":") ? `[${vnc.host}]` : vnc.host;
  return `${host}:${vnc.port}`;
}

function fillSessionRow(li, s) {
  // Keep keyboard focus on the same action across re-renders.
  const focused = li.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  li.dataset.state = s.state;
  const parts = [
    el("div", { class: "session-head" },
      el("h3", {}, nameOf(s)),
      badge(s.state, s.state, "session-state")),
    el("p", { class: "muted small" }, `Session ${s.id} · started `, timeEl(s.created_at),
      s.active_viewers ? ` · ${s.active_viewers} viewer${s.active_viewers === 1 ? "" : "s"} open` : null),
  ];
  if (s.state === "running" && s.vnc) {
    parts.push(el("p", { class: "vnc muted small", dataset: { testid: "vnc-endpoint" } },
      "VNC: ", el("code", { dataset: { testid: "vnc-address" } }, vncAddress(s.vnc))));
  }
  if (s.status_message && (s.state === "pending" || s.state === "waking")) {
    // How far the agent got (Kubernetes: scheduled, pulling image, started, ready).
    parts.push(el("p", { class: "muted small", dataset: { testid: "status-message" } }, s.status_message));
  }
  if (s.termination_reason && (s.state === "failed" || s.state === "terminated")) {
    parts.push(el("p", { class: s.state === "failed" ? "error" : "muted small", dataset: { testid: "termination-reason" } },
      `Reason: ${s.termination_reason}`));
  }
  const buttons = [];
  if (s.state === "running") {
    buttons.push(el("a", {
      class: "button",
      href: `#/sessions/${encodeURIComponent(s.id)}`,
      "aria-label": `Open ${nameOf(s)} session ${s.id} in the browser`,
      dataset: { testid: "open-button", action: "open" },
    }, "Open"));
  }
  for (const action of ACTIONS[s.state] || []) {
    buttons.push(el("button", {
      type: "button",
      class: action === "stop" ? "danger" : "secondary",
      "aria-label": `${LABELS[action]} ${nameOf(s)} session ${s.id}`,
      dataset: { testid: `${action}-button`, action },
      onclick: (e) => runAction(action, s, e.currentTarget),
    }, LABELS[action]));
  }
  if (buttons.length) parts.push(el("div", { class: "actions" }, ...buttons));
  li.replaceChildren(...parts);
  if (focused) li.querySelector(`[data-action="${focused}"]`)?.focus();
}

async function runAction(action, s, button) {
  const buttons = [...button.parentElement.querySelectorAll("button")];
  buttons.forEach((b) => (b.disabled = true));
  showError(ui.sessionsError, "");
  try {
    await api[action](s.id);
    announce(`${LABELS[action]} requested for ${nameOf(s)}.`);
    sessionsPoll.poke();
  } catch (err) {
    if (!ctx.authLost(err)) showError(ui.sessionsError, `Could not ${action} ${nameOf(s)}: ${err.message}`);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}
