"""The roomserver: the single writer per room. Auth, state, numeric IDs, state snapshots;
appends accepted events to the room event log (the commit point)."""
