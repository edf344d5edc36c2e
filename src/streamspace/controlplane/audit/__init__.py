"""The audit log: who did what, when, from where (rows, a listing, one JSON line each)."""

from streamspace.controlplane.audit.log import Actor, AuditLog

__all__ = ["Actor", "AuditLog"]
