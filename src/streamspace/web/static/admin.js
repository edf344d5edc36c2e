// Administrator pages: agents (#/admin/agents), all sessions (#/admin/sessions), the
// command history of one session (#/admin/sessions/<id>/commands) and the audit log
// (#/admin/audit). All refresh live.
import { api } from "./api.js";
import { $, ageText, announce, badge, el, poller, showError, timeEl } from "./dom.js";
import { ACTIONS, LABELS, PAGE, ensureNames, nameOf } from "./home.js";

const POLL_MS = 3000;

/** A table cell with the column name as its label (shown on narrow screens, see style.css). */
export const td = (label, ...children) => el("td", { "data-label": label }, ...children);

/**
 * Replace a table body's rows, keeping keyboard focus on the control with the same
 * `data-focus-key` (rows are rebuilt on every refresh).
 */
export function replaceRows(tbody, rows) {
  const key = tbody.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
  tbody.replaceChildren(...rows);
  if (key) tbody.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
}

export function actionButton({ label, ariaLabel, testid, focusKey, kind = "secondary", run }) {
  return el("button", {
    type: "button",
    class: `${kind} small-button`,
    "aria-label": ariaLabel,
    dataset: { testid, focusKey },
    onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      try {
        await run();
      } finally {
        button.disabled = false;
      }
    },
  }, label);
}

/** A view that polls `load(isCurrent)` while shown. */
function polledView(name, heading, load, onShow = () => {}) {
  const poll = poller(load, POLL_MS);
  const view = {
    name,
    heading,
    ctx: null,
    params: {},
    show(params, ctx) {
      view.ctx = ctx;
      view.params = params;
      onShow(params);
      poll.start();
    },
    hide() {
      poll.stop();
    },
    refresh: () => poll.poke(),
  };
  return view;
}

/** Run an admin action; errors go to `errorNode` in words. */
async function act(view, errorNode, what, call) {
  showError(errorNode, "");
  try {
    await call();
    announce(`${what}: done.`);
    view.refresh();
  } catch (err) {
    if (!view.ctx.authLost(err)) showError(errorNode, `Could not ${what.toLowerCase()}: ${err.message}`);
  }
}

// ---- agents ----------------------------------------------------------------------------

const agentsUi = { body: $("agents-body"), error: $("agents-error"), empty: $("agents-empty") };

export const agentsView = polledView("agents", "agents-heading", async (isCurrent) => {
  try {
    const agents = await api.agents();
    if (!isCurrent()) return;
    showError(agentsUi.error, "");
    agentsUi.empty.hidden = agents.length > 0;
    const now = Date.now();
    agents.sort((a, b) => a.agent_id.localeCompare(b.agent_id));
    replaceRows(agentsUi.body, agents.map((a) => agentRow(a, now)));
  } catch (err) {
    if (isCurrent() && !agentsView.ctx.authLost(err)) showError(agentsUi.error, `Could not load agents: ${err.message}`);
  }
});

function agentRow(a, now) {
  const id = a.agent_id;
  const buttons = [];
  if (a.approval !== "approved") {
    buttons.push(actionButton({
      label: "Approve", ariaLabel: `Approve agent ${id}`, testid: "approve-button", focusKey: `approve:${id}`,
      kind: "primary",
      run: () => act(agentsView, agentsUi.error, `Approve agent ${id}`, () => api.approveAgent(id)),
    }));
  }
  if (a.approval !== "revoked") {
    buttons.push(actionButton({
      label: "Revoke", ariaLabel: `Revoke agent ${id}`, testid: "revoke-button", focusKey: `revoke:${id}`,
      kind: "danger",
      run: () => {
        if (!confirm(`Revoke agent ${id}? It is disconnected and may not connect again until approved.`)) return;
        return act(agentsView, agentsUi.error, `Revoke agent ${id}`, () => api.revokeAgent(id));
      },
    }));
  }
  const beat = a.last_heartbeat
    ? el("time", { datetime: a.last_heartbeat, title: new Date(a.last_heartbeat).toLocaleString() }, ageText(a.last_heartbeat, now))
    : el("span", { class: "muted" }, "never");
  return el("tr", { dataset: { testid: "agent-row", agentId: id, status: a.status, approval: a.approval } },
    td("Agent", el("strong", {}, id), el("div", { class: "muted small" }, [a.platform, a.version].filter(Boolean).join(" · "))),
    td("Status", badge(a.status, a.status, "agent-status")),
    td("Replica", a.replica || el("span", { class: "muted" }, "—")),
    td("Last heartbeat", el("span", { dataset: { testid: "agent-heartbeat" } }, beat)),
    td("Sessions", el("span", { dataset: { testid: "agent-sessions" } }, `${a.active_sessions} / ${a.capacity}`)),
    td("Approval", badge(a.approval, a.approval, "agent-approval")),
    td("Actions", el("div", { class: "actions tight" }, ...buttons)));
}

// ---- all sessions ----------------------------------------------------------------------

const sessionsUi = {
  body: $("all-sessions-body"),
  error: $("all-sessions-error"),
  empty: $("all-sessions-empty"),
  more: $("all-sessions-more"),
  shown: PAGE,
};

export const allSessionsView = polledView("all-sessions", "all-sessions-heading", async (isCurrent) => {
  try {
    const [{ items: list, more }] = await Promise.all([api.sessions(sessionsUi.shown), ensureNames()]);
    if (!isCurrent()) return;
    showError(sessionsUi.error, "");
    sessionsUi.empty.hidden = list.length > 0;
    sessionsUi.more.hidden = !more;
    replaceRows(sessionsUi.body, list.map(sessionRow));
  } catch (err) {
    if (isCurrent() && !allSessionsView.ctx.authLost(err)) showError(sessionsUi.error, `Could not load sessions: ${err.message}`);
  }
});

sessionsUi.more.addEventListener("click", () => {
  sessionsUi.shown += PAGE;
  allSessionsView.refresh();
});

function sessionRow(s) {
  const links = [
    el("a", {
      class: "button secondary small-button",
      href: `#/admin/sessions/${encodeURIComponent(s.id)}/commands`,
      "aria-label": `Command history of session ${s.id}`,
      dataset: { testid: "commands-link", focusKey: `commands:${s.id}` },
    }, "Commands"),
  ];
  if (s.state === "running" && s.owner === allSessionsView.ctx.user.username) {
    links.unshift(el("a", {
      class: "button small-button",
      href: `#/sessions/${encodeURIComponent(s.id)}`,
      "aria-label": `Open session ${s.id}`,
      dataset: { testid: "open-button", focusKey: `open:${s.id}` },
    }, "Open"));
  }
  if ((ACTIONS[s.state] || []).includes("stop")) {
    links.push(actionButton({
      label: LABELS.stop, ariaLabel: `Stop session ${s.id} of ${s.owner}`, testid: "stop-button",
      focusKey: `stop:${s.id}`, kind: "danger",
      run: () => act(allSessionsView, sessionsUi.error, `Stop session ${s.id}`, () => api.stop(s.id)),
    }));
  }
  return el("tr", { dataset: { testid: "all-session-row", sessionId: s.id, state: s.state } },
    td("Session", el("code", { class: "id" }, s.id)),
    td("Owner", el("span", { dataset: { testid: "session-owner" } }, s.owner)),
    td("Application", nameOf(s)),
    td("State", badge(s.state, s.state, "session-state"),
      s.termination_reason ? el("div", { class: "muted small" }, s.termination_reason) : null),
    td("Agent", s.agent_id || el("span", { class: "muted" }, "—")),
    td("Started", timeEl(s.created_at)),
    td("Last activity", s.last_activity ? ageText(s.last_activity) : el("span", { class: "muted" }, "—")),
    td("Viewers", el("span", { dataset: { testid: "session-viewers" } }, String(s.active_viewers ?? 0))),
    td("Actions", el("div", { class: "actions tight" }, ...links)));
}

// ---- command history -------------------------------------------------------------------

const commandsUi = {
  heading: $("commands-heading"),
  summary: $("commands-summary"),
  body: $("commands-body"),
  error: $("commands-error"),
  empty: $("commands-empty"),
};

export const commandsView = polledView("commands", "commands-heading", async (isCurrent) => {
  const id = commandsView.params.id;
  try {
    const [commands, session] = await Promise.all([
      api.commands(id),
      api.session(id).catch(() => null),
      ensureNames(),
    ]);
    if (!isCurrent()) return;
    showError(commandsUi.error, "");
    commandsUi.summary.textContent = session
      ? `${nameOf(session)} · owner ${session.owner} · ${session.state} · agent ${session.agent_id || "none"}`
      : "";
    commandsUi.empty.hidden = commands.length > 0;
    commands.sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
    replaceRows(commandsUi.body, commands.map(commandRow));
  } catch (err) {
    if (isCurrent() && !commandsView.ctx.authLost(err)) showError(commandsUi.error, `Could not load the commands: ${err.message}`);
  }
}, ({ id }) => {
  commandsUi.heading.textContent = `Command history of session ${id}`;
  commandsUi.summary.textContent = "";
  commandsUi.empty.hidden = true;
  commandsUi.body.replaceChildren();
});

function commandRow(c) {
  return el("tr", { dataset: { testid: "command-row", commandId: c.command_id, status: c.status, action: c.action } },
    td("Action", el("strong", {}, c.action.replaceAll("_", " ")), el("div", { class: "muted small" }, c.command_id),
      c.reason ? el("div", { class: "small", dataset: { testid: "command-reason" } }, `by policy: ${c.reason}`) : null),
    td("Status", badge(c.status, c.status, "command-status")),
    td("Attempts", String(c.attempts)),
    td("Created", timeEl(c.created_at)),
    td("Acknowledged", timeEl(c.acknowledged_at)),
    td("Completed", timeEl(c.completed_at)),
    td("Error", c.error_message ? el("span", { class: "error-text" }, c.error_message) : el("span", { class: "muted" }, "—")));
}

// ---- audit log -------------------------------------------------------------------------

const auditUi = {
  form: $("audit-filters"),
  body: $("audit-body"),
  error: $("audit-error"),
  empty: $("audit-empty"),
  more: $("audit-more"),
  shown: PAGE,
  filters: {},
};

/** The form's filters as the API names them (local times sent as UTC instants). */
function auditFilters() {
  const filters = {};
  for (const [name, value] of new FormData(auditUi.form)) {
    const text = String(value).trim();
    if (!text) continue;
    filters[name] = name === "since" || name === "until" ? new Date(text).toISOString() : text;
  }
  return filters;
}

export const auditView = polledView("audit", "audit-heading", async (isCurrent) => {
  try {
    const { items, more } = await api.audit(auditUi.filters, auditUi.shown);
    if (!isCurrent()) return;
    showError(auditUi.error, "");
    auditUi.empty.hidden = items.length > 0;
    auditUi.more.hidden = !more;
    replaceRows(auditUi.body, items.map(auditRow));
  } catch (err) {
    if (isCurrent() && !auditView.ctx.authLost(err)) showError(auditUi.error, `Could not load the audit log: ${err.message}`);
  }
});

auditUi.form.addEventListener("submit", (e) => {
  e.preventDefault();
  auditUi.filters = auditFilters();
  auditUi.shown = PAGE;
  auditView.refresh();
});
auditUi.more.addEventListener("click", () => {
  auditUi.shown += PAGE;
  auditView.refresh();
});

function auditRow(e) {
  const target = e.target_kind ? `${e.target_kind} ${e.target_id ?? ""}`.trim() : "";
  const detail = Object.entries(e.detail || {})
    .filter(([, v]) => v !== null && v !== "")
    .map(([k, v]) => `${k}: ${v}`)
    .join(" · ");
  return el("tr", { dataset: { testid: "audit-row", action: e.action, actor: e.actor } },
    td("When", timeEl(e.created_at)),
    td("Who", el("span", { dataset: { testid: "audit-actor-cell" } }, e.actor)),
    td("Action", el("strong", { dataset: { testid: "audit-action-cell" } }, e.action)),
    td("Target", target ? el("code", { class: "id" }, target) : el("span", { class: "muted" }, "—")),
    td("Address", e.address || el("span", { class: "muted" }, "—")),
    td("Detail", detail ? el("span", { class: "small" }, detail) : el("span", { class: "muted" }, "—")));
}
