"""Authentication guards: login throttling and the same-origin rule for cookie requests."""
