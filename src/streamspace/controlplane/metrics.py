"""Prometheus metrics of a control-plane replica."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

AGENTS_CONNECTED = Gauge(
    "streamspace_agents_connected", "Agents connected to this replica", ["replica"]
)
COMMANDS = Gauge("streamspace_commands", "Commands in the database by status", ["status"])
SESSIONS = Gauge("streamspace_sessions", "Sessions in the database by state", ["state"])
SESSIONS_BY_TEMPLATE = Gauge(
    "streamspace_sessions_by_template",
    "Sessions in the database by template and state",
    ["template", "state"],
)
COMMANDS_SENT = Counter("streamspace_commands_sent_total", "Commands sent to agents", ["action"])
DISPATCH_LATENCY = Histogram(
    "streamspace_dispatch_latency_seconds",
    "Time from a command's creation to its delivery to the agent",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMMANDS_REQUEUED = Counter(
    "streamspace_commands_requeued_total", "Sent commands put back to pending (no ack in time)"
)
COMMANDS_TIMED_OUT = Counter(
    "streamspace_commands_timed_out_total",
    "Commands ended by a deadline",
    ["status"],
)
REDIS_UP = Gauge(
    "streamspace_redis_up", "1 while this replica reaches the hub's Redis", ["replica"]
)
DOORBELLS = Counter(
    "streamspace_doorbells_total",
    "Cross-replica doorbells by outcome (delivered, lost = no subscriber, no_owner, error)",
    ["result"],
)
LOGINS = Counter(
    "streamspace_logins_total",
    "Password logins by result (success, failed, disabled, throttled)",
    ["result"],
)
POLICY_ACTIONS = Counter(
    "streamspace_policy_actions_total",
    "Sessions hibernated or stopped by a lifecycle policy (idle, max_age, retention)",
    ["reason", "action"],
)
QUOTA_REFUSALS = Counter(
    "streamspace_quota_refusals_total",
    "Requests refused by a user's quota, by the limit that refused them",
    ["limit"],
)
