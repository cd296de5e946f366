"""Sync API: reads the room event log and ephemeral streams; serves /sync and /messages."""
