"""Ephemeral streams: typing notifications, read receipts and presence.

Each is a stream with its own position in the `/sync` token (see `sync.py`), and each
change wakes the long-polling `/sync` requests of the users it concerns:

- `typing`: kept in memory only (it is meaningless after a restart); entries expire after
  the client's timeout.
- `receipts`: the latest receipt per room, type, user and thread, in the database.
- `presence`: each user's state and status message, in the database.
"""
