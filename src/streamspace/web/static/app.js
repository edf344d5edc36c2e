// StreamSpace single-page UI: sign-in, the hash router and the page frame. The pages
// themselves live in home.js (catalog + my sessions), viewer.js, account.js, admin.js and
// users.js.
import { api, ApiError } from "./api.js";
import { $, showError } from "./dom.js";
import { homeView } from "./home.js";
import { viewerView } from "./viewer.js";
import { agentsView, allSessionsView, auditView, commandsView } from "./admin.js";
import { accountView, forcedPasswordChange } from "./account.js";
import { usersView } from "./users.js";
import { groupsView } from "./groups.js";

const ui = {
  loading: $("loading"),
  loginView: $("login-view"),
  loginForm: $("login-form"),
  loginError: $("login-error"),
  loginSubmit: $("login-submit"),
  passwordView: $("password-view"),
  appView: $("app-view"),
  nav: $("main-nav"),
  userBox: $("user-box"),
  currentUser: $("current-user"),
  logout: $("logout-button"),
};

const messageView = {
  name: "message",
  heading: "message-heading",
  show({ title, text }) {
    $("message-heading").textContent = title;
    $("message-text").textContent = text;
  },
  hide() {},
};

const VIEWS = [
  homeView, viewerView, accountView, agentsView, allSessionsView, usersView, commandsView, groupsView,
  auditView, messageView,
];

/** Shared with the views: who is signed in and what to do when the sign-in is lost. */
const ctx = {
  user: null,
  get isAdmin() {
    return this.user?.role === "admin";
  },
  /** A 401 after sign-in means the cookie expired or was revoked: back to the sign-in form. */
  authLost(err) {
    if (err instanceof ApiError && err.status === 401 && ctx.user) {
      showLogin("You were signed out: your sign-in expired or was ended, or your account was disabled.");
      return true;
    }
    return false;
  },
};

let current = null;

// ---- routing ---------------------------------------------------------------------------

/** `[view, params, adminOnly]` for the current `location.hash`. */
function resolve() {
  const path = location.hash.replace(/^#/, "") || "/";
  let m;
  if (path === "/") return [homeView, {}, false];
  if ((m = path.match(/^\/sessions\/([^/]+)\/?$/))) return [viewerView, { id: decodeURIComponent(m[1]) }, false];
  if (path === "/account") return [accountView, {}, false];
  if (path === "/admin/users") return [usersView, {}, true];
  if (path === "/admin/agents") return [agentsView, {}, true];
  if (path === "/admin/sessions") return [allSessionsView, {}, true];
  if (path === "/admin/groups") return [groupsView, {}, true];
  if (path === "/admin/audit") return [auditView, {}, true];
  if ((m = path.match(/^\/admin\/sessions\/([^/]+)\/commands\/?$/))) {
    return [commandsView, { id: decodeURIComponent(m[1]) }, true];
  }
  return [messageView, { title: "Page not found", text: `There is no page at "${path}".` }, false];
}

function render({ focus = true } = {}) {
  if (!ctx.user) return;
  let [view, params, adminOnly] = resolve();
  if (adminOnly && !ctx.isAdmin) {
    [view, params] = [messageView, { title: "Administrators only", text: "This page is only for administrators." }];
  }
  if (current) current.hide();
  current = view;
  for (const v of VIEWS) $(`${v.name}-view`).hidden = v !== view;
  document.body.dataset.view = view.name;
  for (const link of ui.nav.querySelectorAll("a[data-nav]")) {
    if (link.dataset.nav === view.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  view.show(params, ctx);
  if (focus) $(view.heading)?.focus({ preventScroll: true });
}

// Routes are "#/…"; other fragments (the skip link's "#main") are plain in-page anchors.
window.addEventListener("hashchange", () => {
  if (location.hash === "" || location.hash.startsWith("#/")) render();
});
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  $("main").focus();
});

// ---- sign-in ---------------------------------------------------------------------------

/** Show one frame of the page: the sign-in form, the forced password change, or the app. */
function showFrame(frame, user) {
  if (frame !== "app") {
    if (current) current.hide();
    current = null;
    document.body.dataset.view = frame;
  }
  ctx.user = user;
  ui.loading.hidden = true;
  ui.loginView.hidden = frame !== "login";
  ui.passwordView.hidden = frame !== "password";
  for (const node of [ui.appView, ui.nav, ui.userBox]) node.hidden = frame !== "app";
}

function showLogin(message = "") {
  showFrame("login", null);
  ui.loginForm.reset();
  showError(ui.loginError, message);
  $("username").focus();
}

/** After an administrator set the password: only the change is allowed until it is done. */
function showForcedChange(user) {
  showFrame("password", user);
  $("forced-current").focus();
}

function showApp(user, { focus = false } = {}) {
  if (user.must_change_password) return showForcedChange(user);
  showFrame("app", user);
  for (const link of ui.nav.querySelectorAll("[data-admin]")) link.hidden = !ctx.isAdmin;
  ui.currentUser.textContent = `Signed in as ${user.username} (${user.role})`;
  render({ focus });
}

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
    showApp(result.user, { focus: true });
  } catch (err) {
    showError(ui.loginError, err.message);
    $("password").select();
  } finally {
    ui.loginSubmit.disabled = false;
    ui.loginSubmit.textContent = "Sign in";
  }
}

async function onLogout() {
  if (current) current.hide();
  current = null;
  try {
    await api.logout();
  } catch {
    // The cookie may already be gone; either way we show the sign-in form.
  }
  showLogin();
}

ui.loginForm.addEventListener("submit", onLogin);
forcedPasswordChange({
  onChanged: async () => showApp(await api.me(), { focus: true }),
  onLogout,
});
ui.logout.addEventListener("click", onLogout);

(async () => {
  try {
    showApp(await api.me());
  } catch (err) {
    const failed = err instanceof ApiError && err.status !== 401;
    showLogin(failed ? `Could not check your sign-in: ${err.message}` : "");
  }
})();
