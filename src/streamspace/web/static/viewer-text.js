// What the viewer says, in words: why a connection closed, and what a session's state means.

/** Close codes of the VNC tunnel (see the control plane's vnc route) and common WebSocket ones. */
const CLOSE_CODES = {
  1000: "The session closed the connection.",
  1001: "The server is going away (it may be restarting). Try again in a moment.",
  1006: "The connection to the server was lost (network problem, or the server stopped).",
  1008: "The server refused the connection (policy violation).",
  1009: "The server refused a message that was too large.",
  1011: "The server hit an internal error and closed the connection.",
  1012: "The server is restarting. Try again in a moment.",
  1013: "The server is too busy right now. Try again in a moment.",
  4400: "The viewer sent something the server did not understand.",
  4401: "The viewer's access token was refused: it was invalid, had expired, or was already used. Reconnect to get a new one.",
  4403: "You are not allowed to view this session.",
  4404: "This session does not exist, or it is not yours.",
  4409: "The session is not running.",
  4502: "The computer running this session (its agent) cannot be reached right now. Try again in a moment.",
  4503: "The session's display is not reachable right now. Try again in a moment.",
};

/** `closed` is `{code, reason}` from the WebSocket's close event, or null. */
export function closeMessage(closed, clean) {
  if (!closed) return clean ? "The connection was closed." : "The connection failed.";
  const words = CLOSE_CODES[closed.code] ||
    (closed.code >= 4000 ? `The server closed the connection (code ${closed.code}).` : `The connection closed (code ${closed.code}).`);
  const reason = (closed.reason || "").trim();
  return reason && !words.toLowerCase().includes(reason.toLowerCase()) ? `${words} The server said: “${reason}”.` : words;
}

/**
 * For a session that is not running: `{text, wait, wake}`; `wait` means it may still start
 * (the viewer keeps checking and connects once it runs), `wake` offers the Wake button.
 */
export function stateMessage(s) {
  const reason = s.termination_reason ? ` Reason: ${s.termination_reason}.` : "";
  switch (s.state) {
    case "pending":
      return { text: "The session is starting. The viewer connects as soon as it is running.", wait: true };
    case "waking":
      return { text: "The session is waking up. The viewer connects as soon as it is running.", wait: true };
    case "hibernating":
      return { text: "The session is not running: it is being hibernated.", wait: true };
    case "hibernated":
      return { text: "The session is not running: it is hibernated. Wake it to continue.", wake: true };
    case "stopping":
      return { text: "The session is not running: it is being stopped.", wait: true };
    case "terminated":
      return { text: `The session is not running: it has ended.${reason}` };
    case "failed":
      return { text: `The session is not running: it failed.${reason}` };
    default:
      return { text: `The session is not running (state: ${s.state}).`, wait: true };
  }
}
