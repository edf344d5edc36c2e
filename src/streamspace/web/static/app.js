// StreamSpace single-page UI: sign in, launch templates, manage my sessions.
import { api, ApiError } from "./api.js";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

const ui = {
  loading: $("loading"),
  loginView: $("login-view"),
  loginForm: $("login-form"),
  loginError: $("login-error"),
  loginSubmit: $("login-submit"),
  appView: $("app-view"),
  userBox: $("user-box"),
  currentUser: $("current-user"),
  logout: $("logout-button"),
  catalog: $("catalog"),
  catalogError: $("catalog-error"),
  sessions: $("sessions"),
  sessionsEmpty: $("sessions-empty"),
  sessionsError: $("sessions-error"),
  announcer: $("announcer"),
};

const state = { user: null, displayNames: new Map(), pollGen: 0, pollTimer: 0, seq: 0, shown: 0 };

/** Create an element: el("button", {type: "button", dataset: {x: 1}}, "text", child). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

function announce(message) {
  ui.announcer.textContent = message;
}

// ---- views -----------------------------------------------------------------------------

function showLogin(message = "") {
  stopPolling();
  state.user = null;
  ui.loading.hidden = true;
  ui.appView.hidden = true;
  ui.userBox.hidden = true;
  ui.catalog.replaceChildren();
  ui.sessions.replaceChildren();
  ui.loginView.hidden = false;
  ui.loginForm.reset();
  showError(ui.loginError, message);
  $("username").focus();
}

function showApp(user) {
  state.user = user;
  ui.loading.hidden = true;
  ui.loginView.hidden = true;
  ui.appView.hidden = false;
  ui.userBox.hidden = false;
  ui.currentUser.textContent = `Signed in as ${user.username} (${user.role})`;
  showError(ui.catalogError, "");
  showError(ui.sessionsError, "");
  loadCatalog();
  startPolling();
}

/** A 401 anywhere after sign-in means the cookie expired or was revoked. */
function handleAuthLoss(err) {
  if (err instanceof ApiError && err.status === 401 && state.user) {
    showLogin("Your sign-in has expired. Please sign in again.");
    return true;
  }
  return false;
}

// ---- auth ------------------------------------------------------------------------------

async function onLogin(event) {
  event.preventDefault();
  const username = $("username").value.trim();
  const password = $("password").value;
  showError(ui.loginError, "");
  ui.loginSubmit.disabled = true;
  ui.loginSubmit.textContent = "Signing in…";
  try {
    const result = await api.login(username, password);
    ui.loginForm.reset();
    showApp(result.user);
    $("catalog-heading").focus();
  } catch (err) {
    showError(ui.loginError, err.message);
    $("password").select();
  } finally {
    ui.loginSubmit.disabled = false;
    ui.loginSubmit.textContent = "Sign in";
  }
}

async function onLogout() {
  stopPolling();
  try {
    await api.logout();
  } catch {
    // The cookie may already be gone; either way we show the sign-in form.
  }
  showLogin();
}

// ---- catalog ---------------------------------------------------------------------------

async function loadCatalog() {
  try {
    const templates = await api.templates();
    state.displayNames = new Map(templates.map((t) => [t.name, t.display_name || t.name]));
    ui.catalog.replaceChildren(...templates.map(templateCard));
    if (!templates.length) ui.catalog.append(el("li", { class: "muted" }, "No applications are available."));
  } catch (err) {
    if (!handleAuthLoss(err)) showError(ui.catalogError, `Could not load applications: ${err.message}`);
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
    await refreshSessions(state.pollGen);
  } catch (err) {
    if (!handleAuthLoss(err)) showError(ui.catalogError, `Could not launch ${title}: ${err.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Launch";
  }
}

// ---- sessions --------------------------------------------------------------------------

function startPolling() {
  const gen = ++state.pollGen;
  const tick = async () => {
    if (gen !== state.pollGen) return;
    await refreshSessions(gen);
    if (gen === state.pollGen) state.pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function stopPolling() {
  state.pollGen++;
  clearTimeout(state.pollTimer);
}

async function refreshSessions(gen) {
  const seq = ++state.seq;
  try {
    const list = await api.sessions();
    // Drop answers that arrive after logout or after a newer answer was already shown.
    if (gen !== state.pollGen || seq < state.shown) return;
    state.shown = seq;
    showError(ui.sessionsError, "");
    renderSessions(list);
  } catch (err) {
    if (gen !== state.pollGen || handleAuthLoss(err)) return;
    showError(ui.sessionsError, `Could not refresh sessions: ${err.message}`);
  }
}

const ACTIONS = {
  running: ["hibernate", "stop"],
  hibernated: ["wake", "stop"],
};
const LABELS = { stop: "Stop", hibernate: "Hibernate", wake: "Wake" };

function renderSessions(list) {
  list.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  const existing = new Map([...ui.sessions.children].map((li) => [li.dataset.sessionId, li]));
  let prev = null;
  for (const s of list) {
    let li = existing.get(s.id);
    existing.delete(s.id);
    if (!li) li = el("li", { class: "card session", dataset: { testid: "session-row", sessionId: s.id } });
    const sig = JSON.stringify([s.state, s.vnc, s.termination_reason]);
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

const nameOf = (s) => state.displayNames.get(s.template) || s.template;

function vncAddress(vnc) {
  const host = vnc.host.includes(":") ? `[${vnc.host}]` : vnc.host;
  return `${host}:${vnc.port}`;
}

function fillSessionRow(li, s) {
  // Keep keyboard focus on the same action across re-renders.
  const focused = li.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  li.dataset.state = s.state;
  const created = new Date(s.created_at);
  const parts = [
    el("div", { class: "session-head" },
      el("h3", {}, nameOf(s)),
      el("span", { class: `badge state-${s.state}`, dataset: { testid: "session-state" } }, s.state)),
    el("p", { class: "muted small" },
      `Session ${s.id} · started `,
      el("time", { datetime: s.created_at }, isNaN(created) ? s.created_at : created.toLocaleString())),
  ];
  if (s.state === "running" && s.vnc) {
    parts.push(el("p", { class: "vnc", dataset: { testid: "vnc-endpoint" } },
      "VNC: ", el("code", { dataset: { testid: "vnc-address" } }, vncAddress(s.vnc))));
    parts.push(el("p", { class: "muted small" }, "Connect to this address with a VNC client."));
  }
  if (s.termination_reason && (s.state === "failed" || s.state === "terminated")) {
    parts.push(el("p", { class: s.state === "failed" ? "error" : "muted small", dataset: { testid: "termination-reason" } },
      `Reason: ${s.termination_reason}`));
  }
  const actions = (ACTIONS[s.state] || []).map((action) => el("button", {
    type: "button",
    class: action === "stop" ? "danger" : "secondary",
    "aria-label": `${LABELS[action]} ${nameOf(s)} session ${s.id}`,
    dataset: { testid: `${action}-button`, action },
    onclick: (e) => runAction(action, s, e.currentTarget),
  }, LABELS[action]));
  if (actions.length) parts.push(el("div", { class: "actions" }, ...actions));
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
    await refreshSessions(state.pollGen);
  } catch (err) {
    if (!handleAuthLoss(err)) showError(ui.sessionsError, `Could not ${action} ${nameOf(s)}: ${err.message}`);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

// ---- start -----------------------------------------------------------------------------

ui.loginForm.addEventListener("submit", onLogin);
ui.logout.addEventListener("click", onLogout);

(async () => {
  try {
    showApp(await api.me());
  } catch (err) {
    const failed = err instanceof ApiError && err.status !== 401;
    showLogin(failed ? `Could not check your sign-in: ${err.message}` : "");
  }
})();
