"""Schema migrations of the user API (accounts, devices, tokens, filters, UIA sessions)."""
