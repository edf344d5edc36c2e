"""Commands to agents: delivery (dispatcher), the periodic checks that repair what went
wrong (reconciler), and what a finished command does to its session (outcomes)."""
