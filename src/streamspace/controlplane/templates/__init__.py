"""The catalog of templates a session is launched from."""
