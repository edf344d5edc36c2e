// The signed-in user's own account (#/account): change the password, personal API tokens.
// Also the forced password change after an administrator set the password (a form of its
// own, shown instead of the app until it is done).
import { api } from "./api.js";
import { $, announce, badge, el, showError, timeEl } from "./dom.js";

/** Wire a password form (`prefix`-current/-new/-again/-error); `done()` runs after success. */
function passwordForm(form, prefix, done) {
  const field = (name) => $(`${prefix}-${name}`);
  const error = field("error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(error, "");
    if (field("new").value !== field("again").value) {
      showError(error, "The two new passwords are not the same.");
      field("again").select();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await api.changePassword(field("current").value, field("new").value);
      form.reset();
      announce("Your password was changed.");
      await done();
    } catch (err) {
      showError(error, `Could not change the password: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });
}

/** The forced change: `onChanged()` shows the app, `onLogout()` the sign-in form. */
export function forcedPasswordChange({ onChanged, onLogout }) {
  passwordForm($("password-form"), "forced", onChanged);
  $("forced-logout").addEventListener("click", onLogout);
}

// ---- the account page ------------------------------------------------------------------

const ui = {
  body: $("tokens-body"),
  empty: $("tokens-empty"),
  error: $("tokens-error"),
  fresh: $("token-new"),
  secret: $("token-secret"),
  passwordStatus: $("account-error"),
};

let ctx = null;

export const accountView = {
  name: "account",
  heading: "account-heading",
  show(_params, context) {
    ctx = context;
    ui.fresh.hidden = true;
    ui.secret.value = "";
    showError(ui.error, "");
    loadTokens();
  },
  hide() {
    ui.secret.value = ""; // shown once: not kept around in the page
  },
};

passwordForm($("account-password-form"), "account", async () => {
  showError(ui.passwordStatus, "");
  $("account-current").focus();
});

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(ui.error, "");
  const name = $("token-name").value.trim();
  const days = Number($("token-days").value);
  try {
    const made = await api.createApiToken(name, days);
    $("token-form").reset();
    ui.secret.value = made.token;
    ui.fresh.hidden = false;
    ui.secret.select();
    announce(`Token ${name} created. Copy it now: it is not shown again.`);
    loadTokens();
  } catch (err) {
    if (!ctx.authLost(err)) showError(ui.error, `Could not create the token: ${err.message}`);
  }
});

async function loadTokens() {
  try {
    const tokens = await api.apiTokens();
    ui.empty.hidden = tokens.length > 0;
    ui.body.replaceChildren(...tokens.map(tokenRow));
  } catch (err) {
    if (!ctx.authLost(err)) showError(ui.error, `Could not load your tokens: ${err.message}`);
  }
}

function tokenState(t) {
  if (t.revoked_at) return "revoked";
  return Date.parse(t.expires_at) <= Date.now() ? "expired" : "active";
}

function tokenRow(t) {
  const state = tokenState(t);
  const revoke = state === "active"
    ? el("button", {
      type: "button",
      class: "danger small-button",
      "aria-label": `Revoke token ${t.name}`,
      dataset: { testid: "token-revoke" },
      onclick: async () => {
        if (!confirm(`Revoke token "${t.name}"? Whatever uses it stops working at once.`)) return;
        try {
          await api.revokeApiToken(t.id);
          announce(`Token ${t.name} revoked.`);
          loadTokens();
        } catch (err) {
          if (!ctx.authLost(err)) showError(ui.error, `Could not revoke the token: ${err.message}`);
        }
      },
    }, "Revoke")
    : null;
  const td = (label, ...children) => el("td", { "data-label": label }, ...children);
  return el("tr", { dataset: { testid: "token-row", tokenId: t.id, state } },
    td("Name", el("strong", {}, t.name)),
    td("Created", timeEl(t.created_at)),
    td("Expires", timeEl(t.expires_at)),
    td("Last used", timeEl(t.last_used_at)),
    td("State", badge(state, state === "active" ? "running" : "terminated", "token-state")),
    td("Actions", el("div", { class: "actions tight" }, revoke)));
}
