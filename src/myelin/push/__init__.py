"""Push: reads the room event log, evaluates push rules, counts notifications, feeds pushers."""
