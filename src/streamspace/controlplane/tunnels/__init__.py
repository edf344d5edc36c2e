"""The VNC tunnel: browser WebSocket ⇄ control plane ⇄ agent data WebSocket ⇄ VNC port.

Every tunnel is its own pair of sockets and its own two relay tasks, so a viewer that stops
reading backs up only its own tunnel (each socket's own flow control), never another
session's, and never the agent's control socket (tunnel bytes never travel on it).

- :mod:`.tokens`: single-use connect tokens (``POST /api/v1/sessions/{id}/connect``);
- :mod:`.viewer`: the browser side (``WS /api/v1/sessions/{id}/vnc?token=…``);
- :mod:`.agent_side`: where agents dial a tunnel's data socket back;
- :mod:`.internal`: replica-to-replica relay when the agent is connected elsewhere;
- :mod:`.registry`: tunnels waiting for their agent; :mod:`.relay`: the byte pumps.
"""
