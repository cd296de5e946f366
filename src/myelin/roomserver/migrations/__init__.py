"""Numbered schema migrations of the roomserver (see myelin.storage.migrations)."""
