// The viewer's clipboard panel: text the session copies shows up here (noVNC's `clipboard`
// event) and can be copied to this computer; text typed here goes to the session's clipboard.
import { $, announce } from "./dom.js";

const ui = {
  from: $("clip-from"),
  copy: $("clip-copy"),
  form: $("clip-form"),
  to: $("clip-to"),
  send: $("clip-send"),
};

/** `getRfb()` gives the live RFB object (or null); `say(text)` shows a status line. */
export function clipboardPanel(getRfb, say) {
  function send(event) {
    event.preventDefault();
    const rfb = getRfb();
    const text = ui.to.value;
    if (!rfb || !text) return;
    rfb.clipboardPasteFrom(text);
    // Straight back to the desktop, ready to paste there.
    rfb.focus();
    say("Text sent to the session's clipboard. Paste it inside the session.");
    announce("Text sent to the session's clipboard.");
  }

  async function copyOut() {
    const text = ui.from.value;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No async clipboard (plain http, or permission denied): select and copy instead.
      ui.from.focus();
      ui.from.select();
      if (!document.execCommand("copy")) {
        say("Your browser blocked copying; the text is selected: press Ctrl+C.");
        return;
      }
    }
    say("Copied to this computer's clipboard.");
    announce("Copied.");
  }

  ui.form.addEventListener("submit", send);
  ui.to.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e);
  });
  ui.copy.addEventListener("click", copyOut);

  return {
    reset() {
      ui.from.value = "";
      ui.copy.disabled = true;
    },
    enable(connected) {
      ui.send.disabled = !connected;
    },
    received(text) {
      ui.from.value = text;
      ui.copy.disabled = !text;
      announce("The session's clipboard changed.");
    },
  };
}
