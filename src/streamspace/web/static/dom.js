// Small DOM and formatting helpers shared by the views.

export const $ = (id) => document.getElementById(id);

/** Create an element: el("button", {type: "button", dataset: {x: 1}}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** Show `message` in an error/status paragraph, or hide it when empty. */
export function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

export function announce(message) {
  const node = $("announcer");
  // Re-setting the same text would not be re-announced; clear first.
  node.textContent = "";
  node.textContent = message;
}

/** A <time> element showing a local date/time, or "—" when there is none. */
export function timeEl(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const at = new Date(iso);
  return el("time", { datetime: iso, title: iso }, isNaN(at) ? iso : at.toLocaleString());
}

/** "5 s ago", "3 min ago", "2 h ago", "4 days ago"; `now` in ms. */
export function ageText(iso, now = Date.now()) {
  if (!iso) return "never";
  const at = Date.parse(iso);
  if (isNaN(at)) return iso;
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  const days = Math.floor(s / 86400);
  return `${days} day${days === 1 ? "" : "s"} ago`;
}

export const badge = (text, kind, testid) =>
  el("span", { class: `badge state-${kind || text}`, dataset: testid ? { testid } : {} }, text);

/**
 * Call `fn(isCurrent)` now and every `ms` after it settles, until stop(). `isCurrent()` turns
 * false once stopped or restarted, so answers that arrive late can be dropped.
 */
export function poller(fn, ms) {
  let gen = 0;
  let timer = 0;
  let active = false;
  return {
    start() {
      active = true;
      const mine = ++gen;
      clearTimeout(timer);
      const isCurrent = () => mine === gen;
      const tick = async () => {
        if (!isCurrent()) return;
        try {
          await fn(isCurrent);
        } finally {
          if (isCurrent()) timer = setTimeout(tick, ms);
        }
      };
      tick();
    },
    stop() {
      active = false;
      gen++;
      clearTimeout(timer);
    },
    /** Run once more right away (after an action), keeping the schedule. */
    poke() {
      if (active) this.start();
    },
  };
}
