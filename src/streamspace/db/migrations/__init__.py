"""Alembic migrations and the one runner that applies them."""
