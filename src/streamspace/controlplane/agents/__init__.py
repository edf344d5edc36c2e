"""Agents on this replica: their WebSocket, what they report, their arrival and departure,
heartbeats, and the admin operations on them (approval, revocation)."""
