"""Federation sender: reads the room event log and delivers new events to remote servers."""
