"""Storage backends (SQLite embedded default, PostgreSQL scale-out) behind one interface."""
