// Administrator page (#/admin/users): users a page at a time with search, create, change
// role, disable and enable, reset the password (a generated one is shown once), delete.
// The page shown refreshes live, like the other admin pages.
import { api } from "./api.js";
import { replaceRows } from "./admin.js";
import { $, announce, badge, el, poller, showError, timeEl } from "./dom.js";

const PAGE = 20;
const POLL_MS = 3000;

const ui = {
  body: $("users-body"),
  empty: $("users-empty"),
  error: $("users-error"),
  prev: $("users-prev"),
  next: $("users-next"),
  secret: $("user-secret"),
  secretText: $("user-secret-text"),
  secretValue: $("user-secret-value"),
  q: $("user-q"),
};

/** Where the pages shown so far started (a keyset list only knows the way forward). */
const state = { ctx: null, q: "", starts: [null], next: null };

export const usersView = {
  name: "users",
  heading: "users-heading",
  show(_params, ctx) {
    state.ctx = ctx;
    hideSecret();
    poll.start();
  },
  hide() {
    poll.stop();
    hideSecret(); // a temporary password is shown once, not kept in the page
  },
};

function showSecret(text, value) {
  ui.secretText.textContent = text;
  ui.secretValue.value = value;
  ui.secret.hidden = false;
  ui.secretValue.select();
  announce(text);
}

function hideSecret() {
  ui.secret.hidden = true;
  ui.secretValue.value = "";
}

async function load(isCurrent = () => true) {
  const cursor = state.starts[state.starts.length - 1];
  try {
    const page = await api.users({ q: state.q, cursor, limit: PAGE });
    if (!isCurrent()) return;
    showError(ui.error, "");
    state.next = page.next;
    ui.empty.hidden = page.items.length > 0;
    replaceRows(ui.body, page.items.map(userRow));
    ui.prev.disabled = state.starts.length < 2;
    ui.next.disabled = !page.next;
  } catch (err) {
    if (isCurrent() && !state.ctx.authLost(err)) showError(ui.error, `Could not load users: ${err.message}`);
  }
}

const poll = poller(load, POLL_MS);
const refresh = () => poll.poke();

function restart() {
  state.starts = [null];
  refresh();
}

ui.next.addEventListener("click", () => {
  if (!state.next) return;
  state.starts.push(state.next);
  refresh();
});
ui.prev.addEventListener("click", () => {
  if (state.starts.length > 1) state.starts.pop();
  refresh();
});
$("user-search").addEventListener("submit", (event) => {
  event.preventDefault();
  state.q = ui.q.value.trim();
  restart();
});

$("user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  hideSecret();
  showError(ui.error, "");
  const username = $("new-username").value.trim();
  const password = $("new-password").value;
  const body = {
    username,
    role: $("new-role").value,
    must_change_password: $("new-must-change").checked,
  };
  if (password) body.password = password;
  try {
    const made = await api.createUser(body);
    $("user-form").reset();
    if (made.password) {
      showSecret(`User ${username} created. Their temporary password (shown once):`, made.password);
    } else {
      announce(`User ${username} created.`);
    }
    restart();
  } catch (err) {
    if (!state.ctx.authLost(err)) showError(ui.error, `Could not create user ${username}: ${err.message}`);
  }
});

/** Run an action on one user; errors go to the page's error line, in words. */
async function act(what, call) {
  showError(ui.error, "");
  try {
    const result = await call();
    announce(`${what}: done.`);
    refresh();
    return result;
  } catch (err) {
    if (!state.ctx.authLost(err)) showError(ui.error, `Could not ${what.toLowerCase()}: ${err.message}`);
    return null;
  }
}

function button(label, testid, user, run, kind = "secondary") {
  return el("button", {
    type: "button",
    class: `${kind} small-button`,
    "aria-label": `${label}: ${user.username}`,
    dataset: { testid, focusKey: `${testid}:${user.username}` },
    onclick: async (e) => {
      const node = e.currentTarget;
      node.disabled = true;
      try {
        await run();
      } finally {
        node.disabled = false;
      }
    },
  }, label);
}

function userRow(u) {
  const name = u.username;
  const self = name === state.ctx.user.username;
  const role = u.role === "admin" ? "user" : "admin";
  const buttons = self ? [] : [
    button(u.role === "admin" ? "Make user" : "Make admin", "role-button", u,
      () => act(`Make ${name} ${role}`, () => api.setRole(name, role))),
    u.disabled
      ? button("Enable", "enable-button", u, () => act(`Enable ${name}`, () => api.enableUser(name)))
      : button("Disable", "disable-button", u, () => {
        if (!confirm(`Disable ${name}? They are signed out everywhere and their running sessions are stopped.`)) return;
        return act(`Disable ${name}`, () => api.disableUser(name));
      }, "danger"),
    button("Reset password", "reset-button", u, async () => {
      if (!confirm(`Reset the password of ${name}? They are signed out and must choose a new one.`)) return;
      const done = await act(`Reset the password of ${name}`, () => api.resetPassword(name));
      if (done?.password) showSecret(`The temporary password of ${name} (shown once):`, done.password);
    }),
    button("Delete", "delete-button", u, () => {
      if (!confirm(`Delete ${name}? All their sessions are stopped, hibernated ones too. This cannot be undone.`)) return;
      return act(`Delete ${name}`, () => api.deleteUser(name));
    }, "danger"),
  ];
  const status = u.disabled ? "disabled" : u.must_change_password ? "must change password" : "enabled";
  const td = (label, ...children) => el("td", { "data-label": label }, ...children);
  return el("tr", { dataset: { testid: "user-row", username: name, role: u.role, state: status } },
    td("User", el("strong", {}, name), self ? el("span", { class: "muted small" }, " (you)") : null),
    td("Role", u.role),
    td("State", badge(status, u.disabled ? "failed" : "running", "user-state")),
    td("Created", timeEl(u.created_at)),
    td("Actions", el("div", { class: "actions tight" }, ...buttons)));
}
