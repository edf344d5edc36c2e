// The session viewer (#/sessions/<id>): noVNC's RFB client over the control plane's VNC
// tunnel, with fullscreen, clipboard both ways, scaling/resizing and errors in words.
import { api, ApiError, vncSocketUrl } from "./api.js";
import { $, announce } from "./dom.js";
import { closeMessage, stateMessage } from "./viewer-text.js";
import { ensureNames, nameOf } from "./home.js";
import { clipboardPanel } from "./viewer-clipboard.js";

const NOVNC_URL = "/vendor/novnc/core/rfb.js";
const WAIT_POLL_MS = 2000;
// While connected, how often the viewer looks at the session's idle deadline (at most).
const POLICY_POLL_MS = 10000;

const ui = {
  view: $("viewer-view"),
  heading: $("viewer-heading"),
  state: $("viewer-state"),
  status: $("viewer-status"),
  problem: $("viewer-problem"),
  problemText: $("viewer-problem-text"),
  reconnect: $("viewer-reconnect"),
  wake: $("viewer-wake"),
  fullscreen: $("viewer-fullscreen"),
  exitFullscreen: $("viewer-exit-fullscreen"),
  disconnect: $("viewer-disconnect"),
  scale: $("viewer-scale"),
  resize: $("viewer-resize"),
  stage: $("viewer-stage"),
  screen: $("viewer-screen"),
  idle: $("viewer-idle"),
  idleText: $("viewer-idle-text"),
  keep: $("viewer-keep"),
};

// One "visit" of the page: every async step checks it is still the current one.
const v = { gen: 0, id: null, ctx: null, rfb: null, waitTimer: 0, policyTimer: 0, countdown: 0 };
let rfbModule = null;
const clipboard = clipboardPanel(() => v.rfb, (text) => setStatus(text));

export const viewerView = {
  name: "viewer",
  heading: "viewer-heading",
  show({ id }, ctx) {
    teardown();
    v.gen++;
    v.id = id;
    v.ctx = ctx;
    ui.heading.textContent = `Session ${id}`;
    document.title = "Session – StreamSpace";
    ui.state.hidden = true;
    clipboard.reset();
    setProblem("");
    setStatus("Checking the session…");
    start(v.gen);
  },
  hide() {
    teardown();
    v.gen++;
    document.title = "StreamSpace";
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  },
};

function teardown() {
  clearTimeout(v.waitTimer);
  hideIdleWarning();
  const rfb = v.rfb;
  v.rfb = null;
  setConnected(false);
  if (rfb) {
    rfb.disconnectedByUs = true;
    rfb.disconnect();
  }
  ui.screen.replaceChildren();
  setLive(false);
}

/** The desktop, its tools and the clipboard show only while there is a connection. */
function setLive(live) {
  ui.view.dataset.live = String(live);
}

const current = (gen) => gen === v.gen;

function setStatus(text) {
  ui.status.textContent = text;
}

/** Show a problem in words, with the buttons that can fix it. */
function setProblem(text, { reconnect = false, wake = false } = {}) {
  ui.problemText.textContent = text;
  ui.problem.hidden = !text;
  ui.reconnect.hidden = !reconnect;
  ui.wake.hidden = !wake;
}

function setConnected(connected) {
  ui.disconnect.disabled = !connected;
  clipboard.enable(connected);
}

function showSession(s) {
  const name = nameOf(s);
  ui.heading.textContent = `${name} · ${s.id}`;
  document.title = `${name} – StreamSpace`;
  ui.state.textContent = s.state;
  ui.state.className = `badge state-${s.state}`;
  ui.state.hidden = false;
}

// ---- connecting ------------------------------------------------------------------------

/** Look at the session; connect when it runs, else explain and wait for it to run. */
async function start(gen) {
  clearTimeout(v.waitTimer);
  let s;
  try {
    [s] = await Promise.all([api.session(v.id), ensureNames()]);
  } catch (err) {
    if (!current(gen) || v.ctx.authLost(err)) return;
    return failBeforeConnect(gen, err);
  }
  if (!current(gen)) return;
  showSession(s);
  if (s.state === "running") return connect(gen);
  explainNotRunning(gen, s);
}

function explainNotRunning(gen, s) {
  const { text, wait, wake } = stateMessage(s);
  setStatus("");
  setProblem(text, { wake });
  if (wait) v.waitTimer = setTimeout(() => current(gen) && start(gen), WAIT_POLL_MS);
  if (s.state === "hibernated") explainHibernation(gen, text);
}

/** Say why a hibernated session was hibernated, when a policy did it (`idle 30 min`). */
async function explainHibernation(gen, text) {
  let events;
  try {
    events = await api.events(v.id);
  } catch {
    return; // the state alone says enough
  }
  const last = events.at(-1);
  if (!current(gen) || v.rfb || !last || last.to_state !== "hibernated" || !last.detail) return;
  setProblem(`${text} It was hibernated by policy: ${last.detail}.`, { wake: true });
}

// ---- idle warning --------------------------------------------------------------------

/** While connected: look at the idle deadline now, and again when it may need a warning. */
async function watchIdle(gen) {
  clearTimeout(v.policyTimer);
  let s;
  try {
    s = await api.session(v.id);
  } catch (err) {
    if (current(gen) && !v.ctx.authLost(err)) v.policyTimer = setTimeout(() => watchIdle(gen), POLICY_POLL_MS);
    return;
  }
  if (!current(gen) || !v.rfb) return;
  showIdle(gen, s);
}

function showIdle(gen, s) {
  clearTimeout(v.policyTimer);
  const now = Date.now();
  const deadline = s.idle_deadline ? Date.parse(s.idle_deadline) : NaN;
  const warnAt = s.idle_warning_at ? Date.parse(s.idle_warning_at) : deadline;
  if (s.state !== "running" || Number.isNaN(deadline)) {
    hideIdleWarning();
    return;
  }
  if (now >= warnAt) {
    showIdleWarning(deadline, s.idle_action);
    // Input since the last look moves the deadline on: look again soon.
    v.policyTimer = setTimeout(() => watchIdle(gen), Math.min(POLICY_POLL_MS, 2000));
  } else {
    hideIdleWarning();
    v.policyTimer = setTimeout(() => watchIdle(gen), Math.max(250, Math.min(POLICY_POLL_MS, warnAt - now)));
  }
}

function showIdleWarning(deadline, action) {
  const verb = action === "stop" ? "stopped" : "hibernated";
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    const when = left >= 120 ? `${Math.round(left / 60)} minutes` : `${left} seconds`;
    ui.idleText.textContent = `Nobody has used this session for a while: it will be ${verb} in ${when}.`;
  };
  tick();
  clearInterval(v.countdown);
  v.countdown = setInterval(tick, 1000);
  if (ui.idle.hidden) announce(ui.idleText.textContent);
  ui.idle.hidden = false;
}

function hideIdleWarning() {
  clearInterval(v.countdown);
  clearTimeout(v.policyTimer);
  ui.idle.hidden = true;
}

ui.keep.addEventListener("click", async () => {
  const gen = v.gen;
  ui.keep.disabled = true;
  try {
    const s = await api.keep(v.id);
    if (!current(gen)) return;
    hideIdleWarning();
    announce("The session is kept.");
    if (v.rfb) showIdle(gen, s);
  } catch (err) {
    if (current(gen) && !v.ctx.authLost(err)) ui.idleText.textContent = `Could not keep the session: ${err.message}`;
  } finally {
    ui.keep.disabled = false;
  }
});

function failBeforeConnect(gen, err) {
  setStatus("");
  if (err instanceof ApiError && err.status === 404) {
    setProblem("This session does not exist, or it is not yours.");
  } else if (err instanceof ApiError && err.status === 409) {
    // Not running (any more): say so, then look again (connects once it runs).
    setProblem(`The session is not running: ${err.message}`);
    v.waitTimer = setTimeout(() => current(gen) && start(gen), WAIT_POLL_MS);
  } else if (err instanceof ApiError && err.status === 403) {
    setProblem(`You may not view this session: ${err.message}`);
  } else {
    setProblem(`Could not connect to the session: ${err.message}`, { reconnect: true });
  }
}

async function loadRfb() {
  if (!rfbModule) {
    rfbModule = import(NOVNC_URL).catch(async (err) => {
      rfbModule = null;
      let why = "";
      try {
        const resp = await fetch(NOVNC_URL, { cache: "no-store" });
        if (!resp.ok) {
          const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
          why = doc.body?.textContent.replace(/\s+/g, " ").trim() || `HTTP ${resp.status}`;
        }
      } catch {
        // The server is unreachable; the generic message below says enough.
      }
      throw new Error(why || `The viewer component (noVNC) could not be loaded: ${err.message}`);
    });
  }
  return (await rfbModule).default;
}

async function connect(gen) {
  setProblem("");
  setStatus("Connecting…");
  let RFB;
  let grant;
  try {
    RFB = await loadRfb();
    if (!current(gen)) return;
    grant = await api.connect(v.id);
  } catch (err) {
    if (!current(gen) || v.ctx.authLost(err)) return;
    return failBeforeConnect(gen, err);
  }
  if (!current(gen)) return;

  // Our own WebSocket, so the close code and reason reach us (noVNC does not report them).
  const ws = new WebSocket(vncSocketUrl(v.id, grant), ["binary"]);
  let closed = null;
  ws.addEventListener("close", (e) => (closed = { code: e.code, reason: e.reason }));

  ui.screen.replaceChildren();
  setLive(true);
  let rfb;
  try {
    rfb = new RFB(ui.screen, ws, { shared: true });
  } catch (err) {
    ws.close();
    setLive(false);
    setStatus("");
    setProblem(`The viewer could not start: ${err.message}`, { reconnect: true });
    return;
  }
  v.rfb = rfb;
  applyScaling();
  rfb.background = "rgb(40, 40, 40)";
  rfb.addEventListener("connect", () => {
    if (v.rfb !== rfb) return;
    setConnected(true);
    const canvas = ui.screen.querySelector("canvas");
    if (canvas?.width && canvas?.height) ui.stage.style.setProperty("--fb-ratio", `${canvas.width} / ${canvas.height}`);
    setStatus("Connected. Click the desktop to type into it.");
    announce("Connected to the session.");
    watchIdle(gen);
  });
  rfb.addEventListener("disconnect", (e) => {
    // Let the socket's own close event land first.
    setTimeout(() => onDisconnect(gen, rfb, e.detail?.clean, closed), 0);
  });
  rfb.addEventListener("clipboard", (e) => clipboard.received(e.detail.text));
  rfb.addEventListener("credentialsrequired", () => {
    rfb.failure = "The session's VNC server asks for a password, which StreamSpace does not use.";
    rfb.disconnect();
  });
  rfb.addEventListener("securityfailure", (e) => {
    rfb.failure = `The session's VNC server refused the connection${e.detail.reason ? `: ${e.detail.reason}` : "."}`;
  });
  rfb.addEventListener("desktopname", (e) => {
    if (e.detail.name) ui.heading.title = e.detail.name;
  });
}

async function onDisconnect(gen, rfb, clean, closed) {
  if (v.rfb === rfb) v.rfb = null;
  if (rfb.disconnectedByUs || !current(gen)) return;
  hideIdleWarning();
  setConnected(false);
  setLive(false);
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  if (rfb.disconnectedByUser) {
    setStatus("");
    setProblem("You disconnected from the session.", { reconnect: true });
    return;
  }
  const message = rfb.failure || closeMessage(closed, clean);
  setStatus("");
  setProblem(message, { reconnect: true });
  announce(message);
  // Has the session itself stopped? Then say that instead, without a reconnect button.
  try {
    const s = await api.session(v.id);
    if (!current(gen) || v.rfb) return;
    showSession(s);
    if (s.state !== "running") explainNotRunning(gen, s);
  } catch (err) {
    if (current(gen)) v.ctx.authLost(err);
  }
}

// ---- controls --------------------------------------------------------------------------

function applyScaling() {
  if (!v.rfb) return;
  v.rfb.scaleViewport = ui.scale.checked;
  v.rfb.clipViewport = !ui.scale.checked;
  v.rfb.resizeSession = ui.resize.checked;
}

ui.scale.addEventListener("change", applyScaling);
ui.resize.addEventListener("change", applyScaling);

ui.reconnect.addEventListener("click", () => {
  teardown();
  const gen = ++v.gen;
  start(gen);
});

ui.wake.addEventListener("click", async () => {
  const gen = v.gen;
  ui.wake.disabled = true;
  try {
    await api.wake(v.id);
    if (!current(gen)) return;
    setProblem("Waking the session. The viewer connects as soon as it runs.");
    start(gen);
  } catch (err) {
    if (current(gen) && !v.ctx.authLost(err)) setProblem(`Could not wake the session: ${err.message}`, { wake: true });
  } finally {
    ui.wake.disabled = false;
  }
});

ui.disconnect.addEventListener("click", () => {
  if (!v.rfb) return;
  v.rfb.disconnectedByUser = true;
  v.rfb.disconnect();
});

ui.fullscreen.addEventListener("click", async () => {
  if (document.fullscreenElement) return document.exitFullscreen();
  try {
    await ui.stage.requestFullscreen();
    v.rfb?.focus();
  } catch (err) {
    setStatus(`Fullscreen is not available here: ${err.message}`);
  }
});
ui.exitFullscreen.addEventListener("click", () => document.exitFullscreen().catch(() => {}));

document.addEventListener("fullscreenchange", () => {
  const full = document.fullscreenElement === ui.stage;
  ui.fullscreen.textContent = full ? "Exit fullscreen" : "Fullscreen";
  ui.fullscreen.setAttribute("aria-pressed", String(full));
  ui.exitFullscreen.hidden = !full;
});
