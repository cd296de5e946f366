"""Process wiring: configuration, data directory, ASGI application and listeners."""
