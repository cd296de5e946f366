"""The append-only room event log: the source of truth that every projection is rebuilt from."""
