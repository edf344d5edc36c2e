// Administrator page: groups and their quotas (#/admin/groups). Create or edit a group with
// its limits and allowed templates, add and remove members by username, delete a group.
// Not polled: typing a member's name must not be wiped by a refresh.
import { api } from "./api.js";
import { $, announce, el, showError } from "./dom.js";
import { actionButton, replaceRows, td } from "./admin.js";

const ui = {
  form: $("group-form"),
  formHeading: $("group-form-heading"),
  name: $("group-name"),
  description: $("group-description"),
  maxRunning: $("group-max-running"),
  maxHibernated: $("group-max-hibernated"),
  maxMinutes: $("group-max-minutes"),
  templates: $("group-templates"),
  submit: $("group-submit"),
  cancel: $("group-cancel"),
  body: $("groups-body"),
  error: $("groups-error"),
  empty: $("groups-empty"),
};

/** The group being edited (its name), or null while the form creates a new one. */
let editing = null;

export const groupsView = {
  name: "groups",
  heading: "groups-heading",
  ctx: null,
  show(_params, ctx) {
    groupsView.ctx = ctx;
    showError(ui.error, "");
    resetForm();
    load();
  },
  hide() {},
};

async function load() {
  try {
    const groups = await api.groups();
    ui.empty.hidden = groups.length > 0;
    replaceRows(ui.body, groups.map(groupRow));
  } catch (err) {
    if (!groupsView.ctx.authLost(err)) showError(ui.error, `Could not load groups: ${err.message}`);
  }
}

/** Run an action; errors go to the page's error line in words. True if it succeeded. */
async function act(what, call) {
  showError(ui.error, "");
  try {
    await call();
    announce(`${what}: done.`);
    await load();
    return true;
  } catch (err) {
    if (!groupsView.ctx.authLost(err)) showError(ui.error, `Could not ${what.toLowerCase()}: ${err.message}`);
    return false;
  }
}

// ---- the form --------------------------------------------------------------------------

const number = (input) => (input.value.trim() === "" ? null : Number(input.value));

function formValues() {
  const names = ui.templates.value.split(",").map((n) => n.trim()).filter(Boolean);
  return {
    description: ui.description.value.trim(),
    max_running_sessions: number(ui.maxRunning),
    max_hibernated_sessions: number(ui.maxHibernated),
    max_session_minutes: number(ui.maxMinutes),
    allowed_templates: names.length ? names : null,
  };
}

function resetForm() {
  editing = null;
  ui.form.reset();
  ui.name.disabled = false;
  ui.formHeading.textContent = "New group";
  ui.submit.textContent = "Create group";
  ui.cancel.hidden = true;
}

function editGroup(g) {
  editing = g.name;
  ui.name.value = g.name;
  ui.name.disabled = true;
  ui.description.value = g.description;
  ui.maxRunning.value = g.max_running_sessions ?? "";
  ui.maxHibernated.value = g.max_hibernated_sessions ?? "";
  ui.maxMinutes.value = g.max_session_minutes ?? "";
  ui.templates.value = (g.allowed_templates || []).join(", ");
  ui.formHeading.textContent = `Edit group ${g.name}`;
  ui.submit.textContent = "Save group";
  ui.cancel.hidden = false;
  ui.description.focus();
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  ui.submit.disabled = true;
  try {
    const values = formValues();
    const done = editing
      ? await act(`Save group ${editing}`, () => api.updateGroup(editing, values))
      : await act(`Create group ${ui.name.value.trim()}`, () =>
          api.createGroup({ name: ui.name.value.trim(), ...values }));
    if (done) resetForm();
  } finally {
    ui.submit.disabled = false;
  }
});
ui.cancel.addEventListener("click", resetForm);

// ---- the table -------------------------------------------------------------------------

const limitText = (value, unit) => (value === null ? "site default" : `${value}${unit}`);

function groupRow(g) {
  const quota = el("ul", { class: "plain small", dataset: { testid: "group-quota" } },
    el("li", {}, `Running: ${limitText(g.max_running_sessions, "")}`),
    el("li", {}, `Hibernated: ${limitText(g.max_hibernated_sessions, "")}`),
    el("li", {}, `Length: ${limitText(g.max_session_minutes, " min")}`));
  const templates = g.allowed_templates === null
    ? el("span", { class: "muted" }, "all")
    : el("span", {}, g.allowed_templates.join(", ") || "none");
  return el("tr", { dataset: { testid: "group-row", group: g.name } },
    td("Group", el("strong", {}, g.name), g.description ? el("div", { class: "muted small" }, g.description) : null),
    td("Quota", quota),
    td("Templates", el("span", { dataset: { testid: "group-templates" } }, templates)),
    td("Members", membersCell(g)),
    td("Actions", el("div", { class: "actions tight" },
      actionButton({
        label: "Edit", ariaLabel: `Edit group ${g.name}`, testid: "edit-group-button",
        focusKey: `edit:${g.name}`, run: async () => editGroup(g),
      }),
      actionButton({
        label: "Delete", ariaLabel: `Delete group ${g.name}`, testid: "delete-group-button",
        focusKey: `delete:${g.name}`, kind: "danger",
        run: () => {
          if (!confirm(`Delete group ${g.name}? Its members keep their accounts and sessions.`)) return;
          return act(`Delete group ${g.name}`, () => api.deleteGroup(g.name));
        },
      }))));
}

function membersCell(g) {
  const list = el("ul", { class: "members", dataset: { testid: "group-members" } },
    ...g.members.map((username) => el("li", { dataset: { testid: "group-member", username } },
      el("span", {}, username),
      actionButton({
        label: "Remove", ariaLabel: `Remove ${username} from group ${g.name}`,
        testid: "remove-member-button", focusKey: `remove:${g.name}:${username}`,
        run: () => act(`Remove ${username} from ${g.name}`, () => api.removeMember(g.name, username)),
      }))));
  if (!g.members.length) list.append(el("li", { class: "muted" }, "no members"));
  const input = el("input", {
    name: "username", required: true, maxlength: "128", autocapitalize: "none", spellcheck: "false",
    "aria-label": `Username to add to group ${g.name}`, placeholder: "username",
    dataset: { testid: "member-username", focusKey: `member:${g.name}` },
  });
  const form = el("form", {
    class: "member-form",
    dataset: { testid: "add-member-form" },
    onsubmit: async (event) => {
      event.preventDefault();
      const username = input.value.trim();
      if (username) await act(`Add ${username} to ${g.name}`, () => api.addMember(g.name, username));
    },
  }, input, el("button", { type: "submit", class: "secondary small-button", dataset: { testid: "add-member-button" } }, "Add member"));
  return el("div", {}, list, form);
}
