"""Who may do what: password and key hashing, login tokens and their cache, users, login
throttling and the same-origin rule for cookie requests."""
