"""Migrations of the ephemeral component (receipts and presence)."""
